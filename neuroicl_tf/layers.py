"""N-D Keras layers shared by Neuralizer and Neuroverse3D (2D and 3D from one code path).

Shapes are channels-last: a target is ``(B, *S, C)``, a context ``(B, L, *S, C)`` with a dynamic
context length L. Context-side layers fold L into the batch, so their weights are shared over
the context set (the reference's "Vmap", SPEC §1.2).

Initialisation follows PyTorch's default for convolutions (SPEC §1.7): kernels and biases are
both drawn from U(-1/sqrt(fan_in), +1/sqrt(fan_in)). :func:`conv` makes such a convolution.

Concatenation convolutions (a 1x1 conv over ``[a ‖ b]``) keep a single kernel of shape
``(1, ..., 1, Ca + Cb, F)`` so that PyTorch weights convert one to one, but are computed as
``a @ K[:Ca] + b @ K[Ca:] + bias``: this never materialises the concatenation, and lets a
target term be broadcast over L instead of being copied L times.

Speed: on the CPU the convolutions run at close to the machine's matmul rate, and the
element-wise work around them (exact GELU, residual sums, the fusion 1x1 convs, up-sampling)
costs about as much again when every TF op makes its own pass over memory. The layers therefore
use as few passes as they can in plain TF ops (a 4-op GELU, no materialised concatenations, one
ResizeBilinear op for 2D up-sampling). Optionally (:func:`set_xla_fusion(True)
<set_xla_fusion>` or ``NEUROICL_XLA_FUSION=1``) the element-wise parts are compiled with XLA into
fused kernels while the 3x3 convolutions stay on TensorFlow's oneDNN kernels; this is off by
default because every new input shape then costs seconds of compilation and the measured gain
was small and inconsistent (see ``benchmarks/bench_models.py --levers``). The setting is read
when a layer's call is traced; both give the same values to float32 rounding.
"""

import math
import os

import numpy as np
import tensorflow as tf

from . import _compat

_compat.import_tensorflow()

KL = tf.keras.layers

_register = tf.keras.utils.register_keras_serializable(package="neuroicl")


class _NoAutograph:
    """Mixin: call() without AutoGraph conversion.

    These layers branch only on static Python values, so AutoGraph changes nothing in their
    graphs, but converting every call made building a model several times slower. tf-keras
    asks this (private) hook whether to convert a subclassed layer's call.
    """

    def _should_use_autograph(self):
        return False

__all__ = [
    "TorchBiasUniform",
    "TorchConv2D",
    "TorchConv3D",
    "conv",
    "gelu",
    "ResidualUnit",
    "ContextFold",
    "PairwiseConvAvg",
    "TargetToContextFusion",
    "ContextToTargetFusion",
    "Upsample",
    "Downsample",
    "ScaleGradient",
    "scale_gradient",
    "upsample2x",
    "UpsampleConcatConv",
    "set_xla_fusion",
    "xla_fusion_enabled",
]


def _check_ndims(ndims):
    if ndims not in (2, 3):
        raise ValueError(f"ndims must be 2 or 3, got {ndims!r}")
    return int(ndims)


def _check_filters(filters, what="filters"):
    if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
        raise ValueError(f"{what} must be a positive integer, got {filters!r}")
    return int(filters)


# --------------------------------------------------------------------------------------------
# Element-wise kernels (plain TF, or fused by XLA)
# --------------------------------------------------------------------------------------------

_SETTINGS = {
    "xla_fusion": os.environ.get("NEUROICL_XLA_FUSION", "0") not in ("0", "false", "False", "")
}


def set_xla_fusion(enabled):
    """Compile the element-wise parts of the layers with XLA (True) or not (False, default).

    Read when a layer's call is traced: set it before building/tracing a model. A SavedModel
    traced with it on needs a server with XLA's CPU JIT.
    """
    _SETTINGS["xla_fusion"] = bool(enabled)


def xla_fusion_enabled():
    """Whether the element-wise parts are compiled with XLA (see :func:`set_xla_fusion`)."""
    return _SETTINGS["xla_fusion"]


def _xla(fn):
    # No reduce_retracing: a generalised trace would lose the static channel counts.
    return tf.function(fn, jit_compile=True, autograph=False)


def _dim(t, axis):
    """A static size if known, else the dynamic one."""
    size = t.shape[axis]
    return size if size is not None else tf.shape(t)[axis]


def _fused(plain, for_xla=None):
    """``plain`` with an XLA-compiled twin (of ``for_xla``, default ``plain``) chosen at trace
    time by :func:`xla_fusion_enabled`."""
    compiled = _xla(for_xla or plain)

    def run(*args):
        return compiled(*args) if _SETTINGS["xla_fusion"] else plain(*args)

    run.__name__ = plain.__name__
    run.__doc__ = plain.__doc__
    return run


_NEG_INV_SQRT2 = -0.7071067811865476
# GELU(z) = 0.5 z erfc(s z) with s = -1/sqrt(2). When z comes out of a linear op whose weights
# can be scaled by s, GELU is computed from z' = s z as (0.5 / s) z' erfc(z'): two passes over
# memory fewer, the same value up to float32 rounding.
_S = _NEG_INV_SQRT2
_HALF_OVER_S = 0.5 / _NEG_INV_SQRT2


def _gelu(x):
    # The same arithmetic as tf.nn.gelu(approximate=False), 0.5 x erfc(-x / sqrt 2), with the
    # negation folded into the constant: one memory pass fewer, bit-identical values.
    return x * (0.5 * tf.math.erfc(x * _NEG_INV_SQRT2))


def _gelu_from_scaled(zs):
    """GELU(z) from ``zs = s z`` (s = -1/sqrt 2)."""
    return (zs * tf.math.erfc(zs)) * _HALF_OVER_S


def _gelu_from_scaled_unnormalised(zs):
    """``GELU(z) / (0.5 / s)`` from ``zs = s z``, for a consumer that folds in ``0.5 / s``."""
    return zs * tf.math.erfc(zs)


def _gelu_of_sum(*terms):
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return _gelu(total)


_gelu_fused = _fused(_gelu)
_gelu_of_sum_fused = _fused(_gelu_of_sum)
_gelu_from_scaled_unnormalised_fused = _fused(_gelu_from_scaled_unnormalised)


def gelu(x):
    """Exact (erf) GELU, as PyTorch's ``nn.GELU()`` (SPEC §6.3)."""
    return _gelu_fused(x)


# The fusion steps below compute GELU(r + W[a ‖ b] + bias) as GELU(z) from
# s z = a' (W_a + I) s + b' W_b s + s bias, where r is one of a, b: the residual r is folded into
# its 1x1 kernel as an identity (r + r W = r (W + I)) and s into the kernels (see _S above).


def _plus_eye(k):
    return k + tf.eye(_dim(k, 0), dtype=k.dtype)


def _pca_target_update(r_x, r_c, k_x, b_x):
    """x_new = GELU(r_x + mean_i W_x[r_i ‖ r_x] + b_x) (see :class:`PairwiseConvAvg`)."""
    f = _dim(r_x, -1)
    zs = _pointwise(r_x, _plus_eye(k_x[f:]) * _S, b_x * _S)
    zs = zs + _pointwise(tf.reduce_mean(r_c, axis=1), k_x[:f] * _S)
    return _gelu_from_scaled(zs)


def _pca_update(r_x, r_c, k_x, b_x, k_c, b_c):
    """Pairwise-Conv-Avg fusion step on residual-unit outputs (see :class:`PairwiseConvAvg`)."""
    f = _dim(r_x, -1)
    x_new = _pca_target_update(r_x, r_c, k_x, b_x)
    t_term = _pointwise(r_x, k_c[f:] * _S, b_c * _S)
    zs = _pointwise(r_c, _plus_eye(k_c[:f]) * _S) + tf.expand_dims(t_term, 1)
    return x_new, _gelu_from_scaled(zs)


def _t2c_update(r, t, k, b):
    """GELU(r + W[r ‖ t] + b) with t broadcast over the context axis 1."""
    f = _dim(r, -1)
    t_term = _pointwise(t, k[f:] * _S, b * _S)
    zs = _pointwise(r, _plus_eye(k[:f]) * _S) + tf.expand_dims(t_term, 1)
    return _gelu_from_scaled(zs)


def _c2t_update(r, m, k, b):
    """GELU(r + W[m ‖ r] + b)."""
    f = _dim(r, -1)
    zs = _pointwise(r, _plus_eye(k[f:]) * _S, b * _S) + _pointwise(m, k[:f] * _S)
    return _gelu_from_scaled(zs)


_pca_update_fused = _fused(_pca_update)
_pca_target_update_fused = _fused(_pca_target_update)
_t2c_update_fused = _fused(_t2c_update)
_c2t_update_fused = _fused(_c2t_update)


# --------------------------------------------------------------------------------------------
# Initialisation and convolutions
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Helpers on tensors
# --------------------------------------------------------------------------------------------


def _fold(x):
    """``(B, L, *S, C)`` -> ``(B*L, *S, C)`` with dynamic B and L; returns (folded, B, L)."""
    shape = tf.shape(x)
    batch, length = shape[0], shape[1]
    folded = tf.reshape(x, tf.concat([[batch * length], shape[2:]], axis=0))
    static = x.shape
    folded.set_shape(tf.TensorShape([None]).concatenate(static[2:]))
    return folded, batch, length


def _unfold(y, batch, length, static_bl=(None, None)):
    """``(B*L, *S, C)`` -> ``(B, L, *S, C)``."""
    shape = tf.shape(y)
    out = tf.reshape(y, tf.concat([[batch, length], shape[1:]], axis=0))
    out.set_shape(tf.TensorShape(list(static_bl)).concatenate(y.shape[1:]))
    return out


def _pointwise(x, kernel, bias=None):
    """1x1 convolution as one matmul: ``(..., Cin) @ (Cin, Cout) (+ bias)``.

    Args:
        x: ``(..., Cin)``.
        kernel: ``(Cin, Cout)``.
        bias: optional ``(Cout,)`` (added by BiasAdd, which fuses with the matmul).

    Returns:
        ``(..., Cout)``.
    """
    cin, cout = _dim(kernel, 0), _dim(kernel, 1)
    flat = tf.reshape(x, tf.stack([-1, cin]))
    y = tf.matmul(flat, kernel)
    if bias is not None:
        y = tf.nn.bias_add(y, bias)
    out = tf.reshape(y, tf.concat([tf.shape(x)[:-1], [cout]], axis=0))
    out.set_shape(x.shape[:-1].concatenate([kernel.shape[1]]))
    return out


def _kernel_2d(conv_layer):
    """A 1x1 conv's kernel ``(1, ..., 1, Cin, F)`` as a ``(Cin, F)`` matrix."""
    kernel = conv_layer.kernel
    return tf.reshape(kernel, [kernel.shape[-2], kernel.shape[-1]])


def _spatial_shape(ndims, channels):
    return tf.TensorShape([None] * (ndims + 1) + [channels])


# --------------------------------------------------------------------------------------------
# Residual unit and context folding
# --------------------------------------------------------------------------------------------


@_register
class ResidualUnit(_NoAutograph, KL.Layer):
    """x -> GELU(x + conv(GELU(conv(x)))) with 3x3 (3x3x3) 'same' convs (SPEC §1.3).

    With ``conv_layers = n`` the inner path is n convs with a GELU between consecutive ones.
    The convs are ``self.convs[i]`` (PyTorch keys ``layers.{2 i}``).

    Args:
        filters: channels C (input and output).
        ndims: 2 or 3.
        conv_layers: number of convs on the inner path.

    Call:
        x: ``(N, *S, C)`` -> ``(N, *S, C)``.
    """

    def __init__(self, filters, ndims, conv_layers=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_filters(filters)
        self.ndims = _check_ndims(ndims)
        self.conv_layers = _check_filters(conv_layers, "conv_layers")
        self.convs = [
            conv(self.filters, 3, self.ndims, name=f"conv_{i}") for i in range(self.conv_layers)
        ]
        self._data_format = "NHWC" if self.ndims == 2 else "NDHWC"

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank is not None and input_shape[-1] not in (None, self.filters):
            raise ValueError(
                f"{self.name}: input has {input_shape[-1]} channels, wanted {self.filters}"
            )
        shape = _spatial_shape(self.ndims, self.filters)
        for layer in self.convs:
            layer.build(shape)
        super().build(input_shape)

    def call(self, x):
        # Inner GELUs are computed from s z by scaling the conv before by s and, since GELU
        # output feeds only the next conv, folding its factor 0.5 / s into that conv's kernel.
        h = x
        factor = 1.0
        last = len(self.convs) - 1
        for i, layer in enumerate(self.convs):
            kernel, bias = layer.kernel, layer.bias
            if i < last:
                factor, bias = factor * _S, bias * _S
            if factor != 1.0:
                kernel = kernel * factor
            # data_format given explicitly: the eager Conv3D gradient reads it from the op.
            h = tf.nn.convolution(h, kernel, padding="SAME", data_format=self._data_format)
            h = tf.nn.bias_add(h, bias)
            if i < last:
                h = _gelu_from_scaled_unnormalised_fused(h)
                factor = _HALF_OVER_S
        return _gelu_of_sum_fused(x, h)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, ndims=self.ndims, conv_layers=self.conv_layers)
        return config


@_register
class ContextFold(_NoAutograph, KL.Layer):
    """Apply a layer to every context member with shared weights (the reference's "Vmap").

    Args:
        layer: a Keras layer taking ``(N, *S, C)``.

    Call:
        x: ``(B, L, *S, C)`` -> ``(B, L, *S', C')``; L may be dynamic.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = tf.keras.layers.deserialize(layer)
        if not isinstance(layer, KL.Layer):
            raise TypeError(f"layer must be a Keras layer, got {type(layer).__name__}")
        self.layer = layer

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank is not None and input_shape.rank < 3:
            raise ValueError(
                f"{self.name}: input must be (B, L, *S, C), got shape {tuple(input_shape)}"
            )
        if not self.layer.built:
            self.layer.build(tf.TensorShape([None]).concatenate(input_shape[2:]))
        super().build(input_shape)

    def call(self, x):
        folded, batch, length = _fold(x)
        return _unfold(self.layer(folded), batch, length, x.shape[:2])

    def get_config(self):
        config = super().get_config()
        config["layer"] = tf.keras.layers.serialize(self.layer)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = tf.keras.layers.deserialize(config["layer"])
        return cls(**config)


# --------------------------------------------------------------------------------------------
# Fusion blocks
# --------------------------------------------------------------------------------------------


def _check_pair(inputs, name, first, second):
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise ValueError(f"{name}: call on a list [{first}, {second}], got {type(inputs).__name__}")
    return inputs


@_register
class PairwiseConvAvg(_NoAutograph, KL.Layer):
    """Neuralizer's Pairwise-Conv-Avg block, exactly as the reference codes it (SPEC §2.3).

    With r_x = RU_x(x) and r_i = RU_C(c_i)::

        x_new   = GELU(r_x + mean_i W_x[r_i ‖ r_x])
        c_new_i = GELU(r_i + W_C[r_i ‖ r_x])

    W_x and W_C are 1x1 convs 2C -> C over [context ‖ target]. Because W_x is affine, the mean
    over L is taken on r_i before the conv (same result, L times fewer FLOPs).

    Sublayers (named as the PyTorch modules): ``target_conv`` (RU_x), ``context_conv`` (RU_C),
    ``combine_conv_target`` (W_x), ``combine_conv_context`` (W_C).

    Args:
        filters: channels C.
        ndims: 2 or 3.
        update_context: compute c_new. With False the block returns its input context
            unchanged (for the last block, whose context nothing reads); W_C still exists.
        conv_layers: convs per residual unit.

    Call:
        inputs: ``[x, c]``, x ``(B, *S, C)``, c ``(B, L, *S, C)``.

    Returns:
        ``[x_new, c_new]`` with the shapes of ``[x, c]``.
    """

    def __init__(self, filters, ndims, update_context=True, conv_layers=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_filters(filters)
        self.ndims = _check_ndims(ndims)
        self.update_context = bool(update_context)
        self.conv_layers = _check_filters(conv_layers, "conv_layers")
        f, d = self.filters, self.ndims
        self.target_conv = ResidualUnit(f, d, conv_layers, name="target_conv")
        self.context_conv = ResidualUnit(f, d, conv_layers, name="context_conv")
        self.combine_conv_target = conv(f, 1, d, name="combine_conv_target")
        self.combine_conv_context = conv(f, 1, d, name="combine_conv_context")

    def build(self, input_shape):
        single = _spatial_shape(self.ndims, self.filters)
        pair = _spatial_shape(self.ndims, 2 * self.filters)
        self.target_conv.build(single)
        self.context_conv.build(single)
        self.combine_conv_target.build(pair)
        self.combine_conv_context.build(pair)
        super().build(input_shape)

    def call(self, inputs):
        x, c = _check_pair(inputs, self.name, "x", "c")
        r_x = self.target_conv(x)
        folded, batch, length = _fold(c)
        r_c = _unfold(self.context_conv(folded), batch, length, c.shape[:2])
        w_x, w_c = self.combine_conv_target, self.combine_conv_context
        if not self.update_context:
            return [_pca_target_update_fused(r_x, r_c, _kernel_2d(w_x), w_x.bias), c]
        x_new, c_new = _pca_update_fused(
            r_x, r_c, _kernel_2d(w_x), w_x.bias, _kernel_2d(w_c), w_c.bias
        )
        return [x_new, c_new]

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            ndims=self.ndims,
            update_context=self.update_context,
            conv_layers=self.conv_layers,
        )
        return config


@_register
class TargetToContextFusion(_NoAutograph, KL.Layer):
    """Neuroverse3D encoder block of the context branch (SPEC §3.3 step 2).

    ``c' = GELU(RU_C(c) + W[RU_C(c) ‖ t])`` with t broadcast over the n context pairs.
    Sublayers: ``context_conv`` (RU_C, folded over n) and ``combine_conv_context``
    (W, 1x1 conv 2C -> C over [context ‖ target]).

    Args:
        filters: channels C.
        ndims: 2 or 3.
        conv_layers: convs per residual unit.

    Call:
        inputs: ``[c, t]``, c ``(B, n, *S, C)``, t ``(B, *S, C)``.

    Returns:
        ``(B, n, *S, C)``.
    """

    def __init__(self, filters, ndims, conv_layers=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_filters(filters)
        self.ndims = _check_ndims(ndims)
        self.conv_layers = _check_filters(conv_layers, "conv_layers")
        self.context_conv = ResidualUnit(self.filters, self.ndims, conv_layers, name="context_conv")
        self.combine_conv_context = conv(self.filters, 1, self.ndims, name="combine_conv_context")

    def build(self, input_shape):
        self.context_conv.build(_spatial_shape(self.ndims, self.filters))
        self.combine_conv_context.build(_spatial_shape(self.ndims, 2 * self.filters))
        super().build(input_shape)

    def call(self, inputs):
        c, t = _check_pair(inputs, self.name, "c", "t")
        folded, batch, length = _fold(c)
        r = _unfold(self.context_conv(folded), batch, length, c.shape[:2])
        w = self.combine_conv_context
        return _t2c_update_fused(r, t, _kernel_2d(w), w.bias)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, ndims=self.ndims, conv_layers=self.conv_layers)
        return config


@_register
class ContextToTargetFusion(_NoAutograph, KL.Layer):
    """Neuroverse3D decoder block (SPEC §3.4): ``GELU(RU_T(t) + W[m ‖ RU_T(t)])``.

    Sublayers: ``target_conv`` (RU_T) and ``combine_conv_target`` (W, 1x1 conv 2C -> C over
    [context mean ‖ target]).

    Args:
        filters: channels C.
        ndims: 2 or 3.
        conv_layers: convs per residual unit.

    Call:
        inputs: ``[t, m]``, t ``(B, *S, C)``, m ``(B, *S, C)`` (the context mean).

    Returns:
        ``(B, *S, C)``.
    """

    def __init__(self, filters, ndims, conv_layers=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_filters(filters)
        self.ndims = _check_ndims(ndims)
        self.conv_layers = _check_filters(conv_layers, "conv_layers")
        self.target_conv = ResidualUnit(self.filters, self.ndims, conv_layers, name="target_conv")
        self.combine_conv_target = conv(self.filters, 1, self.ndims, name="combine_conv_target")

    def build(self, input_shape):
        self.target_conv.build(_spatial_shape(self.ndims, self.filters))
        self.combine_conv_target.build(_spatial_shape(self.ndims, 2 * self.filters))
        super().build(input_shape)

    def call(self, inputs):
        t, m = _check_pair(inputs, self.name, "t", "m")
        r = self.target_conv(t)
        w = self.combine_conv_target
        return _c2t_update_fused(r, m, _kernel_2d(w), w.bias)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, ndims=self.ndims, conv_layers=self.conv_layers)
        return config


# --------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------


def _upsample_axis(x, axis):
    """x2 linear up-sampling along one axis, half-pixel centres, edges clamped (SPEC §6.4).

    out[2i] = 0.75 x[i] + 0.25 x[max(i-1, 0)], out[2i+1] = 0.75 x[i] + 0.25 x[min(i+1, n-1)].
    """
    rank = x.shape.rank
    n = tf.shape(x)[axis]

    def take(start, stop):
        begin = [0] * rank
        size = [-1] * rank
        begin[axis] = start
        size[axis] = stop - start
        return tf.slice(x, begin, size)

    prev = tf.concat([take(0, 1), take(0, n - 1)], axis=axis)
    nxt = tf.concat([take(1, n), take(n - 1, n)], axis=axis)
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    stacked = tf.stack([even, odd], axis=axis + 1)
    shape = tf.shape(x)
    new_shape = tf.concat([shape[:axis], [2 * n], shape[axis + 1 :]], axis=0)
    out = tf.reshape(stacked, new_shape)
    static = x.shape.as_list()
    if static[axis] is not None:
        static[axis] *= 2
    out.set_shape(static)
    return out


def _upsample_separable(x):
    """x2 linear up-sampling along every spatial axis of ``(N, *S, C)``."""
    for axis in range(1, x.shape.rank - 1):
        x = _upsample_axis(x, axis)
    return x


def _up_block(a, skip, k, b, upsample=_upsample_separable):
    """``W[up2(a) ‖ skip] + b`` as ``up2(a @ W_a) + skip @ W_s + b`` (1x1 conv and linear
    up-sampling commute; the up-sampling weights sum to 1, so the bias may follow)."""
    f_a = _dim(a, -1)
    return upsample(_pointwise(a, k[:f_a])) + (_pointwise(skip, k[f_a:]) + b)


def _upsample_fast(x):
    # In 2D one ResizeBilinear op (half-pixel centres, the same values) beats the separable
    # formula's dozen ops when each op is its own pass over memory.
    if x.shape.rank == 4:
        return tf.image.resize(x, 2 * tf.shape(x)[1:3], method="bilinear")
    return _upsample_separable(x)


def _up_block_tf(a, skip, k, b):
    return _up_block(a, skip, k, b, upsample=_upsample_fast)


_upsample_separable_fused = _fused(_upsample_separable)
_up_block_fused = _fused(_up_block_tf, for_xla=_up_block)


def upsample2x(x, ndims, method="separable"):
    """x2 bilinear (2D) or trilinear (3D) up-sampling, PyTorch align_corners=False.

    Args:
        x: ``(N, *S, C)`` with ``len(S) == ndims``.
        ndims: 2 or 3.
        method: "separable" (the formula of SPEC §6.4 along each axis) or, in 2D only,
            "resize" (``tf.image.resize`` bilinear, half-pixel centres; the same values).

    Returns:
        ``(N, *2S, C)``.
    """
    ndims = _check_ndims(ndims)
    if method == "resize":
        if ndims != 2:
            raise ValueError("method='resize' is 2D only")
        size = 2 * tf.shape(x)[1:3]
        out = tf.image.resize(x, size, method="bilinear")
        static = x.shape.as_list()
        out.set_shape([static[0]] + [s * 2 if s else None for s in static[1:3]] + [static[3]])
        return tf.cast(out, x.dtype)
    if method != "separable":
        raise ValueError(f"method must be 'separable' or 'resize', got {method!r}")
    if x.shape.rank != ndims + 2:
        raise ValueError(f"upsample2x: wanted a rank-{ndims + 2} input (N, *S, C), got "
                         f"shape {tuple(x.shape)}")
    return _upsample_separable_fused(x)


@_register
class Upsample(_NoAutograph, KL.Layer):
    """x2 bilinear/trilinear up-sampling with align_corners=False (PyTorch semantics).

    Args:
        ndims: 2 or 3.
        method: "separable" or (2D only) "resize"; see :func:`upsample2x`.

    Call:
        x: ``(N, *S, C)`` -> ``(N, *2S, C)``; spatial sizes may be dynamic.
    """

    def __init__(self, ndims, method="separable", **kwargs):
        super().__init__(**kwargs)
        self.ndims = _check_ndims(ndims)
        if method not in ("separable", "resize") or (method == "resize" and self.ndims != 2):
            raise ValueError(f"method must be 'separable' or (2D) 'resize', got {method!r}")
        self.method = method

    def call(self, x):
        return upsample2x(x, self.ndims, self.method)

    def get_config(self):
        config = super().get_config()
        config.update(ndims=self.ndims, method=self.method)
        return config


@_register
class UpsampleConcatConv(_NoAutograph, KL.Layer):
    """U-Net up-block: ``conv1x1([up2(a) ‖ skip])`` (SPEC §1.6), no activation.

    Computed as ``up2(a @ W_a) + skip @ W_s + b``: the same values (1x1 convs commute with
    linear up-sampling) with the up-sampled half's conv done at the coarse resolution and no
    concatenation materialised. The kernel is that of one 1x1 conv over the concatenation,
    sublayer ``conv`` with kernel ``(1, ..., 1, Ca + Cs, filters)``, so PyTorch weights convert
    one to one.

    Args:
        filters: output channels.
        ndims: 2 or 3.

    Call:
        inputs: ``[a, skip]``, a ``(N, *S, Ca)`` and skip ``(N, *2S, Cs)``; or context tensors
            ``(B, L, *S, Ca)`` and ``(B, L, *2S, Cs)`` (folded over L internally).

    Returns:
        ``(N, *2S, filters)`` (or ``(B, L, *2S, filters)``).
    """

    def __init__(self, filters, ndims, **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_filters(filters)
        self.ndims = _check_ndims(ndims)
        self.conv = conv(self.filters, 1, self.ndims, name="conv")

    def build(self, input_shape):
        shape_a, shape_skip = (tf.TensorShape(s) for s in input_shape)
        channels = shape_a[-1] + shape_skip[-1] if None not in (shape_a[-1], shape_skip[-1]) \
            else None
        if channels is None:
            raise ValueError(f"{self.name}: the channel counts of [a, skip] must be known")
        self.conv.build(_spatial_shape(self.ndims, channels))
        super().build(input_shape)

    def call(self, inputs):
        a, skip = _check_pair(inputs, self.name, "a", "skip")
        kernel, bias = _kernel_2d(self.conv), self.conv.bias
        if a.shape.rank == self.ndims + 3:
            folded_a, batch, length = _fold(a)
            folded_skip, _, _ = _fold(skip)
            out = _up_block_fused(folded_a, folded_skip, kernel, bias)
            return _unfold(out, batch, length, a.shape[:2])
        return _up_block_fused(a, skip, kernel, bias)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, ndims=self.ndims)
        return config


@_register
class Downsample(_NoAutograph, KL.Layer):
    """x1/2 down-sampling: a learned conv (kernel 4, stride 2, 'same') or a 2-max-pool.

    The conv equals PyTorch's k4 s2 p1 conv on even sizes (SPEC §6.2). Sublayer ``conv``.

    Args:
        filters: output channels of the conv (ignored, may be None, for "maxpool").
        ndims: 2 or 3.
        method: "conv" or "maxpool".

    Call:
        x: ``(N, *S, C)`` -> ``(N, *S/2, filters)`` (conv) or ``(N, *S/2, C)`` (maxpool).
    """

    def __init__(self, filters, ndims, method="conv", **kwargs):
        super().__init__(**kwargs)
        self.ndims = _check_ndims(ndims)
        if method not in ("conv", "maxpool"):
            raise ValueError(f"method must be 'conv' or 'maxpool', got {method!r}")
        self.method = method
        if method == "conv":
            self.filters = _check_filters(filters)
            self.conv = conv(self.filters, 4, self.ndims, strides=2, name="conv")
        else:
            self.filters = None if filters is None else _check_filters(filters)
            self.pool = getattr(KL, f"MaxPool{self.ndims}D")(2, padding="valid", name="pool")

    def call(self, x):
        if self.method == "conv":
            return self.conv(x)
        return self.pool(x)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, ndims=self.ndims, method=self.method)
        return config


# --------------------------------------------------------------------------------------------
# Gradient scaling
# --------------------------------------------------------------------------------------------


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
