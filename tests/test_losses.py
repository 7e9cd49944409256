"""Losses against independent numpy computations and hand-computed cases (SPEC §4.1, §4.2)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from neuroicl_tf import losses as L

RNG = np.random.default_rng(0)
SHAPES = [(3, 8, 6, 2), (2, 4, 5, 6, 1)]  # 2D and 3D, (B, *S, C)


def _pair(shape, binary=False):
    y = RNG.random(shape).astype(np.float32)
    if binary:
        y = (y > 0.5).astype(np.float32)
    return y, RNG.random(shape).astype(np.float32)


# Independent numpy versions, written from SPEC §4.1-4.2 (loops over samples and axes).
def np_dice(y, p, smooth=1.0):
    out = []
    for yb, pb in zip(y, p):
        yb, pb = yb.astype(np.float64).ravel(), pb.astype(np.float64).ravel()
        out.append(1 - (2 * np.sum(pb * yb) + smooth) / (np.sum(pb**2) + np.sum(yb**2) + smooth))
    return np.array(out)


def np_mse(y, p, sigma2=0.05):
    return np.array([np.mean((pb.astype(np.float64) - yb) ** 2) / (2 * sigma2)
                     for yb, pb in zip(y, p)])


def np_modified_l1(y, p, beta=1.0):
    e = np.abs(p.astype(np.float64) - y)
    loss = np.where(e < beta, 0.333 * e**3 / beta**2, e + 0.333 * beta**3 - beta)
    return loss.reshape(len(y), -1).mean(axis=1)


def np_grad(x, axis):
    d = np.zeros_like(x, dtype=np.float64)
    n = x.shape[axis]
    for i in range(n - 1):
        idx_hi = [slice(None)] * x.ndim
        idx_lo = [slice(None)] * x.ndim
        idx_hi[axis], idx_lo[axis] = i + 1, i
        dst = [slice(None)] * x.ndim
        dst[axis] = i
        d[tuple(dst)] = x[tuple(idx_hi)].astype(np.float64) - x[tuple(idx_lo)]
    return d


def np_gradient_loss(y, p, mode="smoothl1", mask=False):
    axes = range(1, y.ndim - 1)
    diffs = [np_grad(p, a) - np_grad(y, a) for a in axes]
    if mask:
        total = sum(np.abs(d) for d in diffs)
        total[y == 0] = 0
        return total.reshape(len(y), -1).mean(axis=1)

    def rho(d):
        if mode == "l1":
            return np.abs(d)
        if mode == "l2":
            return d**2
        return np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5)

    return sum(rho(d).reshape(len(y), -1).mean(axis=1) for d in diffs) / len(diffs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "loss, ref, binary",
    [
        (L.SoftDice(), np_dice, True),
        (L.SoftDice(smooth=0.5), lambda y, p: np_dice(y, p, 0.5), True),
        (L.MSE(), np_mse, False),
        (L.MSE(sigma2=0.2), lambda y, p: np_mse(y, p, 0.2), False),
        (L.L1(), lambda y, p: np.abs(p - y.astype(np.float64)).reshape(len(y), -1).mean(1),
         False),
        (L.ModifiedL1(), np_modified_l1, False),
        (L.ModifiedL1(beta=0.3), lambda y, p: np_modified_l1(y, p, 0.3), False),
        (L.GradientLoss(), np_gradient_loss, False),
        (L.GradientLoss(mode="l1"), lambda y, p: np_gradient_loss(y, p, "l1"), False),
        (L.GradientLoss(mode="l2"), lambda y, p: np_gradient_loss(y, p, "l2"), False),
        (L.GradientLoss(mask=True), lambda y, p: np_gradient_loss(y, p, mask=True), True),
    ],
    ids=["dice", "dice_s0.5", "mse", "mse_s0.2", "l1", "ml1", "ml1_b0.3", "grad_sl1",
         "grad_l1", "grad_l2", "grad_mask"],
)
def test_per_sample_values_match_numpy(loss, ref, binary, shape):
    y, p = _pair(shape, binary)
    got = loss.call(y, p).numpy()
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, ref(y, p), rtol=1e-5, atol=1e-6)
    # Keras' default reduction is the batch mean of the per-sample values.
    np.testing.assert_allclose(loss(y, p).numpy(), ref(y, p).mean(), rtol=1e-5, atol=1e-6)
    # sample_weight multiplies the per-sample losses before the mean over the batch.
    w = np.arange(1, shape[0] + 1, dtype=np.float32)
    np.testing.assert_allclose(loss(y, p, sample_weight=w).numpy(),
                               (ref(y, p) * w).sum() / shape[0], rtol=1e-5, atol=1e-6)


def test_gradient_loss_large_differences_use_linear_smooth_l1_branch():
    # Differences of +-3 exercise the |d| - 0.5 branch of smooth-L1.
    y = np.zeros((1, 4, 4, 1), np.float32)
    p = np.zeros_like(y)
    p[0, ::2, ::2, 0] = 3.0
    np.testing.assert_allclose(L.GradientLoss().call(y, p).numpy(), np_gradient_loss(y, p),
                               rtol=1e-6)


def test_hand_computed_cases():
    # Soft Dice: p = (1, 0.5), y = (1, 1): 1 - (2*1.5 + 1) / (1.25 + 2 + 1) = 1 - 4/4.25.
    y = np.ones((1, 1, 2, 1), np.float32)
    p = np.array([1.0, 0.5], np.float32).reshape(1, 1, 2, 1)
    np.testing.assert_allclose(L.SoftDice().call(y, p).numpy(), [1 - 4 / 4.25], rtol=1e-6)
    # MSE: errors (0, 0.5): mean 0.125, times 1/(2*0.05) = 10 -> 1.25.
    np.testing.assert_allclose(L.MSE().call(y, p).numpy(), [1.25], rtol=1e-6)
    # Modified L1: e = 0.5 -> 0.333 * 0.125 = 0.041625; e = 2 -> 2 + 0.333 - 1 = 1.333.
    p2 = np.array([1.5, 3.0], np.float32).reshape(1, 1, 2, 1)
    np.testing.assert_allclose(L.ModifiedL1().call(y, p2).numpy(), [(0.041625 + 1.333) / 2],
                               rtol=1e-6)
    # Gradient loss on a 1x3 row: y = (0, 0, 0), p = (0, 1, 0): d_x p = (1, -1, 0);
    # along the size-1 axis everything is 0.
    y3 = np.zeros((1, 1, 3, 1), np.float32)
    p3 = np.array([0.0, 1.0, 0.0], np.float32).reshape(1, 1, 3, 1)
    # l1: axis 1 -> 0, axis 2 -> mean(1, 1, 0) = 2/3; averaged over the 2 axes -> 1/3.
    np.testing.assert_allclose(L.GradientLoss(mode="l1").call(y3, p3).numpy(), [1 / 3],
                               rtol=1e-6)
    # smoothl1: 0.5 per unit difference -> mean(0.5, 0.5, 0)/2 = 1/6.
    np.testing.assert_allclose(L.GradientLoss().call(y3, p3).numpy(), [1 / 6], rtol=1e-6)
    # mask: y == 0 everywhere, so the masked loss is 0.
    np.testing.assert_allclose(L.GradientLoss(mask=True).call(y3, p3).numpy(), [0.0])


def test_spatial_gradients_zero_last_slice():
    x = tf.constant(np.arange(2 * 3 * 4 * 5 * 1, dtype=np.float32).reshape(2, 3, 4, 5, 1))
    dz, dy, dx = L.spatial_gradients(x)
    np.testing.assert_array_equal(dz.numpy()[:, :2], 20.0)
    np.testing.assert_array_equal(dz.numpy()[:, 2], 0.0)
    np.testing.assert_array_equal(dy.numpy()[:, :, :3], 5.0)
    np.testing.assert_array_equal(dy.numpy()[:, :, 3], 0.0)
    np.testing.assert_array_equal(dx.numpy()[..., :4, :], 1.0)
    np.testing.assert_array_equal(dx.numpy()[..., 4, :], 0.0)


@pytest.mark.parametrize("preset", ["neuralizer", "neuroverse3d"])
def test_task_loss_routes_by_task_kind(preset):
    loss = getattr(L.TaskLoss, preset)()
    y, p = _pair((4, 8, 8, 1), binary=True)
    kind = np.array([0, 1, 1, 0], np.int32)
    got = loss.per_sample(y, p, kind).numpy()
    if preset == "neuralizer":
        seg, img = np_dice(y, p), np_mse(y, p)
    else:
        seg = np_modified_l1(y, p)
        img = np.abs(p - y.astype(np.float64)).reshape(4, -1).mean(1) + np_gradient_loss(y, p)
    np.testing.assert_allclose(got, np.where(kind == 0, seg, img), rtol=1e-5, atol=1e-6)
    # Without task_kind: the segmentation loss for every sample.
    np.testing.assert_allclose(loss.call(y, p).numpy(), seg, rtol=1e-5, atol=1e-6)
    # __call__ with task_kind and lambda_t as sample_weight: weighted batch mean.
    w = np.array([50.0, 1.0, 0.5, 2.0], np.float32)
    np.testing.assert_allclose(loss(y, p, sample_weight=w, task_kind=kind).numpy(),
                               (np.where(kind == 0, seg, img) * w).sum() / 4, rtol=1e-5)
    # Inside tf.function as well.
    graph = tf.function(lambda a, b, k: loss.per_sample(a, b, k))(y, p, kind)
    np.testing.assert_allclose(graph.numpy(), got, rtol=1e-6)


def test_task_loss_rejects_bad_task_kind_and_arguments():
    y, p = _pair((2, 4, 4, 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="task_kind must be 0"):
        L.TaskLoss().per_sample(y, p, np.array([0, 2], np.int32))
    with pytest.raises(ValueError, match="segmentation must be one of"):
        L.TaskLoss(segmentation="bce")
    with pytest.raises(ValueError, match="sigma2 must be > 0"):
        L.MSE(sigma2=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        L.GradientLoss(mode="huber")
    with pytest.raises(ValueError, match="same shape"):
        L.SoftDice().call(np.zeros((2, 4, 4, 1)), np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        L.MSE().call(np.zeros((2, 4, 1)), np.zeros((2, 4, 1)))


ALL_LOSSES = [L.SoftDice(smooth=2.0), L.MSE(sigma2=0.1), L.L1(), L.ModifiedL1(beta=0.5),
              L.GradientLoss(mode="l2", mask=True), L.TaskLoss.neuroverse3d(),
              L.TaskLoss.neuralizer(sigma2=0.1)]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda x: type(x).__name__)
def test_gradients_are_finite(loss):
    y, _ = _pair((2, 6, 6, 6, 1), binary=True)
    p = tf.Variable(y.copy())  # p == y exactly: the worst case for |e| and sqrt-like kinks
    with tf.GradientTape() as tape:
        value = loss(y, p)
    grad = tape.gradient(value, p)
    assert grad is not None and np.all(np.isfinite(grad.numpy()))
    p.assign(RNG.random(y.shape).astype(np.float32) * 3)
    with tf.GradientTape() as tape:
        value = loss(y, p)
    grad = tape.gradient(value, p).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda x: type(x).__name__)
def test_config_round_trip_through_json(loss):
    serialized = json.loads(json.dumps(tf.keras.losses.serialize(loss)))
    assert serialized["registered_name"] == f"neuroicl>{type(loss).__name__}"
    restored = tf.keras.losses.deserialize(serialized)
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    y, p = _pair((2, 5, 5, 1), binary=True)
    np.testing.assert_allclose(restored(y, p).numpy(), loss(y, p).numpy(), rtol=1e-6)


def test_float16_inputs_are_reduced_in_float32():
    # 128 * 128 * 8 ones: the sum 131072 overflows float16 (max 65504) but not float32.
    y = np.ones((1, 128, 128, 8), np.float16)
    value = L.SoftDice().call(y, y)
    assert value.dtype == tf.float32
    np.testing.assert_allclose(value.numpy(), [0.0], atol=1e-6)


def test_compile_and_fit_with_task_loss():
    inp = tf.keras.Input((8, 8, 1))
    model = tf.keras.Model(inp, tf.keras.layers.Conv2D(1, 3, padding="same")(inp))
    model.compile(optimizer="sgd", loss=L.TaskLoss.neuroverse3d())
    y, x = _pair((4, 8, 8, 1), binary=True)
    history = model.fit(x, y, sample_weight=np.array([50, 1, 1, 0.5], np.float32), epochs=1,
                        verbose=0)
    assert np.isfinite(history.history["loss"][0])
