"""Small shared helpers of :mod:`generators.augment` (parameter ranges, JSON values)."""

import math

import numpy as np
from scipy import ndimage

KIND_SEGMENTATION = 0
KIND_IMAGE = 1


def _range(value, name, low=-math.inf, high=math.inf, integer=False):
    """A number or a (min, max) pair -> validated (min, max)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise TypeError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    try:
        lo, hi = float(pair[0]), float(pair[1])
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number or a (min, max) pair, got {value!r}") from err
    if integer and (lo != int(lo) or hi != int(hi)):
        raise TypeError(f"{name} must hold integers, got {value!r}")
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {value!r}")
    return (int(lo), int(hi)) if integer else (lo, hi)


def _draw(rng, pair, integer=False):
    if integer:
        return int(rng.integers(pair[0], pair[1] + 1))
    return float(pair[0]) if pair[0] == pair[1] else float(rng.uniform(*pair))


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def _is_mask(y):
    return bool(np.all((y == 0) | (y == 1)))


def _channels_last(a, name):
    a = np.asarray(a, dtype=np.float32)
    if a.ndim not in (3, 4):
        raise ValueError(f"{name} must be (*S, C) with 2 or 3 spatial axes, got shape {a.shape}")
    return a


def _cross(ndims):
    """The connectivity-1 structuring element (face neighbours): 'one voxel' grows by one step."""
    return ndimage.generate_binary_structure(ndims, 1)
