"""Task augmentations: episode-consistent transformations of (x, y) pairs, as trees.

Parameters are drawn once per episode (:meth:`TaskAugmentation.sample_episode`) and the same
transformation is applied to every pair (:meth:`TaskAugmentation.apply`), so the task itself
changes. See :mod:`generators.augment` for the rules on task kinds.
"""

from typing import ClassVar

import numpy as np
from scipy import ndimage

from .._params import as_range as _range
from .._params import draw as _draw
from ._util import KIND_IMAGE, KIND_SEGMENTATION, _channels_last, _cross, _is_mask, _json

AUGMENTATIONS = {}


def register_augmentation(cls):
    """Class decorator: add ``cls`` to :data:`AUGMENTATIONS` under ``cls.name``."""
    AUGMENTATIONS[cls.name] = cls
    return cls


def augmentation_from_config(config):
    """Rebuild a task augmentation (tree) from ``{"name": ..., "config": {...}}``.

    Raises:
        ValueError: naming an unknown augmentation and the known names.
    """
    name = config.get("name") if isinstance(config, dict) else None
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"Unknown augmentation {name!r} in {config!r}; known: {sorted(AUGMENTATIONS)}"
        )
    return AUGMENTATIONS[name].from_config(config.get("config", {}))


# ----------------------------------------------------------------------------------------------
# task augmentations: base and trees


class TaskAugmentation:
    """Base class: an episode-consistent transformation of ``(x, y)`` pairs.

    Subclasses set ``name``, implement :meth:`_sample` (episode parameters) and :meth:`_apply`,
    and override :meth:`_output_kind` if they change the task kind.

    Args:
        p: probability that the augmentation is active in an episode.
        target: which side it acts on, ``"x"``, ``"y"`` or ``"both"`` (for those that have one).
    """

    name: ClassVar[str] = "augmentation"
    targets: ClassVar[tuple] = ("x", "y", "both")

    def __init__(self, p=1.0, target="x", **params):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1], got {p!r}")
        if target not in self.targets:
            raise ValueError(
                f"{type(self).__name__}: target must be one of {self.targets}, got {target!r}"
            )
        self.p = float(p)
        self.target = target
        self._config = {"p": self.p, "target": target, **{k: _json(v) for k, v in params.items()}}

    def get_config(self):
        """The JSON-safe constructor arguments."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config):
        """Rebuild from :meth:`get_config`."""
        return cls(**config)

    def to_config(self):
        """``{"name": ..., "config": ...}``, for :func:`augmentation_from_config`."""
        return {"name": self.name, "config": self.get_config()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def sample_episode(self, rng, kind=None):
        """Draw whether the augmentation is active and its parameters, once per episode.

        Args:
            rng: the episode's ``np.random.Generator``.
            kind: the task's kind before this augmentation (0, 1, or None if unknown).

        Returns:
            A JSON-safe dict with ``"active"`` (bool), ``"kind_in"``, ``"kind"`` (the kind after
            this augmentation) and the augmentation's parameters.
        """
        if kind not in (None, KIND_SEGMENTATION, KIND_IMAGE):
            raise ValueError(f"kind must be 0, 1 or None, got {kind!r}")
        active = bool(rng.random() < self.p)
        episode = {"active": active, "kind_in": kind, "kind": kind}
        if active:
            episode.update(self._sample(rng, kind))
            episode["kind"] = self._output_kind(kind, episode)
        return episode

    def apply(self, x, y, episode, rng):
        """Apply the episode's transformation to one pair.

        Args:
            x: (*S, Cx) input, values in [0, 1].
            y: (*S, Cy) output, values in [0, 1].
            episode: the dict of :meth:`sample_episode` (the same for every pair).
            rng: random generator for per-pair randomness (e.g. noise).

        Returns:
            ``(x, y)`` float32, values in [0, 1]; the channel counts may change (channel
            augmentations).
        """
        x = _channels_last(x, "x")
        y = _channels_last(y, "y")
        if not episode["active"]:
            return x, y
        x, y = self._apply(x, y, episode, rng)
        return (np.clip(x, 0, 1).astype(np.float32, copy=False),
                np.clip(y, 0, 1).astype(np.float32, copy=False))

    # to override
    def _sample(self, rng, kind):
        return {}

    def _apply(self, x, y, episode, rng):
        raise NotImplementedError

    def _output_kind(self, kind, episode):
        return kind

    # helpers for subclasses
    def _on_y_as_mask(self, y, episode):
        """Whether a mask-only operation may act on this ``y``."""
        if episode["kind_in"] is None:
            return _is_mask(y)
        return episode["kind_in"] == KIND_SEGMENTATION

    def _on_y_as_image(self, episode):
        return episode["kind_in"] != KIND_SEGMENTATION


@register_augmentation
class Compose(TaskAugmentation):
    """Apply children in order (each with its own probability), as a whole with probability p.

    Args:
        augmentations: list of :class:`TaskAugmentation` (or their ``to_config()`` dicts).
        p: probability that the whole sequence is active.
    """

    name = "compose"
    targets = ("x",)

    def __init__(self, augmentations, p=1.0, target="x"):
        self.augmentations = [
            a if isinstance(a, TaskAugmentation) else augmentation_from_config(a)
            for a in augmentations
        ]
        super().__init__(p=p, target=target)

    def get_config(self):
        return {"augmentations": [a.to_config() for a in self.augmentations], "p": self.p}

    def _sample(self, rng, kind):
        children = []
        for child in self.augmentations:
            children.append(child.sample_episode(rng, kind))
            kind = children[-1]["kind"]
        return {"children": children, "kind_out": kind}

    def _output_kind(self, kind, episode):
        return episode["kind_out"]

    def _apply(self, x, y, episode, rng):
        for child, child_episode in zip(self.augmentations, episode["children"]):
            x, y = child.apply(x, y, child_episode, rng)
        return x, y


@register_augmentation
class OneOf(TaskAugmentation):
    """Apply one child, chosen per episode with the given weights, with probability p.

    Args:
        augmentations: list of :class:`TaskAugmentation` (or their ``to_config()`` dicts); the
            chosen one is applied whatever its own ``p``.
        weights: relative choice weights (default equal).
        p: probability that any child is applied.
    """

    name = "one_of"
    targets = ("x",)

    def __init__(self, augmentations, weights=None, p=1.0, target="x"):
        self.augmentations = [
            a if isinstance(a, TaskAugmentation) else augmentation_from_config(a)
            for a in augmentations
        ]
        if not self.augmentations:
            raise ValueError("OneOf: augmentations must not be empty")
        if weights is None:
            weights = [1.0] * len(self.augmentations)
        weights = [float(w) for w in weights]
        if len(weights) != len(self.augmentations) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"OneOf: weights must be {len(self.augmentations)} non-negative numbers with a "
                f"positive sum, got {weights!r}"
            )
        self.weights = weights
        super().__init__(p=p, target=target)

    def get_config(self):
        return {"augmentations": [a.to_config() for a in self.augmentations],
                "weights": self.weights, "p": self.p}

    def _sample(self, rng, kind):
        probabilities = np.asarray(self.weights) / sum(self.weights)
        index = int(rng.choice(len(self.augmentations), p=probabilities))
        child = self.augmentations[index]
        # The chosen child is always active (its own p is ignored): OneOf's p already decided.
        child_episode = {"active": True, "kind_in": kind, "kind": kind, **child._sample(rng, kind)}
        child_episode["kind"] = child._output_kind(kind, child_episode)
        return {"index": index, "child": child_episode, "kind_out": child_episode["kind"]}

    def _output_kind(self, kind, episode):
        return episode["kind_out"]

    def _apply(self, x, y, episode, rng):
        return self.augmentations[episode["index"]].apply(x, y, episode["child"], rng)


# ----------------------------------------------------------------------------------------------
# task augmentations: filters and morphology


def sobel_magnitude(image):
    """Gradient magnitude with Sobel filters, rescaled to [0, 1] per channel.

    Args:
        image: (*S, C) array.

    Returns:
        (*S, C) float32: ``sqrt(sum_axis sobel_axis(image)^2)`` divided by its maximum per
        channel (a constant channel gives zeros). Borders are handled by edge replication, so a
        constant image has no edges.
    """
    image = np.asarray(image, dtype=np.float32)
    out = np.zeros_like(image)
    ndims = image.ndim - 1
    for c in range(image.shape[-1]):
        channel = image[..., c]
        magnitude = np.sqrt(
            sum(ndimage.sobel(channel, axis=a, mode="nearest") ** 2 for a in range(ndims))
        )
        peak = magnitude.max()
        out[..., c] = magnitude / peak if peak > 1e-6 else 0.0
    return out


@register_augmentation
class SobelFilter(TaskAugmentation):
    """Replace images or masks by their Sobel edge maps (a new edge-detection task).

    Applied to ``y`` the task becomes an image task (MSE), because the edge map is graded, not
    binary. Neuroverse3D filters the labels only ("Sobel filter on the labels", p = 0.05):
    ``only_masks=True`` restricts the ``y`` side to segmentation-like tasks. Neuralizer's filter
    augmentation is not restricted (``only_masks=False``, the default). Applied to ``x`` it
    changes the input appearance. Each channel is rescaled to [0, 1] by its own maximum
    (:func:`sobel_magnitude`).

    Args:
        p: probability per episode.
        target: ``"y"`` (default), ``"x"`` or ``"both"``.
        only_masks: filter ``y`` only when the task is segmentation-like.
    """

    name = "sobel"

    def __init__(self, p=1.0, target="y", only_masks=False):
        super().__init__(p=p, target=target, only_masks=bool(only_masks))
        self.only_masks = bool(only_masks)

    def _on_y(self, y, episode):
        return self.target in ("y", "both") and (
            not self.only_masks or self._on_y_as_mask(y, episode))

    def _output_kind(self, kind, episode):
        if self.target == "x" or (self.only_masks and kind != KIND_SEGMENTATION):
            return kind  # y untouched (or, with an unknown kind, decided per pair)
        return KIND_IMAGE

    def _apply(self, x, y, episode, rng):
        if self.target in ("x", "both"):
            x = sobel_magnitude(x)
        if self._on_y(y, episode):
            y = sobel_magnitude(y)
        return x, y


def _morph(y, op, iterations):
    mask = y > 0.5
    out = np.zeros(y.shape, np.float32)
    structure = _cross(y.ndim - 1)
    for c in range(y.shape[-1]):
        out[..., c] = op(mask[..., c], structure, iterations)
    return out


def _dilate(m, s, n):
    return ndimage.binary_dilation(m, s, iterations=n)


def _erode(m, s, n):
    return ndimage.binary_erosion(m, s, iterations=n, border_value=0)


def _contour(m, s, n):
    return m & ~ndimage.binary_erosion(m, s, iterations=n, border_value=0)


class _MaskOp(TaskAugmentation):
    """Base of the mask-only operations on ``y`` (segmentation-like tasks only)."""

    targets = ("y",)
    _op = None

    def __init__(self, p=1.0, iterations=1, target="y"):
        if int(iterations) != iterations or iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        super().__init__(p=p, target=target, iterations=int(iterations))
        self.iterations = int(iterations)

    def get_config(self):
        return {"p": self.p, "iterations": self.iterations}

    def _apply(self, x, y, episode, rng):
        if self._on_y_as_mask(y, episode):
            y = _morph(y, type(self)._op, self.iterations)
        return x, y


@register_augmentation
class Dilation(_MaskOp):
    """Grow segmentation outputs by ``iterations`` voxels (face connectivity).

    Only on segmentation-like tasks (SPEC §4.5: "dilation ... by 1 voxel", p = 0.05); image
    outputs are left unchanged. The output is thresholded at 0.5 first.
    """

    name = "dilation"
    _op = staticmethod(_dilate)


@register_augmentation
class Erosion(_MaskOp):
    """Shrink segmentation outputs by ``iterations`` voxels (face connectivity; the array
    border counts as background). Segmentation-like tasks only (SPEC §4.5, p = 0.05)."""

    name = "erosion"
    _op = staticmethod(_erode)


@register_augmentation
class MaskContour(_MaskOp):
    """Replace segmentation outputs by their inner contour, ``iterations`` voxels thick.

    contour = mask AND NOT erosion(mask) (Neuralizer's mask-contour task augmentation). The
    task stays segmentation-like (a binary output). Segmentation-like tasks only.
    """

    name = "contour"
    _op = staticmethod(_contour)


@register_augmentation
class Inversion(TaskAugmentation):
    """``v -> 1 - v`` on the chosen side.

    On ``y`` of a segmentation task this is the mask inversion of SPEC §4.5 (p = 0.05) and the
    task stays segmentation-like; on ``x`` it is the intensity inversion augmentation (p = 0.05).
    On ``y`` of an image task it inverts the output contrast, unless ``only_masks`` (the
    Neuroverse3D preset, whose paper names *mask* inversion) keeps image outputs as they are.

    Args:
        p: probability per episode.
        target: ``"x"``, ``"y"`` or ``"both"``.
        only_masks: invert ``y`` only when the task is segmentation-like.
    """

    name = "inversion"

    def __init__(self, p=1.0, target="y", only_masks=False):
        super().__init__(p=p, target=target, only_masks=bool(only_masks))
        self.only_masks = bool(only_masks)

    def _apply(self, x, y, episode, rng):
        if self.target in ("x", "both"):
            x = 1.0 - x
        if self.target in ("y", "both") and (
                not self.only_masks or self._on_y_as_mask(y, episode)):
            y = 1.0 - y
        return x, y


# ----------------------------------------------------------------------------------------------
# task augmentations: intensity


def _curve_points(rng, n_points, monotone):
    """Control points of a random curve [0, 1] -> [0, 1] through (0, v0) ... (1, vn)."""
    xs = np.concatenate([[0.0], np.sort(rng.random(n_points - 2)), [1.0]])
    ys = rng.random(n_points)
    if monotone:
        ys = np.sort(ys)
        ys = (ys - ys[0]) / max(ys[-1] - ys[0], 1e-6)  # use the whole range
        if rng.random() < 0.5:
            ys = ys[::-1]
    return xs, ys


@register_augmentation
class IntensityMapping(TaskAugmentation):
    """Map intensities through a random piecewise-linear curve (a new contrast).

    The curve has ``n_points`` control points at random positions in [0, 1] (end points fixed at
    0 and 1) with random values; a monotone curve (increasing or decreasing, chosen per episode)
    keeps the order of tissue intensities, a non-monotone one reorders them. The same curve
    maps every pair of the episode. On ``x`` it changes the input modality; on ``y`` it acts
    only for image tasks (segmentation masks stay masks).

    Args:
        p: probability per episode.
        target: ``"x"`` (default), ``"y"`` or ``"both"``.
        n_points: number of control points, integer or (min, max), >= 2.
        monotone: True (monotone curves), False (arbitrary curves), or None (monotone with
            probability 0.5 per episode).
    """

    name = "intensity_mapping"

    def __init__(self, p=1.0, target="x", n_points=(3, 8), monotone=None):
        self._n = _range(n_points, "n_points", low=2, integer=True)
        if monotone not in (None, True, False):
            raise ValueError(f"monotone must be True, False or None, got {monotone!r}")
        super().__init__(p=p, target=target, n_points=n_points, monotone=monotone)
        self.monotone = monotone

    def _sample(self, rng, kind):
        monotone = bool(rng.random() < 0.5) if self.monotone is None else self.monotone
        xs, ys = _curve_points(rng, _draw(rng, self._n, integer=True), monotone)
        return {"xs": xs.tolist(), "ys": ys.tolist(), "monotone": monotone}

    def _apply(self, x, y, episode, rng):
        xs, ys = episode["xs"], episode["ys"]
        if self.target in ("x", "both"):
            x = np.interp(x, xs, ys).astype(np.float32)
        if self.target in ("y", "both") and self._on_y_as_image(episode):
            y = np.interp(y, xs, ys).astype(np.float32)
        return x, y


@register_augmentation
class SyntheticModality(TaskAugmentation):
    """Relabel the intensity histogram into a new contrast (Neuralizer's "simulated modality").

    Per episode, [0, 1] is cut into ``n_classes`` intensity classes at random edges, each class
    gets a new random mean intensity, and a fraction ``texture`` of each voxel's offset within
    its class is kept (so the result is a new contrast of the same anatomy, not a mapping of
    tissue order). Background (exact zeros, e.g. outside the head) stays zero so the new
    contrast looks like an MR image. Applied to ``x`` (or to image outputs ``y``).

    Args:
        p: probability per episode.
        target: ``"x"`` (default), ``"y"`` or ``"both"``.
        n_classes: number of intensity classes, integer or (min, max), >= 2.
        texture: kept fraction of within-class variation, number or (min, max) in [0, 1].
    """

    name = "synthetic_modality"

    def __init__(self, p=1.0, target="x", n_classes=(3, 8), texture=(0.0, 0.5)):
        self._k = _range(n_classes, "n_classes", low=2, integer=True)
        self._t = _range(texture, "texture", low=0.0, high=1.0)
        super().__init__(p=p, target=target, n_classes=n_classes, texture=texture)

    def _sample(self, rng, kind):
        k = _draw(rng, self._k, integer=True)
        return {
            "edges": np.sort(rng.random(k - 1)).tolist(),
            "levels": rng.uniform(0.05, 1.0, k).tolist(),
            "texture": _draw(rng, self._t),
        }

    @staticmethod
    def _relabel(v, episode):
        edges = np.asarray(episode["edges"])
        levels = np.asarray(episode["levels"])
        bounds = np.concatenate([[0.0], edges, [1.0]])
        index = np.digitize(v, edges)
        centres = (bounds[:-1] + bounds[1:]) / 2
        out = levels[index] + episode["texture"] * (v - centres[index])
        return np.where(v > 0, out, 0.0).astype(np.float32)

    def _apply(self, x, y, episode, rng):
        if self.target in ("x", "both"):
            x = self._relabel(x, episode)
        if self.target in ("y", "both") and self._on_y_as_image(episode):
            y = self._relabel(y, episode)
        return x, y


@register_augmentation
class IntensityShift(TaskAugmentation):
    """Add one offset, drawn per episode from ``shift``, to the inputs (SPEC §4.5, p = 0.2)."""

    name = "intensity_shift"
    targets = ("x",)

    def __init__(self, p=1.0, shift=(-0.1, 0.1), target="x"):
        self._s = _range(shift, "shift", low=-1.0, high=1.0)
        super().__init__(p=p, target=target, shift=shift)

    def _sample(self, rng, kind):
        return {"shift": _draw(rng, self._s)}

    def _apply(self, x, y, episode, rng):
        return x + episode["shift"], y


@register_augmentation
class IntensityScale(TaskAugmentation):
    """Multiply the inputs by one factor drawn per episode from ``scale`` (SPEC §4.5, p = 0.2)."""

    name = "intensity_scale"
    targets = ("x",)

    def __init__(self, p=1.0, scale=(0.9, 1.1), target="x"):
        self._s = _range(scale, "scale", low=0.0)
        super().__init__(p=p, target=target, scale=scale)

    def _sample(self, rng, kind):
        return {"scale": _draw(rng, self._s)}

    def _apply(self, x, y, episode, rng):
        return x * episode["scale"], y


@register_augmentation
class GaussianNoise(TaskAugmentation):
    """Add N(0, std^2) noise to the inputs; std per episode, the noise per pair (p = 0.1)."""

    name = "gaussian_noise"
    targets = ("x",)

    def __init__(self, p=1.0, std=(0.0, 0.05), target="x"):
        self._s = _range(std, "std", low=0.0)
        super().__init__(p=p, target=target, std=std)

    def _sample(self, rng, kind):
        return {"std": _draw(rng, self._s)}

    def _apply(self, x, y, episode, rng):
        return x + rng.normal(0.0, episode["std"], x.shape).astype(np.float32), y


@register_augmentation
class RandomConvContrast(TaskAugmentation):
    """GIN-style random-convolution contrast of the inputs (SPEC §4.5, p = 0.05).

    A random network of ``n_layers`` 3^d convolutions (1 -> ``width`` -> ... -> 1 channel,
    kernels N(0, 1) drawn per episode, leaky ReLU 0.2 in between), its output rescaled to the
    Frobenius norm of the input, then min-max normalised to [0, 1]. Reconstructed from the
    paper's description of ``GINGroupConv_3D`` (4 layers, 2 intermediate channels, Frobenius-norm
    output normalisation); the original is lost (bytecode only). Acts on each input channel.
    """

    name = "random_conv"
    targets = ("x",)

    def __init__(self, p=1.0, n_layers=4, width=2, target="x"):
        if int(n_layers) != n_layers or n_layers < 1 or int(width) != width or width < 1:
            raise ValueError(f"n_layers and width must be integers >= 1, got {n_layers}, {width}")
        super().__init__(p=p, target=target, n_layers=int(n_layers), width=int(width))
        self.n_layers, self.width = int(n_layers), int(width)

    def _sample(self, rng, kind):
        return {"seed": int(rng.integers(2**31))}

    def _apply(self, x, y, episode, rng):
        ndims = x.ndim - 1
        krng = np.random.default_rng(episode["seed"])
        widths = [1] + [self.width] * (self.n_layers - 1) + [1]
        kernels = [krng.normal(size=(widths[i + 1], widths[i]) + (3,) * ndims)
                   for i in range(self.n_layers)]
        out = np.empty_like(x)
        for c in range(x.shape[-1]):
            feats = [x[..., c].astype(np.float32)]
            for i, kernel in enumerate(kernels):
                feats = [
                    sum(ndimage.convolve(f, kernel[o, j].astype(np.float32), mode="nearest")
                        for j, f in enumerate(feats))
                    for o in range(kernel.shape[0])
                ]
                if i < len(kernels) - 1:
                    feats = [np.where(f > 0, f, 0.2 * f) for f in feats]
            v = feats[0] * (np.linalg.norm(x[..., c]) / max(np.linalg.norm(feats[0]), 1e-8))
            lo, hi = v.min(), v.max()
            out[..., c] = (v - lo) / (hi - lo) if hi - lo > 1e-8 else 0.0
        return out, y


# ----------------------------------------------------------------------------------------------
# task augmentations: channels (Neuralizer's 3-channel encoding)


def _pad_channels(a, n):
    if a.shape[-1] > n:
        raise ValueError(f"cannot fit {a.shape[-1]} channels into n_channels={n}")
    pad = np.zeros(a.shape[:-1] + (n - a.shape[-1],), np.float32)
    return np.concatenate([a, pad], axis=-1)


@register_augmentation
class ChannelPermutation(TaskAugmentation):
    """Pad to ``n_channels`` with zeros, then permute the channels (one permutation per side and
    episode), so content may sit in any channel of Neuralizer's 3-channel encoding.

    Args:
        p: probability per episode.
        target: ``"x"``, ``"y"`` or ``"both"`` (default; x and y get independent permutations).
        n_channels: channel count after padding (3 for Neuralizer).
    """

    name = "channel_permutation"

    def __init__(self, p=1.0, target="both", n_channels=3):
        super().__init__(p=p, target=target, n_channels=int(n_channels))
        self.n_channels = int(n_channels)

    def _sample(self, rng, kind):
        return {"perm_x": rng.permutation(self.n_channels).tolist(),
                "perm_y": rng.permutation(self.n_channels).tolist()}

    def _apply(self, x, y, episode, rng):
        if self.target in ("x", "both"):
            x = _pad_channels(x, self.n_channels)[..., episode["perm_x"]]
        if self.target in ("y", "both"):
            y = _pad_channels(y, self.n_channels)[..., episode["perm_y"]]
        return x, y


@register_augmentation
class ChannelDuplication(TaskAugmentation):
    """Copy the first channel into 2..``n_channels`` channels (the rest zero).

    Neuralizer's inputs may carry several contrasts; duplicating a channel teaches the model that
    repeated channels carry no new information. Per episode the number of copies is drawn.

    Args:
        p: probability per episode.
        target: ``"x"`` (default), ``"y"`` or ``"both"``.
        n_channels: channel count of the result (3 for Neuralizer).
    """

    name = "channel_duplication"

    def __init__(self, p=1.0, target="x", n_channels=3):
        if int(n_channels) < 2:
            raise ValueError(f"n_channels must be >= 2, got {n_channels}")
        super().__init__(p=p, target=target, n_channels=int(n_channels))
        self.n_channels = int(n_channels)

    def _sample(self, rng, kind):
        return {"copies": int(rng.integers(2, self.n_channels + 1))}

    def _dup(self, a, copies):
        out = np.zeros(a.shape[:-1] + (self.n_channels,), np.float32)
        out[..., :copies] = a[..., :1]
        return out

    def _apply(self, x, y, episode, rng):
        if self.target in ("x", "both"):
            x = self._dup(x, episode["copies"])
        if self.target in ("y", "both"):
            y = self._dup(y, episode["copies"])
        return x, y


# ----------------------------------------------------------------------------------------------
# presets


def neuralizer_task_augmentation():
    """Task augmentations for Neuralizer (2D, 3-channel encoding).

    The Neuralizer supplement composes filter, intensity, mask and channel augmentations; its
    exact probabilities are not in SPEC and could not be recovered here, so the values are this
    project's choice (stated so they can be tuned):

    - input modality (p = 0.3): one of synthetic modality, non-monotone or monotone intensity
      mapping, on ``x``;
    - output transformation (p = 0.2): one of Sobel edges (``y``; image task afterwards), mask
      contour, dilation, erosion (segmentation outputs only);
    - mask/intensity inversion of ``y`` (p = 0.1) and of ``x`` (p = 0.1);
    - channel duplication of ``x`` (p = 0.1) and channel permutation of ``x`` and ``y``
      (p = 0.1), both to 3 channels.

    Returns:
        A :class:`Compose` tree.
    """
    return Compose([
        OneOf([SyntheticModality(), IntensityMapping(monotone=False),
               IntensityMapping(monotone=True)], p=0.3),
        OneOf([SobelFilter(target="y"), MaskContour(), Dilation(), Erosion()], p=0.2),
        Inversion(target="y", p=0.1),
        Inversion(target="x", p=0.1),
        ChannelDuplication(target="x", n_channels=3, p=0.1),
        ChannelPermutation(target="both", n_channels=3, p=0.1),
    ])


def neuroverse3d_task_augmentation():
    """Task and intensity augmentations of Neuroverse3D (paper Sec. B.1, SPEC §4.5).

    Each independently, with the paper's probabilities: Sobel filter on the labels (0.05), mask
    inversion (0.05), dilation and erosion by one voxel (0.05 each), all four on segmentation
    outputs only; on the inputs intensity
    shift and scale (0.2 each), Gaussian noise (0.1), intensity inversion (0.05) and GIN
    random-convolution contrast (0.05). The magnitudes of shift (+-0.1), scale (0.9-1.1) and
    noise (std <= 0.05) are not in the paper and are this project's choice. All are drawn once
    per episode, so target and context see the same transformation. The "random foreground
    grouping" task augmentation belongs to the segmentation task (label groups).

    Returns:
        A :class:`Compose` tree.
    """
    return Compose([
        SobelFilter(target="y", only_masks=True, p=0.05),
        Inversion(target="y", only_masks=True, p=0.05),
        Dilation(p=0.05),
        Erosion(p=0.05),
        IntensityShift(p=0.2),
        IntensityScale(p=0.2),
        GaussianNoise(p=0.1),
        Inversion(target="x", p=0.05),
        RandomConvContrast(p=0.05),
    ])
