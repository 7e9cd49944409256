"""The embedded default source: label maps derived from the MNI152 template in nilearn."""

import functools
import os

import numpy as np
from scipy import ndimage

from .base import (
    BRAINSTEM,
    CSF,
    LEFT_CBGM,
    LEFT_CBWM,
    LEFT_DEEP,
    LEFT_GM,
    LEFT_LV,
    LEFT_WM,
    RIGHT_CBGM,
    RIGHT_CBWM,
    RIGHT_DEEP,
    RIGHT_GM,
    RIGHT_LV,
    RIGHT_WM,
    SCALP,
    SKULL,
    LabelMapSource,
    Volume,
    _compact,
    smooth_noise,
)

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
