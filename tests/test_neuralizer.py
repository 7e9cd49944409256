"""Tests of the ICLModel base (config, save/load, input checks, task-aware loss, export) and of
Neuralizer (parameter count, one trace for any L, parity with the PyTorch reference fixture)."""

import os

import numpy as np
import pytest
import tensorflow as tf
from layer_testing import check_model

from neuroicl_tf import layers
from neuroicl_tf.models import ICLModel, Neuralizer

FIXTURE = "/work/shared/reference/fixtures/neuralizer_default_64px.npz"
RNG = np.random.default_rng(1)


def episode(b=2, length=3, size=16, cin=3, cout=3, ndims=2, task_kind=True):
    s = (size,) * ndims
    x = {
        "target": RNG.uniform(size=(b, *s, cin)).astype(np.float32),
        "context_in": RNG.uniform(size=(b, length, *s, cin)).astype(np.float32),
        "context_out": RNG.uniform(size=(b, length, *s, cout)).astype(np.float32),
    }
    if task_kind:
        x["task_kind"] = (np.arange(b) % 2).astype(np.int32)
    return x


def tiny(**kw):
    args = dict(ndims=2, stages=2, channels=4)
    args.update(kw)
    return Neuralizer(**args)


# ----------------------------------------------------------------------------- Neuralizer


def test_default_parameter_count_and_weight_count():
    model = Neuralizer()
    assert model.count_params() == 1_273_859
    assert len(model.weights) == 106  # one per PyTorch state-dict tensor
    assert model.get_config() == {
        "ndims": 2, "stages": 4, "channels": 64, "in_channels": 3, "out_channels": 3,
        "spatial_shape": None, "name": "neuralizer",
    }


def test_check_model_2d(tmp_path):
    x = episode(b=2, length=2, size=8)
    model, out = check_model(tiny, x, expected_output_shape=(2, 8, 8, 3), tmp_path=tmp_path)
    assert isinstance(model, Neuralizer)
    assert np.all(np.isfinite(out))


def test_check_model_3d(tmp_path):
    x = episode(b=1, length=2, size=4, cin=1, cout=2, ndims=3)
    build = lambda: tiny(ndims=3, in_channels=1, out_channels=2)  # noqa: E731
    check_model(build, x, expected_output_shape=(1, 4, 4, 4, 2), tmp_path=tmp_path)


def test_one_trace_serves_any_context_length():
    model = tiny(stages=3)
    traces = []
    spec = [tf.TensorSpec((None, 16, 16, 3)), tf.TensorSpec((None, None, 16, 16, 3)),
            tf.TensorSpec((None, None, 16, 16, 3))]

    @tf.function(input_signature=spec)
    def run(t, ci, co):
        traces.append(1)
        return model([t, ci, co])

    for length in (1, 2, 5):
        x = episode(b=1, length=length)
        got = run(x["target"], x["context_in"], x["context_out"])
        np.testing.assert_allclose(got, model(x), rtol=1e-5, atol=1e-6)
    assert len(traces) == 1


def test_context_permutation_invariance_and_dependence():
    model = tiny()
    x = episode(b=1, length=3)
    perm = dict(x, context_in=x["context_in"][:, ::-1], context_out=x["context_out"][:, ::-1])
    np.testing.assert_allclose(model(x), model(perm), atol=1e-5)
    other = dict(x, context_out=x["context_out"][:, ::-1] * 0.0)
    assert np.abs(model(x) - model(other)).max() > 1e-4


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="ndims"):
        Neuralizer(ndims=4)
    with pytest.raises(ValueError, match="spatial_shape"):
        Neuralizer(stages=4, spatial_shape=(60, 64))
    with pytest.raises(ValueError, match="channels"):
        Neuralizer(channels=0)
    fixed = tiny(spatial_shape=(8, 8))
    with pytest.raises(ValueError, match="built for 8"):
        fixed(episode(b=1, length=1, size=16))


# ----------------------------------------------------------------------------- input checks


def _bad(x, key, fn):
    x = dict(x)
    x[key] = fn(x[key])
    return x


BAD_INPUTS = [
    ("target", lambda a: a[0], "rank 3, wanted rank 4"),
    ("context_in", lambda a: a[..., :2], "2 channels, the model takes 3"),
    ("context_out", lambda a: np.concatenate([a, a], -1), "6 channels"),
    ("context_in", lambda a: a[:, :, :8], "differs from the target"),
    ("context_out", lambda a: a[:, :1], "L = 1 but context_in has L = 2"),
    ("context_in", lambda a: a[:, :0], "L = 0"),
    ("target", lambda a: a[:1], "batch sizes differ"),
]


@pytest.mark.parametrize("key,fn,message", BAD_INPUTS)
def test_validate_inputs_messages(key, fn, message):
    model = tiny(stages=1)
    x = _bad(episode(b=2, length=2, size=16), key, fn)
    with pytest.raises(ValueError, match=message) as info:
        model(x)
    assert repr(key) in str(info.value) and "wanted" in str(info.value)
    with pytest.raises(ValueError, match=message):
        model.validate_inputs(x)


def test_validate_divisibility_and_input_forms():
    model = tiny(stages=3)
    x = episode(b=1, length=2, size=6)
    with pytest.raises(ValueError, match="not divisible by 4"):
        model(x)
    with pytest.raises(ValueError, match="not divisible by 4"):
        model.predict(x, verbose=0)
    x = episode(b=1, length=2, size=16)
    as_list = [x["target"], x["context_in"], x["context_out"]]
    np.testing.assert_allclose(model(as_list), model(x), atol=1e-6)
    np.testing.assert_allclose(model(tuple(as_list)), model(x), atol=1e-6)
    with pytest.raises(ValueError, match="lack the key"):
        model({"target": x["target"], "context_in": x["context_in"]})
    with pytest.raises(ValueError, match="3 items|got 2 items"):
        model(as_list[:2])


# ----------------------------------------------------------------------------- save / load


def test_save_load_roundtrip_and_errors(tmp_path):
    model = tiny(stages=1, in_channels=1, out_channels=2, spatial_shape=[8, 8])
    x = episode(b=1, length=2, size=8, cin=1, cout=2)
    path = tmp_path / "m.weights.h5"
    model.save(str(path))
    assert sorted(os.listdir(tmp_path)) == ["m.weights.h5"]  # no temporary file left
    for loader in (ICLModel, Neuralizer):
        loaded = loader.load(path)
        assert type(loaded) is Neuralizer
        assert loaded.get_config() == model.get_config()
        np.testing.assert_array_equal(loaded(x), model(x))
    rebuilt = Neuralizer.from_config(model.get_config())
    assert rebuilt.count_params() == model.count_params()

    with pytest.raises(FileNotFoundError, match="not found"):
        ICLModel.load(tmp_path / "missing.h5")
    import h5py

    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="no neuroicl model config"):
        ICLModel.load(tmp_path / "plain.h5")
    with h5py.File(tmp_path / "alien.h5", "w") as f:
        f.attrs["neuroicl_class"] = "NoSuchModel"
        f.attrs["neuroicl_config"] = "{}"
        f.create_group("weights")
    with pytest.raises(ValueError, match="unknown model class 'NoSuchModel'"):
        ICLModel.load(tmp_path / "alien.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        ICLModel.load(tmp_path / "text.h5")


def test_subclass_records_kwargs_config():
    class Wide(Neuralizer):
        def __init__(self, width=4, **kwargs):
            super().__init__(ndims=2, stages=2, channels=width, **kwargs)

    model = Wide(width=2, in_channels=1, out_channels=1)
    assert model.get_config() == {"width": 2, "in_channels": 1, "out_channels": 1}
    assert Wide.from_config(model.get_config()).count_params() == model.count_params()
    assert ICLModel._registry["Wide"] is Wide


# ----------------------------------------------------------------------------- loss


class PerSampleMSE(tf.keras.losses.Loss):
    """MSE per sample, doubled for task_kind 1 (so that routing task_kind is visible)."""

    def call(self, y_true, y_pred):
        return tf.reduce_mean(tf.square(y_true - y_pred), axis=[1, 2, 3])

    def per_sample(self, y_true, y_pred, task_kind):
        per = tf.reduce_mean(tf.square(y_true - y_pred), axis=[1, 2, 3])
        return per * (1.0 + tf.cast(task_kind, per.dtype))


def test_compute_loss_uses_per_sample_with_task_kind_and_weights():
    model = tiny(stages=1)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.0), loss=PerSampleMSE())
    x = episode(b=4, length=2, size=8)
    x["task_kind"] = np.array([0, 1, 1, 0], np.int32)
    y = RNG.uniform(size=(4, 8, 8, 3)).astype(np.float32)
    w = np.array([1.0, 0.5, 2.0, 0.0], np.float32)
    pred = model(x).numpy()
    per = ((y - pred) ** 2).mean(axis=(1, 2, 3)) * (1 + x["task_kind"])
    want = float(np.mean(per * w))

    direct = model.compute_loss(x, y, tf.constant(pred), tf.constant(w))
    assert float(direct) == pytest.approx(want, rel=1e-5)
    # fit / evaluate log the mean over all samples, also across two batches of 2.
    hist = model.fit(x, y, sample_weight=w, batch_size=2, epochs=1, verbose=0, shuffle=False)
    assert hist.history["loss"][0] == pytest.approx(want, rel=1e-5)
    logs = model.evaluate(x, y, sample_weight=w, batch_size=2, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(want, rel=1e-5)
    assert [m.name for m in model.metrics].count("loss") == 1

    # Without task_kind the compiled loss is used as a plain Keras loss (no doubling).
    plain = {k: v for k, v in x.items() if k != "task_kind"}
    logs = model.evaluate(plain, y, batch_size=4, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(float(((y - pred) ** 2).mean()), rel=1e-5)


def test_fit_trains_with_task_kind_dataset():
    model = tiny(stages=1)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), loss=PerSampleMSE())
    x = episode(b=2, length=2, size=8)
    y = np.zeros((2, 8, 8, 3), np.float32)
    ds = tf.data.Dataset.from_tensors((x, y, np.ones(2, np.float32))).repeat(8)
    hist = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert float(model.compute_loss(x, y, model(x))) < hist.history["loss"][0]


# ----------------------------------------------------------------------------- export


def test_saved_model_export_with_dynamic_dims(tmp_path):
    model = tiny(stages=1)
    module = tf.Module()
    module.model = model
    spec = [tf.TensorSpec((None, None, None, 3), name="target"),
            tf.TensorSpec((None, None, None, None, 3), name="context_in"),
            tf.TensorSpec((None, None, None, None, 3), name="context_out")]
    module.serve = tf.function(lambda t, ci, co: model([t, ci, co]), input_signature=spec)
    tf.saved_model.save(module, str(tmp_path / "sm"))
    restored = tf.saved_model.load(str(tmp_path / "sm"))
    x = episode(b=1, length=3, size=8)
    got = restored.serve(x["target"], x["context_in"], x["context_out"])
    np.testing.assert_allclose(got, model(x), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def fixture():
    if not os.path.exists(FIXTURE):
        pytest.skip(f"reference fixture absent: {FIXTURE}")
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


def to_last(a, context=False):
    """PyTorch channels-first -> channels-last: (B, C, *S) or (B, L, C, *S)."""
    axis = 2 if context else 1
    return np.moveaxis(a, axis, -1)


def test_parity_with_reference_fixture(fixture):
    from neuroicl_tf.convert import convert_state_dict

    model = convert_state_dict(fixture)
    assert isinstance(model, Neuralizer) and model.count_params() == 1_273_859
    # The reference is called (context_in, context_out, target_in); ours takes a dict.
    x = {
        "target": to_last(fixture["target_in"]),
        "context_in": to_last(fixture["context_in"], context=True),
        "context_out": to_last(fixture["context_out"], context=True),
    }
    out = model(x).numpy()
    ref = to_last(fixture["output"])
    rel = np.abs(out - ref).max() / np.abs(ref).max()
    assert rel < 1e-4, f"relative error {rel:.2e}"
    # A wrong concat order or a missing transpose must show up: swap the context roles.
    swapped = model(dict(x, context_in=x["context_out"], context_out=x["context_in"])).numpy()
    assert np.abs(swapped - ref).max() / np.abs(ref).max() > 1e-2


def test_layer_level_sanity_with_fixture_weights(fixture):
    """The target embedding and the first residual unit against direct numpy maths."""
    from test_layers import np_conv, np_residual_unit

    from neuroicl_tf.convert import convert_state_dict

    model = convert_state_dict(fixture)
    w = {k[2:]: v for k, v in fixture.items() if k.startswith("w/")}
    target = to_last(fixture["target_in"])
    kernel = np.moveaxis(w["target_embedding.weight"], [0, 1], [-1, -2])
    emb_ref = np_conv(target, kernel, w["target_embedding.bias"])
    emb = model.get_layer("target_embedding")(target).numpy()
    assert np.abs(emb - emb_ref).max() / np.abs(emb_ref).max() < 1e-5
    ru = model.get_layer("enc_blocks_0").target_conv
    assert isinstance(ru, layers.ResidualUnit)
    np.testing.assert_allclose(
        ru.convs[0].kernel.numpy(),
        np.transpose(w["enc_blocks.0.target_conv.layers.0.weight"], (2, 3, 1, 0)),
    )
    got = ru(emb).numpy()
    assert np.abs(got - np_residual_unit(emb, ru)).max() / np.abs(got).max() < 1e-5


MIRRORED_SCRIPT = r"""
import json, sys
import numpy as np
from neuroicl_tf import _compat
tf = _compat.import_tensorflow()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from neuroicl_tf.models import Neuralizer

class PerSampleMSE(tf.keras.losses.Loss):
    def call(self, y_true, y_pred):
        return tf.reduce_mean(tf.square(y_true - y_pred), axis=[1, 2, 3])
    def per_sample(self, y_true, y_pred, task_kind):
        per = tf.reduce_mean(tf.square(y_true - y_pred), axis=[1, 2, 3])
        return per * (1.0 + tf.cast(task_kind, per.dtype))

rng = np.random.default_rng(0)
x = {"target": rng.uniform(size=(4, 8, 8, 3)).astype("f4"),
     "context_in": rng.uniform(size=(4, 2, 8, 8, 3)).astype("f4"),
     "context_out": rng.uniform(size=(4, 2, 8, 8, 3)).astype("f4"),
     "task_kind": np.array([0, 1, 1, 0], "i4")}
y = rng.uniform(size=(4, 8, 8, 3)).astype("f4")
w = np.array([1.0, 0.5, 2.0, 0.0], "f4")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = Neuralizer(stages=1, channels=4)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.0), loss=PerSampleMSE())
pred = model.predict(x, batch_size=4, verbose=0)
want = float(np.mean(((y - pred) ** 2).mean(axis=(1, 2, 3)) * (1 + x["task_kind"]) * w))
ds = tf.data.Dataset.from_tensors((x, y, w))
hist = model.fit(ds, epochs=1, verbose=0)
logs = model.evaluate(ds, verbose=0, return_dict=True)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "want": want,
                  "fit": hist.history["loss"][0], "evaluate": logs["loss"]}))
"""


def test_loss_under_mirrored_strategy_is_the_global_mean(tmp_path):
    """Two replicas split the batch of 4: the logged loss must still be the mean of w * per."""
    import json
    import subprocess
    import sys

    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(run.stdout.strip().splitlines()[-1])
    assert res["replicas"] == 2
    assert res["fit"] == pytest.approx(res["want"], rel=1e-5)
    assert res["evaluate"] == pytest.approx(res["want"], rel=1e-5)
