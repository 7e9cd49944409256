"""The package's import-time contract: tf-keras, quiet import, clear error for Keras 3."""

import importlib.util
import os
import subprocess
import sys

import pytest

ENV = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "NEUROICL_VERBOSE")}


def _run(code, **extra_env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**ENV, **extra_env}, timeout=300)


def test_import_is_quiet_and_uses_tf_keras():
    result = _run("import neuroicl_tf, tensorflow as tf; tf.ones(1); "
                  "print(tf.keras.Model.__module__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("tf_keras")
    assert result.stderr == "", f"import printed to stderr: {result.stderr[:500]}"


def test_verbose_import_shows_tensorflow_messages():
    result = _run("import neuroicl_tf", NEUROICL_VERBOSE="1")
    assert result.returncode == 0, result.stderr
    assert result.stderr != ""


def test_keras3_already_resolved_is_a_clear_import_error():
    result = _run("import tensorflow as tf; tf.keras.layers; import neuroicl_tf")
    assert result.returncode != 0
    assert "ImportError: neuroicl_tf needs tf-keras (Keras 2)" in result.stderr


def test_neurite_imports_with_the_getargspec_shim():
    if importlib.util.find_spec("neurite") is None:
        pytest.skip("neurite is not installed")
    result = _run("from neuroicl_tf import _compat; ne = _compat.import_neurite(); "
                  "import inspect; print(hasattr(inspect, 'getargspec'), "
                  "ne.tf.models.labels_to_image.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "labels_to_image"]
