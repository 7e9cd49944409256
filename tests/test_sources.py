"""Label-map sources: NIfTI folders (tiny files in tmp_path), MNI152 default, procedural maps."""

import os
import socket

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from generators.sources import (
    LabelMapFolder,
    MNISubjects,
    ProceduralLabelMaps,
    brain_mask_of,
    split_indices,
)

SHARED = "/work/shared/data/synthseg_label_maps"


def write(path, data, affine=None, zooms=None):
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    if zooms is not None:
        img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return str(path)


def head(shape=(12, 10, 8), seed=0):
    """A tiny nested head: scalp 258 > skull 165 > brain (3 around 2) with a ventricle 4."""
    labels = np.zeros(shape, np.int16)
    centre = (np.asarray(shape) - 1) / 2
    r = np.sqrt(sum(((g - c) / (s / 2)) ** 2 for g, c, s in zip(
        np.indices(shape), centre, shape)))
    labels[r < 1.0] = 258
    labels[r < 0.8] = 165
    labels[r < 0.65] = 3
    labels[r < 0.45] = 2
    labels[r < 0.2] = 4
    return labels


@pytest.fixture()
def folder(tmp_path):
    for i in range(3):
        write(tmp_path / f"sub{i}.nii.gz", head())
    return tmp_path


# folders -----------------------------------------------------------------------------------------


def test_a_list_may_mix_folders_and_files(folder, tmp_path_factory):
    other = tmp_path_factory.mktemp("more")
    write(other / "extra.nii.gz", head())
    source = LabelMapFolder([folder, str(other / "extra.nii.gz")])
    assert source.names == ["sub0", "sub1", "sub2", "extra"]
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ValueError, match="holds no NIfTI"):
        LabelMapFolder([folder, empty])


def test_folder_loads_sorted_names_and_samples(folder):
    source = LabelMapFolder(folder)
    assert source.names == ["sub0", "sub1", "sub2"] and len(source) == 3
    volume = source.load(1)
    assert set(np.unique(volume.labels).tolist()) == {0, 2, 3, 4, 165, 258}
    labels, images = source.sample(0, (16, 16, 16))
    assert labels.shape == (16, 16, 16) and labels.dtype == np.int32 and images == {}
    assert set(np.unique(labels).tolist()) == {0, 2, 3, 4, 165, 258}
    for axis in range(3):
        labels, _ = source.sample(0, (14, 14), slice_axis=axis, slice_jitter=0)
        assert labels.shape == (14, 14) and {2, 3, 258} <= set(np.unique(labels).tolist())


def test_list_of_paths_and_split(folder):
    paths = sorted(str(p) for p in folder.iterdir())
    source = LabelMapFolder(paths[:2])
    assert source.names == ["sub0", "sub1"]
    big = LabelMapFolder([paths[0]] * 20)
    train, val = big.split(4, seed=3)
    assert len(train) == 16 and len(val) == 4
    assert split_indices(20, 4, seed=3) == (train.indices, val.indices)
    assert split_indices(20, 4, seed=3) != split_indices(20, 4, seed=4)
    assert sorted(train.indices + val.indices) == list(range(20))
    assert val.sample(0, (8, 8))[0].shape == (8, 8)
    with pytest.raises(ValueError, match="n_holdout"):
        split_indices(20, 20)


def test_resampling_is_nearest_on_voxel_centres(tmp_path):
    data = np.arange(8 * 6 * 4, dtype=np.int32).reshape(8, 6, 4) + 1
    source = LabelMapFolder([write(tmp_path / "a.nii", data)])
    half = source.resampled(0, 2.0)
    assert half.spacing == (2.0, 2.0, 2.0)
    # output voxel j of a 2 mm grid has its centre at input coordinate 2j + 0.5 -> voxel 2j + 1
    np.testing.assert_array_equal(half.labels, data[1::2, 1::2, 1::2])


def test_orientation_is_ras(tmp_path):
    data = np.zeros((6, 6, 6), np.int16)
    data[0, 2, 3] = 7  # first voxel along the first axis
    data[5, 2, 3] = 9  # last voxel along the first axis
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])  # the first axis points left (L instead of R)
    labels = LabelMapFolder([write(tmp_path / "f.nii.gz", data, flip)]).load(0).labels
    # after reorientation to RAS+ the order along the first axis is reversed
    (i7,), (i9,) = (np.nonzero(labels == v)[0] for v in (7, 9))
    assert i9 < i7
    same = LabelMapFolder([write(tmp_path / "g.nii.gz", data)]).load(0).labels
    (j7,), (j9,) = (np.nonzero(same == v)[0] for v in (7, 9))
    assert j7 < j9


def test_real_images_are_paired_aligned_and_normalised(tmp_path):
    labels = head()
    lab = write(tmp_path / "lab.nii.gz", labels)
    image = labels.astype(np.float32) * 3.0 + 10.0 * (labels > 0)
    img = write(tmp_path / "img.nii.gz", image)
    source = LabelMapFolder([lab], images={"t1": [img], "t2": [img]})
    lab_s, imgs = source.sample(0, (12, 10, 8), voxel_size=1.0)
    assert set(imgs) == {"real", "real:t1", "real:t2"}
    real = imgs["real"]
    assert real.dtype == np.float32 and real.min() >= 0 and real.max() <= 1
    # aligned: the image is a function of the label on the same voxels
    for value in np.unique(lab_s):
        assert np.ptp(real[lab_s == value]) < 1e-6


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty.*no NIfTI"):
        LabelMapFolder(empty)
    flat = write(tmp_path / "flat.nii.gz", np.zeros((5, 5), np.int16))
    with pytest.raises(ValueError, match=r"flat\.nii\.gz.*3D.*\(5, 5\)"):
        LabelMapFolder([flat])
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read label map.*bad.nii.gz"):
        LabelMapFolder([str(bad)])
    with pytest.raises(ValueError, match="does not exist"):
        LabelMapFolder([str(tmp_path / "missing.nii")])
    float_map = write(tmp_path / "float.nii.gz", np.full((4, 4, 4), 0.5, np.float32))
    with pytest.raises(ValueError, match="non-integer"):
        LabelMapFolder([float_map]).load(0)
    good = write(tmp_path / "good.nii.gz", head())
    other = write(tmp_path / "other.nii.gz", np.zeros((5, 5, 5), np.float32))
    with pytest.raises(ValueError, match="other.nii.gz.*shape"):
        LabelMapFolder([good], images=[other])
    with pytest.raises(ValueError, match="2 files but there are 1"):
        LabelMapFolder([good], images=[good, good])
    source = LabelMapFolder([good])
    with pytest.raises(IndexError):
        source.load(1)
    with pytest.raises(ValueError, match="shape"):
        source.sample(0, (8,))
    with pytest.raises(ValueError, match="slice_axis"):
        source.sample(0, (8, 8), slice_axis=3)
    with pytest.raises(ValueError, match="voxel_size"):
        source.sample(0, (8, 8, 8), voxel_size=-1.0)


def test_float_label_maps_with_integer_values_are_accepted(tmp_path):
    path = write(tmp_path / "f.nii.gz", head().astype(np.float32))
    assert LabelMapFolder([path]).load(0).labels.max() == 258


# procedural and MNI ----------------------------------------------------------------------------


def test_procedural_maps_nested_and_seeded():
    a = ProceduralLabelMaps(2, (32, 32, 32), seed=5)
    b = ProceduralLabelMaps(2, (32, 32, 32), seed=5)
    np.testing.assert_array_equal(a.load(1).labels, b.load(1).labels)
    assert not np.array_equal(a.load(0).labels, a.load(1).labels)
    labels = a.load(0).labels
    present = set(np.unique(labels).tolist())
    assert {0, 2, 3, 4, 24, 41, 42, 43, 165, 258} <= present
    assert len(present) >= 12
    brain = brain_mask_of(labels)
    # the head layers separate the brain from the background everywhere
    assert not (ndimage.binary_dilation(brain) & (labels == 0)).any()
    with pytest.raises(ValueError, match="shape"):
        ProceduralLabelMaps(2, (32, 32))


def test_mni_subjects_offline_seeded_and_deformed(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    source = MNISubjects(2, seed=1)
    volume = source.load(0)
    present = set(np.unique(volume.labels).tolist())
    assert {0, 2, 3, 4, 7, 8, 10, 16, 24, 41, 42, 43, 46, 47, 49, 165, 258} <= present
    assert volume.spacing == (2.0, 2.0, 2.0)
    again = MNISubjects(2, seed=1).load(0)
    np.testing.assert_array_equal(volume.labels, again.labels)
    other = source.load(1)
    assert (volume.labels != other.labels).mean() > 0.01
    labels, _ = source.sample(0, (32, 32), slice_axis=1, slice_jitter=0)
    assert {165, 258} <= set(np.unique(labels).tolist())  # a whole head in the slice
    assert brain_mask_of(labels).mean() > 0.2
    labels, images = MNISubjects(1, seed=1, real_image=True).sample(0, (32, 32), slice_axis=1)
    real = images["real"]  # the deformed template: a brain-only T1 on the labels' grid
    assert real.min() >= 0 and real.max() <= 1 and real[labels == 0].max() == 0
    assert np.median(real[np.isin(labels, [2, 41])]) > np.median(real[np.isin(labels, [3, 42])])


# the SynthSeg maps in /work/shared ---------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="needs /work/shared/data")
def test_synthseg_maps():
    source = LabelMapFolder(SHARED)
    assert len(source) == 20 and source.names[0] == "training_seg_01"
    train, val = source.split(4, seed=0)
    assert len(train) == 16 and not set(train.names) & set(val.names)
    volume = source.load(0)
    assert volume.spacing == (1.0, 1.0, 1.0)
    labels, _ = source.sample(0, (64, 64), slice_axis=1, slice_jitter=0)
    present = set(np.unique(labels).tolist())
    assert {2, 3, 41, 42} <= present
    assert any(v >= 500 for v in present)  # extra-cerebral labels: skull stripping is possible
    assert brain_mask_of(labels).any() and (~brain_mask_of(labels) & (labels > 0)).any()
