"""Shared pieces of the ``neuroicl-<verb>`` command lines.

Nothing here imports TensorFlow or ``neuroicl_tf``: the commands check their arguments and set
the environment TensorFlow reads at start-up (threads, GPU visibility, log level) first, and only
then import the library.
"""

import argparse
import os
import sys

CITATION = """\
If you use this in your work, please cite:
  S. Czolbe, A. V. Dalca. Neuralizer: General Neuroimage Analysis without Re-Training. CVPR 2023.
  J. Hu et al. Neuroverse3D: Developing In-Context Learning Universal Model for Neuroimaging
  in 3D."""


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
    """Run a command body, turning :class:`UsageError` and ``ValueError`` into
    ``Error: ...`` on stderr and exit code 1."""
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


def set_runtime(threads=None, gpu=False):
    """Set what TensorFlow reads when it starts (call before importing it)."""
    if threads:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if not gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
