"""Base of the label-map sources: volumes, resampling, the :class:`LabelMapSource` class.

See :mod:`generators.sources` for the overview.
"""

import dataclasses
import functools
import math

import numpy as np
from scipy import ndimage

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
        compared to the smallest side of the shape. A 5 % margin is added. The result is cached:
        without ``cache_native`` a source would otherwise read its file again for every sample.
        """
        key = (int(index), tuple(int(s) for s in shape))
        cached = self.__dict__.setdefault("_fit_spacing", {})
        if key in cached:
            return cached[key]
        volume = self.load(index)
        lo, hi = volume.head_box
        extent = (hi - lo) * np.asarray(volume.spacing)
        if len(shape) == 3:
            spacing = max(e / s for e, s in zip(extent, shape))
        else:
            spacing = float(extent.max()) / min(shape)
        cached[key] = round(1.05 * float(spacing), 3)
        return cached[key]

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
