"""Shared pieces of the ``neuroicl-<verb>`` command lines.

Nothing here imports TensorFlow or ``neuroicl_tf``: the commands check their arguments and set
the environment TensorFlow reads at start-up (threads, GPU visibility, log level) first, and only
then import the library.
"""

import argparse
import importlib.util
import os
import sys

CITATION = """\
If you use this in your work, please cite:
  S. Czolbe, A. V. Dalca. Neuralizer: General Neuroimage Analysis without Re-Training. CVPR 2023.
  J. Hu et al. Neuroverse3D: Developing In-Context Learning Universal Model for Neuroimaging
  in 3D."""


# The trained default models shipped in neuroicl_tf/weights/, by the name --model takes. The
# library's own table is neuroicl_tf.predict.models.DEFAULT_MODELS (tests check they agree); this
# copy lets the commands resolve the names without importing TensorFlow.
DEFAULT_MODELS = {"default-2d": "default-2d.h5", "default-3d": "default-3d.h5"}


class UsageError(Exception):
    """Bad command-line input; reported as one ``Error: ...`` line and exit code 1."""


class Parser(argparse.ArgumentParser):
    """An argument parser that prints its help when run without arguments and reports
    errors as one ``Error: ...`` line with exit code 1."""

    def error(self, message):
        raise UsageError(message)

    def parse(self, argv=None):
        argv = sys.argv[1:] if argv is None else list(argv)
        if not argv:
            self.print_help()
            raise SystemExit(0)
        return self.parse_args(argv)


def run(main_body, argv=None):
    """Run a command body, turning :class:`UsageError` into ``Error: ...`` on stderr and exit
    code 1 (bodies turn their library's input errors into it), and Ctrl-C into code 130."""
    try:
        code = main_body(argv)
    except UsageError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0 if code is None else code


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def existing_path(text):
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such file or folder: {text}")
    return text


def default_model_path(name):
    """The installed weights file of a default model name, without importing the package.

    Returns ``None`` when ``name`` is not one of :data:`DEFAULT_MODELS` (a file path, say).

    Raises:
        UsageError: the name is a default model but its weights are not installed.
    """
    if name not in DEFAULT_MODELS:
        return None
    spec = importlib.util.find_spec("neuroicl_tf")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "weights")
    path = os.path.join(folder, DEFAULT_MODELS[name])
    if not os.path.isfile(path):
        raise UsageError(
            f"--model {name}: the trained default weights are not installed (looked for "
            f"{path}); reinstall the package, or train a model with neuroicl-train and "
            "pass --model RUN/model.h5"
        )
    return os.path.abspath(path)


def set_runtime(threads=None, gpu=False):
    """Set what TensorFlow reads when it starts (call before importing it)."""
    if threads:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if not gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
