"""Tests of the reconstruction tasks: each output relates to its input as the task says."""

import json

import numpy as np
import pytest
from scipy import ndimage

from generators.subject import Subject
from generators.tasks import TASKS, get_task
from generators.tasks import reconstruction as rec


def make_subject(shape, seed=0, name="s"):
    """A small hand-made subject: smooth blobs as labels and two contrasts in [0, 1]."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), 2.0)
    field = (field - field.min()) / (field.max() - field.min())
    labels = np.digitize(field, [0.3, 0.5, 0.7]).astype(np.int32)
    a = (0.2 + 0.25 * labels + 0.05 * rng.random(shape)).astype(np.float32)
    a = np.clip(a, 0, 1)
    b = (1.0 - a).astype(np.float32)
    return Subject(name=name, labels=labels, images={"a": a, "b": b}, brain_mask=labels > 0)


def run_task(name, shape, seed=0, n_subjects=3, **params):
    task = get_task(name, **params)
    subjects = [make_subject(shape, seed + i, name=f"s{i}") for i in range(n_subjects)]
    rng = np.random.default_rng(seed)
    episode = task.sample_episode(rng, subjects)
    pairs = [task.make_pair(s, episode, rng) for s in subjects]
    return task, subjects, episode, pairs


@pytest.mark.parametrize("name", ["slices_to_volume", "kspace_undersampling", "motion_correction"])
def test_registered_shapes_ranges_and_config(name):
    assert name in TASKS
    task, subjects, episode, pairs = run_task(name, (12, 10, 8))
    assert task.kind == 1
    json.dumps(episode)
    config = json.loads(json.dumps(task.get_config()))
    assert type(task)(**config).get_config() == config
    for subject, (x, y) in zip(subjects, pairs):
        for v in (x, y):
            assert v.dtype == np.float32 and v.shape == (12, 10, 8, 1)
            assert v.min() >= 0.0 and v.max() <= 1.0
        np.testing.assert_array_equal(y[..., 0], subject.images["a"])


@pytest.mark.parametrize("name", ["kspace_undersampling", "motion_correction"])
def test_2d_and_seeding(name):
    _, _, ep1, pairs1 = run_task(name, (16, 14), seed=3)
    _, _, ep2, pairs2 = run_task(name, (16, 14), seed=3)
    _, _, _, pairs3 = run_task(name, (16, 14), seed=4)
    assert ep1 == ep2
    for (x1, _), (x2, _) in zip(pairs1, pairs2):
        np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(pairs1[0][0], pairs3[0][0])
    assert pairs1[0][0].shape == (16, 14, 1)


def test_slices_to_volume_keeps_exactly_three_central_slices():
    _, subjects, _, pairs = run_task("slices_to_volume", (9, 8, 7))
    x, y = pairs[0]
    x, y = x[..., 0], y[..., 0]
    np.testing.assert_array_equal(x[4], y[4])
    np.testing.assert_array_equal(x[:, 4], y[:, 4])
    np.testing.assert_array_equal(x[:, :, 3], y[:, :, 3])
    keep = np.zeros(x.shape, bool)
    keep[4], keep[:, 4], keep[:, :, 3] = True, True, True
    assert np.all(x[~keep] == 0)
    assert np.all(y[~keep] > 0)  # so the zeros above are the task's doing


def test_slices_to_volume_offsets_shared_and_2d_rejected():
    task = get_task("slices_to_volume", max_offset=2)
    subjects = [make_subject((10, 10, 10), i) for i in range(2)]
    episode = task.sample_episode(np.random.default_rng(1), subjects)
    assert all(-2 <= o <= 2 for o in episode["offsets"])
    for subject in subjects:
        x, y = task.make_pair(subject, episode, np.random.default_rng(0))
        c = 5 + episode["offsets"][0]
        np.testing.assert_array_equal(x[c], y[c])
    with pytest.raises(ValueError, match="3D"):
        task.sample_episode(np.random.default_rng(0), [make_subject((10, 10))])
    with pytest.raises(ValueError, match="3D"):
        task.make_pair(make_subject((10, 10)), {"offsets": [0, 0, 0]}, np.random.default_rng(0))


def test_cartesian_mask_structure():
    rng = np.random.default_rng(0)
    mask = rec.cartesian_mask((64, 32), [0], acceleration=4, center_fraction=0.08, rng=rng)
    assert mask.dtype == bool and mask[0, 0]
    # constant along the read-out axis, so whole lines are kept or dropped
    assert np.all(mask == mask[:, :1])
    k = np.abs(np.fft.fftfreq(64) * 64)
    assert np.all(mask[k <= 0.08 * 64 / 2, 0])
    fractions = [
        rec.cartesian_mask((256, 4), [0], 4, 0.08, np.random.default_rng(i))[:, 0].mean()
        for i in range(20)
    ]
    assert abs(np.mean(fractions) - 0.25) < 0.03
    full = rec.cartesian_mask((8, 6, 4), [0, 2], acceleration=1, center_fraction=0.0, rng=rng)
    assert full.all()
    with pytest.raises(ValueError, match="acceleration"):
        rec.cartesian_mask((8, 8), [0], 0.5, 0.1, rng)


def test_fully_sampled_kspace_gives_back_the_image():
    task, subjects, _, pairs = run_task("kspace_undersampling", (16, 12), acceleration=1.0,
                                        center_fraction=0.0)
    for subject, (x, _) in zip(subjects, pairs):
        np.testing.assert_allclose(x[..., 0], subject.images["a"], atol=1e-5)


def test_kept_kspace_lines_of_input_equal_those_of_output():
    subject = make_subject((16, 12, 10))
    image = subject.images["a"]
    mask = rec.cartesian_mask(image.shape, [1, 2], 3.0, 0.1, np.random.default_rng(5))
    recon = rec.zero_filled(image, mask)
    k_in, k_out = np.fft.fftn(recon), np.fft.fftn(image.astype(np.float64))
    np.testing.assert_allclose(k_in[mask], k_out[mask], atol=1e-8)
    np.testing.assert_allclose(k_in[~mask], 0, atol=1e-8)
    assert 0 < mask.mean() < 0.6
    # and the task input is the (clipped) magnitude of exactly this reconstruction
    task = get_task("kspace_undersampling")
    episode = {"acceleration": 3.0, "center_fraction": 0.1, "phase_axes": [1, 2],
               "mask_seed": None}
    x, _ = task.make_pair(subject, episode, np.random.default_rng(5))
    np.testing.assert_allclose(x[..., 0], np.clip(np.abs(recon), 0, 1), atol=1e-6)
    assert np.abs(x[..., 0] - image).mean() > 1e-3


def test_same_mask_option_shares_the_mask():
    task = get_task("kspace_undersampling", same_mask=True, acceleration=4.0)
    subject = make_subject((16, 16))
    episode = task.sample_episode(np.random.default_rng(0), [subject])
    x1, _ = task.make_pair(subject, episode, np.random.default_rng(1))
    x2, _ = task.make_pair(subject, episode, np.random.default_rng(2))
    np.testing.assert_array_equal(x1, x2)
    task = get_task("kspace_undersampling", same_mask=False, acceleration=4.0)
    episode = task.sample_episode(np.random.default_rng(0), [subject])
    x1, _ = task.make_pair(subject, episode, np.random.default_rng(1))
    x2, _ = task.make_pair(subject, episode, np.random.default_rng(2))
    assert not np.array_equal(x1, x2)


def test_no_motion_gives_back_the_image():
    for shape in [(16, 12), (10, 8, 6)]:
        task, subjects, _, pairs = run_task("motion_correction", shape, max_rotation=0.0,
                                            max_translation=0.0)
        for subject, (x, _) in zip(subjects, pairs):
            np.testing.assert_allclose(x[..., 0], subject.images["a"], atol=1e-5)


def test_motion_lines_come_from_the_moved_images():
    image = make_subject((20, 16)).images["a"].astype(np.float64)
    schedule = rec.shot_schedule(16, 3, "interleaved")
    assert set(schedule) == {0, 1, 2}
    reference = int(schedule[0])  # the shot that acquires DC
    assert reference == 2  # DC is line 8 of 16 in centred order, 8 mod 3 = 2
    transforms = [((4.0,), (1.0, -0.5)), ((-3.0,), (0.0, 1.5)), ((0.0,), (0.0, 0.0))]
    recon = rec.motion_kspace(image, transforms, schedule, axis=1)
    k = np.fft.fftn(recon)
    for shot, (angles, shift) in enumerate(transforms):
        moved = rec.rigid_transform(image, angles, shift)
        lines = schedule == shot
        np.testing.assert_allclose(k[:, lines], np.fft.fftn(moved)[:, lines], atol=1e-8)
    # the reference shot (the one with DC) is the unmoved image
    np.testing.assert_allclose(k[:, schedule == reference],
                               np.fft.fftn(image)[:, schedule == reference], atol=1e-8)
    assert np.abs(np.abs(recon) - image).mean() > 1e-3


def test_shot_schedule_orderings():
    seq = np.fft.fftshift(rec.shot_schedule(8, 2, "sequential"))
    np.testing.assert_array_equal(seq, [0, 0, 0, 0, 1, 1, 1, 1])
    inter = np.fft.fftshift(rec.shot_schedule(6, 3, "interleaved"))
    np.testing.assert_array_equal(inter, [0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="ordering"):
        rec.shot_schedule(8, 2, "spiral")


def test_rigid_transform_translation_and_identity():
    image = np.zeros((11, 11))
    image[5, 5] = 1.0
    moved = rec.rigid_transform(image, (0.0,), (2.0, -1.0))
    assert moved[7, 4] == pytest.approx(1.0)
    np.testing.assert_array_equal(rec.rigid_transform(image, (0.0,), (0.0, 0.0)), image)
    rotated = rec.rigid_transform(np.pad(np.ones((3, 3)), 4), (90.0,), (0.0, 0.0))
    np.testing.assert_allclose(rotated, np.pad(np.ones((3, 3)), 4), atol=1e-9)


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="acceleration"):
        get_task("kspace_undersampling", acceleration=(4, 2))
    with pytest.raises(TypeError, match="n_shots"):
        get_task("motion_correction", n_shots=2.5)
    with pytest.raises(ValueError, match="orderings"):
        get_task("motion_correction", orderings=("radial",))
    with pytest.raises(ValueError, match="max_offset"):
        get_task("slices_to_volume", max_offset=-1)
