"""Evaluation metrics: hard Dice and PSNR, per sample (SPEC §4.1).

:func:`dice` and :func:`psnr` take numpy arrays (and return numpy) or TensorFlow tensors (and
return tensors); :class:`Dice` and :class:`PSNR` are Keras metrics (running means of the
per-sample values) for ``model.compile(metrics=...)``.

Inputs are ``(B, *spatial, C)``; each sample is reduced over all its voxels and channels, as the
reference does for its 3-channel Neuralizer outputs.
"""

import numpy as np

import neuroicl_tf._compat as _compat

tf = _compat.import_tensorflow()

__all__ = ["dice", "psnr", "Dice", "PSNR"]


def _is_tf(*xs):
    return any(isinstance(x, (tf.Tensor, tf.Variable)) for x in xs)


def _check_shapes(y_true, y_pred):
    if tuple(y_true.shape) != tuple(y_pred.shape) and not (
        _is_tf(y_true, y_pred) and tf.TensorShape(y_true.shape).is_compatible_with(y_pred.shape)
    ):
        raise ValueError(
            f"y_true and y_pred must have the same shape (B, *spatial, C); got y_true "
            f"{tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)}"
        )
    if len(y_pred.shape) < 2:
        raise ValueError(f"y_pred must have a batch axis and data axes; got {tuple(y_pred.shape)}")


def dice(y_true, y_pred, threshold=0.5):
    """Hard Dice per sample: both inputs thresholded at ``threshold`` (``> threshold``).

    ``2 |A & B| / (|A| + |B|)`` over all voxels and channels of a sample, and 1 when both masks
    are empty (the reference's convention for an empty union).

    Args:
        y_true: (B, *spatial, C) reference (binary or soft).
        y_pred: (B, *spatial, C) prediction (raw network output).
        threshold: binarisation threshold (reference: 0.5).

    Returns:
        (B,) float32 Dice values in [0, 1]; numpy in, numpy out; tensors in, tensor out.
    """
    _check_shapes(y_true, y_pred)
    if _is_tf(y_true, y_pred):
        t = tf.cast(tf.cast(y_true, tf.float32) > threshold, tf.float32)
        p = tf.cast(tf.cast(y_pred, tf.float32) > threshold, tf.float32)
        b = tf.shape(p)[0]
        t, p = tf.reshape(t, [b, -1]), tf.reshape(p, [b, -1])
        inter = tf.reduce_sum(t * p, axis=1)
        total = tf.reduce_sum(t, axis=1) + tf.reduce_sum(p, axis=1)
        return tf.where(total > 0, 2.0 * inter / tf.maximum(total, 1.0), tf.ones_like(total))
    t = np.asarray(y_true, np.float64).reshape(len(y_true), -1) > threshold
    p = np.asarray(y_pred, np.float64).reshape(len(y_pred), -1) > threshold
    inter = np.sum(t & p, axis=1)
    total = np.sum(t, axis=1) + np.sum(p, axis=1)
    out = np.ones(len(total))
    nonempty = total > 0
    out[nonempty] = 2.0 * inter[nonempty] / total[nonempty]
    return out.astype(np.float32)


def psnr(y_true, y_pred, max_val=1.0):
    """Peak signal-to-noise ratio per sample, ``10 log10(max_val^2 / mean((p - y)^2))`` in dB.

    Identical images give ``+inf``.

    Args:
        y_true: (B, *spatial, C) reference image.
        y_pred: (B, *spatial, C) prediction.
        max_val: the dynamic range (reference: 1 for [0, 1] images).

    Returns:
        (B,) float32 PSNR values; numpy in, numpy out; tensors in, tensor out.
    """
    _check_shapes(y_true, y_pred)
    if not max_val > 0:
        raise ValueError(f"max_val must be > 0; got {max_val}")
    if _is_tf(y_true, y_pred):
        diff = tf.cast(y_pred, tf.float32) - tf.cast(y_true, tf.float32)
        mse = tf.reduce_mean(tf.reshape(tf.square(diff), [tf.shape(diff)[0], -1]), axis=1)
        ln10 = tf.math.log(tf.constant(10.0, tf.float32))
        return 10.0 * tf.math.log(float(max_val) ** 2 / mse) / ln10
    diff = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    mse = np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return (10.0 * np.log10(float(max_val) ** 2 / mse)).astype(np.float32)


@tf.keras.utils.register_keras_serializable(package="neuroicl")
class Dice(tf.keras.metrics.Mean):
    """Running mean of the per-sample hard :func:`dice`.

    Args:
        threshold: binarisation threshold.
        name: metric name.
        dtype: metric dtype.
    """

    def __init__(self, threshold=0.5, name="dice", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = float(threshold)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add the batch's per-sample Dice values (optionally weighted, (B,))."""
        values = dice(tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred),
                      self.threshold)
        return super().update_state(values, sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@tf.keras.utils.register_keras_serializable(package="neuroicl")
class PSNR(tf.keras.metrics.Mean):
    """Running mean of the per-sample :func:`psnr` (in dB; a perfect sample makes it ``inf``).

    Args:
        max_val: the dynamic range.
        name: metric name.
        dtype: metric dtype.
    """

    def __init__(self, max_val=1.0, name="psnr", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if not max_val > 0:
            raise ValueError(f"max_val must be > 0; got {max_val}")
        self.max_val = float(max_val)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add the batch's per-sample PSNR values (optionally weighted, (B,))."""
        values = psnr(tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred), self.max_val)
        return super().update_state(values, sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "max_val": self.max_val}
