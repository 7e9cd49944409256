"""NIfTI input/output, intensity normalisation and grid helpers.

The one pair of NIfTI helpers the package uses (VoxelMorph style, always carrying the affine):
:func:`load_nifti` reads through ``img.dataobj`` and returns ``(array, affine, header)``;
:func:`save_nifti` writes to a temporary file next to the destination and renames it, so a crash
never leaves a half-written output, and keeps the header's qform/sform codes.

Grid helpers put an image on the model's grid and the model's output back on the image's grid:
:func:`reorient_to_ras` / :func:`reorient_from_ras` (exact: axis permutations and flips only) and
:func:`resample_to` (any affine; calling it with the grids swapped is the inverse mapping, exact
for voxels that map onto voxels with ``order=0``). :func:`centered_grid` builds a RAS target grid
of a given shape and voxel size centred on an image's field of view.

No TensorFlow here: this module only needs numpy, scipy and nibabel.
"""

import os
import tempfile

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

__all__ = [
    "load_nifti",
    "save_nifti",
    "check_finite",
    "normalize_intensity",
    "reorient_to_ras",
    "reorient_from_ras",
    "resample_to",
    "centered_grid",
]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _check_suffix(path, argument):
    name = os.fspath(path)
    if not name.endswith(_NIFTI_SUFFIXES):
        raise ValueError(f"{argument} must end in .nii or .nii.gz; got {name!r}")
    return name


def check_finite(array, what="array"):
    """Raise if ``array`` holds NaN or Inf values.

    Args:
        array: any numeric array.
        what: how to name the array in the error message (e.g. the file name).

    Returns:
        ``array``, unchanged.

    Raises:
        ValueError: naming the number of NaN and Inf values and the index of the first one.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.inexact):
        return array
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{what} has {int(bad.sum())} non-finite voxels ({int(np.isnan(array).sum())} NaN, "
            f"{int(np.isinf(array).sum())} Inf), the first at index {first}; clean the image "
            f"(e.g. np.nan_to_num) before using it"
        )
    return array


def load_nifti(path, dtype=None, ndim=None, allow_nonfinite=False):
    """Read a NIfTI-1/2 image through ``img.dataobj`` (scaling applied, no caching).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        dtype: numpy dtype to cast the voxels to; ``None`` keeps the stored (scaled) dtype.
        ndim: the number of axes wanted (e.g. 3). Trailing singleton axes beyond it are dropped
            (``(X, Y, Z, 1)`` -> ``(X, Y, Z)``); any other mismatch, e.g. a 4D time series when a
            3D volume is wanted, is an error. ``None`` accepts any shape.
        allow_nonfinite: accept NaN/Inf voxels instead of raising.

    Returns:
        ``(array, affine, header)``: the voxels, shape ``(X, Y, Z[, ...])``; the (4, 4) voxel-to-
        world affine (float64); a copy of the header (keeps qform/sform codes for saving).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable NIfTI image, has the wrong number of axes, or holds
            NaN/Inf voxels.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"No such NIfTI file: {name!r}")
    try:
        img = nib.load(name)
    except Exception as err:  # nibabel raises several types for unreadable files
        raise ValueError(f"{name!r} is not a readable NIfTI image: {err}") from err
    if not isinstance(img, nib.Nifti1Pair):  # Nifti1Image, Nifti2Image and the pairs
        raise ValueError(f"{name!r} is a {type(img).__name__}, not a NIfTI image")
    try:
        array = np.asanyarray(img.dataobj)
    except Exception as err:  # truncated or corrupt voxel data
        raise ValueError(f"could not read the voxels of {name!r}: {err}") from err
    if ndim is not None:
        while array.ndim > ndim and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != ndim:
            raise ValueError(
                f"{name!r} must be a {ndim}D image; got shape {tuple(img.shape)} "
                f"({array.ndim}D after dropping trailing singleton axes)"
            )
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if not allow_nonfinite:
        check_finite(array, repr(name))
    return np.asarray(array), np.array(img.affine, dtype=np.float64), img.header.copy()


def _storable(array):
    """NIfTI has no bool, float16 or (portable) int64: convert those to the nearest type."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype in (np.int64, np.uint64):
        info = np.iinfo(np.int32)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError(
                f"array of dtype {array.dtype} has values outside int32 "
                f"[{array.min()}, {array.max()}]; cast it to float before saving"
            )
        return array.astype(np.int32)
    return array


def save_nifti(path, array, affine, header=None):
    """Write a NIfTI-1 image atomically (temporary file in the same folder, then rename).

    With a ``header`` (e.g. from :func:`load_nifti`) every field is kept except those that must
    follow the new data: the data type is the array's, the scaling is reset, and the affine is
    written to both the sform and the qform **with the header's codes**. If both codes are 0 and
    the affine differs from the one such a header implies, the sform code is set to 2 (aligned)
    so the affine is not lost.

    Args:
        path: destination ``.nii`` or ``.nii.gz``; its folder must exist.
        array: the voxels, shape ``(X, Y, Z[, ...])``. bool is stored as uint8, float16 as
            float32, int64 as int32 (error if out of range).
        affine: (4, 4) voxel-to-world matrix.
        header: optional NIfTI header to take the other fields from.

    Raises:
        ValueError: bad suffix, affine shape or non-finite affine.
        FileNotFoundError: the destination folder does not exist.
    """
    name = _check_suffix(path, "path")
    folder = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder does not exist: {folder!r}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"affine must be a finite (4, 4) matrix; got shape {affine.shape}")
    array = _storable(np.asarray(array))

    if header is None:
        img = nib.Nifti1Image(array, affine)
    else:
        hdr = nib.Nifti1Header.from_header(header)
        sform_code = int(hdr["sform_code"])
        qform_code = int(hdr["qform_code"])
        hdr.set_data_dtype(array.dtype)
        hdr.set_slope_inter(None, None)
        img = nib.Nifti1Image(array, affine, hdr)
        if sform_code == 0 and qform_code == 0:
            implied = img.header.get_base_affine()
            if not np.allclose(implied, affine):
                sform_code = 2
        img.set_sform(affine, code=sform_code)
        img.set_qform(affine, code=qform_code)

    save_image_atomic(img, name)


def save_image_atomic(img, path):
    """Write a nibabel image to a temporary file beside ``path``, then rename it into place,
    so that an interrupted or failed write never leaves a half-written ``path``."""
    name = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(name))
    suffix = ".nii.gz" if name.endswith(".nii.gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(name)}.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.replace(tmp, name)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def normalize_intensity(x, lo=2.0, hi=98.0):
    """The reference input normalisation (SPEC §4.3): percentile clip, then min-max to [0, 1].

    Clip to the ``lo``-th and ``hi``-th percentiles of the whole array, then
    ``(x - min) / max(max - min, 1e-8)`` (a range below 1e-8 is replaced by 1e-8, so a constant
    image maps to zeros). Apply it to one volume (or one context image/label) at a time.

    Args:
        x: array (X, Y, Z) or any shape; must be finite.
        lo: lower percentile in [0, 100]; ``None`` skips clipping.
        hi: upper percentile in [0, 100], > ``lo``; ``None`` skips clipping.

    Returns:
        float32 array of the same shape, values in [0, 1].

    Raises:
        ValueError: non-finite input, empty input or bad percentiles.
    """
    x = check_finite(np.asarray(x, dtype=np.float64), "x")
    if x.size == 0:
        raise ValueError("x is empty")
    if (lo is None) != (hi is None):
        raise ValueError(f"lo and hi must both be set or both be None; got lo={lo}, hi={hi}")
    if lo is not None:
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"need 0 <= lo < hi <= 100; got lo={lo}, hi={hi}")
        p_lo, p_hi = np.percentile(x, [lo, hi])
        x = np.clip(x, p_lo, p_hi)
    low = x.min()
    value_range = max(x.max() - low, 1e-8)
    return ((x - low) / value_range).astype(np.float32)


def reorient_to_ras(array, affine):
    """Permute and flip the first three axes so they run R, A, S (closest to the affine's axes).

    Exact (no interpolation); invert with :func:`reorient_from_ras`.

    Args:
        array: (X, Y, Z[, ...]); axes after the third (channels, time) are kept as they are.
        affine: (4, 4) voxel-to-world matrix of ``array``.

    Returns:
        ``(array_ras, affine_ras, orientation)``: the reoriented voxels, their affine (same world
        positions) and the original orientation (a (3, 2) nibabel ornt array) to pass to
        :func:`reorient_from_ras`.
    """
    array = np.asarray(array)
    affine = np.asarray(affine, dtype=np.float64)
    if array.ndim < 3:
        raise ValueError(f"array must have 3 spatial axes (X, Y, Z[, ...]); got {array.shape}")
    orientation = nio.io_orientation(affine)
    transform = nio.ornt_transform(orientation, nio.axcodes2ornt("RAS"))
    array_ras = nio.apply_orientation(array, transform)
    affine_ras = affine @ nio.inv_ornt_aff(transform, array.shape[:3])
    return array_ras, affine_ras, orientation


def reorient_from_ras(array_ras, orientation):
    """Undo :func:`reorient_to_ras`: put a RAS array back in the original axis order.

    Args:
        array_ras: (X', Y', Z'[, ...]) on the RAS grid returned by :func:`reorient_to_ras`
            (e.g. a model output of the same spatial shape).
        orientation: the ``orientation`` returned by :func:`reorient_to_ras`.

    Returns:
        The array in the original voxel order; with the original affine it is exactly the
        original grid.
    """
    transform = nio.ornt_transform(nio.axcodes2ornt("RAS"), np.asarray(orientation))
    return nio.apply_orientation(np.asarray(array_ras), transform)


def resample_to(array, affine, shape, target_affine, order=1, cval=0.0):
    """Resample ``array`` (on the grid ``affine``) onto the grid ``(shape, target_affine)``.

    Each target voxel ``o`` takes the value at world position ``target_affine @ o``, i.e. at
    source voxel ``inv(affine) @ target_affine @ o``, interpolated with a spline of ``order``
    (0 = nearest, for labels; 1 = linear). Points outside the source get ``cval``. The inverse
    mapping is the same call with the two grids swapped; when the grids share their voxel
    centres (integer shifts, flips, axis permutations) ``order=0`` makes the round trip exact.

    Args:
        array: (X, Y, Z[, ...]) source voxels; extra trailing axes are resampled one by one.
        affine: (4, 4) source voxel-to-world matrix.
        shape: target spatial shape (3 ints).
        target_affine: (4, 4) target voxel-to-world matrix.
        order: spline order 0-5.
        cval: value for target voxels outside the source.

    Returns:
        float32 (or the input dtype for ``order=0``) array of shape ``(*shape, ...)``.
    """
    from scipy import ndimage

    array = np.asarray(array)
    shape = tuple(int(s) for s in shape)
    if array.ndim < 3 or len(shape) != 3:
        raise ValueError(
            f"array must be (X, Y, Z[, ...]) and shape 3 ints; got {array.shape} and {shape}"
        )
    if order not in range(6):
        raise ValueError(f"order must be an int in 0..5; got {order!r}")
    affine = np.asarray(affine, dtype=np.float64)
    target_affine = np.asarray(target_affine, dtype=np.float64)
    if shape == array.shape[:3] and np.allclose(affine, target_affine, rtol=0, atol=1e-9):
        return array.copy()
    matrix = np.linalg.solve(affine, target_affine)  # target voxel -> source voxel
    # Snap round-off (1e-15 in voxel units): otherwise an edge voxel that maps to -1e-15 counts
    # as outside the source and grids that share voxel centres would not round-trip exactly.
    near = np.abs(matrix - np.rint(matrix)) < 1e-6
    matrix[near] = np.rint(matrix[near])
    if not np.issubdtype(array.dtype, np.floating) and order > 0:
        array = array.astype(np.float32)
    extra = array.shape[3:]
    flat = array.reshape(array.shape[:3] + (-1,))
    out = np.empty(shape + (flat.shape[-1],), dtype=array.dtype if order == 0 else np.float32)
    for c in range(flat.shape[-1]):
        out[..., c] = ndimage.affine_transform(
            flat[..., c], matrix[:3, :3], offset=matrix[:3, 3], output_shape=shape,
            order=order, mode="constant", cval=cval, prefilter=order > 1,
        )
    return out.reshape(shape + extra)


def centered_grid(shape_in, affine_in, shape, voxel_size=1.0):
    """A RAS-aligned target grid of ``shape`` voxels centred on an image's field of view.

    Args:
        shape_in: spatial shape (3 ints) of the image.
        affine_in: (4, 4) affine of the image.
        shape: target spatial shape (3 ints), e.g. (128, 128, 128).
        voxel_size: target voxel size in mm (a number or 3 numbers).

    Returns:
        The (4, 4) target affine: diagonal ``voxel_size``, with the target grid's centre at the
        world position of the image's centre.
    """
    zooms = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    if np.any(zooms <= 0):
        raise ValueError(f"voxel_size must be > 0; got {voxel_size}")
    centre_in = (np.asarray(shape_in[:3], dtype=np.float64) - 1) / 2
    world_centre = np.asarray(affine_in, dtype=np.float64) @ np.append(centre_in, 1.0)
    target = np.diag(np.append(zooms, 1.0))
    centre_out = (np.asarray(shape, dtype=np.float64) - 1) / 2
    target[:3, 3] = world_centre[:3] - zooms * centre_out
    return target
