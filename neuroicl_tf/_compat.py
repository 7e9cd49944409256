"""Environment set-up that must happen before TensorFlow or neurite is imported.

Three things go wrong with the pinned stack if nothing is done:

1. TensorFlow 2.16+ resolves ``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set
   before TensorFlow is first imported. This package is written for tf-keras (Keras 2).
2. neurite 0.2 calls ``inspect.getargspec``, which Python 3.11 removed.
3. TensorFlow 2.21 prints start-up lines from C++ (oneDNN, CUDA stubs, CPU features) before its
   logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not silence them. We silence file
   descriptor 2 for the duration of the import instead, unless ``NEUROICL_VERBOSE=1`` is set.

:func:`import_tensorflow` and :func:`import_neurite` are the only places in the package that
import those two libraries for the first time.
"""

import collections
import contextlib
import inspect
import os
import sys

_KERAS3_MESSAGE = (
    "neuroicl_tf needs tf-keras (Keras 2), but tf.keras already resolved to Keras {version}. "
    "TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set. Import neuroicl_tf before "
    "tensorflow, or set TF_USE_LEGACY_KERAS=1 in the environment, and install tf-keras "
    "(pip install 'tf-keras==2.21.*')."
)


def verbose():
    """Whether the user asked to see TensorFlow's own start-up messages."""
    return os.environ.get("NEUROICL_VERBOSE", "0") not in ("", "0", "false", "False")


def configure_environment():
    """Set the environment variables TensorFlow reads at import time (only if unset)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if not verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _quiet_stderr():
    """Send the process's file descriptor 2 to /dev/null (C++ messages included)."""
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (some notebook kernels): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _check_legacy_keras(tf):
    model_module = tf.keras.Model.__module__
    if not model_module.startswith("tf_keras"):
        try:
            import keras

            version = keras.__version__
        except Exception:  # pragma: no cover - only reached with a broken install
            version = "3"
        raise ImportError(_KERAS3_MESSAGE.format(version=version))


def import_tensorflow():
    """Import TensorFlow quietly, with tf-keras as ``tf.keras``.

    Returns:
        The ``tensorflow`` module.

    Raises:
        ImportError: if ``tf.keras`` is Keras 3 (TensorFlow was imported too early).
    """
    configure_environment()
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
    else:
        with _quiet_stderr():
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
            # Device discovery prints CUDA errors on machines without a GPU: do it now, quietly.
            tf.config.list_physical_devices()
    _check_legacy_keras(tf)
    return tf


_ArgSpec = collections.namedtuple("ArgSpec", ["args", "varargs", "keywords", "defaults"])


def _getargspec(func):
    spec = inspect.getfullargspec(func)
    return _ArgSpec(spec.args, spec.varargs, spec.varkw, spec.defaults)


def install_getargspec_shim():
    """Give ``inspect`` back the ``getargspec`` that neurite 0.2 calls (removed in 3.11)."""
    if not hasattr(inspect, "getargspec"):
        inspect.getargspec = _getargspec


def import_neurite():
    """Import neurite 0.2 after the TensorFlow and ``inspect`` fixes are in place.

    Returns:
        The ``neurite`` module.
    """
    import_tensorflow()
    install_getargspec_shim()
    with _quiet_stderr():
        import neurite

    return neurite
