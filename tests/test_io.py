"""NIfTI helpers on tiny files in tmp_path: round trips, codes, errors, atomic writes, grids."""

import os

import nibabel as nib
import numpy as np
import pytest

from neuroicl_tf import io as nio

RNG = np.random.default_rng(0)


def _oblique_lps_affine():
    # LPS-ish, anisotropic voxels, a small rotation and an offset: a realistic scanner affine.
    c, s = np.cos(0.1), np.sin(0.1)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-1.2, -1.0, 2.0])
    affine[:3, 3] = [40.0, 25.0, -30.0]
    return affine


def _write(path, data, affine, qcode=1, scode=1, scale=None):
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=qcode)
    img.set_sform(affine, code=scode)
    if scale is not None:
        img.header.set_slope_inter(*scale)
    nib.save(img, str(path))
    return path


def test_load_returns_array_affine_header(tmp_path):
    data = RNG.random((5, 6, 7)).astype(np.float32)
    affine = _oblique_lps_affine()
    path = _write(tmp_path / "a.nii.gz", data, affine, qcode=1, scode=4)
    array, aff, hdr = nio.load_nifti(path)
    np.testing.assert_array_equal(array, data)
    np.testing.assert_allclose(aff, affine, atol=1e-5)
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 4)
    assert nio.load_nifti(path, dtype=np.float64)[0].dtype == np.float64


def test_load_applies_scaling(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = _write(tmp_path / "s.nii", data, np.eye(4), scale=(0.5, 10.0))
    array, _, _ = nio.load_nifti(path)
    np.testing.assert_allclose(array, data * 0.5 + 10.0)


def test_save_round_trip_keeps_grid_and_codes(tmp_path):
    # An int16 input with scaling; the output is float32 in [0, 1] (a model output).
    affine = _oblique_lps_affine()
    src = _write(tmp_path / "in.nii.gz", np.ones((4, 5, 6), np.int16), affine, qcode=1,
                 scode=4, scale=(2.0, 0.0))
    _, aff, hdr = nio.load_nifti(src)
    out = RNG.random((4, 5, 6)).astype(np.float32)
    dst = tmp_path / "out.nii.gz"
    nio.save_nifti(dst, out, aff, hdr)
    back, aff2, hdr2 = nio.load_nifti(dst)
    np.testing.assert_array_equal(back, out)  # no int16 truncation, no stale scaling
    assert back.dtype == np.float32
    np.testing.assert_array_equal(aff2, aff)
    assert (int(hdr2["qform_code"]), int(hdr2["sform_code"])) == (1, 4)
    np.testing.assert_allclose(hdr2.get_qform(), hdr.get_qform(), atol=1e-6)
    np.testing.assert_allclose(hdr2.get_sform(), hdr.get_sform(), atol=1e-6)
    assert hdr2.get_zooms() == pytest.approx(hdr.get_zooms(), abs=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["in.nii.gz", "out.nii.gz"]  # no temporary left


def test_save_converts_unstorable_dtypes(tmp_path):
    nio.save_nifti(tmp_path / "b.nii", np.ones((2, 2, 2), bool), np.eye(4))
    assert nio.load_nifti(tmp_path / "b.nii")[0].dtype == np.uint8
    nio.save_nifti(tmp_path / "i.nii", np.arange(8, dtype=np.int64).reshape(2, 2, 2), np.eye(4))
    arr = nio.load_nifti(tmp_path / "i.nii")[0]
    assert arr.dtype == np.int32 and arr[1, 1, 1] == 7
    with pytest.raises(ValueError, match="outside int32"):
        nio.save_nifti(tmp_path / "j.nii", np.full((2, 2, 2), 2**40), np.eye(4))


def test_save_zero_codes_keep_a_changed_affine(tmp_path):
    hdr = nib.Nifti1Header()  # qform and sform codes 0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [5, 6, 7]
    nio.save_nifti(tmp_path / "z.nii", np.zeros((2, 3, 4), np.float32), affine, hdr)
    _, aff, hdr2 = nio.load_nifti(tmp_path / "z.nii")
    np.testing.assert_allclose(aff, affine)
    assert int(hdr2["sform_code"]) == 2


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    dst = tmp_path / "out.nii.gz"
    nio.save_nifti(dst, np.zeros((2, 2, 2), np.float32), np.eye(4))
    before = dst.read_bytes()

    def broken_save(img, filename):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nio.nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        nio.save_nifti(dst, np.ones((2, 2, 2), np.float32), np.eye(4))
    assert dst.read_bytes() == before  # the old file is untouched
    assert os.listdir(tmp_path) == ["out.nii.gz"]  # and the partial temporary is gone


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such NIfTI file"):
        nio.load_nifti(tmp_path / "missing.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="not a readable NIfTI image"):
        nio.load_nifti(junk)
    mgh = tmp_path / "x.mgz"
    nib.save(nib.MGHImage(np.zeros((2, 2, 2), np.float32), np.eye(4)), str(mgh))
    with pytest.raises(ValueError, match="MGHImage, not a NIfTI image"):
        nio.load_nifti(mgh)
    four_d = _write(tmp_path / "t.nii", np.zeros((3, 3, 3, 2), np.float32), np.eye(4))
    with pytest.raises(ValueError, match=r"must be a 3D image; got shape \(3, 3, 3, 2\)"):
        nio.load_nifti(four_d, ndim=3)
    assert nio.load_nifti(four_d)[0].shape == (3, 3, 3, 2)
    single = _write(tmp_path / "u.nii", np.zeros((3, 3, 3, 1), np.float32), np.eye(4))
    assert nio.load_nifti(single, ndim=3)[0].shape == (3, 3, 3)
    bad = np.zeros((3, 3, 3), np.float32)
    bad[1, 2, 0] = np.nan
    bad[2, 2, 2] = np.inf
    nanfile = _write(tmp_path / "n.nii", bad, np.eye(4))
    with pytest.raises(ValueError, match=r"2 non-finite voxels \(1 NaN, 1 Inf\).*\(1, 2, 0\)"):
        nio.load_nifti(nanfile)
    assert np.isnan(nio.load_nifti(nanfile, allow_nonfinite=True)[0][1, 2, 0])


def test_save_errors(tmp_path):
    with pytest.raises(ValueError, match="must end in .nii or .nii.gz"):
        nio.save_nifti(tmp_path / "x.png", np.zeros((2, 2, 2)), np.eye(4))
    with pytest.raises(FileNotFoundError, match="output folder does not exist"):
        nio.save_nifti(tmp_path / "no" / "x.nii", np.zeros((2, 2, 2)), np.eye(4))
    with pytest.raises(ValueError, match=r"finite \(4, 4\) matrix"):
        nio.save_nifti(tmp_path / "x.nii", np.zeros((2, 2, 2)), np.eye(3))


def test_normalize_intensity():
    x = np.arange(101, dtype=np.float64)  # percentiles 2 and 98 are 2 and 98 exactly
    y = nio.normalize_intensity(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[:3], 0.0)
    np.testing.assert_allclose(y[98:], 1.0)
    np.testing.assert_allclose(y[50], 48 / 96, rtol=1e-6)
    np.testing.assert_allclose(nio.normalize_intensity(x, None, None), x / 100, rtol=1e-6)
    np.testing.assert_array_equal(nio.normalize_intensity(np.full((2, 2, 2), 7.0)), 0.0)
    tiny = np.array([0.0, 5e-9])  # range < 1e-8 is replaced by 1e-8
    np.testing.assert_allclose(nio.normalize_intensity(tiny, None, None), [0.0, 0.5])
    with pytest.raises(ValueError, match="0 <= lo < hi <= 100"):
        nio.normalize_intensity(x, 98, 2)
    with pytest.raises(ValueError, match="non-finite"):
        nio.normalize_intensity(np.array([0.0, np.nan]))


def test_reorient_round_trip_is_exact():
    affine = _oblique_lps_affine()
    data = RNG.random((4, 5, 6, 2)).astype(np.float32)  # with a channel axis
    ras, aff_ras, ornt = nio.reorient_to_ras(data, affine)
    assert nib.aff2axcodes(aff_ras) == ("R", "A", "S")
    # The same world point holds the same value.
    vox = np.array([1, 3, 2])
    world = affine @ np.append(vox, 1)
    vox_ras = np.rint(np.linalg.solve(aff_ras, world)[:3]).astype(int)
    np.testing.assert_array_equal(ras[tuple(vox_ras)], data[tuple(vox)])
    np.testing.assert_array_equal(nio.reorient_from_ras(ras, ornt), data)
    # A PSL-ordered image: axes permuted as well as flipped.
    perm = np.zeros((4, 4))
    perm[1, 0], perm[2, 1], perm[0, 2], perm[3, 3] = -1.0, 1.0, -1.0, 1.0
    ras2, aff2, ornt2 = nio.reorient_to_ras(data, perm)
    assert ras2.shape[:3] == (6, 4, 5) and nib.aff2axcodes(aff2) == ("R", "A", "S")
    np.testing.assert_array_equal(nio.reorient_from_ras(ras2, ornt2), data)


def test_resample_round_trip_on_shared_voxel_centres():
    affine = _oblique_lps_affine()
    data = RNG.random((6, 7, 8)).astype(np.float32)
    # Target: flipped first axis, integer shift of 2 voxels, and 2 extra voxels of padding.
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, 5.0 + 2.0
    flip[1, 3] = -1.0
    target_affine = affine @ flip
    shape = (10, 9, 8)
    moved = nio.resample_to(data, affine, shape, target_affine, order=0)
    assert moved.shape == shape and moved.dtype == np.float32
    back = nio.resample_to(moved, target_affine, data.shape, affine, order=0)
    # Every source voxel landed inside the target grid, so the round trip is exact.
    np.testing.assert_array_equal(back, data)
    # Linear interpolation on the same grid pair is exact as well (integer offsets).
    np.testing.assert_allclose(
        nio.resample_to(nio.resample_to(data, affine, shape, target_affine, 1), target_affine,
                        data.shape, affine, 1), data, atol=1e-6)
    # Outside voxels get cval.
    assert nio.resample_to(data, affine, shape, target_affine, 0, cval=-1.0).min() == -1.0


def test_resample_half_resolution_and_channels():
    data = np.zeros((8, 8, 8, 2), np.float32)
    data[..., 0] = np.arange(8)[:, None, None]  # linear ramp along x
    data[..., 1] = 1.0
    affine = np.eye(4)
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    coarse[:3, 3] = 0.5  # centre of coarse voxel i is at 2 i + 0.5
    out = nio.resample_to(data, affine, (4, 4, 4), coarse, order=1)
    assert out.shape == (4, 4, 4, 2)
    np.testing.assert_allclose(out[:, 1, 1, 0], [0.5, 2.5, 4.5, 6.5], atol=1e-6)
    np.testing.assert_allclose(out[1:3, 1:3, 1:3, 1], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="order must be"):
        nio.resample_to(data, affine, (4, 4, 4), coarse, order=7)


def test_full_pipeline_puts_output_back_on_input_grid(tmp_path):
    affine = _oblique_lps_affine()
    src = _write(tmp_path / "t1.nii.gz", (RNG.random((9, 10, 7)) * 1000).astype(np.int16),
                 affine, qcode=1, scode=1)
    image, aff, hdr = nio.load_nifti(src, dtype=np.float32, ndim=3)
    grid = nio.centered_grid(image.shape, aff, (8, 8, 8), voxel_size=1.5)
    assert nib.aff2axcodes(grid) == ("R", "A", "S")
    # The grid centre is the image centre in world coordinates.
    np.testing.assert_allclose(grid @ [3.5, 3.5, 3.5, 1], aff @ [4, 4.5, 3, 1])
    model_input = nio.normalize_intensity(nio.resample_to(image, aff, (8, 8, 8), grid))
    assert model_input.shape == (8, 8, 8) and 0 <= model_input.min() <= model_input.max() <= 1
    output = (model_input > 0.5).astype(np.float32)  # stand-in for a model
    back = nio.resample_to(output, grid, image.shape, aff, order=0)
    nio.save_nifti(tmp_path / "seg.nii.gz", back, aff, hdr)
    out_img = nib.load(str(tmp_path / "seg.nii.gz"))
    in_img = nib.load(str(src))
    assert out_img.shape == in_img.shape
    np.testing.assert_array_equal(out_img.affine, in_img.affine)
    np.testing.assert_allclose(out_img.header.get_qform(), in_img.header.get_qform(), atol=1e-6)
    np.testing.assert_allclose(out_img.header.get_sform(), in_img.header.get_sform(), atol=1e-6)
    assert out_img.header["qform_code"] == in_img.header["qform_code"]
    assert out_img.header["sform_code"] == in_img.header["sform_code"]
