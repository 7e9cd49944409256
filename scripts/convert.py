"""``neuroicl-convert``: PyTorch reference weights -> a Keras model file.

    neuroicl-convert -i neuralizer.ckpt -o neuralizer.h5
    neuroicl-convert -i fixture.npz -o model.h5 --arch neuralizer

The output is written by ``ICLModel.save`` (weights + class + config in one HDF5 file, via a
temporary name) and read back with ``neuroicl_tf.models.ICLModel.load``.
"""

import argparse
import os
import sys

ARCHS = ("auto", "neuralizer", "neuroverse3d")
INPUT_SUFFIXES = (".npz", ".ckpt", ".pt", ".pth")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


def build_parser():
    parser = _Parser(
        prog="neuroicl-convert",
        description="Convert PyTorch Neuralizer/Neuroverse3D weights (a Lightning .ckpt, a "
        "state dict .pt/.pth, or an .npz of the state dict / reference fixture) to a Keras "
        ".h5 model file readable with neuroicl_tf.models.ICLModel.load.",
    )
    parser.add_argument("-i", "--input", required=True, metavar="REF",
                        help="reference weights: .ckpt, .pt, .pth (need torch) or .npz")
    parser.add_argument("-o", "--out", required=True, metavar="OUT.h5",
                        help="output model file (.h5)")
    parser.add_argument("--arch", default="auto", choices=ARCHS,
                        help="architecture; 'auto' infers it from the keys (default)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="read a PyTorch file that carries Python objects besides tensors "
                             "(e.g. a Lightning checkpoint's hyper-parameters); unpickling a "
                             "file can run code, so only for files you trust")
    return parser


def _check_args(args):
    if not os.path.isfile(args.input):
        raise ValueError(f"input file not found: {args.input}")
    if not args.input.lower().endswith(INPUT_SUFFIXES):
        raise ValueError(f"input must end in one of {', '.join(INPUT_SUFFIXES)}: {args.input}")
    if not args.out.endswith(".h5"):
        raise ValueError(f"output must end in .h5: {args.out}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise ValueError(f"output folder does not exist: {out_dir}")


def main(argv=None):
    """Run the command; returns the exit code (0 success, 1 bad input or failed conversion)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(argv)
        _check_args(args)
    except ValueError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1

    # Set what TensorFlow reads at start-up before it is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from neuroicl_tf.convert import convert_state_dict, load_reference

    try:
        state_dict = load_reference(args.input, trust_pickle=args.trust_pickle)
        model = convert_state_dict(state_dict, arch=args.arch)
    except (ImportError, ValueError, OSError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    model.save(args.out)
    print(f"{type(model).__name__} ({model.count_params():,} parameters, "
          f"{len(state_dict)} tensors) -> {args.out}")
    print(f"config: {model.get_config()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
