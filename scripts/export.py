"""neuroicl-export: write a trained model as a TensorFlow Serving SavedModel.

A thin command line over :func:`neuroicl_tf.export.export_saved_model`. Arguments are checked
before TensorFlow is imported; bad input prints one ``Error: ...`` line and exits with 1.

Example::

    neuroicl-export --model runs/nv3d/model.h5 -o exports/neuroverse3d --mini-context 1
    # -> exports/neuroverse3d/1/ (saved_model.pb, variables/, assets/neuroicl_metadata.json)
"""

import json
import os
import sys

from . import _cli


def _parser():
    p = _cli.Parser(
        prog="neuroicl-export",
        description="Export a neuroicl model (.h5 from ICLModel.save) as a versioned "
        "TensorFlow Serving SavedModel: EXPORT_BASE/<version>/.",
        epilog="Serve it with: tensorflow_model_server --rest_api_port=8501 --port=8500 "
        "--model_name=neuroicl --model_base_path=$(realpath EXPORT_BASE)  (docs/deployment.md)",
    )
    p.add_argument("--model", required=True, help="model file written by ICLModel.save (.h5)")
    p.add_argument("-o", "--out", required=True, help="export base folder (created if missing)")
    p.add_argument("--version", type=_cli.positive_int,
                   help="version number (default: one more than the largest existing)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --version")
    p.add_argument("--mini-context", dest="mini_context", type=_cli.positive_int,
                   help="Neuroverse3D mini-context size l fixed in the export (default: the "
                   "model's own)")
    p.add_argument("--spatial-shape", dest="spatial_shape", type=_cli.positive_int, nargs="+",
                   help="fix the spatial sizes of a model whose sizes are dynamic")
    p.add_argument("--metadata", help="JSON file with an object merged into the export's "
                   "metadata (e.g. a task description)")
    p.add_argument("-j", "--threads", type=_cli.positive_int, help="CPU threads")
    return p


def _check(args):
    """All checks that need no TensorFlow; returns the parsed --metadata."""
    if not os.path.isfile(args.model):
        raise _cli.UsageError(f"--model: no such file: {args.model}")
    if not args.model.endswith(".h5"):
        raise _cli.UsageError(f"--model: expected an .h5 file written by ICLModel.save; got "
                          f"{args.model}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise _cli.UsageError(f"-o/--out: exists and is not a folder: {args.out}")
    if args.version is not None and not args.overwrite:
        target = os.path.join(args.out, str(args.version))
        if os.path.exists(target):
            raise _cli.UsageError(f"--version {args.version}: {target} already exists (pass "
                              f"--overwrite to replace it)")
    metadata = None
    if args.metadata is not None:
        try:
            with open(args.metadata, encoding="utf-8") as f:
                metadata = json.load(f)
        except OSError as err:
            raise _cli.UsageError(f"--metadata: cannot read {args.metadata}: {err}") from None
        except json.JSONDecodeError as err:
            raise _cli.UsageError(
                f"--metadata: {args.metadata} is not valid JSON: {err}") from None
        if not isinstance(metadata, dict):
            raise _cli.UsageError(f"--metadata: {args.metadata} must hold a JSON object, not "
                              f"{type(metadata).__name__}")
    return metadata


def _body(argv):
    args = _parser().parse(argv)
    metadata = _check(args)
    _cli.set_runtime(threads=args.threads, gpu=False)  # exporting needs no GPU

    from neuroicl_tf import export
    from neuroicl_tf.models import ICLModel

    try:
        model = ICLModel.load(args.model)
        path = export.export_saved_model(
            model, args.out, mini_context=args.mini_context, metadata=metadata,
            version=args.version, overwrite=args.overwrite, spatial_shape=args.spatial_shape,
        )
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise _cli.UsageError(str(err)) from None
    info = export.read_metadata(path)
    inputs = info["signatures"][export.SERVING_SIGNATURE]["inputs"]
    print(f"Exported {info['model_class'].rsplit('.', 1)[-1]} to {path}")
    for name, spec in inputs.items():
        print(f"  input  {name}: {spec['dtype']} {spec['shape']}")
    out = info["signatures"][export.SERVING_SIGNATURE]["outputs"][export.OUTPUT_KEY]
    print(f"  output {export.OUTPUT_KEY}: {out['dtype']} {out['shape']}")
    if info.get("mini_context") is not None:
        print(f"  mini-context l = {info['mini_context']}")
    return 0


def main(argv=None):
    """Entry point of ``neuroicl-export``; returns the exit code."""
    try:
        return _cli.run(_body, argv)
    except SystemExit as done:  # help printed without arguments
        return done.code or 0


if __name__ == "__main__":
    sys.exit(main())
