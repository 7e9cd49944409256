"""The core tasks: segmentation, skull stripping, modality transfer, super-resolution, Gaussian and
salt-and-pepper denoising, bias-field correction and inpainting.

Every task makes float32 pairs ``(x, y)`` of shape (*S, 1) with values in [0, 1] from one
:class:`~generators.subject.Subject`. Episode-level parameters (which labels, which factor,
which noise level) are drawn once per episode by ``sample_episode`` so that target and context
show the same mapping; per-pair randomness (the noise itself, the bias field, the inpainting
mask) comes from the ``rng`` given to ``make_pair``.

Where the Neuralizer/Neuroverse3D papers and the reference code disagree (SPEC sections 4.4,
4.5 and 7), the choice is stated in the task's docstring and in ``docs/tasks.md``.

The degradations are also public pure functions (:func:`perlin_noise`, :func:`legendre_field`,
:func:`degrade_resolution`, :func:`add_gaussian_noise`, :func:`add_salt_pepper`) so that tests
and other code can check and reuse them.
"""

import math

import numpy as np
from numpy.polynomial import legendre
from scipy import ndimage

from .._params import as_range as _range
from .._params import draw as _draw
from ..sources import LEFT_RIGHT_PAIRS
from .base import KIND_IMAGE, KIND_SEGMENTATION, Task, register_task

__all__ = [
    "BiasCorrection",
    "GaussianDenoising",
    "Inpainting",
    "ModalityTransfer",
    "SaltPepperDenoising",
    "Segmentation",
    "SkullStripping",
    "SuperResolution",
    "add_gaussian_noise",
    "add_salt_pepper",
    "degrade_resolution",
    "legendre_field",
    "perlin_noise",
]

_PARTNER = {a: b for a, b in LEFT_RIGHT_PAIRS} | {b: a for a, b in LEFT_RIGHT_PAIRS}


# ----------------------------------------------------------------------------------------------
# argument helpers


def _image(subject, contrast):
    if contrast not in subject.images:
        raise ValueError(f"Subject {subject.name!r} has no contrast {contrast!r}; it has "
                         f"{sorted(subject.images)}")
    return np.asarray(subject.images[contrast], dtype=np.float32)


def _pair(x, y):
    return (np.asarray(x, np.float32)[..., None], np.asarray(y, np.float32)[..., None])


def _check_contrast(contrast):
    if not isinstance(contrast, str) or not contrast:
        raise ValueError(f"contrast must be a non-empty string, got {contrast!r}")
    return contrast


def _check_probability(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------------------
# degradations (pure functions)


def perlin_noise(shape, cells, rng):
    """Perlin gradient noise on a regular lattice (2D or 3D).

    Random unit gradients sit on a lattice of ``cells`` cells per axis; each voxel takes the
    dot products of the corner gradients with its offsets to the corners, blended with the
    quintic fade 6t^5 - 15t^4 + 10t^3. The result is smooth, zero at lattice points, and
    roughly within [-1, 1].

    Args:
        shape: spatial shape (2 or 3 ints).
        cells: lattice cells per axis (int or one per axis, >= 1).
        rng: ``np.random.Generator``.

    Returns:
        float32 array of ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    cells = np.maximum(np.broadcast_to(np.asarray(cells, int), (ndim,)), 1)
    grads = rng.standard_normal((*(cells + 1), ndim))
    grads /= np.maximum(np.linalg.norm(grads, axis=-1, keepdims=True), 1e-12)
    # voxel centres in lattice units, in [0, cells)
    axes = [(np.arange(s) + 0.5) / s * c for s, c in zip(shape, cells)]
    pos = np.meshgrid(*axes, indexing="ij")
    base = [np.minimum(np.floor(p).astype(int), c - 1) for p, c in zip(pos, cells)]
    frac = [p - b for p, b in zip(pos, base)]
    fade = [t * t * t * (t * (t * 6 - 15) + 10) for t in frac]
    out = np.zeros(shape, np.float64)
    for corner in np.ndindex(*(2,) * ndim):
        g = grads[tuple(b + c for b, c in zip(base, corner))]
        dot = sum(g[..., a] * (frac[a] - corner[a]) for a in range(ndim))
        weight = np.ones(shape)
        for a in range(ndim):
            weight = weight * (fade[a] if corner[a] else 1 - fade[a])
        out += weight * dot
    return (out * math.sqrt(2.0)).astype(np.float32)


def legendre_field(shape, coefficients):
    """A smooth log-field: sum of products of Legendre polynomials over [-1, 1]^n.

    Args:
        shape: spatial shape (2 or 3 ints).
        coefficients: array of shape (order + 1,) * n; entry [i, j, (k)] multiplies
            P_i(x) P_j(y) (P_k(z)).

    Returns:
        float32 array of ``shape``: sum_ijk c_ijk P_i(x) P_j(y) P_k(z).
    """
    coefficients = np.asarray(coefficients, np.float64)
    grids = [np.linspace(-1, 1, s) for s in shape]
    if len(shape) == 2:
        field = legendre.leggrid2d(grids[0], grids[1], coefficients)
    elif len(shape) == 3:
        field = legendre.leggrid3d(grids[0], grids[1], grids[2], coefficients)
    else:
        raise ValueError(f"shape must have 2 or 3 axes, got {shape!r}")
    return field.astype(np.float32)


def degrade_resolution(image, factor, axes=None):
    """Down-sample by block averaging, then up-sample back linearly.

    Args:
        image: float (*S) image.
        factor: integer down-sampling factor (>= 1).
        axes: the axes to down-sample (default all).

    Returns:
        ``(low, restored)``: the block means, shape ceil(S / factor) on ``axes``, and the
        linear up-sampling of ``low`` to (*S) (voxel-centre aligned).
    """
    image = np.asarray(image, np.float32)
    axes = tuple(range(image.ndim)) if axes is None else tuple(axes)
    factor = int(factor)
    pad = [(0, (-s) % factor if a in axes else 0) for a, s in enumerate(image.shape)]
    padded = np.pad(image, pad, mode="edge")
    shape = []
    for a, s in enumerate(padded.shape):
        shape += [s // factor, factor] if a in axes else [s, 1]
    low = padded.reshape(shape).mean(axis=tuple(range(1, 2 * image.ndim, 2)))
    zoom = [s / n for s, n in zip(padded.shape, low.shape)]
    restored = ndimage.zoom(low, zoom, order=1, mode="nearest", grid_mode=True)
    restored = restored[tuple(slice(0, s) for s in image.shape)]
    return low.astype(np.float32), restored.astype(np.float32)


def add_gaussian_noise(image, std, rng, renormalize=True):
    """Add N(0, std^2) noise; optionally min-max the result back to [0, 1] (as the reference).

    Returns:
        ``(noisy, noise)``: float32 (*S) noisy image in [0, 1] and the noise that was added.
    """
    noise = rng.normal(0.0, std, np.shape(image)).astype(np.float32)
    noisy = image + noise
    if renormalize:
        lo, hi = float(noisy.min()), float(noisy.max())
        noisy = (noisy - lo) / max(hi - lo, 1e-8)
    return np.clip(noisy, 0, 1).astype(np.float32), noise


def add_salt_pepper(image, p_salt, p_pepper, rng, salt=1.0, pepper=0.0):
    """Set ceil(p * N) voxels, drawn *with replacement* (as the reference), to salt or pepper.

    Returns:
        float32 (*S) image.
    """
    out = np.array(image, np.float32, copy=True)
    flat = out.reshape(-1)
    n = flat.size
    flat[rng.integers(0, n, int(math.ceil(p_salt * n)))] = salt
    flat[rng.integers(0, n, int(math.ceil(p_pepper * n)))] = pepper
    return out


# ----------------------------------------------------------------------------------------------
# tasks


@register_task
class Segmentation(Task):
    """Binary segmentation of a group of labels: y = 1 where the label is in the chosen set.

    Either a fixed label set (``labels=[17, 53]`` for both hippocampi) or, per episode, a random
    group of ``n_labels`` labels drawn among the non-zero labels with at least ``min_voxels``
    voxels in the target (the first subject), so the target is never empty. Neuroverse3D's
    segmentation labels are exactly such binary masks of a class set (SPEC 4.3); Neuralizer
    segments one label at a time (``n_labels=1``, the default). The paper's "random foreground
    grouping" augmentation (p = 0.5, up to 10 classes) is ``group_p=0.5, group_size=(2, 10)``:
    with probability ``group_p`` an episode segments a group of ``group_size`` labels instead
    of ``n_labels``.

    Args:
        labels: fixed label numbers (list of ints) or None for a random group per episode.
        n_labels: group size, int or (min, max) inclusive, for random groups.
        merge_hemispheres: choose left/right pairs together (e.g. 17 and 53).
        min_voxels: smallest size in the target of a label that can be chosen.
        contrast: input image contrast.
        group_p: probability that an episode draws its group size from ``group_size``
            instead of ``n_labels`` (random groups only; 0 = never).
        group_size: size of such a group, int or (min, max) inclusive.
    """

    name = "segmentation"
    kind = KIND_SEGMENTATION

    def __init__(self, labels=None, n_labels=1, merge_hemispheres=False, min_voxels=4,
                 contrast="a", group_p=0.0, group_size=(2, 10)):
        if labels is not None:
            labels = [int(v) for v in np.atleast_1d(labels)]
            if not labels or min(labels) < 0:
                raise ValueError(f"labels must be a non-empty list of label numbers >= 0, "
                                 f"got {labels!r}")
        self.labels = labels
        self.n_labels = _range(n_labels, "n_labels", 1, 1000, integer=True)
        self.merge_hemispheres = bool(merge_hemispheres)
        if isinstance(min_voxels, bool) or not isinstance(min_voxels, int) or min_voxels < 1:
            raise ValueError(f"min_voxels must be an int >= 1, got {min_voxels!r}")
        self.min_voxels = min_voxels
        self.contrast = _check_contrast(contrast)
        if (isinstance(group_p, bool) or not isinstance(group_p, (int, float, np.number))
                or not 0 <= group_p <= 1):
            raise ValueError(f"group_p must be a probability in [0, 1], got {group_p!r}")
        self.group_p = float(group_p)
        self.group_size = _range(group_size, "group_size", 1, 1000, integer=True)
        super().__init__(labels=labels, n_labels=list(self.n_labels),
                         merge_hemispheres=self.merge_hemispheres, min_voxels=min_voxels,
                         contrast=contrast, group_p=self.group_p,
                         group_size=list(self.group_size))

    def sample_episode(self, rng, subjects):
        if self.labels is not None:
            return {"labels": list(self.labels)}
        if not subjects:
            raise ValueError("segmentation.sample_episode needs at least the target subject")
        values, counts = np.unique(subjects[0].labels, return_counts=True)
        candidates = [int(v) for v, c in zip(values, counts) if v != 0 and c >= self.min_voxels]
        if not candidates:
            raise ValueError(f"Subject {subjects[0].name!r} has no non-zero label with at least "
                             f"{self.min_voxels} voxels to segment")
        groups = []
        if self.merge_hemispheres:
            seen = set()
            for v in candidates:
                if v in seen:
                    continue
                group = tuple(sorted({v, _PARTNER.get(v, v)}))
                seen.update(group)
                groups.append(group)
        else:
            groups = [(v,) for v in candidates]
        sizes = self.n_labels
        # Drawn only when grouping is on, so episodes without it stay as they were.
        if self.group_p > 0 and rng.random() < self.group_p:
            sizes = self.group_size
        k = int(rng.integers(sizes[0], sizes[1] + 1))
        k = min(k, len(groups))
        chosen = rng.choice(len(groups), size=k, replace=False)
        return {"labels": sorted(int(v) for i in chosen for v in groups[i])}

    def make_pair(self, subject, episode, rng):
        x = _image(subject, self.contrast)
        y = np.isin(subject.labels, episode["labels"]).astype(np.float32)
        return _pair(x, y)


@register_task
class SkullStripping(Task):
    """Skull stripping: input the head image, output the brain.

    Choice: the default output is the brain-masked image (``output="image"``, an image task,
    MSE/L1), as Neuralizer's "skull stripping"; ``output="mask"`` gives the binary brain mask
    instead (a segmentation-like task, Dice: then this instance's ``kind`` is 0; Neuralizer's
    separate "masking" task). The brain is every label except background and the extra-cerebral
    ones (:func:`generators.sources.brain_mask_of`; CSF counts as brain, as in SynthStrip).
    The paper's FreeSurfer targets are replaced by the label maps' brain labels.

    Args:
        output: ``"image"`` or ``"mask"``.
        contrast: input contrast for synthetic pairs.
        p_real: probability of using the real image (``images["real"]``) when every subject
            of the episode has one. Only meaningful for real head images (not for the
            skull-stripped MNI template).
    """

    name = "skull_stripping"
    kind = KIND_IMAGE

    def __init__(self, output="image", contrast="a", p_real=0.5):
        if output not in ("image", "mask"):
            raise ValueError(f"output must be 'image' or 'mask', got {output!r}")
        self.output = output
        self.kind = KIND_IMAGE if output == "image" else KIND_SEGMENTATION
        self.contrast = _check_contrast(contrast)
        self.p_real = _check_probability(p_real, "p_real")
        super().__init__(output=output, contrast=contrast, p_real=self.p_real)

    def sample_episode(self, rng, subjects):
        real = bool(subjects) and all("real" in s.images for s in subjects)
        use_real = real and rng.random() < self.p_real
        return {"contrast": "real" if use_real else self.contrast}

    def make_pair(self, subject, episode, rng):
        x = _image(subject, episode["contrast"])
        mask = np.asarray(subject.brain_mask, bool)
        y = x * mask if self.output == "image" else mask.astype(np.float32)
        return _pair(x, y)


@register_task
class ModalityTransfer(Task):
    """Modality transfer: input one contrast of a subject, output another of the same anatomy.

    Synthetic pairs map contrast ``source`` to ``target`` (default ``"a" -> "b"``), two
    episode-shared synthetic contrasts (``generators.synth``), so the context shows the same
    mapping the target needs. When every subject of the episode has real images, with
    probability ``p_real`` a real pair is used instead: two real contrasts (``"real:<name>"``)
    in a random order if there are at least two, else the real image and a synthetic contrast
    in a random direction.

    Args:
        source: input contrast of synthetic pairs.
        target: output contrast of synthetic pairs.
        p_real: probability of a real pair when real images are present.
    """

    name = "modality_transfer"
    kind = KIND_IMAGE

    def __init__(self, source="a", target="b", p_real=0.5):
        self.source = _check_contrast(source)
        self.target = _check_contrast(target)
        if source == target:
            raise ValueError(f"source and target must differ, got {source!r} twice")
        self.p_real = _check_probability(p_real, "p_real")
        super().__init__(source=source, target=target, p_real=self.p_real)

    def sample_episode(self, rng, subjects):
        pair = (self.source, self.target)
        if subjects and rng.random() < self.p_real:
            shared = set.intersection(*(set(s.images) for s in subjects))
            named = sorted(k for k in shared if k.startswith("real:"))
            if len(named) >= 2:
                i, j = rng.choice(len(named), 2, replace=False)
                pair = (named[i], named[j])
            elif "real" in shared:
                pair = ("real", self.source) if rng.random() < 0.5 else (self.source, "real")
        return {"source": pair[0], "target": pair[1]}

    def make_pair(self, subject, episode, rng):
        return _pair(_image(subject, episode["source"]), _image(subject, episode["target"]))


@register_task
class SuperResolution(Task):
    """Super-resolution: input the image down-sampled (block mean) and up-sampled (linear) back,
    output the original.

    Choice: factors default to (2,) (Neuroverse3D paper, Sec. B.1: "down-sample by a factor of
    2"; the reference code has no super-resolution). Larger factors (x2 and more, Neuralizer)
    are set with ``factors=(2, 3, 4)``. With probability ``p_anisotropic`` only one random axis
    is down-sampled (thick slices), else all axes. The factor and axes are shared by the
    episode.

    Args:
        factors: integer factors (>= 2), one drawn per episode.
        p_anisotropic: probability of down-sampling a single axis.
        contrast: image contrast.
    """

    name = "super_resolution"
    kind = KIND_IMAGE

    def __init__(self, factors=(2,), p_anisotropic=0.0, contrast="a"):
        factors = [int(f) for f in np.atleast_1d(factors)]
        if not factors or min(factors) < 2:
            raise ValueError(f"factors must be integers >= 2, got {factors!r}")
        self.factors = factors
        self.p_anisotropic = _check_probability(p_anisotropic, "p_anisotropic")
        self.contrast = _check_contrast(contrast)
        super().__init__(factors=factors, p_anisotropic=self.p_anisotropic, contrast=contrast)

    def sample_episode(self, rng, subjects):
        ndim = subjects[0].ndims if subjects else 3
        factor = int(rng.choice(self.factors))
        if rng.random() < self.p_anisotropic:
            axes = [int(rng.integers(ndim))]
        else:
            axes = list(range(ndim))
        return {"factor": factor, "axes": axes}

    def make_pair(self, subject, episode, rng):
        y = _image(subject, self.contrast)
        _, x = degrade_resolution(y, episode["factor"], episode["axes"])
        return _pair(np.clip(x, 0, 1), y)


@register_task
class GaussianDenoising(Task):
    """Gaussian denoising: input = clean image + N(0, std^2) noise, output = the clean image.

    Choice: std ~ U(0.15, 0.25) per episode, the paper's range (Neuroverse3D Sec. B.1), not the
    reference code's 0.03 (or U(0.0045, 0.03)): the synthetic images already carry neurite's
    own voxel noise of about 0.02, so noise of 0.03 would make an almost-identity task. The
    noisy input is min-max renormalised to [0, 1] as in the reference code
    (``renormalize=True``), otherwise clipped. Pass ``std=(0.0045, 0.03)`` for the code's
    values.

    Args:
        std: noise SD, number or (min, max) drawn per episode (on the [0, 1] scale).
        renormalize: min-max the noisy image (True) or clip it (False).
        contrast: image contrast.
    """

    name = "denoising_gaussian"
    kind = KIND_IMAGE

    def __init__(self, std=(0.15, 0.25), renormalize=True, contrast="a"):
        self.std = _range(std, "std", 0.0, 10.0)
        self.renormalize = bool(renormalize)
        self.contrast = _check_contrast(contrast)
        super().__init__(std=list(self.std), renormalize=self.renormalize, contrast=contrast)

    def sample_episode(self, rng, subjects):
        return {"std": _draw(rng, self.std)}

    def make_pair(self, subject, episode, rng):
        y = _image(subject, self.contrast)
        x, _ = add_gaussian_noise(y, episode["std"], rng, self.renormalize)
        return _pair(x, y)


@register_task
class SaltPepperDenoising(Task):
    """Salt-and-pepper denoising: input = image with random voxels set to 1 (salt) or 0
    (pepper), output = the clean image.

    Choice: the salt and pepper probabilities are drawn per episode from U(0.01, 0.04) each (the
    reference code's random option; the paper's fixed p = 0.04 is the top of that range, set it
    with ``p=0.04``). Salt = 1 and pepper = 0 as in the paper (the code uses the image's max and
    min, the same thing for min-max normalised images). Voxels are drawn with replacement as in
    the code.

    Args:
        p: probability of salt and of pepper, number or (min, max).
        contrast: image contrast.
    """

    name = "denoising_salt_pepper"
    kind = KIND_IMAGE

    def __init__(self, p=(0.01, 0.04), contrast="a"):
        self.p = _range(p, "p", 0.0, 0.5)
        self.contrast = _check_contrast(contrast)
        super().__init__(p=list(self.p), contrast=contrast)

    def sample_episode(self, rng, subjects):
        return {"p_salt": _draw(rng, self.p), "p_pepper": _draw(rng, self.p)}

    def make_pair(self, subject, episode, rng):
        y = _image(subject, self.contrast)
        x = add_salt_pepper(y, episode["p_salt"], episode["p_pepper"], rng)
        return _pair(x, y)


@register_task
class BiasCorrection(Task):
    """Bias-field correction: input = image x smooth multiplicative field, output = the image.

    The field is exp(L) with L a random combination of products of Legendre polynomials of
    total degree 1..``order`` over the image (paper Sec. B.1: "Legendre-polynomial fields with
    random coefficients"; order and range are not given there, the code has no bias task). The
    coefficients are normal, scaled so that L has the SD ``strength`` (drawn per pair), and a
    new field is drawn for every pair. The product is divided by its maximum only when that
    exceeds 1, so x / y is the field up to one constant.

    Args:
        order: highest total polynomial degree (>= 1).
        strength: SD of the log-field, number or (min, max) drawn per pair.
        contrast: image contrast.
    """

    name = "bias_correction"
    kind = KIND_IMAGE

    def __init__(self, order=3, strength=(0.2, 0.5), contrast="a"):
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 8:
            raise ValueError(f"order must be an int in [1, 8], got {order!r}")
        self.order = order
        self.strength = _range(strength, "strength", 0.0, 3.0)
        self.contrast = _check_contrast(contrast)
        super().__init__(order=order, strength=list(self.strength), contrast=contrast)

    def field(self, shape, rng):
        """One random multiplicative field exp(L) of ``shape`` (float32)."""
        ndim = len(shape)
        coefficients = rng.standard_normal((self.order + 1,) * ndim)
        degree = np.indices(coefficients.shape).sum(axis=0)
        coefficients[(degree == 0) | (degree > self.order)] = 0.0
        log_field = legendre_field(shape, coefficients)
        log_field = log_field - log_field.mean()
        log_field *= _draw(rng, self.strength) / max(float(log_field.std()), 1e-8)
        return np.exp(log_field).astype(np.float32)

    def make_pair(self, subject, episode, rng):
        y = _image(subject, self.contrast)
        x = y * self.field(y.shape, rng)
        x = x / max(1.0, float(x.max()))
        return _pair(x, y)


@register_task
class Inpainting(Task):
    """Inpainting: input = image with Perlin-noise blobs set to 0, output = the full image.

    The mask is ``perlin_noise > threshold`` with a lattice period drawn per pair from
    ``scales`` voxels (reference code: {8, 16} at 128^3; at least 2 cells per axis on small
    grids). Choice: instead of the code's threshold U(0.2, 0.4) on its quirky lattice noise
    (SPEC 4.4), the threshold is the quantile giving a coverage drawn from ``coverage``,
    default U(0.03, 0.23), the range the code's masks cover; so masks are never empty and the
    coverage does not depend on the noise's amplitude. The noise is true Perlin gradient noise
    (:func:`perlin_noise`, written here), smooth instead of blocky.

    Args:
        scales: lattice periods in voxels, one drawn per pair.
        coverage: masked fraction, number or (min, max) drawn per pair.
        contrast: image contrast.
    """

    name = "inpainting"
    kind = KIND_IMAGE

    def __init__(self, scales=(8, 16), coverage=(0.03, 0.23), contrast="a"):
        scales = [int(s) for s in np.atleast_1d(scales)]
        if not scales or min(scales) < 1:
            raise ValueError(f"scales must be positive integers, got {scales!r}")
        self.scales = scales
        self.coverage = _range(coverage, "coverage", 0.0, 0.95)
        self.contrast = _check_contrast(contrast)
        super().__init__(scales=scales, coverage=list(self.coverage), contrast=contrast)

    def mask(self, shape, rng):
        """One random inpainting mask (bool, ``shape``)."""
        scale = int(rng.choice(self.scales))
        cells = [max(2, int(round(s / scale))) for s in shape]
        noise = perlin_noise(shape, cells, rng)
        fraction = _draw(rng, self.coverage)
        if fraction <= 0:
            return np.zeros(shape, bool)
        threshold = np.quantile(noise, 1.0 - fraction)
        return noise > threshold

    def make_pair(self, subject, episode, rng):
        y = _image(subject, self.contrast)
        x = np.where(self.mask(y.shape, rng), 0.0, y)
        return _pair(x, y)
