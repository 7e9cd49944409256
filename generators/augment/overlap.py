"""Neuroverse3D's task overlap: degradations of other tasks overlaid on input images."""

import math

import numpy as np
from scipy import ndimage

from .._params import as_range as _range
from .._params import draw as _draw
from ._util import _channels_last, _json

# ----------------------------------------------------------------------------------------------
# task overlap (per input image)


def _minmax(v):
    lo, hi = float(v.min()), float(v.max())
    return (v - lo) / (hi - lo) if hi - lo > 1e-8 else np.zeros_like(v)


def _resample_to(a, shape):
    """Linear resampling of ``a`` to ``shape`` with half-voxel (align_corners=False) alignment."""
    coords = np.meshgrid(*[
        np.clip((np.arange(n) + 0.5) * a.shape[i] / n - 0.5, 0, a.shape[i] - 1)
        for i, n in enumerate(shape)], indexing="ij")
    return ndimage.map_coordinates(a, coords, order=1, mode="nearest")


def _legendre_field(shape, order, strength, rng):
    """exp of a random Legendre polynomial field over [-1, 1]^d (total degree <= order)."""
    axes = [np.linspace(-1, 1, n) for n in shape]
    polys = [np.stack([np.polynomial.legendre.Legendre.basis(k)(t) for k in range(order + 1)])
             for t in axes]
    log_field = np.zeros(shape)
    for degrees in np.ndindex(*(order + 1,) * len(shape)):
        if 0 < sum(degrees) <= order:
            term = rng.normal(0.0, strength)
            for axis, k in enumerate(degrees):
                view = [1] * len(shape)
                view[axis] = shape[axis]
                term = term * polys[axis][k].reshape(view)
            log_field = log_field + term
    return np.exp(log_field)


class TaskOverlap:
    """Neuroverse3D's task overlap: degradations of other tasks overlaid on an input image.

    Each degradation is applied independently with probability ``p`` (paper: 0.05 each), per
    image (target and every context input independently), to the channels of ``x`` that are not
    all zero. Values follow the reference ``task_synthesis.py`` where it has the degradation
    (SPEC §4.4): Gaussian noise std ~ U(0.0045, 0.03) (the code's random option; the paper's
    0.15-0.25 is meant for the denoising task itself, and an overlay should be a nuisance, not a
    new task) and salt/pepper fractions ~ U(0.01, 0.04), each followed by min-max
    renormalisation; inpainting holes from a blocky lattice noise (spacing 8 or 16 voxels,
    lattice values in {-0.5, 0, 0.5}, linear up-sampling, threshold ~ U(0.2, 0.4)) set to 0.
    The paper only names the others: bias is a multiplicative exp(Legendre polynomial) field of
    degree <= 3 (coefficients N(0, 0.3)), renormalised by its maximum; super-resolution is a
    2x block-average down-sampling followed by linear up-sampling.

    Args:
        p: probability of each degradation.
        degradations: the subset of ``("bias", "gaussian_noise", "salt_pepper", "inpainting",
            "super_resolution")`` to use, applied in this order.
        noise_std, salt_pepper, inpaint_threshold: (min, max) ranges as above.
        bias_order, bias_strength: polynomial degree and coefficient std of the bias field.
        sr_factor: down-sampling factor of the super-resolution degradation.
    """

    DEGRADATIONS = ("bias", "gaussian_noise", "salt_pepper", "inpainting", "super_resolution")

    def __init__(self, p=0.05, degradations=DEGRADATIONS, noise_std=(0.0045, 0.03),
                 salt_pepper=(0.01, 0.04), inpaint_threshold=(0.2, 0.4), bias_order=3,
                 bias_strength=0.3, sr_factor=2):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        degradations = [degradations] if isinstance(degradations, str) else list(degradations)
        unknown = [d for d in degradations if d not in self.DEGRADATIONS]
        if unknown:
            raise ValueError(f"unknown degradations {unknown}; known: {self.DEGRADATIONS}")
        self._noise = _range(noise_std, "noise_std", low=0.0)
        self._sp = _range(salt_pepper, "salt_pepper", low=0.0, high=1.0)
        self._thr = _range(inpaint_threshold, "inpaint_threshold")
        if int(sr_factor) != sr_factor or sr_factor < 1:
            raise ValueError(f"sr_factor must be an integer >= 1, got {sr_factor!r}")
        self.p = float(p)
        self.degradations = [d for d in self.DEGRADATIONS if d in degradations]
        self.bias_order, self.bias_strength = int(bias_order), float(bias_strength)
        self.sr_factor = int(sr_factor)
        self._config = {
            "p": self.p, "degradations": self.degradations, "noise_std": _json(noise_std),
            "salt_pepper": _json(salt_pepper), "inpaint_threshold": _json(inpaint_threshold),
            "bias_order": self.bias_order, "bias_strength": self.bias_strength,
            "sr_factor": self.sr_factor,
        }

    def get_config(self):
        """The JSON-safe constructor arguments."""
        return dict(self._config)

    def __repr__(self):
        return f"TaskOverlap(**{self.get_config()!r})"

    def __call__(self, x, rng):
        """Overlay degradations on one input.

        Args:
            x: (*S, C) float32 in [0, 1].
            rng: random generator.

        Returns:
            (*S, C) float32 in [0, 1]; channels that are all zero stay zero.
        """
        x = _channels_last(x, "x")
        chosen = [d for d in self.degradations if rng.random() < self.p]
        if not chosen:
            return x
        out = x.copy()
        for c in range(x.shape[-1]):
            if not np.any(x[..., c]):
                continue
            v = x[..., c].astype(np.float64)
            for name in chosen:
                v = getattr(self, "_" + name)(v, rng)
            out[..., c] = np.clip(v, 0.0, 1.0)
        return out

    def _bias(self, v, rng):
        v = v * _legendre_field(v.shape, self.bias_order, self.bias_strength, rng)
        return v / max(float(v.max()), 1e-8)

    def _gaussian_noise(self, v, rng):
        return _minmax(v + rng.normal(0.0, _draw(rng, self._noise), v.shape))

    def _salt_pepper(self, v, rng):
        v = v.copy()
        flat = v.reshape(-1)
        lo, hi = float(flat.min()), float(flat.max())
        for value in (hi, lo):
            n = math.ceil(_draw(rng, self._sp) * flat.size)
            flat[rng.integers(0, flat.size, n)] = value  # with replacement, as the reference
        return _minmax(v)

    def _inpainting(self, v, rng):
        spacing = int(rng.choice([8, 16]))
        points = tuple(max(2, -(-n // spacing)) for n in v.shape)
        lattice = rng.choice(np.array([-0.5, 0.0, 0.5]), size=points)
        noise = _resample_to(lattice, v.shape)
        return np.where(noise > _draw(rng, self._thr), 0.0, v)

    def _super_resolution(self, v, rng):
        f = self.sr_factor
        small_shape = tuple(max(1, n // f) for n in v.shape)
        cropped = v[tuple(slice(0, s * f) for s in small_shape)]
        blocks = cropped.reshape([d for s in small_shape for d in (s, f)])
        small = blocks.mean(axis=tuple(range(1, 2 * len(small_shape), 2)))
        return _resample_to(small, v.shape)


def neuroverse3d_task_overlap(**overrides):
    """Neuroverse3D's task overlap: all five degradations with p = 0.05 each (SPEC §4.5)."""
    return TaskOverlap(**overrides)
