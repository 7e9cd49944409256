"""x2 up-sampling matching ``align_corners=False`` and down-sampling."""

import tensorflow as tf

from ._core import (
    KL,
    _check_filters,
    _check_ndims,
    _check_pair,
    _dim,
    _fold,
    _fused,
    _kernel_2d,
    _NoAutograph,
    _pointwise,
    _register,
    _spatial_shape,
    _unfold,
)
from .conv import (
    conv,
)


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
