"""Shared internals of :mod:`neuroicl_tf.layers`: Keras registration, argument checks, the
element-wise kernels (plain TF or fused by XLA) and tensor helpers."""

import os

import numpy as np
import tensorflow as tf

from .. import _compat

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


def _check_pair(inputs, name, first, second):
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise ValueError(f"{name}: call on a list [{first}, {second}], got {type(inputs).__name__}")
    return inputs


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
