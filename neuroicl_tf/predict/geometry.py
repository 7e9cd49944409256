"""Geometry of in-context prediction on NIfTI files: loading with checks, the model grid, labels,
resampling there and back, and writing outputs with the input's exact header.

The model grid is RAS-aligned and isotropic, centred on the head, so reorientation, resampling
and cropping/padding are one interpolation (:func:`neuroicl_tf.io.resample_to` maps through the
world coordinates of any affine, oblique or LPS). This is the geometry the training episodes use
(``generators``: RAS volumes, head fitted into the episode shape with a 5 % margin, 2D slices
with the remaining RAS axes in order). The prediction goes back through the inverse mapping onto
the input's own voxel grid, and :func:`save_like` writes it with the input's header, so shape,
affine, qform and sform (matrices and codes) are the input's.

No TensorFlow here (numpy, scipy, nibabel).
"""

import dataclasses
import math
import os

import nibabel as nib
import numpy as np

from .. import io as nio

__all__ = [
    "AXES",
    "ModelGrid",
    "load_volume",
    "check_same_grid",
    "head_box",
    "make_grid",
    "to_grid",
    "from_grid",
    "binarize_labels",
    "jitter_matrix",
    "save_like",
]

# Slice axes of the RAS model grid, by name (2D models).
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


def load_volume(path, what="image"):
    """Read a 3D NIfTI volume with the checks the prediction needs.

    Args:
        path: ``.nii``/``.nii.gz`` file.
        what: how to name the file in messages (e.g. ``"--image"``, ``"--ctx-out 2"``).

    Returns:
        ``(array, affine, header)``: float32 or integer voxels ``(X, Y, Z)`` (a trailing
        singleton axis is dropped), the (4, 4) affine and a copy of the header.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable NIfTI image, not 3D (e.g. a 4D time series), or NaN/Inf
            voxels; the message names ``what`` and the file.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"{what}: no such file: {name}")
    try:
        array, affine, header = nio.load_nifti(name, ndim=3, allow_nonfinite=True)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    if np.issubdtype(array.dtype, np.inexact):
        bad = ~np.isfinite(array)
        if bad.any():
            raise ValueError(
                f"{what}: {name} has {int(bad.sum())} NaN/Inf voxels; clean the image first "
                "(e.g. replace them with 0)"
            )
    if array.dtype.kind not in "iuf":
        array = array.astype(np.float32)
    return array, affine, header


def check_same_grid(shape_a, affine_a, shape_b, affine_b, what):
    """Raise unless two volumes of a context pair share their shape (and roughly the affine).

    Raises:
        ValueError: the shapes differ, or the affines differ by more than 1e-3 mm.
    """
    if tuple(shape_a[:3]) != tuple(shape_b[:3]):
        raise ValueError(
            f"{what}: the context image has shape {tuple(shape_a[:3])} but its label map has "
            f"{tuple(shape_b[:3])}; the two files of a pair must be on the same voxel grid"
        )
    if not np.allclose(affine_a, affine_b, atol=1e-3):
        raise ValueError(
            f"{what}: the context image and its label map have different affines; the two "
            "files of a pair must be on the same voxel grid"
        )


def head_box(norm, affine, threshold=0.1, tail=0.002):
    """World (RAS, mm) bounding box of the head in an image.

    The head is the voxels above ``threshold`` of a [0, 1]-normalised image; its extent per
    voxel axis leaves out ``tail`` of the head voxels on each side (robust to stray bright
    voxels), and the eight corners of that voxel box are mapped to world coordinates.

    Args:
        norm: (X, Y, Z) intensities in [0, 1] (e.g. from ``normalize_intensity``).
        affine: (4, 4) voxel-to-world matrix.
        threshold: head / background intensity threshold.
        tail: fraction of head voxels ignored at each end of every axis.

    Returns:
        ``(lo, hi)``: two (3,) arrays, world RAS corners of the box. The whole field of view if
        no voxel is above the threshold.
    """
    mask = np.asarray(norm) > threshold
    shape = np.asarray(mask.shape[:3])
    if not mask.any():
        lo_v, hi_v = np.zeros(3), shape - 1.0
    else:
        lo_v, hi_v = np.zeros(3), np.zeros(3)
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            counts = np.cumsum(mask.sum(axis=other), dtype=np.float64)
            total = counts[-1]
            lo_v[axis] = np.searchsorted(counts, tail * total, side="right")
            hi_v[axis] = np.searchsorted(counts, (1 - tail) * total, side="left")
    corners = np.array([[x, y, z, 1.0] for x in (lo_v[0], hi_v[0]) for y in (lo_v[1], hi_v[1])
                        for z in (lo_v[2], hi_v[2])])
    world = (np.asarray(affine, dtype=np.float64) @ corners.T)[:3]
    # Half a voxel on each side: the box covers whole voxels, not their centres.
    half = 0.5 * np.abs(np.asarray(affine)[:3, :3]).sum(axis=1)
    return world.min(axis=1) - half, world.max(axis=1) + half


@dataclasses.dataclass(frozen=True)
class ModelGrid:
    """The RAS-aligned isotropic grid a model sees.

    Attributes:
        shape: (3,) voxels along R, A, S.
        affine: (4, 4) voxel-to-world matrix (diagonal voxel size, no rotation).
        voxel_size: mm.
        ndims: 2 (the model sees slices along ``axis``) or 3.
        axis: RAS slice axis for 2D models (0 sagittal, 1 coronal, 2 axial); None for 3D.
    """

    shape: tuple
    affine: np.ndarray
    voxel_size: float
    ndims: int
    axis: int = None

    @property
    def plane(self):
        """The 2D model's input shape ``(S1, S2)`` (the two axes other than ``axis``)."""
        return tuple(s for a, s in enumerate(self.shape) if a != self.axis)

    @property
    def centre(self):
        """World position (3,) of the grid's centre."""
        return (self.affine @ np.append((np.asarray(self.shape) - 1) / 2.0, 1.0))[:3]


def make_grid(box, size, ndims, axis=None, voxel_size=None, margin=1.05):
    """The model grid centred on a head box.

    With ``voxel_size=None`` the head is fitted the way the training episodes fit it
    (``LabelMapSource.fit_spacing``): 3D, the largest ratio of head extent (times ``margin``)
    to grid size over the three axes; 2D, the largest head extent over the smallest side of the
    slice, whatever the slice axis. A 2D grid has as many slices along ``axis`` as the head
    (times ``margin``) needs at that voxel size.

    Args:
        box: ``(lo, hi)`` world box from :func:`head_box`.
        size: 3D: (3,) grid shape; 2D: (2,) slice shape, the two RAS axes other than ``axis``
            in order.
        ndims: 2 or 3.
        axis: slice axis for 2D (0, 1 or 2).
        voxel_size: isotropic mm; None fits the head.
        margin: head extent factor when fitting.

    Returns:
        :class:`ModelGrid`.

    Raises:
        ValueError: bad ``size``, ``ndims``, ``axis`` or ``voxel_size``.
    """
    lo, hi = (np.asarray(b, dtype=np.float64) for b in box)
    extent = np.maximum(hi - lo, 1e-3)
    size = tuple(int(s) for s in size)
    if ndims not in (2, 3):
        raise ValueError(f"ndims must be 2 or 3, got {ndims!r}")
    if len(size) != ndims or min(size) < 1:
        raise ValueError(f"size must be {ndims} positive ints, got {size}")
    if ndims == 2 and axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 for a 2D model, got {axis!r}")
    if voxel_size is None:
        if ndims == 3:
            voxel_size = float(max(e / s for e, s in zip(extent, size))) * margin
        else:
            voxel_size = float(extent.max()) / min(size) * margin
    elif not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size!r}")
    voxel_size = float(voxel_size)
    if ndims == 3:
        shape = size
    else:
        slices = max(1, int(math.ceil(extent[axis] * margin / voxel_size)))
        plane = iter(size)
        shape = tuple(slices if a == axis else next(plane) for a in range(3))
    centre = (lo + hi) / 2.0
    affine = np.diag([voxel_size] * 3 + [1.0])
    affine[:3, 3] = centre - voxel_size * (np.asarray(shape) - 1) / 2.0
    return ModelGrid(tuple(shape), affine, voxel_size, ndims, axis if ndims == 2 else None)


def to_grid(array, affine, grid, order=1):
    """Resample a volume onto the model grid (reorient + resample + crop/pad in one step).

    Args:
        array: (X, Y, Z) voxels.
        affine: (4, 4) affine of ``array`` (for a registered context image, its registered
            affine).
        grid: :class:`ModelGrid`.
        order: 1 (linear) for images, 0 (nearest) for label maps.

    Returns:
        ``grid.shape`` array (float32 for order 1, the input dtype for order 0); 0 outside.
    """
    return nio.resample_to(array, affine, grid.shape, grid.affine, order=order, cval=0.0)


def from_grid(array, grid, shape, affine, order=1):
    """Resample a model-grid volume back onto an image's own grid (the inverse of
    :func:`to_grid`).

    Args:
        array: ``grid.shape`` volume.
        grid: :class:`ModelGrid`.
        shape: the image's spatial shape (3 ints).
        affine: the image's (4, 4) affine.
        order: 1 (linear) or 0 (nearest).

    Returns:
        float32 ``(X, Y, Z)``; voxels outside the model grid are 0.
    """
    out = nio.resample_to(np.asarray(array, dtype=np.float32), grid.affine, shape[:3], affine,
                          order=order, cval=0.0)
    return out.astype(np.float32, copy=False)


def binarize_labels(labels, wanted=None, what="label map"):
    """The binary segmentation target of a label map.

    Args:
        labels: (X, Y, Z) label map; values must be whole numbers.
        wanted: label values to keep (e.g. ``[17, 53]``); None keeps every non-zero label.
        what: how to name the map in messages.

    Returns:
        float32 (X, Y, Z) mask, 1 where the label is wanted, 0 elsewhere.

    Raises:
        ValueError: the map is empty (all zero), holds non-integer values (an image, not
            labels), or holds none of the ``wanted`` labels.
    """
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.floating) and not np.all(labels == np.round(labels)):
        raise ValueError(
            f"{what} holds non-integer values; it is an image, not a label map (use "
            "--task image for image-to-image tasks)"
        )
    present = labels != 0
    if not present.any():
        raise ValueError(f"{what} is empty (every voxel is 0); a context label map needs labels")
    if wanted is None:
        return present.astype(np.float32)
    wanted = sorted({int(v) for v in wanted})
    mask = np.isin(labels, wanted)
    if not mask.any():
        found = np.unique(labels[present])
        shown = ", ".join(str(int(v)) for v in found[:20]) + (" ..." if found.size > 20 else "")
        raise ValueError(
            f"{what} holds none of the labels {wanted}; labels present: {shown}"
        )
    return mask.astype(np.float32)


def jitter_matrix(rng, centre, rotation_deg=3.0, scale=0.03, shift_mm=2.0):
    """A small random affine about ``centre`` (world to world), for context bootstrapping.

    Rotations uniform in +-``rotation_deg`` about each axis, scales in 1 +- ``scale`` per axis,
    shifts in +-``shift_mm`` per axis.

    Args:
        rng: ``np.random.Generator``.
        centre: (3,) world point the rotation and scaling keep fixed.

    Returns:
        (4, 4) matrix J; a context resampled with ``inv(J) @ affine`` is moved by J.
    """
    angles = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, 3))
    rot = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        r = np.eye(3)
        r[a, a] = r[b, b] = np.cos(angle)
        r[a, b], r[b, a] = -np.sin(angle), np.sin(angle)
        rot = rot @ r
    linear = rot @ np.diag(1.0 + rng.uniform(-scale, scale, 3))
    shift = rng.uniform(-shift_mm, shift_mm, 3)
    centre = np.asarray(centre, dtype=np.float64)
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = centre - linear @ centre + shift
    return matrix


def save_like(path, array, header, shape=None):
    """Write ``array`` with an input image's header: same shape, affine, qform and sform.

    Unlike :func:`neuroicl_tf.io.save_nifti`, which writes one affine to both forms, this keeps
    the input's qform and sform matrices and codes exactly as they were (they may differ). The
    data type is the array's (scaling reset). Written to a temporary name and renamed.

    Args:
        path: ``.nii`` or ``.nii.gz``.
        array: (X, Y, Z) voxels; bool is stored as uint8.
        header: the input's NIfTI-1 or NIfTI-2 header.
        shape: the input's full shape, e.g. (X, Y, Z, 1); ``array`` is reshaped to it.

    Raises:
        ValueError: bad suffix or a shape that does not fit.
    """
    name = os.fspath(path)
    if not name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"output must end in .nii or .nii.gz; got {name!r}")
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if shape is not None:
        array = array.reshape(tuple(shape))
    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    hdr = header.copy()
    hdr.set_data_dtype(array.dtype)
    hdr.set_slope_inter(1.0, 0.0)
    # With the header's own best affine, nibabel leaves the qform and sform fields untouched.
    img = klass(array, hdr.get_best_affine(), header=hdr)
    nio.save_image_atomic(img, name)
