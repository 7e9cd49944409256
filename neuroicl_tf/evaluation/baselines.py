"""Baselines an in-context model is compared with, on the same episodes.

- :func:`context_average` (a): the average of the context outputs, a probabilistic atlas of the
  context labels thresholded at 0.5 for segmentation, the mean context output image for image
  tasks. It never looks at the target image, so a model that does not beat it is not using the
  target (``/work/shared/reference/TRAINING_NOTES.md``: a briefly trained net beat nothing
  else and scored the same with the target image zeroed).
- :class:`FewShotUNet` (b): a plain task-specific U-Net trained only on the L context pairs of
  the episode for a fixed number of steps (the papers' few-shot baseline), sized to about the
  ICL model's parameter count.
- :func:`identity` (c): for image tasks, the input as the prediction.
"""

import math

import numpy as np
from scipy import ndimage

from .. import _compat
from .tasks import KIND_SEGMENTATION

tf = _compat.import_tensorflow()

__all__ = ["FewShotUNet", "context_average", "identity", "unet_parameters", "width_for"]


def context_average(context_out, kind):
    """The context-label average (a probabilistic atlas of the context outputs).

    Args:
        context_out: (L, *S, C) the context outputs of one episode.
        kind: 0 segmentation (the mean is thresholded at 0.5, ``> 0.5``), 1 image (the mean).

    Returns:
        (*S, C) float32.
    """
    context_out = np.asarray(context_out, np.float32)
    if context_out.ndim not in (4, 5) or context_out.shape[0] < 1:
        raise ValueError(f"context_out must be (L, *S, C) with L >= 1 and 2 or 3 spatial axes, "
                         f"got shape {context_out.shape}")
    mean = context_out.mean(axis=0)
    if kind == KIND_SEGMENTATION:
        return (mean > 0.5).astype(np.float32)
    return mean.astype(np.float32)


def identity(target_in):
    """The input as the prediction (image tasks): returns ``target_in`` as float32."""
    return np.asarray(target_in, np.float32).copy()


# ----------------------------------------------------------------------------------------------
# the few-shot U-Net


def _conv(ndims):
    return getattr(tf.keras.layers, f"Conv{ndims}D")


def build_unet(ndims, width, stages, channels=1, output_activation="sigmoid",
               name="fewshot_unet"):
    """A plain U-Net: two 3^n convs + leaky ReLU per level, widths ``width * 2**level``, max
    pooling down, nearest up-sampling + concatenation up, a 1x1 conv at the end.

    Args:
        ndims: 2 or 3.
        width: channels of the first level.
        stages: number of levels (sizes must be divisible by ``2 ** (stages - 1)``).
        channels: input and output channels.
        output_activation: of the last conv (``"sigmoid"`` for masks, None for images).
        name: model name.

    Returns:
        A ``tf.keras.Model`` (B, *S, channels) -> (B, *S, channels).
    """
    conv = _conv(ndims)
    pool = getattr(tf.keras.layers, f"MaxPooling{ndims}D")
    up = getattr(tf.keras.layers, f"UpSampling{ndims}D")
    x = inputs = tf.keras.Input((None,) * ndims + (channels,))

    def block(x, filters):
        for _ in range(2):
            # leaky: with plain ReLUs some few-shot runs died into a constant output
            x = tf.keras.layers.LeakyReLU(0.1)(conv(filters, 3, padding="same")(x))
        return x

    skips = []
    for level in range(stages):
        x = block(x, width * 2 ** level)
        if level < stages - 1:
            skips.append(x)
            x = pool(2)(x)
    for level in reversed(range(stages - 1)):
        x = tf.keras.layers.Concatenate()([up(2)(x), skips[level]])
        x = block(x, width * 2 ** level)
    outputs = conv(channels, 1, activation=output_activation)(x)
    return tf.keras.Model(inputs, outputs, name=name)


def unet_parameters(ndims, width, stages, channels=1):
    """The parameter count of :func:`build_unet` (computed, no model built)."""
    k = 3 ** ndims
    total, previous = 0, channels
    widths = [width * 2 ** level for level in range(stages)]
    for w in widths:
        total += (k * previous + 1) * w + (k * w + 1) * w
        previous = w
    for level in reversed(range(stages - 1)):
        w = widths[level]
        total += (k * (previous + w) + 1) * w + (k * w + 1) * w
        previous = w
    return total + (previous + 1) * channels


def width_for(parameters, ndims, stages, channels=1):
    """The first-level width whose U-Net has the parameter count closest to ``parameters``."""
    best = min(range(1, 257), key=lambda w: abs(unet_parameters(ndims, w, stages, channels)
                                                - parameters))
    return best


def _augment(x, y, rng, flip=True, max_rotation=10.0, max_scale=0.1, max_shift=0.05):
    """A random left-right flip and small affine transform, the same for x and y.

    Args:
        x, y: (*S, C) arrays.
        rng: ``np.random.Generator``.

    Returns:
        ``(x, y)`` transformed (linear interpolation, zero outside).
    """
    ndims = x.ndim - 1
    if flip and rng.random() < 0.5:
        x, y = x[::-1], y[::-1]
    size = np.asarray(x.shape[:ndims], np.float64)
    matrix = np.eye(ndims)
    planes = [(0, 1)] if ndims == 2 else [(0, 1), (0, 2), (1, 2)]
    for a, b in planes:
        angle = math.radians(rng.uniform(-max_rotation, max_rotation))
        rotation = np.eye(ndims)
        rotation[a, a] = rotation[b, b] = math.cos(angle)
        rotation[a, b], rotation[b, a] = -math.sin(angle), math.sin(angle)
        matrix = matrix @ rotation
    matrix = matrix @ np.diag(1.0 + rng.uniform(-max_scale, max_scale, ndims))
    centre = (size - 1) / 2
    offset = centre - matrix @ centre + rng.uniform(-max_shift, max_shift, ndims) * size

    def warp(image):
        return np.stack([ndimage.affine_transform(image[..., c], matrix, offset, order=1,
                                                  mode="constant", cval=0.0)
                         for c in range(image.shape[-1])], axis=-1)

    return warp(np.ascontiguousarray(x)), warp(np.ascontiguousarray(y))


class FewShotUNet:
    """Baseline (b): a task-specific U-Net trained on an episode's L context pairs only.

    The network is built once and re-initialised (same initial weights, fresh Adam state) for
    every :meth:`fit`, so a whole evaluation traces one training step per grid.

    Args:
        ndims: 2 or 3.
        kind: 0 segmentation (soft Dice + binary cross-entropy) or 1 image (mean squared
            error).
        width: first-level width (see :func:`width_for` to match a model's size).
        stages: U-Net levels.
        steps: training steps per episode (the budget).
        batch_size: pairs per step (drawn from the context with replacement, augmented).
        learning_rate: Adam's learning rate.
        augment: random flips and small affine transforms of the pairs.
        seed: seed of the initial weights and of the augmentation draws.
    """

    def __init__(self, ndims=2, kind=KIND_SEGMENTATION, width=8, stages=3, steps=200,
                 batch_size=4, learning_rate=1e-3, augment=True, seed=0):
        if ndims not in (2, 3):
            raise ValueError(f"ndims must be 2 or 3, got {ndims!r}")
        for name, value in (("width", width), ("stages", stages), ("steps", steps),
                            ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.ndims, self.kind, self.width, self.stages = ndims, int(kind), width, stages
        self.steps, self.batch_size = steps, batch_size
        self.augment, self.seed = bool(augment), int(seed)
        tf.keras.utils.set_random_seed(self.seed)
        # images: a linear output (scores clip it to [0, 1]); a sigmoid saturated at 0 in some
        # runs and never recovered
        activation = "sigmoid" if self.kind == KIND_SEGMENTATION else None
        self.model = build_unet(ndims, width, stages, output_activation=activation)
        self._initial = [w.copy() for w in self.model.get_weights()]
        self.optimizer = tf.keras.optimizers.Adam(learning_rate, clipnorm=1.0)
        self.optimizer.build(self.model.trainable_variables)
        self._step = self._make_step()

    @property
    def parameters(self):
        return int(self.model.count_params())

    def _loss(self, y_true, y_pred):
        axes = list(range(1, self.ndims + 2))
        if self.kind == KIND_SEGMENTATION:
            inter = tf.reduce_sum(y_true * y_pred, axis=axes)
            total = tf.reduce_sum(y_true, axis=axes) + tf.reduce_sum(y_pred, axis=axes)
            dice = tf.reduce_mean(1.0 - (2.0 * inter + 1.0) / (total + 1.0))
            # soft Dice alone settles on "everything foreground" when the structure is large;
            # the cross-entropy term gets the network out of that corner quickly
            bce = tf.reduce_mean(tf.keras.losses.binary_crossentropy(y_true, y_pred))
            return dice + bce
        return tf.reduce_mean(tf.square(y_true - y_pred))

    def _make_step(self):
        spec = tf.TensorSpec((None,) * (self.ndims + 1) + (1,), tf.float32)

        @tf.function(input_signature=[spec, spec])
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = self._loss(y, self.model(x, training=True))
            grads = tape.gradient(loss, self.model.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
            return loss

        return step

    def reset(self):
        """Initial weights back, Adam's moments and step counter to zero."""
        self.model.set_weights(self._initial)
        for variable in self.optimizer.variables():
            variable.assign(tf.zeros_like(variable))

    def fit(self, x, y, rng=None):
        """Train from the initial weights on the pairs ``(x, y)`` for ``steps`` steps.

        Args:
            x: (L, *S, 1) context inputs.
            y: (L, *S, 1) context outputs.
            rng: ``np.random.Generator`` of the batch and augmentation draws (default: seeded
                with ``seed``).

        Returns:
            List of the ``steps`` training losses.
        """
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        if x.shape != y.shape or x.ndim != self.ndims + 2 or x.shape[-1] != 1:
            raise ValueError(f"x and y must both be (L, *S, 1) with {self.ndims} spatial axes, "
                             f"got {x.shape} and {y.shape}")
        rng = np.random.default_rng(self.seed) if rng is None else rng
        self.reset()
        losses = []
        for _ in range(self.steps):
            pick = rng.integers(len(x), size=self.batch_size)
            pairs = [(x[i], y[i]) for i in pick]
            if self.augment:
                pairs = [_augment(a, b, rng) for a, b in pairs]
            bx = np.stack([p[0] for p in pairs]).astype(np.float32)
            by = np.stack([p[1] for p in pairs]).astype(np.float32)
            losses.append(float(self._step(tf.constant(bx), tf.constant(by))))
        return losses

    def predict(self, x):
        """(T, *S, 1) predictions for the inputs ``x`` (T, *S, 1), clipped to [0, 1]."""
        return np.clip(self.model(np.asarray(x, np.float32), training=False).numpy(), 0, 1)
