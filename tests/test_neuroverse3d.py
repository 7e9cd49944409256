"""Neuroverse3D: structure, APSP behaviour and training, conversion, parity with the reference.

Parity tests need ``../shared/reference/fixtures/neuroverse3d_c4-64_32cube.npz`` and skip without
it; ``tests/fixtures/selfmade_apsp_tiny.npz`` (made by ``tests/fixtures/make_apsp_fixture.py``
from this port) checks the APSP math on a bare machine.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from layer_testing import check_model

import neuroicl_tf  # noqa: F401
from neuroicl_tf.convert.neuroverse3d import (
    config_from_state_dict,
    keras_weights_from_state_dict,
    state_dict_from_keras,
)
from neuroicl_tf.models.neuroverse3d import Neuroverse3D, apsp_forward_for_gradient

HERE = Path(__file__).resolve().parent
TINY_FIXTURE = HERE / "fixtures" / "selfmade_apsp_tiny.npz"
REFERENCE_FIXTURE = (
    HERE.parents[1] / "shared" / "reference" / "fixtures" / "neuroverse3d_c4-64_32cube.npz"
)


def _load_fixture_script():
    spec = importlib.util.spec_from_file_location(
        "make_apsp_fixture", HERE / "fixtures" / "make_apsp_fixture.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixture_script = _load_fixture_script()


def _max_rel(actual, desired):
    """max |a - d| / max |d| (the parity measure of the brief)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    return float(np.abs(actual - desired).max() / max(np.abs(desired).max(), 1e-30))


def _model_from_npz(data, **kwargs):
    """A Keras model with the npz's weights and its inputs in Keras layout."""
    state_dict = {k[2:]: data[k] for k in data.files if k.startswith("w/")}
    model = Neuroverse3D(**config_from_state_dict(state_dict), **kwargs)
    for variable, value in keras_weights_from_state_dict(state_dict, model):
        variable.assign(value)
    inputs = [
        np.moveaxis(data["target_in"], 1, -1).astype(np.float32),
        np.moveaxis(data["context_in"], 2, -1).astype(np.float32),
        np.moveaxis(data["context_out"], 2, -1).astype(np.float32),
    ]
    return model, inputs


def _episode(batch=2, length=3, size=16, ndims=3, seed=0):
    rng = np.random.default_rng(seed)
    spatial = (size,) * ndims
    return {
        "target": rng.random((batch, *spatial, 1), dtype=np.float32),
        "context_in": rng.random((batch, length, *spatial, 1), dtype=np.float32),
        "context_out": (rng.random((batch, length, *spatial, 1)) > 0.5).astype(np.float32),
        "task_kind": np.zeros((batch,), np.int32),
    }


def _assert_grads_match(grads, data, prefix, tol):
    keys = [k[len(prefix) + 1:] for k in data.files if k.startswith(prefix + "/")]
    assert sorted(keys) == sorted(grads), "gradient key sets differ"
    worst = max(keys, key=lambda k: _max_rel(grads[k], data[f"{prefix}/{k}"]))
    error = _max_rel(grads[worst], data[f"{prefix}/{worst}"])
    assert error < tol, f"{prefix}: worst tensor {worst} has relative error {error:.2e}"


@pytest.fixture(scope="module")
def tiny():
    data = np.load(TINY_FIXTURE)
    model, inputs = _model_from_npz(data, shuffle=False)
    return data, model, inputs


# ------------------------------------------------------------------ structure


def test_default_parameter_count():
    model = Neuroverse3D()  # built, never run
    assert model.count_params() == 70_854_913
    counts = [m.count_params() for m in (model.target_encoder, model.context_unet,
                                         model.target_decoder)]
    assert counts == [15_843_264, 35_137_376, 19_874_273]


def test_check_model_tiny(tmp_path):
    x = _episode(batch=2, length=3, size=16)
    model, output = check_model(
        lambda: Neuroverse3D(channels=(2, 4, 8), mini_context=2, seed=0),
        x,
        expected_output_shape=(2, 16, 16, 16, 1),
        tmp_path=tmp_path,
    )
    assert model.get_config()["mini_context"] == 2


def test_two_dimensional_model():
    model = Neuroverse3D(channels=(2, 4), ndims=2, mini_context=1, seed=1)
    x = _episode(batch=1, length=4, size=8, ndims=2)
    y_full = model(x, mini_context=None).numpy()
    assert y_full.shape == (1, 8, 8, 1)
    assert _max_rel(model(x).numpy(), y_full) < 1e-5


# ------------------------------------------------------------------ APSP forward


def test_output_independent_of_l_and_order(tiny):
    data, model, inputs = tiny
    stored = np.moveaxis(data["output"], 1, -1)
    for size, shuffle in ((None, False), (1, True), (2, False), (3, True)):
        output = model(inputs, mini_context=size, shuffle=shuffle).numpy()
        assert _max_rel(output, stored) < 1e-5, (size, shuffle)
    with tf.GradientTape() as tape:  # the training form gives the same forward value
        output = apsp_forward_for_gradient(model, inputs, tape, mini_context=2, order=[2, 0, 1])
    assert _max_rel(output.numpy(), stored) < 1e-5


def test_l_is_dynamic_without_retracing(tiny):
    _, model, inputs = tiny
    target, context_in, context_out = inputs
    spec = [
        tf.TensorSpec((None, *target.shape[1:])),
        tf.TensorSpec((None, None, *context_in.shape[2:])),
        tf.TensorSpec((None, None, *context_out.shape[2:])),
    ]
    fn = tf.function(lambda t, a, b: model([t, a, b], mini_context=2), input_signature=spec)
    for length in (1, 2, 3, 5):
        part = [target, context_in[:, :length], context_out[:, :length]]
        want = model(part, mini_context=None).numpy()
        assert _max_rel(fn(*part).numpy(), want) < 1e-5
    assert fn.experimental_get_tracing_count() == 1


def test_per_call_and_per_run_overrides(tiny, monkeypatch):
    _, model, inputs = tiny
    seen = []
    accumulate = model.apsp.accumulate

    def spy(inputs_, chunks, mini_context, *args, **kwargs):
        seen.append(mini_context)
        return accumulate(inputs_, chunks, mini_context, *args, **kwargs)

    monkeypatch.setattr(model.apsp, "accumulate", spy)
    model(inputs, mini_context=3)
    assert seen[-1] == 3
    model.predict(inputs, mini_context=1, verbose=0)
    assert seen[-1] == 1
    assert model.predict_function is None, "the run's traced function must not stay cached"
    assert model.mini_context is None
    model.mini_context = 2
    assert model.predict_function is None and model.get_config()["mini_context"] == 2
    model.predict(inputs, verbose=0)
    assert seen[-1] == 2
    model.mini_context = None


def test_bad_settings_and_inputs(tiny):
    _, model, inputs = tiny
    for kwargs in ({"mini_context": 0}, {"channels": ()}, {"ndims": 4},
                   {"spatial_shape": (12, 12, 9)}, {"channels": (2, 4), "in_channels": 0}):
        with pytest.raises(ValueError):
            Neuroverse3D(**{"channels": (2, 4), **kwargs})
    with pytest.raises(TypeError, match="mini_context"):
        Neuroverse3D(channels=(2, 4), mini_context=1.5)
    with pytest.raises(ValueError, match="mini_context"):
        model(inputs, mini_context=0)
    with pytest.raises(ValueError, match="mini_context"):
        model.predict(inputs, mini_context=-1, verbose=0)
    with pytest.raises(ValueError, match="mini_context"):
        model.fit(inputs, inputs[0], mini_context=0, verbose=0)
    with pytest.raises(ValueError, match="mini_context"):
        model.mini_context = 0
    with pytest.raises(TypeError, match="shuffle"):
        model(inputs, shuffle="no")
    target, context_in, context_out = inputs
    with pytest.raises(ValueError, match="divisible"):
        model([target[:, :10, :10, :10], context_in[:, :, :10, :10, :10],
               context_out[:, :, :10, :10, :10]])
    with pytest.raises(ValueError, match="context_out"):
        model([target, context_in, context_out[:, :3]])
    with pytest.raises(ValueError, match="context_in"):
        model({"target": target, "context_out": context_out})
    with pytest.raises(ValueError, match="channels"):
        model([target, np.concatenate([context_in] * 2, -1), context_out])


# ------------------------------------------------------------------ APSP gradient


def test_tiny_fixture_gradients(tiny):
    data, model, inputs = tiny
    full = fixture_script.gradients(model, inputs, None)
    _assert_grads_match(full, data, "grad_full", 1e-4)
    apsp = fixture_script.gradients(model, inputs, 2)
    _assert_grads_match(apsp, data, "grad_apsp_l2_noshuffle", 1e-4)
    # Unbiased: the average over which chunk is last (each with probability 1/K) is the
    # full-context gradient. Chunks [0,2), [2,4), [4,5): [0, 1, 2] already has 2 last.
    per_last = [apsp,
                fixture_script.gradients(model, inputs, 2, order=[0, 2, 1]),
                fixture_script.gradients(model, inputs, 2, order=[2, 1, 0])]
    for key, value in full.items():
        average = sum(g[key] for g in per_last) / 3.0
        assert _max_rel(average, value) < 1e-4, key
    assert max(_max_rel(apsp[k], full[k]) for k in full) > 1e-2  # one step is biased


def test_train_step_applies_the_apsp_gradient(tiny):
    """One SGD step of fit(mini_context=2, shuffle off) with loss = mean(output) moves every
    weight by -lr times the stored APSP gradient."""
    data, _, _ = tiny
    model, inputs = _model_from_npz(data, shuffle=False)
    before = state_dict_from_keras(model)
    lr = 1000.0  # large, so that (before - after) / lr does not lose digits to cancellation
    optimizer = tf.keras.optimizers.SGD(lr)
    optimizer.build(model.trainable_variables)  # no variable creation inside the traced step
    model.compile(optimizer,
                  loss=lambda y_true, y_pred: tf.reduce_mean(y_pred, axis=[1, 2, 3, 4]))
    model.fit(inputs, inputs[0], batch_size=1, epochs=1, verbose=0, shuffle=False,
              mini_context=2)
    after = state_dict_from_keras(model)
    steps = {k: (before[k] - after[k]) / lr for k in before}
    _assert_grads_match(steps, data, "grad_apsp_l2_noshuffle", 1e-4)


# ------------------------------------------------------------------ conversion


def test_converter_round_trip_and_errors(tiny):
    data, model, _ = tiny
    state_dict = state_dict_from_keras(model)
    assert len(state_dict) == 76
    config = config_from_state_dict({f"model.{k}": v for k, v in state_dict.items()})
    assert config == {"channels": [2, 4, 8], "in_channels": 1, "out_channels": 1, "ndims": 3}
    pairs = keras_weights_from_state_dict(state_dict, model)
    assert len(pairs) == len(model.weights) == len({id(v) for v, _ in pairs})
    for variable, value in pairs:
        np.testing.assert_array_equal(variable.numpy(), value)

    broken = dict(state_dict)
    del broken["context_unet.enc_blocks.1.combine_conv_context.module.bias"]
    broken["context_unet.extra.weight"] = np.zeros(3, np.float32)
    key = "target_decoder.upsample_blocks.0.target_conv_layer.weight"
    broken[key] = broken[key][:, :-1]
    with pytest.raises(ValueError) as err:
        keras_weights_from_state_dict(broken, model)
    message = str(err.value)
    assert "combine_conv_context.module.bias" in message
    assert "context_unet.extra.weight" in message
    assert key in message
    with pytest.raises(ValueError, match="not a Neuroverse3D"):
        config_from_state_dict({"foo.weight": np.zeros((1, 1, 1, 1))})


def test_dispatcher_converts_the_tiny_fixture(tiny):
    from neuroicl_tf.convert import convert_state_dict, load_reference

    data, _, inputs = tiny
    model = convert_state_dict(load_reference(TINY_FIXTURE))
    assert isinstance(model, Neuroverse3D) and model.channels == (2, 4, 8)
    output = model(inputs, mini_context=2).numpy()
    assert _max_rel(output, np.moveaxis(data["output"], 1, -1)) < 1e-5


def test_converter_config_2d():
    model = Neuroverse3D(channels=(3, 5), in_channels=2, out_channels=4, ndims=2)
    state_dict = state_dict_from_keras(model)
    assert config_from_state_dict(state_dict) == {
        "channels": [3, 5], "in_channels": 2, "out_channels": 4, "ndims": 2,
    }
    assert state_dict["target_encoder.downsample_blocks.0.target_linear_layer.weight"].shape == (
        5, 3, 4, 4,
    )


# ------------------------------------------------------------------ reference parity


@pytest.fixture(scope="module")
def reference():
    if not REFERENCE_FIXTURE.exists():
        pytest.skip(f"reference fixture not found: {REFERENCE_FIXTURE}")
    data = np.load(REFERENCE_FIXTURE)
    model, inputs = _model_from_npz(data, shuffle=False)
    assert list(data["channels"]) == [4, 8, 16, 32, 64]
    assert model.count_params() == 1_108_257
    return data, model, inputs


def test_reference_outputs(reference):
    data, model, inputs = reference
    for size in (1, 2, 5):
        output = model(inputs, mini_context=size, shuffle=True).numpy()
        want = np.moveaxis(data[f"out_l{size}"], 1, -1)
        assert _max_rel(output, want) < 1e-4, size


def test_reference_gradients(reference):
    data, model, inputs = reference
    _assert_grads_match(fixture_script.gradients(model, inputs, 5), data, "grad_full", 1e-4)
    _assert_grads_match(
        fixture_script.gradients(model, inputs, 2), data, "grad_apsp_l2_noshuffle", 1e-4
    )


# ------------------------------------------------------------------ distribution

_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from neuroicl_tf import _compat
    tf = _compat.import_tensorflow()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from neuroicl_tf.losses import TaskLoss
    from neuroicl_tf.models.neuroverse3d import Neuroverse3D

    rng = np.random.default_rng(0)
    x = {"target": rng.random((2, 8, 8, 8, 1), dtype=np.float32),
         "context_in": rng.random((2, 3, 8, 8, 8, 1), dtype=np.float32),
         "context_out": (rng.random((2, 3, 8, 8, 8, 1)) > 0.5).astype(np.float32),
         "task_kind": np.array([0, 1], np.int32)}
    y = rng.random((2, 8, 8, 8, 1), dtype=np.float32)
    weights = np.array([2.0, 0.5], np.float32)

    def step(model, init):
        model.set_weights(init)
        optimizer = tf.keras.optimizers.SGD(0.5)
        optimizer.build(model.trainable_variables)
        model.compile(optimizer, loss=TaskLoss())
        history = model.fit(x, y, sample_weight=weights, batch_size=2, epochs=1, verbose=0,
                            shuffle=False)
        return history.history["loss"][0], model.get_weights()

    tf.keras.utils.set_random_seed(0)
    single = Neuroverse3D(channels=(2, 4), mini_context=2, shuffle=False)
    init = single.get_weights()
    loss_1, weights_1 = step(single, init)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        dist = Neuroverse3D(channels=(2, 4), mini_context=2, shuffle=False, seed=1)
        loss_2, weights_2 = step(dist, init)
    error = max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(weights_1, weights_2))
    moved = max(float(np.abs(a - b).max()) for a, b in zip(weights_1, init))
    # The seeded shuffle must also run in replica context.
    dist.shuffle = True
    loss_3 = dist.fit(x, y, batch_size=2, epochs=1, verbose=0).history["loss"][0]
    print("RESULT", error, moved, loss_1, loss_2, loss_3)
    """
)


def test_mirrored_strategy_step_matches_single_device():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1")
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT], capture_output=True, text=True, env=env,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    error, moved, loss_1, loss_2, loss_3 = (float(v) for v in lines[-1].split()[1:])
    assert moved > 1e-4, "the step did not change the weights"
    assert error < 1e-5, f"MirroredStrategy step differs from one device: {error:.2e}"
    assert abs(loss_1 - loss_2) <= 1e-5 * abs(loss_1)
    assert np.isfinite(loss_3)
