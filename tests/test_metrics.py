"""Hard Dice and PSNR against hand computations; the Keras metric classes as running means."""

import json

import numpy as np
import pytest
import tensorflow as tf

from neuroicl_tf import metrics as M


def _masks():
    # Sample 0: |A| = 3, |B| = 2, |A & B| = 2 -> 4/5. Sample 1: both empty -> 1.
    # Sample 2: disjoint -> 0.
    y = np.zeros((3, 2, 3, 1), np.float32)
    p = np.zeros_like(y)
    y[0, 0, :3, 0] = 1
    p[0, 0, :2, 0] = 0.9
    p[0, 1, 0, 0] = 0.5  # exactly at the threshold: not foreground (> 0.5)
    y[2, 0, 0, 0] = 1
    p[2, 1, 2, 0] = 0.7
    return y, p, np.array([0.8, 1.0, 0.0])


def test_dice_hand_computed_numpy_and_tf():
    y, p, want = _masks()
    got_np = M.dice(y, p)
    assert isinstance(got_np, np.ndarray) and got_np.shape == (3,)
    np.testing.assert_allclose(got_np, want, rtol=1e-6)
    got_tf = M.dice(tf.constant(y), tf.constant(p))
    assert isinstance(got_tf, tf.Tensor)
    np.testing.assert_allclose(got_tf.numpy(), want, rtol=1e-6)
    # A lower threshold makes the 0.5 voxel foreground: |B| = 3, |A & B| = 2 -> 4/6.
    np.testing.assert_allclose(M.dice(y, p, threshold=0.4)[0], 4 / 6, rtol=1e-6)


def test_dice_counts_all_channels_3d():
    y = np.zeros((1, 2, 2, 2, 3), np.float32)
    p = np.zeros_like(y)
    y[0, 0, 0, 0, :] = 1  # 3 voxels over 3 channels
    p[0, 0, 0, 0, 0] = 1  # 1 of them predicted
    np.testing.assert_allclose(M.dice(y, p), [2 * 1 / 4])
    np.testing.assert_allclose(M.dice(tf.constant(y), tf.constant(p)).numpy(), [0.5])


def test_psnr_hand_computed():
    y = np.zeros((2, 2, 2, 1), np.float32)
    p = y.copy()
    p[0] = 0.1  # mse 0.01 -> 20 dB
    p[1, 0, 0, 0] = 0.4  # mse 0.16 / 4 = 0.04 -> 10 log10(25) = 13.979 dB
    want = [20.0, 10 * np.log10(25.0)]
    np.testing.assert_allclose(M.psnr(y, p), want, rtol=1e-5)
    np.testing.assert_allclose(M.psnr(tf.constant(y), tf.constant(p)).numpy(), want, rtol=1e-5)
    # max_val 2 adds 20 log10(2) dB.
    np.testing.assert_allclose(M.psnr(y, p, max_val=2.0), np.add(want, 20 * np.log10(2)),
                               rtol=1e-5)
    assert M.psnr(y, y)[0] == np.inf


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="same shape"):
        M.dice(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match="max_val must be > 0"):
        M.psnr(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)), max_val=0)


def test_keras_metrics_are_running_means():
    y, p, want = _masks()
    metric = M.Dice()
    metric.update_state(y[:2], p[:2])
    metric.update_state(y[2:], p[2:])
    np.testing.assert_allclose(metric.result().numpy(), want.mean(), rtol=1e-6)
    metric.reset_state()
    metric.update_state(y, p, sample_weight=np.array([1.0, 0.0, 1.0], np.float32))
    np.testing.assert_allclose(metric.result().numpy(), 0.4, rtol=1e-6)

    metric = M.PSNR()
    y2 = np.zeros((2, 2, 2, 1), np.float32)
    p2 = y2 + np.array([0.1, 0.01], np.float32).reshape(2, 1, 1, 1)  # 20 dB and 40 dB
    metric.update_state(y2, p2)
    np.testing.assert_allclose(metric.result().numpy(), 30.0, rtol=1e-5)


@pytest.mark.parametrize("metric", [M.Dice(threshold=0.3), M.PSNR(max_val=2.0)],
                         ids=["Dice", "PSNR"])
def test_metric_config_round_trip(metric):
    serialized = json.loads(json.dumps(tf.keras.metrics.serialize(metric)))
    restored = tf.keras.metrics.deserialize(serialized)
    assert type(restored) is type(metric)
    assert restored.get_config() == metric.get_config()


def test_metrics_in_compile_and_evaluate():
    y, p, _ = _masks()
    inp = tf.keras.Input((2, 3, 1))
    model = tf.keras.Model(inp, tf.keras.layers.Lambda(lambda t: t)(inp))  # identity
    model.compile(loss="mse", metrics=[M.Dice(), M.PSNR(max_val=1.0)])
    results = model.evaluate(p, y, batch_size=3, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["dice"], M.dice(y, p).mean(), rtol=1e-6)
    np.testing.assert_allclose(results["psnr"], M.psnr(y, p).mean(), rtol=1e-5)
