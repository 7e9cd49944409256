"""Tests of neuroicl_tf.layers: the shared layer checks plus independent numpy references."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from layer_testing import check_layer
from scipy.special import erf

from neuroicl_tf import layers

RNG = np.random.default_rng(0)


def _rand(*shape):
    return RNG.uniform(-1, 1, size=shape).astype(np.float32)


# ----------------------------------------------------------------------------- numpy references


def np_gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def np_conv(x, kernel, bias=None, stride=1, pad=None):
    """Direct N-D convolution (cross-correlation), channels last, zero padding.

    x (N, *S, Cin), kernel (*k, Cin, Cout); pad = per-axis (before, after), default k//2 both.
    """
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    ks = kernel.shape[:-2]
    nd = len(ks)
    if pad is None:
        pad = [((k - 1) // 2, k // 2) for k in ks]
    xp = np.pad(x, [(0, 0)] + list(pad) + [(0, 0)])
    out_sizes = [(xp.shape[1 + a] - ks[a]) // stride + 1 for a in range(nd)]
    out = np.zeros((x.shape[0], *out_sizes, kernel.shape[-1]))
    for offs in itertools.product(*[range(k) for k in ks]):
        sl = tuple(slice(o, o + stride * (n - 1) + 1, stride) for o, n in zip(offs, out_sizes))
        out += np.einsum("n...i,io->n...o", xp[(slice(None),) + sl], kernel[offs])
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out


def np_residual_unit(x, ru):
    h = x
    for i, layer in enumerate(ru.convs):
        h = np_conv(h, layer.kernel.numpy(), layer.bias.numpy())
        if i + 1 < len(ru.convs):
            h = np_gelu(h)
    return np_gelu(x + h)


def np_fold(fn, c):
    """Apply fn to (B*L, ...) and unfold."""
    b, length = c.shape[:2]
    y = fn(c.reshape((b * length,) + c.shape[2:]))
    return y.reshape((b, length) + y.shape[1:])


def np_upsample(x, ndims):
    """Independent x2 linear interpolation, PyTorch align_corners=False (source coordinate form)."""
    out = np.asarray(x, np.float64)
    for axis in range(1, ndims + 1):
        n = out.shape[axis]
        dst = np.arange(2 * n)
        src = np.maximum((dst + 0.5) / 2.0 - 0.5, 0.0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        w = (src - lo).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, lo, axis=axis) * (1 - w) + np.take(out, hi, axis=axis) * w
    return out


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


# ----------------------------------------------------------------------------- initialisation


def test_conv_helper_torch_init_bounds_and_spread():
    layer = layers.conv(16, 3, 2, name="c")
    layer.build((None, None, None, 8))
    fan_in = 8 * 9
    k, b = layer.kernel.numpy(), layer.bias.numpy()
    assert k.shape == (3, 3, 8, 16) and b.shape == (16,)
    limit = 1 / np.sqrt(fan_in)
    assert np.abs(k).max() <= limit and np.abs(b).max() <= limit
    # Uniform on [-limit, limit]: the spread must be close to the full range, not tiny.
    assert k.std() == pytest.approx(limit / np.sqrt(3), rel=0.1)
    assert np.abs(b).max() > 0.3 * limit
    assert layer.padding == "same"


def test_conv_helper_3d_strided_and_config_roundtrip():
    layer = layers.conv(4, 4, 3, strides=2, name="down")
    y = layer(tf.zeros((1, 8, 8, 8, 2)))
    assert y.shape == (1, 4, 4, 4, 4)
    assert layer.bias_initializer.fan_in == 2 * 64
    clone = type(layer).from_config(layer.get_config())
    clone.build((None, 8, 8, 8, 2))
    assert clone.bias_initializer.fan_in == 128
    with pytest.raises(ValueError, match="ndims"):
        layers.conv(4, 3, 4)


def test_bias_initializer_needs_fan_in():
    with pytest.raises(ValueError, match="fan_in"):
        layers.TorchBiasUniform()((4,))
    vals = layers.TorchBiasUniform(4, seed=3)((1000,)).numpy()
    assert np.abs(vals).max() <= 0.5 and vals.min() < -0.4 and vals.max() > 0.4


# ----------------------------------------------------------------------------- residual unit


@pytest.mark.parametrize("ndims,size", [(2, 8), (3, 4)])
def test_residual_unit(ndims, size):
    x = _rand(2, *([size] * ndims), 4)
    out = check_layer(layers.ResidualUnit, {"filters": 4, "ndims": ndims}, x,
                      expected_output_shape=x.shape)
    ru = layers.ResidualUnit(4, ndims)
    got = ru(x).numpy()
    assert rel_err(got, np_residual_unit(x, ru)) < 1e-5
    assert out.shape == x.shape


@pytest.mark.parametrize("ndims", [2, 3])
def test_residual_unit_eager_gradients_match_direct_form(ndims):
    ru = layers.ResidualUnit(2, ndims)
    x = tf.constant(_rand(1, *([4] * ndims), 2))
    ru(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        got = tf.reduce_sum(ru(x) ** 2)
        h = tf.nn.gelu(ru.convs[0](x), approximate=False)
        want = tf.reduce_sum(tf.nn.gelu(x + ru.convs[1](h), approximate=False) ** 2)
    for a, b in zip(tape.gradient(got, [x] + ru.weights), tape.gradient(want, [x] + ru.weights)):
        assert rel_err(a, b) < 1e-5


def test_residual_unit_three_convs_and_bad_channels():
    ru = layers.ResidualUnit(3, 2, conv_layers=3)
    x = _rand(1, 6, 6, 3)
    assert rel_err(ru(x), np_residual_unit(x, ru)) < 1e-5
    assert len(ru.convs) == 3
    with pytest.raises(ValueError, match="channels"):
        layers.ResidualUnit(4, 2)(tf.zeros((1, 4, 4, 5)))


# ----------------------------------------------------------------------------- context folding


@pytest.mark.parametrize("ndims", [2, 3])
def test_context_fold(ndims):
    c = _rand(2, 3, *([4] * ndims), 2)
    inner = {"class_name": f"neuroicl>TorchConv{ndims}D",
             "config": layers.conv(5, 3, ndims, name="inner").get_config()}
    out = check_layer(layers.ContextFold, {"layer": inner}, c,
                      expected_output_shape=(2, 3, *([4] * ndims), 5),
                      symbolic_shapes=(None, *([4] * ndims), 2))
    assert out.shape[-1] == 5
    fold = layers.ContextFold(layers.conv(5, 3, ndims))
    y = fold(c).numpy()
    kernel, bias = fold.layer.kernel.numpy(), fold.layer.bias.numpy()
    # Shared weights: every member gets the same conv.
    for i in range(3):
        assert rel_err(y[:, i], np_conv(c[:, i], kernel, bias)) < 1e-5


def test_context_fold_dynamic_length_one_trace():
    fold = layers.ContextFold(layers.ResidualUnit(2, 2))
    fold(np.zeros((1, 1, 4, 4, 2), np.float32))  # create the weights outside the trace
    traces = []

    @tf.function(input_signature=[tf.TensorSpec((None, None, 4, 4, 2))])
    def f(c):
        traces.append(1)
        return fold(c)

    for length in (1, 2, 5):
        assert f(_rand(1, length, 4, 4, 2)).shape == (1, length, 4, 4, 2)
    assert len(traces) == 1
    with pytest.raises(TypeError):
        layers.ContextFold("conv")


# ----------------------------------------------------------------------------- fusion blocks


def np_pca(block, x, c):
    """Direct form of SPEC §2.3: materialised pairs, conv per pair, then the mean over L."""
    rx = np_residual_unit(x, block.target_conv)
    rc = np_fold(lambda t: np_residual_unit(t, block.context_conv), c)
    pairs = np.concatenate([rc, np.broadcast_to(rx[:, None], rc.shape)], axis=-1)
    wx, wc = block.combine_conv_target, block.combine_conv_context
    ux = np_fold(lambda p: np_conv(p, wx.kernel.numpy(), wx.bias.numpy()), pairs).mean(axis=1)
    uc = np_fold(lambda p: np_conv(p, wc.kernel.numpy(), wc.bias.numpy()), pairs)
    return np_gelu(rx + ux), np_gelu(rc + uc)


@pytest.mark.parametrize("ndims,size", [(2, 8), (3, 4)])
def test_pairwise_conv_avg(ndims, size):
    s = [size] * ndims
    x, c = _rand(2, *s, 4), _rand(2, 3, *s, 4)
    check_layer(layers.PairwiseConvAvg, {"filters": 4, "ndims": ndims}, [x, c],
                expected_output_shape=[x.shape, c.shape],
                symbolic_shapes=[(*s, 4), (None, *s, 4)])
    block = layers.PairwiseConvAvg(4, ndims)
    x_new, c_new = block([x, c])
    want_x, want_c = np_pca(block, x, c)
    assert rel_err(x_new, want_x) < 1e-5
    assert rel_err(c_new, want_c) < 1e-5


def test_pairwise_conv_avg_permutation_invariance_and_no_context_update():
    x, c = _rand(1, 8, 8, 3), _rand(1, 4, 8, 8, 3)
    block = layers.PairwiseConvAvg(3, 2)
    x1, c1 = block([x, c])
    perm = [2, 0, 3, 1]
    x2, c2 = block([x, c[:, perm]])
    np.testing.assert_allclose(x1, x2, atol=1e-6)
    np.testing.assert_allclose(np.asarray(c1)[:, perm], c2, atol=1e-6)
    # Without the context update: same target, input context handed back, W_C still present.
    lean = layers.PairwiseConvAvg(3, 2, update_context=False)
    lean([x, c])
    lean.set_weights(block.get_weights())
    x3, c3 = lean([x, c])
    np.testing.assert_allclose(x3, x1, atol=1e-6)
    assert c3 is c or np.array_equal(c3, c)
    assert len(lean.weights) == len(block.weights) == 12
    with pytest.raises(ValueError, match="list"):
        block(x)


@pytest.mark.parametrize("ndims,size", [(2, 8), (3, 4)])
def test_target_to_context_fusion(ndims, size):
    s = [size] * ndims
    c, t = _rand(2, 3, *s, 4), _rand(2, *s, 4)
    check_layer(layers.TargetToContextFusion, {"filters": 4, "ndims": ndims}, [c, t],
                expected_output_shape=c.shape, symbolic_shapes=[(None, *s, 4), (*s, 4)])
    block = layers.TargetToContextFusion(4, ndims)
    got = block([c, t])
    w = block.combine_conv_context
    r = np_fold(lambda u: np_residual_unit(u, block.context_conv), c)
    pairs = np.concatenate([r, np.broadcast_to(t[:, None], r.shape)], axis=-1)
    want = np_gelu(r + np_fold(lambda p: np_conv(p, w.kernel.numpy(), w.bias.numpy()), pairs))
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("ndims,size", [(2, 8), (3, 4)])
def test_context_to_target_fusion(ndims, size):
    s = [size] * ndims
    t, m = _rand(2, *s, 4), _rand(2, *s, 4)
    check_layer(layers.ContextToTargetFusion, {"filters": 4, "ndims": ndims}, [t, m],
                expected_output_shape=t.shape)
    block = layers.ContextToTargetFusion(4, ndims)
    got = block([t, m])
    w = block.combine_conv_target
    r = np_residual_unit(t, block.target_conv)
    want = np_gelu(r + np_conv(np.concatenate([m, r], -1), w.kernel.numpy(), w.bias.numpy()))
    assert rel_err(got, want) < 1e-5


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("ndims,shape", [(2, (2, 5, 3, 2)), (3, (1, 3, 4, 2, 2))])
def test_upsample_matches_numpy(ndims, shape):
    x = _rand(*shape)
    want_shape = (shape[0], *[2 * s for s in shape[1:-1]], shape[-1])
    out = check_layer(layers.Upsample, {"ndims": ndims}, x, expected_output_shape=want_shape,
                      symbolic_shapes=(*[None] * ndims, shape[-1]))
    np.testing.assert_allclose(out, np_upsample(x, ndims), atol=1e-6)


def test_upsample_2d_matches_tf_image_resize_and_resize_method():
    x = _rand(2, 6, 4, 3)
    ref = tf.image.resize(x, (12, 8), method="bilinear").numpy()
    np.testing.assert_allclose(layers.Upsample(2)(x), ref, atol=1e-6)
    np.testing.assert_allclose(layers.Upsample(2, method="resize")(x), ref, atol=1e-6)
    with pytest.raises(ValueError, match="method"):
        layers.Upsample(3, method="resize")


def test_upsample_dynamic_spatial_size():
    up = layers.Upsample(3)
    f = tf.function(up, input_signature=[tf.TensorSpec((None, None, None, None, 1))])
    for shape in [(1, 2, 3, 4, 1), (2, 1, 1, 2, 1)]:
        x = _rand(*shape)
        np.testing.assert_allclose(f(x), np_upsample(x, 3), atol=1e-6)


@pytest.mark.parametrize("ndims", [2, 3])
def test_downsample_conv_equals_torch_k4_s2_p1(ndims):
    x = _rand(2, *([8] * ndims), 3)
    out = check_layer(layers.Downsample, {"filters": 5, "ndims": ndims}, x,
                      expected_output_shape=(2, *([4] * ndims), 5))
    assert out.shape[-1] == 5
    down = layers.Downsample(5, ndims)
    got = down(x)
    want = np_conv(x, down.conv.kernel.numpy(), down.conv.bias.numpy(), stride=2,
                   pad=[(1, 1)] * ndims)
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("ndims", [2, 3])
def test_downsample_maxpool(ndims):
    x = _rand(1, *([4] * ndims), 2)
    out = check_layer(layers.Downsample, {"filters": None, "ndims": ndims, "method": "maxpool"},
                      x, expected_output_shape=(1, *([2] * ndims), 2))
    blocks = x.reshape((1,) + sum([(2, 2)] * ndims, ()) + (2,))
    want = blocks.max(axis=tuple(range(2, 2 + 2 * ndims, 2)))
    np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="method"):
        layers.Downsample(2, 2, method="avg")


# ----------------------------------------------------------------------------- gradient scaling


def test_scale_gradient_forward_exact_and_backward_scaled():
    x = tf.constant(_rand(3, 4) * 1e3)
    w = _rand(3, 4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layers.scale_gradient(x, 3.0)
        loss = tf.reduce_sum(y * w)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x), 3.0 * w, rtol=1e-6)


def test_scale_gradient_layer_with_tensor_scale_in_tf_function():
    layer = layers.ScaleGradient(scale=2.0)
    check_layer(layers.ScaleGradient, {"scale": 2.0}, _rand(2, 3), expected_output_shape=(2, 3))
    x = tf.Variable(_rand(2, 3))

    @tf.function
    def grads(k):
        with tf.GradientTape() as tape:
            y = layer(x, scale=k)
            loss = tf.reduce_sum(y)
        return y, tape.gradient(loss, x)

    y, g = grads(tf.constant(5.0))
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(g, np.full((2, 3), 5.0))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))
    np.testing.assert_allclose(tape.gradient(loss, x), np.full((2, 3), 2.0))


# ----------------------------------------------------------------------------- up-block


@pytest.mark.parametrize("ndims", [2, 3])
def test_upsample_concat_conv_equals_direct_form(ndims):
    a, skip = _rand(2, *([3] * ndims), 4), _rand(2, *([6] * ndims), 2)
    check_layer(layers.UpsampleConcatConv, {"filters": 5, "ndims": ndims}, [a, skip],
                expected_output_shape=(2, *([6] * ndims), 5))
    block = layers.UpsampleConcatConv(5, ndims)
    got = block([a, skip])
    assert block.conv.kernel.shape == (*([1] * ndims), 6, 5)
    cat = np.concatenate([np_upsample(a, ndims), skip], axis=-1)
    want = np_conv(cat, block.conv.kernel.numpy(), block.conv.bias.numpy())
    assert rel_err(got, want) < 1e-5
    # Context form (B, L, ...): folded over L with the same weights.
    ctx = block([np.stack([a, 2 * a], 1), np.stack([skip, skip], 1)]).numpy()
    np.testing.assert_allclose(ctx[:, 0], got, atol=1e-6)
    assert rel_err(ctx[:, 1], np_conv(np.concatenate([np_upsample(2 * a, ndims), skip], -1),
                                      block.conv.kernel.numpy(), block.conv.bias.numpy())) < 1e-5


# ----------------------------------------------------------------------------- XLA fusion


def test_xla_fusion_matches_plain_ops_values_and_gradients():
    x, c = _rand(1, 8, 8, 3), _rand(1, 2, 8, 8, 3)
    block = layers.PairwiseConvAvg(3, 2)
    up = layers.UpsampleConcatConv(3, 2)
    t2c, c2t = layers.TargetToContextFusion(3, 2), layers.ContextToTargetFusion(3, 2)

    def run():
        with tf.GradientTape() as tape:
            x_new, c_new = block([x, c])
            out = [x_new, c_new, up([x_new[:, ::2, ::2], x_new]), t2c([c, x]), c2t([x, x])]
            loss = sum(tf.reduce_sum(o * o) for o in out)
        weights = (block.trainable_weights + up.trainable_weights + t2c.trainable_weights
                   + c2t.trainable_weights)
        return [o.numpy() for o in out], [g.numpy() for g in tape.gradient(loss, weights)]

    was = layers.xla_fusion_enabled()
    try:
        layers.set_xla_fusion(False)
        plain, plain_grads = run()
        layers.set_xla_fusion(True)
        fused, fused_grads = run()
    finally:
        layers.set_xla_fusion(was)
    for p, f in zip(plain + plain_grads, fused + fused_grads):
        assert rel_err(f, p) < 1e-5
    assert len(plain_grads) == 12 + 2 + 6 + 6  # every weight got a gradient
