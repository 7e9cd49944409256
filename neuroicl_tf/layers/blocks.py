"""Residual unit, context folding and the fusion blocks."""

import tensorflow as tf

from ._core import (
    _HALF_OVER_S,
    _S,
    KL,
    _c2t_update_fused,
    _check_filters,
    _check_ndims,
    _check_pair,
    _fold,
    _gelu_from_scaled_unnormalised_fused,
    _gelu_of_sum_fused,
    _kernel_2d,
    _NoAutograph,
    _pca_target_update_fused,
    _pca_update_fused,
    _register,
    _spatial_shape,
    _t2c_update_fused,
    _unfold,
)
from .conv import (
    conv,
)


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
