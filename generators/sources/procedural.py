"""Procedural head-like label maps: :class:`ProceduralLabelMaps`."""

import numpy as np

from .base import (
    BRAINSTEM,
    CSF,
    LEFT_CBGM,
    LEFT_CBWM,
    LEFT_DEEP,
    LEFT_GM,
    LEFT_HIPPO,
    LEFT_LV,
    LEFT_WM,
    RIGHT_CBGM,
    RIGHT_CBWM,
    RIGHT_DEEP,
    RIGHT_GM,
    RIGHT_HIPPO,
    RIGHT_LV,
    RIGHT_WM,
    SCALP,
    SKULL,
    LabelMapSource,
    Volume,
    _check_shape,
    _compact,
    smooth_noise,
)

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
