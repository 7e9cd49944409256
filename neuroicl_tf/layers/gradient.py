"""The gradient-scaling op used by APSP."""

import tensorflow as tf

from ._core import (
    KL,
    _NoAutograph,
    _register,
)


def scale_gradient(x, scale):
    """Identity in the forward pass; multiplies the gradient by ``scale`` (SPEC §3.8).

    Args:
        x: any float tensor.
        scale: a Python number or scalar tensor (no gradient flows into it).

    Returns:
        A tensor equal to ``x`` (bit for bit).
    """
    x = tf.convert_to_tensor(x)
    scale = tf.stop_gradient(tf.cast(scale, x.dtype))

    @tf.custom_gradient
    def _identity(t):
        def grad(upstream):
            return upstream * scale

        return tf.identity(t), grad

    return _identity(x)


@_register
class ScaleGradient(_NoAutograph, KL.Layer):
    """Layer form of :func:`scale_gradient`.

    Args:
        scale: default gradient factor.

    Call:
        x: any tensor; ``scale`` (optional, number or scalar tensor) overrides the default.
    """

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, x, scale=None):
        return scale_gradient(x, self.scale if scale is None else scale)

    def get_config(self):
        config = super().get_config()
        config["scale"] = self.scale
        return config
