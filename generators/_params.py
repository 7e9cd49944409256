"""Task and augmentation parameters given as a number or a (min, max) range."""

import math

import numpy as np

_NUMBER = (int, float, np.integer, np.floating)


def as_range(value, name, low=-math.inf, high=math.inf, integer=False):
    """A number or a (min, max) pair -> a validated (min, max).

    Args:
        value: a number, or a list/tuple of two numbers (no strings, no booleans).
        name: the parameter's name, for error messages.
        low, high: the allowed interval.
        integer: the values must be integers (int types); returned as ints.

    Returns:
        ``(lo, hi)`` as floats, or ints when ``integer``.

    Raises:
        TypeError: not a number or a pair of numbers, or not integers when ``integer``.
        ValueError: the pair is not ordered or leaves [low, high].
    """
    if isinstance(value, _NUMBER) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise TypeError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    if any(isinstance(v, bool) or not isinstance(v, _NUMBER) for v in pair):
        raise TypeError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    if integer and not all(isinstance(v, (int, np.integer)) for v in pair):
        raise TypeError(f"{name} must hold integers, got {value!r}")
    lo, hi = (int(v) if integer else float(v) for v in pair)
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {value!r}")
    return lo, hi


def draw(rng, pair, integer=False):
    """One value from a range made by :func:`as_range` (the value itself if min == max)."""
    if integer:
        return int(rng.integers(pair[0], pair[1] + 1))
    return float(pair[0]) if pair[0] == pair[1] else float(rng.uniform(pair[0], pair[1]))
