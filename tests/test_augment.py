"""Tests of generators.augment: task augmentations, spatial augmentation, task overlap."""

import json

import numpy as np
import pytest
from scipy import ndimage

from generators import augment as A
from generators.subject import Subject


def rng(seed=0):
    return np.random.default_rng(seed)


def square_mask(shape=(12, 12), lo=3, hi=8):
    y = np.zeros(shape + (1,), np.float32)
    y[tuple(slice(lo, hi) for _ in shape)] = 1.0
    return y


def smooth_image(shape=(16, 16), seed=0, channels=1):
    r = rng(seed)
    v = ndimage.gaussian_filter(r.random(shape + (channels,)), (2,) * len(shape) + (0,))
    return ((v - v.min()) / (v.max() - v.min())).astype(np.float32)


def apply_once(aug, x, y, kind=None, seed=0):
    episode = aug.sample_episode(rng(seed), kind)
    return aug.apply(x, y, episode, rng(seed + 1)), episode


# ----------------------------------------------------------------------------------------------
# mask operations


def test_inversion_of_a_mask_is_one_minus_mask():
    x, y = smooth_image(), square_mask((16, 16))
    (x2, y2), episode = apply_once(A.Inversion(target="y"), x, y, kind=0)
    np.testing.assert_array_equal(y2, 1 - y)
    np.testing.assert_array_equal(x2, x)
    assert episode["kind"] == 0
    (x3, _), _ = apply_once(A.Inversion(target="x"), x, y, kind=0)
    np.testing.assert_allclose(x3, 1 - x)


@pytest.mark.parametrize("ndims", [2, 3])
def test_dilation_grows_by_one_voxel_and_erosion_shrinks(ndims):
    shape = (9,) * ndims
    y = np.zeros(shape + (1,), np.float32)
    y[(4,) * ndims] = 1
    (_, grown), _ = apply_once(A.Dilation(), np.zeros_like(y), y, kind=0)
    assert grown.sum() == 1 + 2 * ndims  # the voxel and its face neighbours
    for axis in range(ndims):
        for step in (-1, 1):
            index = [4] * ndims
            index[axis] += step
            assert grown[tuple(index) + (0,)] == 1
    # a larger mask: dilation == mask OR any face-shifted copy
    y = square_mask((12,) * ndims)
    (_, grown), _ = apply_once(A.Dilation(), np.zeros_like(y), y, kind=0)
    expected = y[..., 0] > 0
    for axis in range(ndims):
        for step in (-1, 1):
            expected = expected | (np.roll(y[..., 0], step, axis) > 0)
    np.testing.assert_array_equal(grown[..., 0] > 0, expected)
    (_, shrunk), _ = apply_once(A.Erosion(), np.zeros_like(grown), grown, kind=0)
    np.testing.assert_array_equal(shrunk, y)


def test_contour_is_the_inner_boundary():
    y = square_mask((12, 12), 3, 8)  # a 5x5 square
    (_, contour), episode = apply_once(A.MaskContour(), np.zeros_like(y), y, kind=0)
    assert contour.sum() == 4 * 5 - 4
    assert contour[5, 5, 0] == 0 and contour[3, 3, 0] == 1
    assert np.all(contour <= y)
    assert episode["kind"] == 0


def test_mask_operations_leave_image_outputs_alone():
    x, y = smooth_image(), smooth_image(seed=1)
    for aug in (A.Dilation(), A.Erosion(), A.MaskContour()):
        (_, y1), _ = apply_once(aug, x, y, kind=1)
        np.testing.assert_array_equal(y1, y)
        (_, y2), _ = apply_once(aug, x, y, kind=None)  # not binary -> not a mask
        np.testing.assert_array_equal(y2, y)
    (_, y3), _ = apply_once(A.Dilation(), x, square_mask((16, 16)), kind=None)
    assert y3.sum() > square_mask((16, 16)).sum()  # binary -> treated as a mask


# ----------------------------------------------------------------------------------------------
# filters and intensities


@pytest.mark.parametrize("shape", [(10, 12), (6, 7, 8)])
def test_sobel_of_constant_is_zero_and_of_a_step_is_its_edge(shape):
    const = np.full(shape + (1,), 0.7, np.float32)
    np.testing.assert_array_equal(A.sobel_magnitude(const), 0)
    step = np.zeros(shape + (1,), np.float32)
    step[shape[0] // 2:] = 1
    edges = A.sobel_magnitude(step)
    assert edges.max() == pytest.approx(1.0)
    rows = edges.reshape(shape[0], -1).max(axis=1)
    assert set(np.nonzero(rows)[0]) == {shape[0] // 2 - 1, shape[0] // 2}
    (_, y), episode = apply_once(A.SobelFilter(target="y"), const, step, kind=0)
    np.testing.assert_allclose(y, edges)
    assert episode["kind"] == 1  # an edge map is graded: the task becomes an image task


def test_only_masks_option_leaves_image_outputs_alone():
    x, mask, image = smooth_image(), square_mask((16, 16)), smooth_image(seed=4)
    for aug in (A.SobelFilter(only_masks=True), A.Inversion(only_masks=True)):
        (_, y1), ep1 = apply_once(aug, x, image, kind=1)
        np.testing.assert_array_equal(y1, image)
        assert ep1["kind"] == 1
        (_, y0), _ = apply_once(aug, x, mask, kind=0)
        assert not np.array_equal(y0, mask)
    (_, y2), ep2 = apply_once(A.SobelFilter(), x, image, kind=1)
    assert not np.array_equal(y2, image) and ep2["kind"] == 1


def test_intensity_mapping_monotone_keeps_order_and_is_shared_by_pairs():
    aug = A.IntensityMapping(monotone=True, n_points=5)
    episode = aug.sample_episode(rng(3), 1)
    ramp = np.linspace(0, 1, 101, dtype=np.float32).reshape(101, 1, 1)
    x1, _ = aug.apply(ramp, ramp, episode, rng(10))
    diffs = np.diff(x1[:, 0, 0])
    assert np.all(diffs >= -1e-6) or np.all(diffs <= 1e-6)
    assert x1.max() - x1.min() > 0.99  # monotone curves span the whole range
    # another pair of the same episode: the same values map to the same values
    other = smooth_image((101, 1))
    x2, _ = aug.apply(other, other, episode, rng(11))
    curve = np.interp(other[..., 0], episode["xs"], episode["ys"])
    np.testing.assert_allclose(x2[..., 0], curve, atol=1e-6)
    np.testing.assert_allclose(x1[:, 0, 0], np.interp(ramp[:, 0, 0], episode["xs"], episode["ys"]),
                               atol=1e-6)


def test_intensity_mapping_applies_to_y_only_for_image_tasks():
    aug = A.IntensityMapping(target="both", monotone=False)
    x, y = smooth_image(), square_mask((16, 16))
    episode = aug.sample_episode(rng(0), 0)
    _, y0 = aug.apply(x, y, episode, rng(0))
    np.testing.assert_array_equal(y0, y)
    episode = aug.sample_episode(rng(0), 1)
    _, y1 = aug.apply(x, smooth_image(seed=2), episode, rng(0))
    assert not np.allclose(y1, smooth_image(seed=2))


def test_synthetic_modality_relabels_classes_and_keeps_background():
    aug = A.SyntheticModality(n_classes=4, texture=0.0)
    episode = aug.sample_episode(rng(1), 1)
    x = smooth_image()
    x[:3] = 0.0
    x2, _ = aug.apply(x, x, episode, rng(0))
    assert np.all(x2[:3] == 0)
    classes = np.digitize(x, episode["edges"])
    inside = x > 0
    for k in np.unique(classes[inside]):
        values = x2[inside & (classes == k)]
        np.testing.assert_allclose(values, values[0], atol=1e-6)  # texture 0: one level a class
    assert len(np.unique(np.round(x2[inside], 5))) <= 4


def test_shift_scale_noise_and_random_conv():
    x, y = smooth_image(), square_mask((16, 16))
    (x1, _), ep = apply_once(A.IntensityShift(shift=0.1), x, y)
    np.testing.assert_allclose(x1, np.clip(x + 0.1, 0, 1), atol=1e-6)
    (x2, _), _ = apply_once(A.IntensityScale(scale=0.5), x, y)
    np.testing.assert_allclose(x2, x * 0.5, atol=1e-6)
    (x3, y3), _ = apply_once(A.GaussianNoise(std=0.05), x, y)
    assert 0.03 < np.std(x3 - x) < 0.07 and x3.min() >= 0 and x3.max() <= 1
    np.testing.assert_array_equal(y3, y)
    aug = A.RandomConvContrast()
    episode = aug.sample_episode(rng(0))
    c1, _ = aug.apply(x, y, episode, rng(1))
    c2, _ = aug.apply(x, y, episode, rng(2))
    np.testing.assert_array_equal(c1, c2)  # kernels are per episode
    assert c1.min() == 0 and c1.max() == pytest.approx(1)
    assert not np.allclose(c1, x, atol=0.05)


# ----------------------------------------------------------------------------------------------
# channels


def test_channel_permutation_permutes():
    x = np.stack([np.full((4, 4), v, np.float32) for v in (0.1, 0.2, 0.3)], axis=-1)
    aug = A.ChannelPermutation(target="x")
    for seed in range(6):
        episode = aug.sample_episode(rng(seed))
        x2, y2 = aug.apply(x, x[..., :1], episode, rng(0))
        np.testing.assert_array_equal(x2, x[..., episode["perm_x"]])
        assert sorted(x2[0, 0]) == pytest.approx([0.1, 0.2, 0.3])
        assert y2.shape == (4, 4, 1)
    one = np.full((4, 4, 1), 0.5, np.float32)  # one channel is zero-padded to three first
    x3, _ = aug.apply(one, one, aug.sample_episode(rng(1)), rng(0))
    assert x3.shape == (4, 4, 3) and sorted(x3[0, 0]) == [0, 0, 0.5]


def test_channel_duplication_copies_the_first_channel():
    x = smooth_image()
    aug = A.ChannelDuplication(n_channels=3)
    episode = aug.sample_episode(rng(0))
    x2, _ = aug.apply(x, x, episode, rng(0))
    assert x2.shape == (16, 16, 3)
    for c in range(episode["copies"]):
        np.testing.assert_array_equal(x2[..., c], x[..., 0])
    assert np.all(x2[..., episode["copies"]:] == 0)


# ----------------------------------------------------------------------------------------------
# trees, seeding, configs


def test_trees_seeding_config_and_kind_propagation():
    for tree in (A.neuralizer_task_augmentation(), A.neuroverse3d_task_augmentation()):
        config = json.loads(json.dumps(tree.to_config()))
        rebuilt = A.augmentation_from_config(config)
        assert rebuilt.to_config() == config
        for seed in range(5):
            e1, e2 = tree.sample_episode(rng(seed), 0), rebuilt.sample_episode(rng(seed), 0)
            assert e1 == e2
            json.dumps(e1)
    tree = A.Compose([A.SobelFilter(target="y"), A.Inversion(target="y")])
    episode = tree.sample_episode(rng(0), 0)
    assert episode["kind"] == 1
    assert A.Compose([A.SobelFilter(p=0.0)]).sample_episode(rng(0), 0)["kind"] == 0
    with pytest.raises(ValueError, match="Unknown augmentation"):
        A.augmentation_from_config({"name": "nope"})


def test_same_parameters_for_all_pairs_of_an_episode():
    tree = A.Compose([A.IntensityMapping(), A.SyntheticModality(p=0.5), A.Inversion(p=0.5),
                      A.ChannelPermutation(p=0.5), A.Dilation(p=0.5)])
    x, y = smooth_image(), square_mask((16, 16))
    for seed in range(8):
        episode = tree.sample_episode(rng(seed), 0)
        out1 = tree.apply(x, y, episode, rng(100))
        out2 = tree.apply(x, y, episode, rng(200))  # other per-pair randomness
        for a, b in zip(out1, out2):
            np.testing.assert_array_equal(a, b)


def test_probabilities_and_one_of_weights():
    assert not any(A.Inversion(p=0.0).sample_episode(rng(s))["active"] for s in range(20))
    actives = [A.Inversion(p=0.3).sample_episode(rng(s))["active"] for s in range(400)]
    assert 0.2 < np.mean(actives) < 0.4
    one_of = A.OneOf([A.Inversion(p=0.0), A.Dilation()], weights=[3, 1])
    picks = [one_of.sample_episode(rng(s)) for s in range(400)]
    assert all(p["child"]["active"] for p in picks)  # the chosen child always applies
    assert 0.65 < np.mean([p["index"] == 0 for p in picks]) < 0.85
    with pytest.raises(ValueError, match="weights"):
        A.OneOf([A.Inversion()], weights=[1, 2])
    with pytest.raises(ValueError, match="p must"):
        A.Inversion(p=1.5)


@pytest.mark.parametrize("shape", [(16, 16), (8, 8, 8)])
def test_presets_shapes_and_ranges(shape):
    x, y = smooth_image(shape), square_mask(shape, 2, 5)
    for tree in (A.neuralizer_task_augmentation(), A.neuroverse3d_task_augmentation()):
        for seed in range(10):
            for kind in (0, 1):
                episode = tree.sample_episode(rng(seed), kind)
                x2, y2 = tree.apply(x, y if kind == 0 else x, episode, rng(seed))
                assert x2.shape[:-1] == shape and y2.shape[:-1] == shape
                assert x2.dtype == np.float32 and 0 <= x2.min() and x2.max() <= 1
                assert 0 <= y2.min() and y2.max() <= 1
                if episode["kind"] == 0:
                    assert set(np.unique(y2)) <= {0.0, 1.0}


# ----------------------------------------------------------------------------------------------
# spatial augmentation


def make_subject(shape, seed=0):
    r = rng(seed)
    labels = np.digitize(ndimage.gaussian_filter(r.random(shape), 2), [0.45, 0.5, 0.55])
    labels = labels.astype(np.int32) * 10
    lut = np.array([0.0] * 31, np.float32)
    lut[[0, 10, 20, 30]] = [0.0, 0.3, 0.6, 0.9]
    a = lut[labels]
    return Subject("s", labels, {"a": a, "b": 1 - a}, labels > 0), lut


def test_spatial_identity_when_all_probabilities_are_zero():
    subject, _ = make_subject((12, 10))
    aug = A.SpatialAugmentation(p_rotation=0, p_affine=0, p_elastic=0)
    out = aug(subject, rng(0))
    np.testing.assert_array_equal(out.labels, subject.labels)
    np.testing.assert_allclose(out.images["a"], subject.images["a"], atol=1e-6)
    np.testing.assert_array_equal(out.brain_mask, subject.brain_mask)


def test_spatial_rotation_90_moves_labels_and_images_together():
    subject, lut = make_subject((11, 11))
    aug = A.SpatialAugmentation(rotation=(90, 90), p_affine=0, p_elastic=0)
    out = aug(subject, rng(0))
    candidates = [np.rot90(subject.labels, k) for k in (1, 3)]
    assert any(np.array_equal(out.labels, c) for c in candidates)
    np.testing.assert_allclose(out.images["a"], lut[out.labels], atol=1e-5)
    np.testing.assert_array_equal(out.brain_mask, out.labels > 0)


@pytest.mark.parametrize("shape", [(20, 18), (10, 12, 9)])
def test_spatial_default_is_strong_random_and_seeded(shape):
    subject, lut = make_subject(shape)
    aug = A.SpatialAugmentation()
    out1, out2 = aug(subject, rng(1)), aug(subject, rng(1))
    np.testing.assert_array_equal(out1.labels, out2.labels)
    out3 = aug(subject, rng(2))
    assert not np.array_equal(out1.labels, out3.labels)  # subjects are warped differently
    for out in (out1, out3):
        assert out.labels.dtype == np.int32 and out.shape == shape
        assert set(np.unique(out.labels)) <= set(np.unique(subject.labels))
        assert out.images["a"].dtype == np.float32
        assert 0 <= out.images["a"].min() and out.images["a"].max() <= 1
        assert out.brain_mask.dtype == bool
        changed = np.mean(out.labels != subject.labels)
        assert changed > 0.05
    json.dumps(aug.get_config())
    assert A.SpatialAugmentation(**aug.get_config()).get_config() == aug.get_config()


def test_spatial_translation_shifts_by_the_expected_amount():
    subject, _ = make_subject((20, 20))
    aug = A.SpatialAugmentation(p_rotation=0, p_elastic=0, scale=1.0, shear=0.0,
                                translation=(0.1, 0.1))
    out = aug(subject, rng(0))
    # output voxel o samples input o + 2: content moves 2 voxels towards lower indices
    np.testing.assert_array_equal(out.labels[:-2, :-2], subject.labels[2:, 2:])


def test_flip_swaps_left_right_labels():
    labels = np.zeros((6, 8), np.int32)
    labels[:, :4], labels[:, 4:] = 17, 53  # left hippocampus left, right hippocampus right
    image = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (6, 1))
    subject = Subject("s", labels, {"a": image, "b": image}, labels > 0)
    aug = A.SpatialAugmentation(p_rotation=0, p_affine=0, p_elastic=0, p_flip=1.0, flip_axis=1)
    out = aug(subject, rng(0))
    np.testing.assert_allclose(out.images["a"], image[:, ::-1], atol=1e-6)
    np.testing.assert_array_equal(out.labels, labels)  # the "left" label stays on the left
    no_swap = A.SpatialAugmentation(p_rotation=0, p_affine=0, p_elastic=0, p_flip=1.0,
                                    flip_axis=1, swap_lr_labels=False)
    np.testing.assert_array_equal(no_swap(subject, rng(0)).labels, labels[:, ::-1])
    assert A.SpatialAugmentation().flip_axis is None  # no flips unless asked


def test_neuroverse3d_paper_probabilities():
    aug = A.neuroverse3d_spatial_augmentation(paper_probabilities=True)
    assert aug.p_affine == aug.p_rotation == aug.p_elastic == aug.p_flip == 0.05
    strong = A.neuroverse3d_spatial_augmentation()
    assert strong.p_affine == 1.0 and strong.flip_axis == 0 and strong.swap_lr_labels


# ----------------------------------------------------------------------------------------------
# task overlap


@pytest.mark.parametrize("name", A.TaskOverlap.DEGRADATIONS)
def test_task_overlap_each_degradation(name):
    x = smooth_image((32, 32))
    x = np.concatenate([x, np.zeros_like(x)], axis=-1)  # a zero-padded channel
    overlap = A.TaskOverlap(p=1.0, degradations=[name])
    out = overlap(x, rng(0))
    assert out.shape == x.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    assert np.all(out[..., 1] == 0)
    np.testing.assert_array_equal(overlap(x, rng(0)), out)
    if name != "inpainting":
        assert not np.allclose(out[..., 0], x[..., 0], atol=1e-3)
        return
    # blocky holes may miss a small image; over seeds some must appear, the rest is untouched
    fractions = []
    for seed in range(10):
        out = overlap(x, rng(seed))
        holes = (out[..., 0] == 0) & (x[..., 0] != 0)
        np.testing.assert_array_equal(out[..., 0][~holes], x[..., 0][~holes])
        fractions.append(holes.mean())
    assert 0 < np.mean(fractions) < 0.6 and max(fractions) > 0.02


def test_task_overlap_probability_and_super_resolution_of_constant():
    x = smooth_image((16, 16))
    np.testing.assert_array_equal(A.TaskOverlap(p=0.0)(x, rng(0)), x)
    hits = [not np.array_equal(A.neuroverse3d_task_overlap()(x, rng(s)), x) for s in range(400)]
    assert 0.12 < np.mean(hits) < 0.35  # 1 - 0.95**5 = 0.23
    const = np.full((9, 9, 9, 1), 0.4, np.float32)
    out = A.TaskOverlap(p=1.0, degradations=["super_resolution"])(const, rng(0))
    np.testing.assert_allclose(out, const, atol=1e-6)
    with pytest.raises(ValueError, match="unknown degradations"):
        A.TaskOverlap(degradations=["blur"])
