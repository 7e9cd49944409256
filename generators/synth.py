"""Synthetic images from label maps with neurite's label-to-image model.

In-context tasks need a contrast that is *shared* by all subjects of an episode: the context
must show the mapping that the target needs (modality transfer ``a -> b`` is ill-posed if every
subject has its own contrast). neurite's ``labels_to_image`` draws the per-label means per batch
element, so :class:`ImageSynthesizer` keeps neurite's model but feeds it an episode-level "bin
map": one random table per episode and contrast maps every anatomical label to one of ``n_bins``
intensity bins, and the neurite model is built with ``in_label_list = range(n_bins)`` and fixed,
increasing bin means (``mean_min == mean_max``), which draws the voxel intensities of every
subject (Gaussian voxel noise with a small per-bin SD) and clips them to neurite's 0-255 range.
The rest of the nuisance of real scans is added per subject in numpy, from the episode's
``np.random.Generator``: a smooth multiplicative bias field (exp of a smooth Gaussian random
field), a Gaussian blur (a random SD per axis) and a gamma change. neurite's own bias and blur
are switched off because they are not reproducible: neurite draws its blur SD with an eager
random op while the model is *built* (one fixed value per model, a different one for each model
built with the same seed), and its bias field comes from seeded random ops inside a ``map_fn``
loop whose state carries over from one model to the next, so a new generator with the same
seed would not give the same images (measured; the per-voxel noise op has no such problem).

Intensities are mapped to [0, 1] by a *fixed* division by 255 (neurite's scale) instead of
neurite's per-image min-max, because a min-max depends on which labels happen to be in the image
(a 2D slice without the brightest structure would rescale every other one) and would break the
shared contrast. Labels that share a bin look alike, as structures do in real contrasts.

The label map is not deformed by neurite (``warp_std = 0``): sources and spatial augmentations
deform label maps *before* synthesis, so labels and all contrasts of a subject stay aligned
voxel for voxel.

Contrast modes:

- ``"shared"`` (default): one table per episode and contrast, shared by all its subjects.
- ``"per_subject"``: one table per subject (neurite's usual domain randomisation; fine for
  segmentation, wrong for modality transfer).
- ``"t1"``: T1-weighted-like, from a table of tissue intensities (white matter brighter than
  grey matter brighter than CSF, fat bright, bone dark) with a per-subject spread; see
  :data:`T1_TISSUES`. SynthSeg's priors can be used instead with
  :func:`load_synthseg_t1_priors` when their class file is available.

The neurite model is built once per spatial shape and run inside a ``tf.function`` with a
``None`` batch dimension (no retracing when the context size changes). Measured on the shared
2-CPU machine (load average about 6, so absolute times are pessimistic), 18 maps per call:
64^2, 0.026 s in the ``tf.function`` vs 0.33 s eager (13x); 32^3, 0.11 s vs 0.43 s (4x). With
neurite's own bias and blur switched on (before they were moved to numpy) the ratio was 25-70x
(0.011 s vs 0.75 s at 64^2, 0.048 s vs 1.28 s at 32^3), because their per-element ``map_fn``
loops are slow eagerly. neurite's random op (the voxel noise) gets an op-level seed derived
from ``seed``, so a new synthesizer with the same seed reproduces the same sequence of images.
"""

import os

import numpy as np
from scipy import ndimage

from .sources import LEFT_RIGHT_PAIRS, smooth_noise

__all__ = ["T1_TISSUES", "ImageSynthesizer", "load_synthseg_t1_priors", "t1_table"]

CONTRASTS = ("shared", "per_subject", "t1")

# T1-weighted tissue classes: (name, mean on a 0-255 scale, FreeSurfer labels). Values are
# rough relative intensities of a T1w scan (fat and white matter bright, CSF and bone dark), not
# measured priors; every subject draws its class means within +-spread of these.
T1_TISSUES = (
    ("background", 0.0, (0,)),
    ("csf", 45.0, (4, 5, 14, 15, 24, 31, 43, 44, 63, 72)),
    ("cortex", 105.0, (3, 8, 42, 47)),
    ("hippocampus_amygdala", 110.0, (17, 18, 53, 54)),
    ("caudate_accumbens", 120.0, (11, 26, 50, 58)),
    ("putamen", 128.0, (12, 51)),
    ("thalamus", 138.0, (10, 49)),
    ("pallidum_ventral_dc", 148.0, (13, 28, 52, 60)),
    ("brainstem", 150.0, (16,)),
    ("cerebellar_wm", 160.0, (7, 46)),
    ("cerebral_wm", 170.0, (2, 41, 77, 85)),
    ("vessel", 90.0, (30, 62)),
    ("bone", 35.0, (165,)),
    ("scalp_fat", 185.0, (258,)),
)


def t1_table(spread=0.1):
    """The built-in T1 tissue table as arrays for the synthesizer.

    Args:
        spread: relative half-width of the per-subject range of each class mean.

    Returns:
        ``(lut, mean_min, mean_max)``: ``lut`` maps label -> class index (a dict); labels not
        listed go to an extra last class "other" whose mean is drawn in [20, 220] per subject.
    """
    lut, lo, hi = {}, [], []
    for index, (_, mean, labels) in enumerate(T1_TISSUES):
        for label in labels:
            lut[label] = index
        lo.append(mean * (1 - spread))
        hi.append(mean * (1 + spread))
    lo.append(20.0)
    hi.append(220.0)
    return lut, lo, hi


def load_synthseg_t1_priors(folder, classes_file=None):
    """SynthSeg's T1 intensity priors as a table for ``ImageSynthesizer(contrast="t1")``.

    SynthSeg samples each class mean from N(prior_means[0, k], prior_means[1, k]). The columns
    of ``prior_means_t1.npy`` are indexed by SynthSeg's ``generation_classes_contrast_specific``
    file (25 classes, left and right merged); ``generation_classes.npy`` (48 classes) does not
    index them. This function checks that the classes index the prior columns.

    Args:
        folder: folder with ``generation_labels.npy``, ``prior_means_t1.npy``,
            ``prior_stds_t1.npy`` and (unless ``classes_file`` is given)
            ``generation_classes.npy``.
        classes_file: path of the class array matching the priors.

    Returns:
        ``(lut, mean_min, mean_max)`` as :func:`t1_table` (uniform ranges with the priors'
        mean and variance: mean +- sqrt(3) SD, clipped at 0).

    Raises:
        ValueError: missing files, or classes that do not index the prior columns (naming both
            sizes).
    """
    def load(name):
        path = os.path.join(os.fspath(folder), name)
        if not os.path.isfile(path):
            raise ValueError(f"load_synthseg_t1_priors: {path!r} does not exist")
        return np.load(path)

    labels = load("generation_labels.npy").astype(int)
    classes = (np.load(classes_file) if classes_file is not None
               else load("generation_classes.npy")).astype(int)
    means = load("prior_means_t1.npy")
    if classes.shape != labels.shape:
        raise ValueError(
            f"load_synthseg_t1_priors: {classes.size} classes for {labels.size} labels")
    if means.ndim != 2 or means.shape[0] != 2 or classes.max() >= means.shape[1]:
        raise ValueError(
            f"load_synthseg_t1_priors: the classes go up to {classes.max()} but prior_means_t1 "
            f"has shape {means.shape} ({means.shape[-1]} classes). These priors are indexed by "
            "SynthSeg's generation_classes_contrast_specific.npy; pass it as classes_file."
        )
    n_classes = int(classes.max()) + 1
    lut = {int(lab): int(c) for lab, c in zip(labels, classes)}
    half = np.sqrt(3.0) * means[1, :n_classes]
    lo = np.maximum(means[0, :n_classes] - half, 0.0)
    hi = means[0, :n_classes] + half
    return lut, [float(v) for v in lo] + [20.0], [float(v) for v in hi] + [220.0]


class ImageSynthesizer:
    """Episode-consistent synthetic contrasts from label maps (neurite ``labels_to_image``).

    Args:
        contrast: ``"shared"``, ``"per_subject"`` or ``"t1"`` (see the module docstring).
        n_bins: number of intensity bins (>= 2) for ``"shared"``/``"per_subject"``. Bin 0 is
            the background (label 0, mean 0); bins 1..n_bins-1 have means evenly spaced in
            ``mean_range``.
        mean_range: (low, high) bin means on neurite's 0-255 scale (headroom above ``high``
            for noise and bias before the clip at 255).
        noise_std: upper bound of the per-bin voxel noise SD (0-255 scale).
        blur_std: upper bound of the per-subject Gaussian blur SD in voxels (0 = none).
        bias_std: upper bound of the per-subject SD of the log bias field (0 = none).
        bias_cells: lattice points per axis of the bias field (smoothness).
        gamma_std: SD of the log of the per-subject gamma exponent (0 = none).
        t1_spread: per-subject relative range of the built-in T1 class means.
        t1_priors: optional ``(lut, mean_min, mean_max)`` (e.g. from
            :func:`load_synthseg_t1_priors`) replacing the built-in T1 table.
        tie_hemispheres: give left and right labels of the same structure (FreeSurfer pairs
            such as 17/53) the same bin, as in real scans.
        seed: base of neurite's op-level seeds (reproducibility).

    Raises:
        ValueError: on an unknown contrast or a bad numeric argument (naming it).
    """

    def __init__(self, contrast="shared", n_bins=12, mean_range=(25.0, 200.0), noise_std=5.0,
                 blur_std=1.0, bias_std=0.3, bias_cells=4, gamma_std=0.1, t1_spread=0.1,
                 t1_priors=None,
                 tie_hemispheres=True, seed=0):
        if contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
        if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
            raise ValueError(f"n_bins must be an int >= 2, got {n_bins!r}")
        lo, hi = (float(v) for v in mean_range)
        if not 0 <= lo < hi <= 255:
            raise ValueError(f"mean_range must satisfy 0 <= low < high <= 255, got {mean_range}")
        for name, value in (("noise_std", noise_std), ("blur_std", blur_std),
                            ("bias_std", bias_std), ("gamma_std", gamma_std),
                            ("t1_spread", t1_spread)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        self.contrast, self.n_bins = contrast, int(n_bins)
        self.mean_range = (lo, hi)
        self.noise_std, self.blur_std = float(noise_std), float(blur_std)
        self.bias_std, self.gamma_std = float(bias_std), float(gamma_std)
        if isinstance(bias_cells, bool) or not isinstance(bias_cells, int) or bias_cells < 2:
            raise ValueError(f"bias_cells must be an int >= 2, got {bias_cells!r}")
        self.bias_cells = bias_cells
        self.t1_spread, self.seed = float(t1_spread), int(seed)
        self.t1_priors = t1_priors
        self.tie_hemispheres = bool(tie_hemispheres)
        if contrast == "t1":
            lut, mmin, mmax = t1_priors if t1_priors is not None else t1_table(t1_spread)
            self._t1_lut = dict(lut)
            self._class_min, self._class_max = list(mmin), list(mmax)
        else:
            means = [0.0] + list(np.linspace(lo, hi, self.n_bins - 1))
            self._class_min = self._class_max = means
        self._functions = {}

    def get_config(self):
        """Constructor arguments (JSON-safe, except a custom ``t1_priors`` table)."""
        return {
            "contrast": self.contrast, "n_bins": self.n_bins, "mean_range": list(self.mean_range),
            "noise_std": self.noise_std, "blur_std": self.blur_std, "bias_std": self.bias_std,
            "bias_cells": self.bias_cells,
            "gamma_std": self.gamma_std, "t1_spread": self.t1_spread,
            "tie_hemispheres": self.tie_hemispheres, "seed": self.seed,
        }

    @property
    def n_classes(self):
        """Number of classes fed to neurite (bins, or T1 classes + "other")."""
        return len(self._class_min)

    # tables -----------------------------------------------------------------------------------
    def draw_table(self, labels, rng):
        """A random label -> bin table: label 0 -> bin 0, every other label -> bins 1..K-1
        (left/right partners to the same bin when ``tie_hemispheres``).

        Args:
            labels: iterable of the label numbers to map.
            rng: ``np.random.Generator``.

        Returns:
            dict label -> bin.
        """
        labels = sorted(int(v) for v in labels)
        right_to_left = {r: left for left, r in LEFT_RIGHT_PAIRS} if self.tie_hemispheres else {}
        key = {lab: right_to_left.get(lab, lab) for lab in labels}
        keys = sorted(set(key.values()))
        bins = dict(zip(keys, (int(b) for b in rng.integers(1, self.n_bins, size=len(keys)))))
        return {lab: (0 if lab == 0 else bins[key[lab]]) for lab in labels}

    def class_map(self, labels, table):
        """Map a label map through ``table`` (dict label -> class) with a lookup array.

        Labels missing from ``table`` go to the last class (``"t1"``) or raise.
        """
        labels = np.asarray(labels)
        top = max(int(labels.max()), max(table)) + 1
        default = self.n_classes - 1 if self.contrast == "t1" else -1
        lut = np.full(top, default, dtype=np.int32)
        for lab, cls in table.items():
            lut[lab] = cls
        out = lut[labels]
        if default < 0 and (out < 0).any():
            missing = sorted(set(np.unique(labels[out < 0]).tolist()))
            raise ValueError(f"labels {missing} are not in the contrast table")
        return out

    def episode_tables(self, episode_labels, rng, contrasts=("a", "b")):
        """The label -> class tables of one episode.

        Args:
            episode_labels: the episode's label maps (a list of (*S) int arrays).
            rng: ``np.random.Generator``.
            contrasts: contrast names.

        Returns:
            dict contrast -> list of one table per subject (the same table object for every
            subject when the contrast is shared).
        """
        union = set()
        for labels in episode_labels:
            union.update(np.unique(labels).tolist())
        tables = {}
        for name in contrasts:
            if self.contrast == "t1":
                tables[name] = [self._t1_lut] * len(episode_labels)
            elif self.contrast == "shared":
                tables[name] = [self.draw_table(union, rng)] * len(episode_labels)
            else:
                tables[name] = [self.draw_table(np.unique(lab).tolist(), rng)
                                for lab in episode_labels]
        return tables

    # neurite ----------------------------------------------------------------------------------
    def _function(self, shape):
        key = tuple(shape)
        if key in self._functions:
            return self._functions[key]
        from neuroicl_tf import _compat

        tf = _compat.import_tensorflow()
        ne = _compat.import_neurite()
        k = self.n_classes
        std_max = [0.0] + [self.noise_std] * (k - 1)
        seeds = {name: self.seed * 1000 + i for i, name in enumerate(
            ("mean", "std", "noise", "background", "blur", "bias", "gamma", "dc_offset", "warp"))}
        model = ne.tf.models.labels_to_image(
            in_shape=list(shape), in_label_list=list(range(k)),
            mean_min=list(self._class_min), mean_max=list(self._class_max),
            std_min=[0.0] * k, std_max=std_max, zero_background=0.0,
            warp_std=0.0, bias_std=0.0,
            blur_std=0.0, normalize=False, gamma_std=0.0, one_hot=False, seeds=seeds,
            id=len(self._functions),
        )

        @tf.function(input_signature=[tf.TensorSpec((None, *shape, 1), tf.int32)])
        def run(class_maps):
            return model(class_maps, training=False)[0]

        self._functions[key] = run
        return run

    def render(self, class_maps):
        """Run the neurite model on class maps.

        Args:
            class_maps: int (N, *S) class indices in [0, n_classes).

        Returns:
            float32 (N, *S) images in [0, 1] (neurite's 0-255 scale divided by 255, clipped),
            one per map, with independent voxel noise (no bias, blur or gamma).
        """
        class_maps = np.asarray(class_maps, dtype=np.int32)
        if class_maps.ndim not in (3, 4):
            raise ValueError(f"class_maps must be (N, *S) with 2 or 3 spatial axes, got "
                             f"{class_maps.shape}")
        if class_maps.shape[0] == 0:
            return np.zeros(class_maps.shape, np.float32)
        run = self._function(class_maps.shape[1:])
        images = run(class_maps[..., None]).numpy()[..., 0] / 255.0
        return np.clip(np.nan_to_num(images), 0.0, 1.0).astype(np.float32)

    def synthesize(self, episodes, rng, contrasts=("a", "b")):
        """Images of every subject of several episodes, in one neurite call per spatial shape.

        Args:
            episodes: list of episodes, each a list of (*S) int label maps (all the same *S).
            rng: ``np.random.Generator`` for the contrast tables.
            contrasts: names of the contrasts to make.

        Returns:
            ``(images, tables)``: ``images[e][i]`` is a dict contrast -> float32 (*S) image in
            [0, 1] of subject i of episode e; ``tables[e]`` the episode's tables (see
            :meth:`episode_tables`).
        """
        tables, maps, where = [], [], []
        for e, episode in enumerate(episodes):
            episode_tables = self.episode_tables(episode, rng, contrasts)
            tables.append(episode_tables)
            for name in contrasts:
                for i, labels in enumerate(episode):
                    maps.append(self.class_map(labels, episode_tables[name][i]))
                    where.append((e, i, name))
        images = [[{} for _ in episode] for episode in episodes]
        by_shape = {}
        for j, m in enumerate(maps):
            by_shape.setdefault(m.shape, []).append(j)
        for _, indices in by_shape.items():
            rendered = self.render(np.stack([maps[j] for j in indices]))
            for j, image in zip(indices, rendered):
                e, i, name = where[j]
                if self.bias_std > 0:
                    log_field = smooth_noise(rng, image.shape, self.bias_cells)
                    image = image * np.exp(log_field * rng.uniform(0.0, self.bias_std))
                if self.blur_std > 0:
                    sigma = rng.uniform(0.0, self.blur_std, image.ndim)
                    image = ndimage.gaussian_filter(image, sigma, mode="nearest")
                if self.gamma_std > 0:
                    image = np.clip(image, 0.0, 1.0) ** np.float32(
                        np.exp(rng.normal(0.0, self.gamma_std)))
                images[e][i][name] = np.clip(image, 0.0, 1.0).astype(np.float32)
        return images, tables
