"""Core tasks: registry, shapes and ranges, and the input/output relation of every task."""

import json
import math

import numpy as np
import pytest
from numpy.polynomial import legendre
from scipy import ndimage

from generators import Subject, brain_mask_of
from generators.sources import procedural_label_map
from generators.tasks import TASKS, get_task
from generators.tasks.core import (
    BiasCorrection,
    Inpainting,
    Segmentation,
    add_gaussian_noise,
    add_salt_pepper,
    degrade_resolution,
    legendre_field,
    perlin_noise,
)

CORE = ("segmentation", "skull_stripping", "modality_transfer", "super_resolution",
        "denoising_gaussian", "denoising_salt_pepper", "bias_correction", "inpainting")


def make_subject(name, shape, seed, real=False):
    """A subject with a procedural label map and two smooth synthetic contrasts (no neurite)."""
    rng = np.random.default_rng(seed)
    size = max(shape)
    labels3 = procedural_label_map((size, size, size), rng)
    labels = labels3[:, size // 2, :][: shape[0], : shape[1]] if len(shape) == 2 else labels3
    lut_a = rng.uniform(0.1, 0.9, 300).astype(np.float32)
    lut_b = rng.uniform(0.1, 0.9, 300).astype(np.float32)
    lut_a[0] = lut_b[0] = 0
    images = {
        "a": ndimage.gaussian_filter(lut_a[labels], 0.5).astype(np.float32),
        "b": ndimage.gaussian_filter(lut_b[labels], 0.5).astype(np.float32),
    }
    if real:
        images["real"] = np.clip(images["a"] ** 2, 0, 1)
        images["real:t1"] = images["real"]
        images["real:t2"] = np.clip(1 - images["a"], 0, 1) * (labels > 0)
    return Subject(name, labels.astype(np.int32), images, brain_mask_of(labels)).validate()


@pytest.fixture(scope="module")
def subjects2d():
    return [make_subject(f"s{i}", (32, 32), i) for i in range(3)]


@pytest.fixture(scope="module")
def subjects3d():
    return [make_subject(f"v{i}", (16, 16, 16), 10 + i) for i in range(2)]


def pairs(task, subjects, seed=0):
    rng = np.random.default_rng(seed)
    episode = task.sample_episode(rng, subjects)
    return episode, [task.make_pair(s, episode, rng) for s in subjects]


# registry and configs ---------------------------------------------------------------------------


def test_all_core_tasks_registered_with_kind():
    for name in CORE:
        assert name in TASKS, name
        assert TASKS[name].name == name
        assert TASKS[name].kind in (0, 1)
    assert TASKS["segmentation"].kind == 0 and TASKS["inpainting"].kind == 1


def test_get_task_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="no_such_task.*segmentation"):
        get_task("no_such_task")


@pytest.mark.parametrize("name", CORE)
def test_config_json_round_trip(name):
    task = get_task(name)
    config = json.loads(json.dumps(task.get_config()))
    rebuilt = type(task)(**config)
    assert rebuilt.get_config() == task.get_config()


@pytest.mark.parametrize("name", CORE)
@pytest.mark.parametrize("ndim", [2, 3])
def test_shapes_dtypes_ranges(name, ndim, subjects2d, subjects3d):
    subjects = subjects2d if ndim == 2 else subjects3d
    _, out = pairs(get_task(name), subjects)
    for (x, y), subject in zip(out, subjects):
        for a in (x, y):
            assert a.dtype == np.float32
            assert a.shape == (*subject.shape, 1)
            assert a.min() >= 0 and a.max() <= 1
        assert not np.array_equal(x, y), name  # every task changes something


@pytest.mark.parametrize("kwargs", [dict(std=-1), dict(std=(0.3, 0.1))])
def test_bad_parameters_name_the_argument(kwargs):
    with pytest.raises(ValueError, match="std"):
        get_task("denoising_gaussian", **kwargs)


def test_bad_parameters_other_tasks():
    with pytest.raises(ValueError, match="factors"):
        get_task("super_resolution", factors=[1])
    with pytest.raises(ValueError, match="output"):
        get_task("skull_stripping", output="brain")
    with pytest.raises(ValueError, match="source and target"):
        get_task("modality_transfer", source="a", target="a")
    with pytest.raises(ValueError, match="order"):
        get_task("bias_correction", order=0)
    with pytest.raises(ValueError, match="p_real"):
        get_task("skull_stripping", p_real=2)


# segmentation -----------------------------------------------------------------------------------


def test_segmentation_mask_equals_chosen_labels(subjects2d):
    task = Segmentation(n_labels=(1, 3))
    for seed in range(5):
        episode, out = pairs(task, subjects2d, seed)
        chosen = episode["labels"]
        assert 1 <= len(chosen) <= 3
        assert set(chosen) <= set(np.unique(subjects2d[0].labels).tolist()) - {0}
        for (x, y), subject in zip(out, subjects2d):
            np.testing.assert_array_equal(y[..., 0], np.isin(subject.labels, chosen))
            np.testing.assert_array_equal(x[..., 0], subject.images["a"])
        assert out[0][1].sum() >= task.min_voxels  # the target is never empty


def test_segmentation_foreground_grouping(subjects3d):
    # Neuroverse3D's random foreground grouping: with probability group_p a group of 2..10.
    n_candidates = len(set(np.unique(subjects3d[0].labels).tolist()) - {0})
    assert n_candidates >= 10
    sizes = [len(Segmentation(group_p=0.5).sample_episode(np.random.default_rng(s), subjects3d)
                 ["labels"]) for s in range(200)]
    singles = sizes.count(1) / len(sizes)
    assert 0.35 < singles < 0.65 and max(sizes) <= 10 and len(set(sizes)) >= 6
    always = [len(Segmentation(group_p=1.0, group_size=3).sample_episode(
        np.random.default_rng(s), subjects3d)["labels"]) for s in range(20)]
    assert always == [3] * 20
    # Without grouping the episodes are drawn exactly as before the option existed.
    for s in range(10):
        a = Segmentation().sample_episode(np.random.default_rng(s), subjects3d)
        b = Segmentation(group_p=0.0).sample_episode(np.random.default_rng(s), subjects3d)
        assert a == b
    for bad in (-0.1, 1.5, True, (0.2, 0.5)):
        with pytest.raises(ValueError, match="group_p"):
            Segmentation(group_p=bad)


def test_segmentation_fixed_labels_and_hemispheres(subjects3d):
    episode, out = pairs(Segmentation(labels=[17, 53]), subjects3d)
    assert episode["labels"] == [17, 53]
    np.testing.assert_array_equal(out[0][1][..., 0], np.isin(subjects3d[0].labels, [17, 53]))
    task = Segmentation(merge_hemispheres=True)
    paired = 0
    for seed in range(10):
        chosen = task.sample_episode(np.random.default_rng(seed), subjects3d)["labels"]
        paired += len(chosen) == 2
        if len(chosen) == 2:
            assert tuple(chosen) in {(2, 41), (3, 42), (4, 43), (7, 46), (8, 47), (10, 49),
                                     (17, 53)}
    assert paired > 0


def test_segmentation_empty_target_raises():
    empty = Subject("e", np.zeros((8, 8), np.int32), {"a": np.zeros((8, 8), np.float32),
                                                      "b": np.zeros((8, 8), np.float32)},
                    np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="no non-zero label"):
        Segmentation().sample_episode(np.random.default_rng(0), [empty])


# skull stripping / modality transfer ------------------------------------------------------------


def test_skull_stripping_image_and_mask(subjects2d):
    episode, out = pairs(get_task("skull_stripping", p_real=0.0), subjects2d)
    assert episode["contrast"] == "a"
    for (x, y), s in zip(out, subjects2d):
        np.testing.assert_array_equal(x[..., 0], s.images["a"])
        np.testing.assert_array_equal(y[..., 0], s.images["a"] * s.brain_mask)
        assert x[..., 0][~s.brain_mask].max() > 0.05  # there is a head to remove
    task = get_task("skull_stripping", output="mask")
    assert task.kind == 0 and get_task("skull_stripping").kind == 1
    _, out = pairs(task, subjects2d)
    np.testing.assert_array_equal(out[1][1][..., 0], subjects2d[1].brain_mask)


def test_skull_stripping_real_when_every_subject_has_one():
    subjects = [make_subject(f"r{i}", (24, 24), i, real=True) for i in range(2)]
    episode, out = pairs(get_task("skull_stripping", p_real=1.0), subjects)
    assert episode["contrast"] == "real"
    np.testing.assert_array_equal(out[0][0][..., 0], subjects[0].images["real"])


def test_modality_transfer_synthetic_and_real(subjects2d):
    episode, out = pairs(get_task("modality_transfer", p_real=1.0), subjects2d)
    assert episode == {"source": "a", "target": "b"}  # no real images: synthetic pair
    for (x, y), s in zip(out, subjects2d):
        np.testing.assert_array_equal(x[..., 0], s.images["a"])
        np.testing.assert_array_equal(y[..., 0], s.images["b"])
    subjects = [make_subject(f"r{i}", (24, 24), i, real=True) for i in range(2)]
    episode, out = pairs(get_task("modality_transfer", p_real=1.0), subjects)
    assert {episode["source"], episode["target"]} == {"real:t1", "real:t2"}
    np.testing.assert_array_equal(out[1][1][..., 0], subjects[1].images[episode["target"]])


# super-resolution -------------------------------------------------------------------------------


def test_degrade_resolution_block_means():
    image = np.random.default_rng(0).uniform(size=(12, 10)).astype(np.float32)
    low, restored = degrade_resolution(image, 2)
    np.testing.assert_allclose(low, image.reshape(6, 2, 5, 2).mean(axis=(1, 3)), rtol=1e-6)
    assert restored.shape == image.shape
    low3, _ = degrade_resolution(image, 3, axes=[0])
    np.testing.assert_allclose(low3, image.reshape(4, 3, 10).mean(axis=1), rtol=1e-6)
    # a constant image survives, an image that is constant on 2x2 blocks keeps its block means
    np.testing.assert_allclose(degrade_resolution(np.full((8, 8), 0.3), 2)[1], 0.3, atol=1e-6)


def test_super_resolution_output_is_original_and_input_is_smoother(subjects2d):
    task = get_task("super_resolution", factors=[2, 4])
    for seed in range(3):
        episode, out = pairs(task, subjects2d, seed)
        assert episode["factor"] in (2, 4)
        for (x, y), s in zip(out, subjects2d):
            np.testing.assert_array_equal(y[..., 0], s.images["a"])
            _, expected = degrade_resolution(s.images["a"], episode["factor"], episode["axes"])
            np.testing.assert_allclose(x[..., 0], np.clip(expected, 0, 1), atol=1e-6)
            variation = [np.abs(np.diff(a[..., 0], axis=0)).sum() for a in (x, y)]
            assert variation[0] < variation[1]


def test_super_resolution_anisotropic_keeps_other_axis(subjects2d):
    episode, out = pairs(get_task("super_resolution", p_anisotropic=1.0), subjects2d)
    assert len(episode["axes"]) == 1
    (axis,) = episode["axes"]
    x, y = out[0]
    # down-sampling along `axis` only: every line along the other axis that lies inside one
    # block is unchanged in its variation pattern -> the block means along `axis` match
    low_x = degrade_resolution(x[..., 0], 2, [axis])[0]
    low_y = degrade_resolution(y[..., 0], 2, [axis])[0]
    assert np.abs(low_x - low_y).mean() < 0.05


# denoising ------------------------------------------------------------------------------------


def test_gaussian_noise_statistics():
    rng = np.random.default_rng(0)
    clean = np.full((64, 64), 0.5, np.float32)
    noisy, noise = add_gaussian_noise(clean, 0.05, rng, renormalize=False)
    assert abs(float((noisy - clean).std()) - 0.05) < 0.005
    np.testing.assert_allclose(noisy, np.clip(clean + noise, 0, 1))
    noisy, noise = add_gaussian_noise(clean, 0.05, rng, renormalize=True)
    assert noisy.min() == 0 and noisy.max() == 1
    # min-max is affine: the renormalised input is a positive multiple of clean + noise
    corr = np.corrcoef(noisy.ravel(), (clean + noise).ravel())[0, 1]
    assert corr > 0.9999


def test_gaussian_denoising_target_is_clean(subjects2d):
    task = get_task("denoising_gaussian", std=0.2, renormalize=False)
    episode, out = pairs(task, subjects2d)
    assert episode["std"] == 0.2
    for (x, y), s in zip(out, subjects2d):
        np.testing.assert_array_equal(y[..., 0], s.images["a"])
        inside = (y[..., 0] > 0.3) & (y[..., 0] < 0.7)  # far from the clip at 0 and 1
        assert 0.12 < float((x - y)[..., 0][inside].std()) < 0.28
    default = get_task("denoising_gaussian")
    stds = [default.sample_episode(np.random.default_rng(i), [])["std"] for i in range(20)]
    assert min(stds) >= 0.15 and max(stds) <= 0.25  # the paper's range


def test_salt_pepper_values_and_counts(subjects2d):
    image = np.full((50, 40), 0.5, np.float32)
    out = add_salt_pepper(image, 0.04, 0.02, np.random.default_rng(0))
    changed = out != image
    assert set(np.unique(out[changed]).tolist()) <= {0.0, 1.0}
    n = image.size
    # drawn with replacement: at most ceil(p N) each, a few duplicates fewer
    assert 0.9 * 0.04 * n <= (out == 1).sum() <= math.ceil(0.04 * n)
    assert 0.9 * 0.02 * n <= (out == 0).sum() <= math.ceil(0.02 * n)
    episode, pair_list = pairs(get_task("denoising_salt_pepper"), subjects2d)
    assert 0.01 <= episode["p_salt"] <= 0.04 and 0.01 <= episode["p_pepper"] <= 0.04
    for (x, y), s in zip(pair_list, subjects2d):
        np.testing.assert_array_equal(y[..., 0], s.images["a"])
        diff = x != y
        assert diff.any() and set(np.unique(x[diff]).tolist()) <= {0.0, 1.0}


# bias field -----------------------------------------------------------------------------------


def _legendre_design(shape, order):
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    columns = []
    for degrees in np.ndindex(*(order + 1,) * len(shape)):
        if sum(degrees) <= order:
            term = np.ones(shape)
            for g, d in zip(grids, degrees):
                term = term * legendre.legval(g, [0] * d + [1])
            columns.append(term.ravel())
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("ndim", [2, 3])
def test_bias_field_ratio_is_a_smooth_legendre_field(ndim, subjects2d, subjects3d):
    subjects = subjects2d if ndim == 2 else subjects3d
    task = BiasCorrection(order=3, strength=0.4)
    _, out = pairs(task, subjects)
    design = _legendre_design(subjects[0].shape, 3)
    for (x, y), s in zip(out, subjects):
        np.testing.assert_array_equal(y[..., 0], s.images["a"])
        inside = y[..., 0].ravel() > 0.05
        log_ratio = np.log(x[..., 0].ravel()[inside] / y[..., 0].ravel()[inside])
        coef, *_ = np.linalg.lstsq(design[inside], log_ratio, rcond=None)
        residual = log_ratio - design[inside] @ coef
        assert np.abs(residual).max() < 1e-3  # x / y = const * exp(Legendre polynomial)
        assert log_ratio.std() > 0.05  # and the field is not flat
    fields = [task.field((16, 16), np.random.default_rng(i)) for i in range(2)]
    assert not np.allclose(fields[0], fields[1])  # a new field for each pair
    assert abs(float(np.log(fields[0]).std()) - 0.4) < 1e-3


def test_legendre_field_linear_term():
    coefficients = np.zeros((2, 2))
    coefficients[0, 1] = 1.0  # P0(x) P1(y) = y
    field = legendre_field((5, 7), coefficients)
    np.testing.assert_allclose(field, np.tile(np.linspace(-1, 1, 7), (5, 1)), atol=1e-6)


# inpainting -----------------------------------------------------------------------------------


def test_perlin_noise_smooth_seeded_and_bounded():
    a = perlin_noise((64, 64), 4, np.random.default_rng(0))
    b = perlin_noise((64, 64), 4, np.random.default_rng(0))
    c = perlin_noise((64, 64), 4, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.abs(a).max() <= 1.5 and a.std() > 0.1
    assert np.abs(np.diff(a, axis=0)).max() < 0.2 * (a.max() - a.min())  # smooth
    v = perlin_noise((16, 16, 16), 2, np.random.default_rng(0))
    assert v.shape == (16, 16, 16) and np.abs(np.diff(v, axis=2)).max() < 0.3


def test_inpainting_mask_relation_and_coverage(subjects2d):
    task = Inpainting(coverage=(0.1, 0.1))
    _, out = pairs(task, subjects2d)
    for (x, y), s in zip(out, subjects2d):
        np.testing.assert_array_equal(y[..., 0], s.images["a"])
        holes = x[..., 0] != y[..., 0]
        assert np.all(x[..., 0][holes] == 0)
        masked = task.mask(s.shape, np.random.default_rng(3))
        assert abs(masked.mean() - 0.1) < 0.01
        # blobs, not salt: far fewer connected components than masked voxels
        assert ndimage.label(masked)[1] < masked.sum() / 10
    default = Inpainting()
    coverages = [default.mask((32, 32), np.random.default_rng(i)).mean() for i in range(10)]
    assert 0.025 <= min(coverages) and max(coverages) <= 0.235
