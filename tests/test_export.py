"""SavedModel export, loaded the way TensorFlow Serving loads it, in processes without neuroicl_tf.

The export is checked against the Keras model's output with

* the TF1 session loader (``tf.compat.v1.saved_model.loader.load`` and the signature's tensor
  names), as TF Serving's C++ loader does, and
* ``saved_model_cli run``,

both in a fresh ``python -I`` process in which importing ``neuroicl_tf`` (and tf-keras) is refused
by a ``sys.meta_path`` finder, so the export cannot depend on the package.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from neuroicl_tf import export as ex
from neuroicl_tf.models import Neuralizer

RNG = np.random.default_rng(0)
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")

# Prepended to every fresh-process script: refuse the package (and tf-keras), prove it.
BLOCKER = """
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("neuroicl_tf", "generators", "scripts", "tf_keras"):
            raise ImportError("blocked for this test: " + name)
        return None
sys.meta_path.insert(0, _Refuse())
try:
    import neuroicl_tf
except ImportError:
    pass
else:
    raise SystemExit("neuroicl_tf is importable; the test process is not isolated")
"""

TF1_LOADER = BLOCKER + """
import json
import numpy as np
import tensorflow as tf
export_dir, inputs, out = sys.argv[1:4]
data = np.load(inputs)
with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    sig = graph.signature_def["serving_default"]
    feed = {sig.inputs[k].name: data[k] for k in sig.inputs}
    result = sess.run({k: v.name for k, v in sig.outputs.items()}, feed)
    meta_sig = graph.signature_def["metadata"]
    meta = sess.run(meta_sig.outputs["metadata"].name)
np.save(out, result["output"])
print(json.dumps({
    "inputs": {k: [d.size for d in v.tensor_shape.dim] for k, v in sig.inputs.items()},
    "outputs": sorted(sig.outputs),
    "metadata": json.loads(meta.decode()),
    "modules": sorted(m for m in ("neuroicl_tf", "tf_keras") if m in sys.modules),
}))
"""

CLI_RUNNER = BLOCKER + """
import runpy
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _fresh(script, *args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run([sys.executable, "-I", "-c", script, *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd="/")


# ---------------------------------------------------------------------------------------------
# Models. The exports that are loaded and compared with Keras are of the real models (tiny
# widths). The export mechanics (versions, overwrite, failures) use a stand-in ICL-shaped
# functional model that builds and exports in well under a second.
# ---------------------------------------------------------------------------------------------


def tiny_neuralizer(stages=4, channels=4, size=16):
    return Neuralizer(ndims=2, stages=stages, channels=channels,
                      spatial_shape=None if size is None else (size, size))


def standin_model(ndims=2, size=8, cin=3, cout=3, width=2):
    KL = tf.keras.layers
    s = (size,) * ndims
    target = tf.keras.Input(s + (cin,), name="target")
    context_in = tf.keras.Input((None,) + s + (cin,), name="context_in")
    context_out = tf.keras.Input((None,) + s + (cout,), name="context_out")
    mean = KL.Lambda(lambda p: tf.reduce_mean(p, axis=1))(
        KL.Concatenate(axis=-1)([context_in, context_out]))
    conv = getattr(KL, f"Conv{ndims}D")
    h = conv(width, 3, padding="same", activation="gelu")(KL.Concatenate()([target, mean]))
    return tf.keras.Model([target, context_in, context_out], conv(cout, 1)(h), name="standin")


def _episode(ndims, size, cin, cout, batch=2, length=3):
    s = (size,) * ndims
    return {
        "target": RNG.random((batch, *s, cin), dtype=np.float32),
        "context_in": RNG.random((batch, length, *s, cin), dtype=np.float32),
        "context_out": (RNG.random((batch, length, *s, cout)) > 0.5).astype(np.float32),
    }


def _keras_output(model, inputs, **kwargs):
    return model({k: tf.constant(v) for k, v in inputs.items()}, training=False,
                 **kwargs).numpy()


def _check_export_in_fresh_processes(version_dir, inputs, want, tmp_path, atol=1e-5):
    npz = tmp_path / "inputs.npz"
    np.savez(npz, **inputs)
    # 1. TF1 session loader, running the signature's tensors by name.
    result = _fresh(TF1_LOADER, version_dir, npz, tmp_path / "tf1.npy")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modules"] == []  # neither neuroicl_tf nor tf-keras was imported
    assert report["outputs"] == ["output"]
    assert sorted(report["inputs"]) == ["context_in", "context_out", "target"]
    assert report["inputs"]["context_in"][:2] == [-1, -1]  # dynamic batch and L
    np.testing.assert_allclose(np.load(tmp_path / "tf1.npy"), want, rtol=1e-5, atol=atol)
    # 2. saved_model_cli run (the real console script), outputs written as .npy.
    for key, value in inputs.items():
        np.save(tmp_path / f"{key}.npy", value)
    outdir = tmp_path / "cli_out"
    spec = ";".join(f"{k}={tmp_path / (k + '.npy')}" for k in inputs)
    result = _fresh(CLI_RUNNER, SAVED_MODEL_CLI, "run", "--dir", version_dir, "--tag_set",
                    "serve", "--signature_def", "serving_default", "--inputs", spec,
                    "--outdir", outdir)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(outdir / "output.npy"), want, rtol=1e-5, atol=atol)
    return report["metadata"]


def test_neuralizer_export_matches_keras_in_tf1_loader_and_saved_model_cli(tmp_path):
    model = tiny_neuralizer()  # width 4 at 16^2, 4 stages
    version_dir = ex.export_saved_model(model, tmp_path / "export", metadata={"task": "demo"})
    assert version_dir == str(tmp_path / "export" / "1")
    assert sorted(os.listdir(tmp_path / "export")) == ["1"]  # no temporary left behind
    inputs = _episode(2, 16, 3, 3, batch=2, length=3)
    want = _keras_output(model, inputs)
    meta = _check_export_in_fresh_processes(version_dir, inputs, want, tmp_path)
    assert meta["task"] == "demo"
    assert meta["model_class"] == "neuroicl_tf.models.neuralizer.Neuralizer"
    assert meta["model_config"]["channels"] == 4 and meta["mini_context"] is None
    assert meta["package_version"] == ex.neuroicl_tf.__version__
    assert meta["signatures"]["serving_default"]["inputs"]["target"]["shape"] == [None, 16, 16,
                                                                                  3]
    assert meta == ex.read_metadata(version_dir)  # the asset file holds the same JSON


def test_neuroverse3d_export_matches_keras_in_tf1_loader_and_saved_model_cli(tmp_path):
    from neuroicl_tf.models import Neuroverse3D

    model = Neuroverse3D(channels=(2, 4, 8), spatial_shape=(16, 16, 16))
    version_dir = ex.export_saved_model(model, tmp_path / "export", mini_context=1)
    inputs = _episode(3, 16, 1, 1, batch=1, length=3)
    want = _keras_output(model, inputs, mini_context=1, shuffle=False)
    meta = _check_export_in_fresh_processes(version_dir, inputs, want, tmp_path)
    assert meta["mini_context"] == 1 and meta["shuffle_mini_contexts"] is False
    assert meta["model_class"] == "neuroicl_tf.models.neuroverse3d.Neuroverse3D"
    assert meta["model_config"]["channels"] == [2, 4, 8]
    assert "percentile" in meta["input_normalization"]


def test_loaded_signature_takes_any_batch_and_context_length(tmp_path):
    model = tiny_neuralizer(stages=2, channels=2, size=8)
    version_dir = ex.export_saved_model(model, tmp_path / "e")
    loaded = tf.saved_model.load(version_dir)
    serve = loaded.signatures["serving_default"]
    for batch, length in ((1, 1), (3, 5)):
        inputs = _episode(2, 8, 3, 3, batch=batch, length=length)
        got = serve(**{k: tf.constant(v) for k, v in inputs.items()})["output"].numpy()
        np.testing.assert_allclose(got, _keras_output(model, inputs), rtol=1e-5, atol=1e-6)
    meta = json.loads(loaded.get_metadata()["metadata"].numpy().decode())
    assert meta["ndims"] == 2 and meta["in_channels"] == 3 and meta["out_channels"] == 3
    assert json.loads(loaded.signatures["metadata"]()["metadata"].numpy().decode()) == meta
    assert ex.xla_compiled_functions(serve) == []  # servable without XLA
    # The model's fixed spatial sizes are part of the signature.
    spec = serve.structured_input_signature[1]
    assert spec["target"].shape.as_list() == [None, 8, 8, 3]
    assert spec["context_in"].shape.as_list() == [None, None, 8, 8, 3]


def test_dynamic_spatial_model_exports_dynamic_or_fixed(tmp_path):
    model = tiny_neuralizer(stages=2, channels=2, size=None)
    specs = ex.input_specs(model)
    assert specs["target"].shape.as_list() == [None, None, None, 3]
    fixed = ex.input_specs(model, spatial_shape=(32, 16))
    assert fixed["context_out"].shape.as_list() == [None, None, 32, 16, 3]
    version_dir = ex.export_saved_model(model, tmp_path / "e")
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    for size in (8, 16):
        inputs = _episode(2, size, 3, 3, batch=1, length=2)
        np.testing.assert_allclose(serve(**{k: tf.constant(v) for k, v in inputs.items()})[
            "output"].numpy(), _keras_output(model, inputs), rtol=1e-5, atol=1e-6)


def test_versions_overwrite_and_argument_errors(tmp_path):
    model = standin_model()
    base = tmp_path / "export"
    assert ex.export_saved_model(model, base) == str(base / "1")
    assert ex.export_saved_model(model, base) == str(base / "2")
    assert ex.export_saved_model(model, base, version=7) == str(base / "7")
    with pytest.raises(ValueError, match="version 7 already exists"):
        ex.export_saved_model(model, base, version=7)
    stamp = os.path.getmtime(base / "7" / "saved_model.pb")
    ex.export_saved_model(model, base, version=7, overwrite=True, metadata={"v": 2})
    assert ex.read_metadata(base / "7")["v"] == 2
    assert os.path.getmtime(base / "7" / "saved_model.pb") >= stamp
    assert sorted(os.listdir(base)) == ["1", "2", "7"]
    with pytest.raises(ValueError, match="version must be a positive int"):
        ex.export_saved_model(model, base, version=0)
    with pytest.raises(ValueError, match="takes no mini_context"):
        ex.export_saved_model(model, base, mini_context=2)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        ex.export_saved_model(model, base, metadata={"x": object()})
    with pytest.raises(ValueError, match="spatial_shape must have 2 sizes"):
        ex.input_specs(model, spatial_shape=(16, 16))
    inp = tf.keras.Input((4, 4, 1), name="image")
    with pytest.raises(ValueError, match="missing"):
        ex.input_specs(tf.keras.Model(inp, inp))
    assert sorted(os.listdir(base)) == ["1", "2", "7"]


def test_failed_export_leaves_no_version_and_keeps_the_old_one(tmp_path, monkeypatch):
    model = standin_model()
    base = tmp_path / "export"
    ex.export_saved_model(model, base, version=1)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ex.tf.saved_model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ex.export_saved_model(model, base, version=1, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        ex.export_saved_model(model, base, version=2)
    assert sorted(os.listdir(base)) == ["1"]
    assert os.path.isfile(base / "1" / "saved_model.pb")


def test_xla_compiled_graph_is_refused_unless_allowed(tmp_path):
    @tf.function(jit_compile=True, autograph=False)
    def fused(x):
        return tf.nn.gelu(x) * 2.0

    model = standin_model()
    jit_model = tf.keras.Model(model.inputs, tf.keras.layers.Lambda(fused)(model.outputs[0]))
    with pytest.raises(ValueError, match="XLA-compiled functions"):
        ex.export_saved_model(jit_model, tmp_path / "e")
    assert os.listdir(tmp_path / "e") == []  # nothing written
    version_dir = ex.export_saved_model(jit_model, tmp_path / "e", allow_xla=True)
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    assert ex.xla_compiled_functions(serve)


# ---------------------------------------------------------------------------------------------
# neuroicl-export command line
# ---------------------------------------------------------------------------------------------


def _cli(*argv):
    """Run ``scripts.export.main`` in a fresh process; report whether TensorFlow was imported."""
    code = ("import sys; from scripts import export; rc = export.main(sys.argv[1:]); "
            "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED'); "
            "sys.exit(rc)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True,
                          text=True, cwd=repo, timeout=300)


def test_cli_validates_arguments_before_importing_tensorflow(tmp_path):
    model = tmp_path / "model.h5"
    model.write_bytes(b"not checked before TensorFlow")
    (tmp_path / "base" / "3").mkdir(parents=True)
    (tmp_path / "meta.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text("{oops")
    cases = [
        (["--model", tmp_path / "missing.h5", "-o", tmp_path / "e"], "--model: no such file"),
        (["--model", tmp_path / "meta.json", "-o", tmp_path / "e"], "expected an .h5 file"),
        (["--model", model, "-o", tmp_path / "meta.json"], "is not a folder"),
        (["--model", model, "-o", tmp_path / "base", "--version", "3"], "already exists"),
        (["--model", model, "-o", tmp_path / "e", "--version", "0"], "positive integer"),
        (["--model", model, "-o", tmp_path / "e", "--mini-context", "x"], "positive integer"),
        (["--model", model, "-o", tmp_path / "e", "--metadata", tmp_path / "meta.json"],
         "must hold a JSON object"),
        (["--model", model, "-o", tmp_path / "e", "--metadata", tmp_path / "bad.json"],
         "not valid JSON"),
        (["-o", tmp_path / "e"], "required: --model"),
    ]
    for argv, message in cases:
        result = _cli(*argv)
        assert result.returncode == 1, (argv, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], (
            argv, result.stderr)
        assert "TF_NOT_IMPORTED" in result.stdout
    result = _cli()
    assert result.returncode == 0 and "usage: neuroicl-export" in result.stdout


def test_cli_exports_a_saved_model(tmp_path, capsys):
    from scripts import export as cli

    model = tiny_neuralizer(stages=2, channels=2, size=8)
    model.save(str(tmp_path / "model.h5"))
    (tmp_path / "meta.json").write_text('{"task": "skull stripping"}')
    argv = ["--model", str(tmp_path / "model.h5"), "-o", str(tmp_path / "base"), "--metadata",
            str(tmp_path / "meta.json")]
    assert cli.main(argv) == 0
    assert "Exported Neuralizer to" in capsys.readouterr().out
    version_dir = tmp_path / "base" / "1"
    assert ex.read_metadata(version_dir)["task"] == "skull stripping"
    inputs = _episode(2, 8, 3, 3, batch=1, length=2)
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    np.testing.assert_allclose(serve(**{k: tf.constant(v) for k, v in inputs.items()})[
        "output"].numpy(), _keras_output(model, inputs), rtol=1e-5, atol=1e-6)
    # A second run makes version 2; a mini-context for Neuralizer is a one-line error.
    assert cli.main(argv) == 0 and (tmp_path / "base" / "2").is_dir()
    assert cli.main([*argv, "--mini-context", "2"]) == 1
    assert capsys.readouterr().err.startswith("Error: mini_context=2 given, but Neuralizer")
