"""Small shared helpers of :mod:`generators.augment` (parameter ranges, JSON values)."""


import numpy as np
from scipy import ndimage

KIND_SEGMENTATION = 0
KIND_IMAGE = 1


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
