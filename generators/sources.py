"""Sources of subjects: 3D label maps (and optional real images) resampled to an episode's grid.

Three sources share one base class, :class:`LabelMapSource`:

- :class:`LabelMapFolder`: NIfTI/MGZ label maps on disk (FreeSurfer ``aseg``, SynthSeg training
  maps, ...), optionally paired with real images of the same subjects.
- :class:`MNISubjects`: an embedded default that needs no download. Tissue labels are derived
  from the MNI152 2009 template and its GM/WM probability maps shipped inside the ``nilearn``
  wheel, a head (CSF rim, skull, scalp) is added around the brain, and each subject is a random
  smooth deformation of that map.
- :class:`ProceduralLabelMaps`: blobby nested head/brain/ventricle label maps made from random
  smooth fields (for tests and first demos).

Every volume is held in RAS+ orientation (``nibabel.as_closest_canonical``), so ``slice_axis`` 0,
1, 2 are sagittal, coronal and axial slices. :meth:`LabelMapSource.sample` returns one subject's
label map (and real images) on the episode grid: a 3D crop/pad at a voxel size, or a 2D slice
near the centre of the brain. Labels are resampled with nearest neighbour, images linearly, on
exactly the same voxel centres. Resampled volumes are cached per source and voxel size, so
episodes are cheap once every subject has been seen.
"""

import dataclasses
import functools
import glob
import math
import os

import numpy as np
from scipy import ndimage

__all__ = [
    "EXTRACEREBRAL_LABELS",
    "LEFT_RIGHT_PAIRS",
    "LabelMapFolder",
    "LabelMapSource",
    "MNISubjects",
    "ProceduralLabelMaps",
    "SourceSubset",
    "Volume",
    "brain_mask_of",
    "mni_label_map",
    "smooth_noise",
    "split_indices",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".mgz")

# Labels that are not brain: FreeSurfer 165 (skull), 258 (head, extra-cerebral), 259 (eye/skull
# approximation) and SynthSeg's extra-cerebral generation labels (500 and above, all found at
# 5-35 mm outside the brain in the SynthSeg training maps). CSF (24) counts as brain, as in
# SynthStrip's brain masks.
EXTRACEREBRAL_LABELS = (165, 258, 259)
EXTRACEREBRAL_MIN = 500

# Label numbers used by the embedded sources (FreeSurfer numbering).
LEFT_WM, LEFT_GM, LEFT_LV, LEFT_CBWM, LEFT_CBGM, LEFT_DEEP, LEFT_HIPPO = 2, 3, 4, 7, 8, 10, 17
RIGHT_WM, RIGHT_GM, RIGHT_LV, RIGHT_CBWM, RIGHT_CBGM, RIGHT_DEEP, RIGHT_HIPPO = (
    41, 42, 43, 46, 47, 49, 53)
BRAINSTEM, CSF, SKULL, SCALP = 16, 24, 165, 258

# FreeSurfer left/right label pairs (same tissue in the two hemispheres).
LEFT_RIGHT_PAIRS = (
    (2, 41), (3, 42), (4, 43), (5, 44), (7, 46), (8, 47), (10, 49), (11, 50), (12, 51), (13, 52),
    (17, 53), (18, 54), (26, 58), (28, 60), (30, 62), (31, 63),
)


def brain_mask_of(labels):
    """The brain voxels of a label map: every label except 0 and the extra-cerebral ones.

    Args:
        labels: (*S) integer label map.

    Returns:
        (*S) bool.
    """
    labels = np.asarray(labels)
    return (labels > 0) & (labels < EXTRACEREBRAL_MIN) & ~np.isin(labels, EXTRACEREBRAL_LABELS)


def smooth_noise(rng, shape, cells):
    """A smooth random field: Gaussian noise on a coarse lattice, cubic up-sampling.

    Args:
        rng: ``np.random.Generator``.
        shape: output spatial shape (any number of axes).
        cells: lattice points per axis (int or one per axis, each >= 2); more = less smooth.

    Returns:
        float32 array of ``shape`` with zero mean and unit standard deviation.
    """
    shape = tuple(int(s) for s in shape)
    cells = np.broadcast_to(np.asarray(cells, dtype=int), (len(shape),))
    cells = np.maximum(cells, 2)
    coarse = rng.standard_normal(tuple(cells))
    # cubic to at most 4 points per lattice cell, then linear: smooth, and cheap on big grids
    middle = tuple(int(min(s, 4 * c)) for s, c in zip(shape, cells))
    field = ndimage.zoom(coarse, [m / c for m, c in zip(middle, cells)], order=3, mode="nearest",
                         grid_mode=True)
    if middle != shape:
        field = ndimage.zoom(field, [s / m for s, m in zip(shape, field.shape)], order=1,
                             mode="nearest", grid_mode=True)
    field = field[tuple(slice(0, s) for s in shape)]
    field = field - field.mean()
    return (field / max(float(field.std()), 1e-8)).astype(np.float32)


def split_indices(n, n_holdout, seed=0):
    """A deterministic split of ``range(n)`` into training and held-out indices.

    Args:
        n: number of items.
        n_holdout: how many to hold out (0 <= n_holdout < n).
        seed: seed of the permutation; the same seed gives the same split.

    Returns:
        ``(train, holdout)``: two sorted lists of ints.

    Raises:
        ValueError: if ``n_holdout`` is out of range.
    """
    if not 0 <= int(n_holdout) < n:
        raise ValueError(f"n_holdout must be in [0, {n - 1}] for {n} subjects, got {n_holdout}")
    order = np.random.default_rng(seed).permutation(n)
    holdout = sorted(int(i) for i in order[: int(n_holdout)])
    train = sorted(int(i) for i in order[int(n_holdout):])
    return train, holdout


# ----------------------------------------------------------------------------------------------
# volumes and resampling


@dataclasses.dataclass
class Volume:
    """A 3D label map in RAS+ orientation with its voxel size and optional real images.

    Attributes:
        labels: (X, Y, Z) integer label map.
        spacing: (3,) voxel size in mm.
        images: name -> (X, Y, Z) float32 in [0, 1] (real images on the same grid).
    """

    labels: np.ndarray
    spacing: tuple
    images: dict = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def head_box(self):
        """(lo, hi) voxel bounds (inclusive-exclusive) of the non-zero labels."""
        return _bbox(self.labels > 0)

    @functools.cached_property
    def brain_box(self):
        """(lo, hi) voxel bounds of the brain labels (the head box if there are none)."""
        mask = brain_mask_of(self.labels)
        return _bbox(mask) if mask.any() else self.head_box


def _bbox(mask):
    if not mask.any():
        return np.zeros(mask.ndim, int), np.asarray(mask.shape)
    lo, hi = [], []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        lo.append(hits[0])
        hi.append(hits[-1] + 1)
    return np.asarray(lo), np.asarray(hi)


def _compact(labels):
    """Store labels in the smallest unsigned type that holds them (memory of the caches)."""
    top = int(labels.max()) if labels.size else 0
    return labels.astype(np.uint16 if top < 2**16 else np.int32, copy=False)


def _coords(n_in, zoom_in, n_out, spacing_out):
    """Input voxel coordinates (voxel centres at integers) of the output voxel centres."""
    return (np.arange(n_out) + 0.5) * spacing_out / zoom_in - 0.5


def _resample_volume(volume, spacing):
    """Resample a :class:`Volume` to isotropic ``spacing`` mm over the same field of view."""
    labels, images = volume.labels, dict(volume.images)
    for axis, zoom in enumerate(volume.spacing):
        n_in = labels.shape[axis]
        n_out = max(1, int(math.ceil(n_in * zoom / spacing - 1e-6)))
        coords = _coords(n_in, zoom, n_out, spacing)
        nearest = np.clip(np.floor(coords + 0.5).astype(int), 0, n_in - 1)
        labels = np.take(labels, nearest, axis=axis)
        lo = np.clip(np.floor(coords).astype(int), 0, n_in - 1)
        hi = np.clip(lo + 1, 0, n_in - 1)
        weight = np.clip(coords - np.floor(coords), 0, 1).astype(np.float32)
        wshape = [1] * labels.ndim
        wshape[axis] = n_out
        weight = weight.reshape(wshape)
        for key, image in images.items():
            images[key] = (np.take(image, lo, axis=axis) * (1 - weight)
                           + np.take(image, hi, axis=axis) * weight)
    return Volume(labels, (float(spacing),) * 3, images)


def _extract(array, start, shape):
    """The block ``array[start : start + shape]`` with zero padding where it leaves the array."""
    out = np.zeros(shape, dtype=array.dtype)
    src, dst = [], []
    for s, n, size in zip(start, shape, array.shape):
        a, b = max(s, 0), min(s + n, size)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


def _check_shape(shape):
    if not isinstance(shape, (tuple, list)) or len(shape) not in (2, 3):
        raise ValueError(f"shape must be a tuple of 2 or 3 positive ints, got {shape!r}")
    out = []
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"shape must be a tuple of 2 or 3 positive ints, got {shape!r}")
        out.append(int(s))
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# the base class


class LabelMapSource:
    """Base class: a list of 3D label maps, each resampled on demand to an episode's grid.

    Subclasses define :attr:`names` and :meth:`_load`. Resampled volumes are cached per subject
    and voxel size (``cache=True``); loaded full-resolution volumes are cached too when
    ``cache_native`` is true (sensible when loading is costly and the volumes are small).

    Args:
        cache: keep resampled volumes in memory.
        cache_native: keep loaded volumes at their own resolution in memory.
    """

    def __init__(self, cache=True, cache_native=False):
        self.cache = bool(cache)
        self.cache_native = bool(cache_native)
        self._native = {}
        self._resampled = {}

    # subclasses -------------------------------------------------------------------------------
    @property
    def names(self):
        """Subject names (list of str), one per label map."""
        raise NotImplementedError

    def _load(self, index):
        """Load volume ``index`` as a :class:`Volume` (RAS+, integer labels)."""
        raise NotImplementedError

    # public -----------------------------------------------------------------------------------
    def __len__(self):
        return len(self.names)

    def __repr__(self):
        return f"{type(self).__name__}(n={len(self)})"

    def _check_index(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {index!r}")
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} subjects")
        return int(index)

    def load(self, index):
        """The volume ``index`` at its own resolution (:class:`Volume`)."""
        index = self._check_index(index)
        if index in self._native:
            return self._native[index]
        volume = self._load(index)
        if self.cache_native:
            self._native[index] = volume
        return volume

    def resampled(self, index, spacing):
        """The volume ``index`` resampled to isotropic ``spacing`` mm (cached).

        Args:
            index: subject index.
            spacing: voxel size in mm (> 0).

        Returns:
            :class:`Volume` with ``spacing == (spacing,) * 3``.
        """
        index = self._check_index(index)
        key = (index, round(float(spacing), 4))
        if key in self._resampled:
            return self._resampled[key]
        volume = self.load(index)
        if np.allclose(volume.spacing, spacing, atol=1e-4):
            out = volume
        else:
            out = _resample_volume(volume, float(spacing))
        if self.cache:
            self._resampled[key] = out
        return out

    def fit_spacing(self, index, shape):
        """The isotropic voxel size at which the whole head of subject ``index`` fits ``shape``.

        For 2D shapes the head must fit whatever the slice axis, so the largest head extent is
        compared to the smallest side of the shape. A 5 % margin is added.
        """
        volume = self.load(index)
        lo, hi = volume.head_box
        extent = (hi - lo) * np.asarray(volume.spacing)
        if len(shape) == 3:
            spacing = max(e / s for e, s in zip(extent, shape))
        else:
            spacing = float(extent.max()) / min(shape)
        return round(1.05 * float(spacing), 3)

    def sample(self, index, shape, voxel_size=None, slice_axis=None, rng=None,
               slice_jitter=0.2):
        """One subject on the episode grid.

        Args:
            index: subject index.
            shape: the spatial shape *S, 2 ints (a slice) or 3 ints (a volume).
            voxel_size: isotropic voxel size in mm; None fits the whole head in ``shape``.
            slice_axis: for 2D, the slice axis (0 sagittal, 1 coronal, 2 axial); None draws one.
            rng: ``np.random.Generator`` for the slice axis and position (default: seed 0).
            slice_jitter: for 2D, the slice is drawn uniformly within this fraction of the
                brain's half-extent around the brain's centre (0 = always the central slice).

        Returns:
            ``(labels, images)``: labels int32 (*S); images name -> float32 (*S) in [0, 1].

        Raises:
            ValueError: bad ``shape``, ``voxel_size``, ``slice_axis`` or ``slice_jitter``.
        """
        shape = _check_shape(shape)
        rng = np.random.default_rng(0) if rng is None else rng
        if voxel_size is None:
            spacing = self.fit_spacing(index, shape)
            centre_box = "head"
        else:
            if not isinstance(voxel_size, (int, float)) or not voxel_size > 0:
                raise ValueError(f"voxel_size must be a positive number, got {voxel_size!r}")
            spacing = float(voxel_size)
            centre_box = "brain"
        if not 0 <= slice_jitter <= 1:
            raise ValueError(f"slice_jitter must be in [0, 1], got {slice_jitter!r}")
        volume = self.resampled(index, spacing)
        lo, hi = volume.head_box if centre_box == "head" else volume.brain_box
        centre = (lo + hi) / 2.0

        if len(shape) == 3:
            start = [int(round(c - n / 2.0)) for c, n in zip(centre, shape)]
            take = functools.partial(_extract, start=start, shape=shape)
            labels = take(volume.labels)
            images = {k: take(v) for k, v in volume.images.items()}
        else:
            if slice_axis is None:
                axis = int(rng.integers(3))
            elif isinstance(slice_axis, (int, np.integer)) and 0 <= slice_axis <= 2:
                axis = int(slice_axis)
            else:
                raise ValueError(f"slice_axis must be None, 0, 1 or 2, got {slice_axis!r}")
            b_lo, b_hi = volume.brain_box
            half = (b_hi[axis] - b_lo[axis]) / 2.0
            position = (b_lo[axis] + b_hi[axis]) / 2.0 + rng.uniform(-1, 1) * slice_jitter * half
            position = int(np.clip(np.floor(position), 0, volume.labels.shape[axis] - 1))
            plane = [a for a in range(3) if a != axis]
            start = [int(round(centre[a] - n / 2.0)) for a, n in zip(plane, shape)]
            take = functools.partial(_extract, start=start, shape=shape)
            labels = take(np.take(volume.labels, position, axis=axis))
            images = {k: take(np.take(v, position, axis=axis)) for k, v in volume.images.items()}
        labels = labels.astype(np.int32)
        images = {k: np.clip(v, 0, 1).astype(np.float32) for k, v in images.items()}
        return labels, images

    def subset(self, indices):
        """A view on some subjects of this source that shares its caches."""
        return SourceSubset(self, indices)

    def split(self, n_holdout, seed=0):
        """Split into training and held-out subjects, deterministically.

        Args:
            n_holdout: number of held-out subjects (e.g. 4 of 20 for validation).
            seed: seed of the split.

        Returns:
            ``(train, holdout)``: two :class:`SourceSubset` views.
        """
        train, holdout = split_indices(len(self), n_holdout, seed)
        return self.subset(train), self.subset(holdout)


class SourceSubset(LabelMapSource):
    """Some subjects of a parent source (a view; loading and caching go through the parent).

    Args:
        parent: a :class:`LabelMapSource`.
        indices: indices into ``parent``.
    """

    def __init__(self, parent, indices):
        super().__init__(cache=False, cache_native=False)
        self.parent = parent
        self.indices = [parent._check_index(i) for i in indices]

    @property
    def names(self):
        parent_names = self.parent.names
        return [parent_names[i] for i in self.indices]

    def load(self, index):
        return self.parent.load(self.indices[self._check_index(index)])

    def resampled(self, index, spacing):
        return self.parent.resampled(self.indices[self._check_index(index)], spacing)

    def _load(self, index):  # pragma: no cover - load() is overridden
        return self.parent.load(self.indices[index])


# ----------------------------------------------------------------------------------------------
# label maps on disk


def _list_nifti(paths_or_folder, argname):
    if isinstance(paths_or_folder, (str, os.PathLike)):
        folder = os.fspath(paths_or_folder)
        if os.path.isdir(folder):
            paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                           if p.endswith(NIFTI_SUFFIXES))
            if not paths:
                raise ValueError(
                    f"{argname}: folder {folder!r} holds no NIfTI/MGZ files "
                    f"({', '.join(NIFTI_SUFFIXES)})"
                )
            return paths
        if os.path.isfile(folder):
            return [folder]
        raise ValueError(f"{argname}: {folder!r} is neither a folder nor a file")
    try:
        paths = [os.fspath(p) for p in paths_or_folder]
    except TypeError as err:
        raise TypeError(
            f"{argname} must be a folder or a list of paths, got {paths_or_folder!r}") from err
    if not paths:
        raise ValueError(f"{argname}: the list of paths is empty")
    for p in paths:
        if not os.path.isfile(p):
            raise ValueError(f"{argname}: file {p!r} does not exist")
    return paths


def _stem(path):
    name = os.path.basename(path)
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _open(path, what):
    """nibabel image of ``path`` (header only) with a clear error for unreadable files."""
    import nibabel as nib

    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises several types for non-images and broken headers
        raise ValueError(f"cannot read {what} {path!r}: {err}") from err
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(f"{what} {path!r} must be 3D, got shape {tuple(img.shape)}")
    return img, shape


def _read(img, path, what):
    """The voxel array of ``img`` in RAS+ orientation (3D) and the voxel size."""
    import nibabel as nib

    try:
        if img.ndim == 4:
            img = img.slicer[..., 0]
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj)
    except Exception as err:  # truncated gzip, bad offsets, ...
        raise ValueError(f"cannot read the voxels of {what} {path!r}: {err}") from err
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    return data, spacing


def _normalise_image(image):
    """Robust min-max to [0, 1]: clip to the 0.5 and 99.5 percentiles of the non-zero voxels."""
    image = np.nan_to_num(image.astype(np.float32))
    values = image[image != 0]
    if values.size == 0:
        return np.zeros_like(image)
    lo, hi = np.percentile(values, [0.5, 99.5])
    lo = min(float(lo), 0.0)
    return np.clip((image - lo) / max(float(hi) - lo, 1e-8), 0, 1).astype(np.float32)


class LabelMapFolder(LabelMapSource):
    """Label maps (and optional real images) read from NIfTI/MGZ files.

    Files are opened (headers only) when the source is built, so missing, unreadable or non-3D
    files are reported at once; voxels are read with ``img.dataobj`` on first use, turned to
    RAS+ orientation, cropped to the head and cached at the resolutions asked for.

    Args:
        paths_or_folder: a folder (every ``.nii``, ``.nii.gz`` and ``.mgz`` in it, sorted) or a
            list of label-map paths.
        images: optional real images of the same subjects on the same grids: a folder or list
            (one contrast, stored as ``"real"``), or a dict contrast name -> folder or list
            (stored as ``"real:<name>"``; the first one is also ``"real"``). Paired with the
            label maps in sorted order; the counts and shapes must match.
        cache: keep resampled volumes in memory.
        cache_native: also keep full-resolution volumes (cropped to the head) in memory.

    Raises:
        ValueError: a folder without NIfTI files, a missing or unreadable file, a label map or
            image that is not 3D, a count or shape mismatch between label maps and images.
    """

    def __init__(self, paths_or_folder, images=None, cache=True, cache_native=False):
        super().__init__(cache=cache, cache_native=cache_native)
        self.paths = _list_nifti(paths_or_folder, "paths_or_folder")
        self._shapes = [_open(p, "label map")[1] for p in self.paths]
        self._names = [_stem(p) for p in self.paths]
        self.image_paths = {}
        if images is not None:
            groups = images if isinstance(images, dict) else {"real": images}
            for contrast, group in groups.items():
                paths = _list_nifti(group, f"images[{contrast!r}]")
                if len(paths) != len(self.paths):
                    raise ValueError(
                        f"images[{contrast!r}] has {len(paths)} files but there are "
                        f"{len(self.paths)} label maps; they are paired in sorted order"
                    )
                for lab_path, lab_shape, img_path in zip(self.paths, self._shapes, paths):
                    shape = _open(img_path, "image")[1]
                    if shape != lab_shape:
                        raise ValueError(
                            f"image {img_path!r} has shape {shape} but its label map "
                            f"{lab_path!r} has shape {lab_shape}"
                        )
                self.image_paths[contrast] = paths

    @property
    def names(self):
        return list(self._names)

    def _load(self, index):
        path = self.paths[index]
        img, _ = _open(path, "label map")
        data, spacing = _read(img, path, "label map")
        if not np.issubdtype(data.dtype, np.integer):
            rounded = np.rint(data)
            if not np.array_equal(rounded, data):
                raise ValueError(f"label map {path!r} holds non-integer values (is it an image?)")
            data = rounded
        if data.size and data.min() < 0:
            raise ValueError(f"label map {path!r} holds negative labels (min {data.min()})")
        lo, hi = _bbox(data > 0)
        lo, hi = np.maximum(lo - 2, 0), np.minimum(hi + 2, data.shape)
        crop = tuple(slice(a, b) for a, b in zip(lo, hi))
        labels = _compact(np.ascontiguousarray(data[crop]).astype(np.int64))
        images = {}
        for contrast, paths in self.image_paths.items():
            img, _ = _open(paths[index], "image")
            image, _ = _read(img, paths[index], "image")
            image = _normalise_image(image)[crop]
            if contrast == "real":
                images["real"] = image
            else:
                images.setdefault("real", image)
                images[f"real:{contrast}"] = image
        return Volume(labels, spacing, images)


# ----------------------------------------------------------------------------------------------
# the MNI152 default


def _deform(volume, rng, max_scale=0.08, max_rotation=8.0, warp_mm=3.0, warp_spacing_mm=40.0):
    """A random smooth deformation (affine about the centre + smooth displacement) of a volume.

    Labels are resampled with nearest neighbour, images linearly, with one shared field.
    """
    shape = volume.labels.shape
    spacing = np.asarray(volume.spacing)
    centre = (np.asarray(shape) - 1) / 2.0
    angles = np.deg2rad(rng.uniform(-max_rotation, max_rotation, 3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        rot = np.eye(3)
        rot[a, a] = rot[b, b] = np.cos(angle)
        rot[a, b], rot[b, a] = -np.sin(angle), np.sin(angle)
        rotation = rotation @ rot
    scale = 1.0 + rng.uniform(-max_scale, max_scale, 3)
    # output voxel -> input voxel, in mm about the centre
    matrix = np.diag(1.0 / spacing) @ rotation @ np.diag(1.0 / scale) @ np.diag(spacing)
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1) - centre[:, None]
    coords = matrix.astype(np.float32) @ grid + centre[:, None]
    cells = np.maximum(2, np.round(np.asarray(shape) * spacing / warp_spacing_mm).astype(int) + 1)
    for axis in range(3):
        field = smooth_noise(rng, shape, cells) * (warp_mm / spacing[axis])
        coords[axis] += field.reshape(-1)
    labels = ndimage.map_coordinates(volume.labels, coords, order=0, mode="constant", cval=0)
    images = {k: ndimage.map_coordinates(v, coords, order=1, mode="constant", cval=0.0)
              .reshape(shape).astype(np.float32) for k, v in volume.images.items()}
    return Volume(_compact(labels.reshape(shape)), volume.spacing, images)


MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def mni_files():
    """Paths of the MNI152 2009 template files inside the installed nilearn wheel.

    Found through ``importlib`` without importing nilearn (which imports scikit-learn, seconds).

    Raises:
        ValueError: if nilearn is not installed or its data folder lacks the files.
    """
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("MNISubjects needs the nilearn package (pip install nilearn)")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    paths = {k: os.path.join(folder, v) for k, v in MNI_FILES.items()}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"MNISubjects: the nilearn data files {missing} are missing; this "
                         "nilearn version does not ship the MNI152 2009 template")
    return paths


def _block_mean(volume, factor):
    pad = [(0, (-s) % factor) for s in volume.shape]
    volume = np.pad(volume, pad)
    shape = [n for s in volume.shape for n in (s // factor, factor)]
    return volume.reshape(shape).mean(axis=(1, 3, 5))


@functools.lru_cache(maxsize=2)
def mni_label_map(resolution=2):
    """Tissue label map derived from the MNI152 2009 template shipped in the nilearn wheel.

    The template and its GM and WM probability maps (1 mm, RAS) are read with nibabel from the
    data folder of the installed nilearn package (:func:`mni_files`; no network, no nilearn
    import), scaled to [0, 1] (/255) and, for 2 mm, averaged over 2x2x2 blocks. The brain mask
    is template > 0.2 (nilearn's ``load_mni152_brain_mask`` rule) with holes filled. The
    template is skull-stripped, so the head outside the brain is synthesised from the distance
    to the brain: a CSF rim (2 mm), skull (6 mm) and scalp (6 mm). Inside the brain mask each
    voxel takes its most probable tissue (CSF = 1 - GM - WM) and is split by hemisphere (x < 0
    is left) and by rough MNI-coordinate rules into cerebral GM/WM, cerebellar GM/WM, brain
    stem, deep grey matter (GM deeper than 14 mm) and lateral ventricles (CSF deeper than 8 mm).
    The regions are approximate (this is not an atlas) but give several anatomically placed
    labels.

    Args:
        resolution: 1 or 2 (mm).

    Returns:
        :class:`Volume` with FreeSurfer label numbers (0, 2, 3, 4, 7, 8, 10, 16, 24, 41, 42, 43,
        46, 47, 49, 165 skull, 258 scalp) and the template as ``images["t1"]`` in [0, 1].
    """
    import nibabel as nib

    if resolution not in (1, 2):
        raise ValueError(f"resolution must be 1 or 2 (mm), got {resolution!r}")
    images = {k: nib.as_closest_canonical(nib.load(p)) for k, p in mni_files().items()}
    affine = images["t1"].affine.copy()
    data = {k: np.asarray(v.dataobj).astype(np.float32) / 255.0 for k, v in images.items()}
    if resolution == 2:
        data = {k: _block_mean(v, 2) for k, v in data.items()}
        affine[:3, :3] *= 2
        affine[:3, 3] += affine[:3, :3] @ np.full(3, 0.25)  # centre of the first 2x2x2 block
    pad = int(round(24 / resolution))  # room for 14 mm of head plus margin
    t1_d, gm_d, wm_d = (np.pad(data[k], pad) for k in ("t1", "gm", "wm"))
    brain = ndimage.binary_fill_holes(t1_d > 0.2)
    spacing = (float(resolution),) * 3
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)
    ijk = np.indices(brain.shape, dtype=np.float32).reshape(3, -1)
    x, y, z = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(3, *brain.shape)

    csf_p = np.clip(1 - gm_d - wm_d, 0, 1)
    tissue = np.argmax(np.stack([csf_p, gm_d, wm_d]), axis=0)  # 0 CSF, 1 GM, 2 WM
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    outside = ndimage.distance_transform_edt(~brain, sampling=spacing)
    left = x < 0
    cerebellum = brain & (y < -42) & (z < -15)
    stem = brain & (np.abs(x) < 12) & (y >= -42) & (y <= -14) & (z < -12)

    labels = np.zeros(brain.shape, np.int32)

    def side(mask_, left_label, right_label):
        labels[mask_ & left] = left_label
        labels[mask_ & ~left] = right_label

    cerebrum = brain & ~cerebellum & ~stem
    side(cerebrum & (tissue == 2), LEFT_WM, RIGHT_WM)
    side(cerebrum & (tissue == 1), LEFT_GM, RIGHT_GM)
    side(cerebrum & (tissue == 1) & (depth > 14) & (np.abs(x) < 32), LEFT_DEEP, RIGHT_DEEP)
    labels[cerebrum & (tissue == 0)] = CSF
    side(cerebrum & (tissue == 0) & (depth > 8), LEFT_LV, RIGHT_LV)
    side(cerebellum & (tissue == 2), LEFT_CBWM, RIGHT_CBWM)
    side(cerebellum & (tissue != 2), LEFT_CBGM, RIGHT_CBGM)
    labels[stem] = BRAINSTEM
    labels[~brain & (outside <= 2.0 + 1e-3)] = CSF
    labels[~brain & (outside > 2.0 + 1e-3) & (outside <= 8.0 + 1e-3)] = SKULL
    labels[~brain & (outside > 8.0 + 1e-3) & (outside <= 14.0 + 1e-3)] = SCALP
    t1_img = np.clip(t1_d, 0, 1) * brain
    return Volume(_compact(labels), spacing, {"t1": t1_img.astype(np.float32)})


class MNISubjects(LabelMapSource):
    """Subjects made by random smooth deformations of the MNI152-derived label map.

    Subject ``i`` is the map of :func:`mni_label_map` under a random affine (scales within
    +-8 %, rotations within +-8 degrees) and a smooth displacement field (about 3 mm SD, one
    lattice point per 40 mm), drawn from ``np.random.default_rng([seed, i])``: deterministic, and
    independent of the order in which subjects are first used.

    Args:
        n: number of subjects.
        seed: seed of the deformations.
        resolution: template resolution in mm (1 or 2).
        real_image: also give the deformed MNI template as ``images["real"]``. It is a real T1
            image, but of the brain only (the template is skull-stripped).
        warp_mm: SD of the smooth displacement in mm.
        cache: keep resampled volumes in memory (deformed full-resolution maps are always kept).
    """

    def __init__(self, n=20, seed=0, resolution=2, real_image=False, warp_mm=3.0, cache=True):
        super().__init__(cache=cache, cache_native=True)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if resolution not in (1, 2):
            raise ValueError(f"resolution must be 1 or 2 (mm), got {resolution!r}")
        self.n, self.seed, self.resolution = int(n), int(seed), int(resolution)
        self.real_image, self.warp_mm = bool(real_image), float(warp_mm)

    @property
    def names(self):
        return [f"mni{self.resolution}mm_s{self.seed}_{i:03d}" for i in range(self.n)]

    def _load(self, index):
        base = mni_label_map(self.resolution)
        images = {"real": base.images["t1"]} if self.real_image else {}
        rng = np.random.default_rng([self.seed, index])
        return _deform(Volume(base.labels, base.spacing, images), rng, warp_mm=self.warp_mm)


# ----------------------------------------------------------------------------------------------
# procedural label maps


class ProceduralLabelMaps(LabelMapSource):
    """Blobby head-like label maps made from random smooth fields (no files needed).

    Each map is an ellipsoidal head whose radius is perturbed by smooth noise, with nested
    layers (scalp 258, skull 165, CSF 24, cortex 3/42 with noisy "folded" thickness, white
    matter 2/41), two lateral ventricles (4/43), deep grey nuclei (10/49), hippocampus-like
    blobs (17/53), a cerebellum (8/47 with white matter 7/46) and a brain stem (16), split into
    hemispheres along a wavy mid-plane. Subject ``i`` is drawn from
    ``np.random.default_rng([seed, i])``.

    Args:
        n: number of subjects.
        shape: the 3D shape of each map, e.g. ``(64, 64, 64)``.
        seed: seed of the maps.
        spacing: nominal voxel size in mm (the head spans about ``shape * spacing``).
        cache: keep resampled volumes in memory (maps are always kept).
    """

    def __init__(self, n=16, shape=(64, 64, 64), seed=0, spacing=3.0, cache=True):
        super().__init__(cache=cache, cache_native=True)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        shape = _check_shape(shape)
        if len(shape) != 3 or min(shape) < 8:
            raise ValueError(f"shape must be 3 ints >= 8 (a 3D map), got {shape!r}")
        if not spacing > 0:
            raise ValueError(f"spacing must be positive, got {spacing!r}")
        self.n, self.shape, self.seed, self.spacing = int(n), shape, int(seed), float(spacing)

    @property
    def names(self):
        return [f"procedural_s{self.seed}_{i:03d}" for i in range(self.n)]

    def _load(self, index):
        rng = np.random.default_rng([self.seed, index])
        labels = procedural_label_map(self.shape, rng)
        return Volume(_compact(labels), (self.spacing,) * 3, {})


def _ellipsoid(u, centre, radii, wobble):
    """Boolean ellipsoid in normalised coordinates, its surface perturbed by ``wobble``."""
    r2 = sum(((u[a] - centre[a]) / radii[a]) ** 2 for a in range(3))
    return np.sqrt(r2) * (1 + wobble) < 1


def procedural_label_map(shape, rng):
    """One procedural head label map (see :class:`ProceduralLabelMaps`).

    Args:
        shape: 3 ints.
        rng: ``np.random.Generator``.

    Returns:
        int32 (*shape) label map.
    """
    u = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radii = np.array([0.78, 0.92, 0.85]) * rng.uniform(0.88, 1.04, 3)

    def noise(cells, amplitude):
        return amplitude * smooth_noise(rng, shape, cells)

    rho = np.sqrt(sum((u[a] / radii[a]) ** 2 for a in range(3))) * (1 + noise(4, 0.04))
    scalp_t, skull_t, csf_t = rng.uniform(0.06, 0.1), rng.uniform(0.05, 0.08), rng.uniform(
        0.02, 0.05)
    brain_r = 1 - scalp_t - skull_t - csf_t
    brain = rho < brain_r
    folds = rho * (1 + noise(10, 0.05))
    cortex_depth = rng.uniform(0.1, 0.16)

    labels = np.zeros(shape, np.int32)
    labels[rho < 1] = SCALP
    labels[rho < 1 - scalp_t] = SKULL
    labels[rho < 1 - scalp_t - skull_t] = CSF
    midline = u[0] + noise(3, 0.03)
    left = midline < 0
    wm = brain & (folds < brain_r * (1 - cortex_depth))

    def side(mask_, left_label, right_label):
        labels[mask_ & left] = left_label
        labels[mask_ & ~left] = right_label

    side(brain, LEFT_GM, RIGHT_GM)
    side(wm, LEFT_WM, RIGHT_WM)
    # sulcal CSF: thin noisy gaps at the surface of the cortex
    sulci = brain & (noise(12, 1.0) > 1.3) & (rho > brain_r * 0.92)
    labels[sulci] = CSF
    br = radii * brain_r
    wob = 0.08
    for sign, (lv, deep, hip) in ((-1, (LEFT_LV, LEFT_DEEP, LEFT_HIPPO)),
                                  (1, (RIGHT_LV, RIGHT_DEEP, RIGHT_HIPPO))):
        jitter = rng.uniform(-0.03, 0.03, 3)
        ventricle = _ellipsoid(u, (sign * 0.12 * br[0] + jitter[0], 0.05 + jitter[1], 0.12 * br[2]),
                               br * np.array([0.1, 0.35, 0.14]) * rng.uniform(0.8, 1.2),
                               noise(6, wob))
        nucleus = _ellipsoid(u, (sign * 0.33 * br[0], -0.02 + jitter[1], -0.05 * br[2]),
                             br * np.array([0.14, 0.16, 0.13]) * rng.uniform(0.85, 1.15),
                             noise(5, wob))
        hippo = _ellipsoid(u, (sign * 0.45 * br[0], -0.22 * br[1], -0.35 * br[2]),
                           br * np.array([0.07, 0.2, 0.07]) * rng.uniform(0.85, 1.15),
                           noise(5, wob))
        labels[brain & nucleus] = deep
        labels[brain & hippo] = hip
        labels[brain & ventricle] = lv
    cerebellum = brain & (u[2] < -0.25 * br[2]) & _ellipsoid(
        u, (0, -0.7 * br[1], -0.6 * br[2]), (0.75 * br[0], 0.35 * br[1], 0.4 * br[2]),
        noise(4, 0.06))
    side(cerebellum, LEFT_CBGM, RIGHT_CBGM)
    cb_core = cerebellum & (folds < brain_r * 0.93) & (np.abs(midline) > 0.08) & _ellipsoid(
        u, (0, -0.7 * br[1], -0.6 * br[2]), (0.6 * br[0], 0.25 * br[1], 0.3 * br[2]), noise(4, 0.1))
    side(cb_core, LEFT_CBWM, RIGHT_CBWM)
    stem = brain & _ellipsoid(u, (0, -0.2 * br[1], -0.75 * br[2]),
                              (0.14 * br[0], 0.16 * br[1], 0.45 * br[2]), noise(4, 0.05))
    labels[stem] = BRAINSTEM
    return labels
