"""Context bootstrapping (Neuralizer paper, Sec. 3.5): an ensemble over resampled contexts.

Each ensemble member sees L context pairs drawn *with replacement* from the L given ones, each
moved by its own small random affine (rotation, scaling, shift about the head centre). The
members' raw outputs are averaged; their per-voxel standard deviation is the uncertainty map.
The reference code has no bootstrapping; the draws here follow the paper's description. One
member (``--ensemble 1``) is the plain prediction with the context as given.
"""

import dataclasses

import numpy as np

from .geometry import jitter_matrix

__all__ = ["Member", "bootstrap", "combine"]


@dataclasses.dataclass(frozen=True)
class Member:
    """One ensemble member: which context pairs it uses and how each is moved.

    Attributes:
        indices: (L,) int, indices into the given context pairs (repeats allowed).
        jitters: (L, 4, 4) world-to-world matrices, one per drawn pair (identity for the
            plain member).
    """

    indices: np.ndarray
    jitters: np.ndarray


def bootstrap(n_pairs, n_members, centre, seed=0, rotation_deg=3.0, scale=0.03, shift_mm=2.0):
    """The ensemble's context draws.

    Args:
        n_pairs: L, the number of context pairs given.
        n_members: N; 1 gives the plain member (all pairs once, no jitter).
        centre: (3,) world point the jitters rotate and scale about (the head centre).
        seed: the same seed gives the same draws.
        rotation_deg, scale, shift_mm: jitter ranges (see :func:`geometry.jitter_matrix`).

    Returns:
        A list of N :class:`Member`.

    Raises:
        ValueError: ``n_pairs`` or ``n_members`` below 1.
    """
    if n_pairs < 1 or n_members < 1:
        raise ValueError(f"need n_pairs >= 1 and n_members >= 1, got {n_pairs}, {n_members}")
    if n_members == 1:
        return [Member(np.arange(n_pairs), np.repeat(np.eye(4)[None], n_pairs, axis=0))]
    rng = np.random.default_rng(seed)
    members = []
    for _ in range(n_members):
        indices = rng.integers(0, n_pairs, size=n_pairs)
        jitters = np.stack([jitter_matrix(rng, centre, rotation_deg, scale, shift_mm)
                            for _ in range(n_pairs)])
        members.append(Member(indices, jitters))
    return members


def combine(outputs):
    """Mean and per-voxel standard deviation over the members' outputs.

    Args:
        outputs: list of N arrays of one shape ``(*S)``.

    Returns:
        ``(mean, std)``: float32 ``(*S)`` each (std is 0 for N = 1).
    """
    stack = np.stack([np.asarray(o, dtype=np.float32) for o in outputs])
    return stack.mean(axis=0), stack.std(axis=0)
