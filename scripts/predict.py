"""neuroicl-predict: in-context segmentation or image-to-image prediction of NIfTI volumes.

A thin command line over :class:`neuroicl_tf.predict.Predictor`. The arguments and the input
files' headers are checked before TensorFlow is imported; bad input is one ``Error: ...`` line
and exit code 1, and no output file is left behind. In batch mode (``--batch``) a failing target
is reported and the run goes on; the exit code is then 2 with the list of failures at the end.
"""

import argparse
import os

from . import _cli

EXAMPLE = """\
examples:
  neuroicl-predict -i target.nii.gz --ctx-in a_t1.nii.gz b_t1.nii.gz \\
      --ctx-out a_seg.nii.gz b_seg.nii.gz -o target_seg.nii.gz --labels 17 53 \\
      --model run/model.h5 --png overview.png
  neuroicl-predict --batch targets.csv --ctx-in a_t1.nii.gz --ctx-out a_seg.nii.gz \\
      -o predictions/ --model run/model.h5 --ensemble 4 --uncertainty predictions/std

exit codes: 0 done; 1 bad input (nothing written); 2 batch finished with failed targets.
"""

_NIFTI = (".nii", ".nii.gz")


def _parser():
    p = _cli.Parser(
        prog="neuroicl-predict",
        description="Segment a structure (or map an image) in a NIfTI volume from a few "
        "example pairs, with one forward pass of an in-context model (Neuralizer, "
        "Neuroverse3D).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("-i", "--image", help="target image (NIfTI)")
    io.add_argument("--batch", metavar="CSV|DIR",
                    help="many targets: a CSV whose first column holds image paths, or a "
                    "folder of NIfTI files; -o is then the output folder")
    io.add_argument("--ctx-in", dest="ctx_in", nargs="+", required=True, metavar="IMG",
                    help="context images")
    io.add_argument("--ctx-out", dest="ctx_out", nargs="+", required=True, metavar="OUT",
                    help="context label maps (seg) or output images (image), same order")
    io.add_argument("-o", "--out", required=True,
                    help="output NIfTI (same grid and header as the target); a folder with "
                    "--batch (<name>_pred.nii.gz per target)")
    io.add_argument("--png", help="montage of target, context and prediction in three planes "
                    "(a folder with --batch)")
    io.add_argument("--uncertainty", metavar="PATH",
                    help="per-voxel std over the ensemble (needs --ensemble >= 2; a folder "
                    "with --batch)")
    task = p.add_argument_group("task")
    task.add_argument("--task", choices=("seg", "image"), default="seg",
                      help="seg: binary mask output; image: float image output (default seg)")
    task.add_argument("--labels", nargs="+", type=int, metavar="N",
                      help="label values that make the structure (default: all non-zero)")
    model = p.add_argument_group("model")
    model.add_argument("--model", default="default-3d",
                       help="default-3d, default-2d or an ICLModel .h5 file such as "
                       "neuroicl-train's model.h5 (default default-3d)")
    model.add_argument("--size", nargs="+", type=_cli.positive_int,
                       help="model grid size (default: the model's or its training size)")
    model.add_argument("--voxel-size", dest="voxel_size", type=_cli.positive_float,
                       help="model grid voxel size in mm (default: fit the head)")
    model.add_argument("--axis", choices=("sagittal", "coronal", "axial"), default="coronal",
                       help="2D models: slice axis (default coronal)")
    model.add_argument("--mini-context", dest="mini_context", type=_cli.positive_int,
                       help="3D models: context pairs per APSP chunk (default: from --mem-gb)")
    model.add_argument("--mem-gb", dest="mem_gb", type=_cli.positive_float,
                       help="3D models: memory budget that sets --mini-context (default: half "
                       "of the available memory)")
    model.add_argument("--ensemble", type=_cli.positive_int, default=1,
                       help="ensemble members by context bootstrapping (default 1)")
    model.add_argument("--seed", type=int, default=0, help="seed of the ensemble draws")
    reg = p.add_argument_group("alignment")
    reg.add_argument("--no-register", dest="register", action="store_false",
                     help="skip the affine registration of the context to the target "
                     "(for pre-aligned data)")
    reg.add_argument("--reg-voxel-size", dest="reg_voxel_size", type=_cli.positive_float,
                     default=3.0, help="registration grid in mm (default 3)")
    run = p.add_argument_group("run")
    run.add_argument("-j", "--threads", type=_cli.positive_int, help="CPU threads")
    run.add_argument("-g", "--gpu", action="store_true", help="use the GPU")
    return p


def _check_nifti(path, what):
    """Header-level checks (nibabel only, no voxels read): exists, NIfTI, 3D."""
    import nibabel as nib

    if not os.path.isfile(path):
        raise _cli.UsageError(f"{what}: no such file: {path}")
    try:
        img = nib.load(path)
    except Exception as err:
        raise _cli.UsageError(f"{what}: {path} is not a readable NIfTI image ({err})") from None
    if not isinstance(img, nib.Nifti1Pair):
        raise _cli.UsageError(f"{what}: {path} is a {type(img).__name__}, not a NIfTI image")
    shape = tuple(img.shape)
    spatial = shape
    while len(spatial) > 3 and spatial[-1] == 1:
        spatial = spatial[:-1]
    if len(spatial) != 3:
        raise _cli.UsageError(f"{what}: {path} must be a 3D image; got shape {shape}"
                              + (" (4D: give one volume)" if len(spatial) == 4 else ""))
    return spatial


def _check_model(name):
    if _cli.default_model_path(name) is not None:
        return
    if not os.path.isfile(name):
        raise _cli.UsageError(f"--model: no such model file: {name}")
    if not name.endswith(".h5"):
        raise _cli.UsageError(f"--model: expected default-2d, default-3d or an ICLModel .h5 "
                              f"file (neuroicl-train's model.h5), got {name}")


def _validate(args):
    if (args.image is None) == (args.batch is None):
        raise _cli.UsageError("give one target with -i/--image or many with --batch")
    if len(args.ctx_in) != len(args.ctx_out):
        raise _cli.UsageError(
            f"--ctx-in has {len(args.ctx_in)} files but --ctx-out has {len(args.ctx_out)}; "
            "give one output per context image, in the same order")
    if args.labels is not None and args.task != "seg":
        raise _cli.UsageError("--labels only applies to --task seg")
    if args.uncertainty is not None and args.ensemble < 2:
        raise _cli.UsageError("--uncertainty needs --ensemble N with N >= 2 (the std over the "
                              "ensemble members)")
    if args.image is not None:
        _check_nifti(args.image, "-i/--image")
        for path, what in ((args.out, "-o/--out"), (args.uncertainty, "--uncertainty")):
            if path is not None and not path.endswith(_NIFTI):
                raise _cli.UsageError(f"{what} must end in .nii or .nii.gz; got {path}")
        if args.png is not None and not args.png.lower().endswith(".png"):
            raise _cli.UsageError(f"--png must end in .png; got {args.png}")
        for path in (args.out, args.uncertainty, args.png):
            folder = os.path.dirname(os.path.abspath(path)) if path else None
            if folder and not os.path.isdir(folder):
                raise _cli.UsageError(f"the output folder does not exist: {folder}")
    else:
        if not os.path.exists(args.batch):
            raise _cli.UsageError(f"--batch: no such file or folder: {args.batch}")
        for path, what in ((args.out, "-o/--out"), (args.uncertainty, "--uncertainty"),
                           (args.png, "--png")):
            if path is not None and (path.endswith(_NIFTI) or path.lower().endswith(".png")):
                raise _cli.UsageError(f"with --batch, {what} is a folder; got {path}")
    for i, (path_in, path_out) in enumerate(zip(args.ctx_in, args.ctx_out), start=1):
        shape_in = _check_nifti(path_in, f"--ctx-in {i}")
        shape_out = _check_nifti(path_out, f"--ctx-out {i}")
        if shape_in != shape_out:
            raise _cli.UsageError(
                f"context pair {i} ({os.path.basename(path_in)}, {os.path.basename(path_out)}): "
                f"the context image has shape {shape_in} but its label map has {shape_out}; "
                "the two files of a pair must be on the same voxel grid")
    _check_model(args.model)


def _body(argv):
    args = _parser().parse(argv)
    _validate(args)
    _cli.set_runtime(args.threads, args.gpu)

    from neuroicl_tf.predict import Predictor, read_targets, run_batch

    try:
        predictor = Predictor(
            args.model, args.ctx_in, args.ctx_out, task=args.task, labels=args.labels,
            size=args.size, voxel_size=args.voxel_size, axis=args.axis,
            mini_context=args.mini_context, mem_gb=args.mem_gb, ensemble=args.ensemble,
            register=args.register, reg_voxel_size=args.reg_voxel_size, seed=args.seed,
            threads=args.threads)
        if args.batch is not None:
            targets = read_targets(args.batch)
        else:
            summary = predictor.predict(args.image, args.out, uncertainty=args.uncertainty,
                                        png=args.png)
    except (ValueError, OSError, RuntimeError) as err:
        raise _cli.UsageError(str(err)) from None
    if args.batch is not None:
        result = run_batch(predictor, targets, args.out, args.uncertainty, args.png)
        print(_cli.CITATION)
        return 2 if result["failed"] else 0
    for path in summary["outputs"]:
        print(f"wrote {path}")
    print(f"done in {summary['seconds']} s")
    print(_cli.CITATION)
    return 0


def main(argv=None):
    return _cli.run(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
