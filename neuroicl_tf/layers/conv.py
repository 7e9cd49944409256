"""PyTorch-initialised convolutions (SPEC §1.7)."""

import math

import numpy as np
import tensorflow as tf

from ._core import (
    KL,
    _check_filters,
    _check_ndims,
    _NoAutograph,
    _register,
)


@_register
class TorchBiasUniform(tf.keras.initializers.Initializer):
    """Bias initializer U(-1/sqrt(fan_in), +1/sqrt(fan_in)), PyTorch's default for convs.

    Args:
        fan_in: input channels times the kernel's spatial size. ``None`` lets a
            :class:`TorchConv2D`/:class:`TorchConv3D` fill it in when it is built.
        seed: optional integer seed.
    """

    def __init__(self, fan_in=None, seed=None):
        if fan_in is not None:
            fan_in = _check_filters(fan_in, "fan_in")
        self.fan_in = fan_in
        self.seed = seed

    def __call__(self, shape, dtype=None, **kwargs):
        if self.fan_in is None:
            raise ValueError(
                "TorchBiasUniform needs fan_in; give it, or use it inside a TorchConv layer"
            )
        limit = 1.0 / math.sqrt(self.fan_in)
        dtype = tf.as_dtype(dtype or tf.keras.backend.floatx())
        return tf.random.uniform(shape, -limit, limit, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {"fan_in": self.fan_in, "seed": self.seed}


def _torch_kernel_initializer(seed=None):
    # kaiming_uniform_(a=sqrt(5)) == U(+-sqrt(1/fan_in)) == VarianceScaling(1/3, fan_in, uniform)
    return tf.keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed
    )


class _TorchBiasMixin:
    """Fills in the fan_in of a :class:`TorchBiasUniform` bias initializer at build time."""

    def build(self, input_shape):
        init = self.bias_initializer
        if isinstance(init, TorchBiasUniform) and init.fan_in is None:
            in_channels = tf.TensorShape(input_shape)[-1]
            if in_channels is None:
                raise ValueError(f"{self.name}: the input channel count must be known")
            fan_in = int(in_channels) * int(np.prod(self.kernel_size))
            self.bias_initializer = TorchBiasUniform(fan_in, seed=init.seed)
        super().build(input_shape)


@_register
class TorchConv2D(_NoAutograph, _TorchBiasMixin, KL.Conv2D):
    """``Conv2D`` whose :class:`TorchBiasUniform` bias initializer learns fan_in when built."""


@_register
class TorchConv3D(_NoAutograph, _TorchBiasMixin, KL.Conv3D):
    """``Conv3D`` whose :class:`TorchBiasUniform` bias initializer learns fan_in when built."""


_TORCH_CONVS = {2: TorchConv2D, 3: TorchConv3D}


def conv(filters, kernel_size, ndims, strides=1, name=None, use_bias=True, seed=None):
    """A 'same'-padded convolution with PyTorch's default initialisation.

    Args:
        filters: output channels.
        kernel_size: kernel size (int, same on every axis).
        ndims: 2 or 3 spatial dimensions.
        strides: stride (int). With kernel 4 and stride 2 on even sizes this equals PyTorch's
            k4 s2 p1 (SPEC §6.2).
        name: layer name.
        use_bias: add a bias (every conv of the reference models has one).
        seed: optional integer seed for the initializers.

    Returns:
        A :class:`TorchConv2D` or :class:`TorchConv3D`, input ``(N, *S, Cin)`` ->
        ``(N, *S/strides, filters)``.
    """
    ndims = _check_ndims(ndims)
    return _TORCH_CONVS[ndims](
        _check_filters(filters),
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=_torch_kernel_initializer(seed),
        bias_initializer=TorchBiasUniform(None, seed=seed),
        name=name,
    )
