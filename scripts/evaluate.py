"""neuroicl-evaluate: score in-context models against baselines and input ablations.

A thin command line over :func:`neuroicl_tf.evaluation.evaluate`. Every argument is checked
here, before TensorFlow is imported; see docs/evaluation.md.
"""

import glob
import os
import sys

from . import _cli

# The evaluation task names of neuroicl_tf.evaluation.tasks.EVAL_TASKS (kept equal by
# tests/test_evaluation_cli.py): the library imports TensorFlow, the checks here must not.
TASK_NAMES = ("seg_hippocampus", "seg_thalamus", "seg_lateral_ventricles", "seg_putamen",
              "seg_caudate", "brain_mask", "skull_stripping", "denoising", "bias_correction",
              "inpainting")
REAL_SCANS = ("mni152", "colin27")
COLIN27_FILES = ("/usr/share/mricron/templates/ch2.nii.gz",
                 "/usr/share/mricron/templates/ch2bet.nii.gz",
                 "/usr/share/mricron/templates/aal.nii.gz")
NIFTI = (".nii", ".nii.gz", ".mgz")


def _parser():
    p = _cli.Parser(
        prog="neuroicl-evaluate",
        description="Score in-context models per task as a function of the context size L, "
        "against the context-label average, a few-shot U-Net trained on the context and the "
        "identity, with the target or context images blanked as ablations. Writes "
        "OUT/scores.csv, OUT/table.md, OUT/scores.png and OUT/verdict.txt.",
        epilog="Example: neuroicl-evaluate -o runs/eval --model runs/tiny/model.h5 --labels "
        "/path/to/label_maps --holdout 4 --seed 0 --shape 96 96 --context-sizes 1 2 4 8 "
        "--draws 2 --tasks seg_hippocampus,seg_thalamus,denoising",
    )
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("-m", "--model", nargs="+", required=True, metavar="[NAME=]PATH",
                   help="default-2d, default-3d (the shipped models) or ICL model file(s) "
                        "written by neuroicl-train (model.h5)")
    src = p.add_argument_group("subjects (exactly one source)")
    src.add_argument("--labels", nargs="+", help="a folder of NIfTI label maps, or files")
    src.add_argument("--mni", type=int, default=0, help="number of MNI152-derived subjects")
    src.add_argument("--procedural", type=int, default=0, help="number of procedural subjects")
    src.add_argument("--real", choices=REAL_SCANS,
                     help="deformations of a real T1 with derived labels")
    src.add_argument("--real-subjects", dest="n_real", type=_cli.positive_int, default=20,
                     help="subjects made from the real scan (default 20)")
    src.add_argument("--holdout", type=_cli.positive_int, default=4,
                     help="held-out target subjects; the rest is the context pool (default 4)")
    src.add_argument("--seed", type=int, default=0,
                     help="seed of the subjects, the split and the episodes; with --holdout, "
                     "the same as neuroicl-train's gives its validation subjects")
    p.add_argument("--tasks", help=f"comma-separated, default all: {','.join(TASK_NAMES)}")
    p.add_argument("--context-sizes", dest="context_sizes", type=_cli.positive_int, nargs="+",
                   default=[1, 2, 4, 8, 16], help="the L values (default 1 2 4 8 16)")
    p.add_argument("--draws", type=_cli.positive_int, default=3,
                   help="random context draws per task and L (default 3)")
    p.add_argument("--shape", type=_cli.positive_int, nargs="+", default=[64, 64],
                   help="episode grid: 2 sizes (slices) or 3 (volumes); default 64 64")
    p.add_argument("--slice-axis", dest="slice_axis", type=int, choices=(0, 1, 2), default=1,
                   help="2D slice axis: 0 sagittal, 1 coronal (default), 2 axial")
    p.add_argument("--fewshot-steps", dest="fewshot_steps", type=_cli.positive_int,
                   default=200, help="training steps of the few-shot U-Net (default 200)")
    p.add_argument("--no-fewshot", dest="fewshot", action="store_false",
                   help="skip the few-shot U-Net baseline")
    p.add_argument("--swap-context", dest="swap_context", action="store_true",
                   help="also score the model with context images swapped between pairs")
    p.add_argument("--mini-context", dest="mini_context", type=_cli.positive_int,
                   help="Neuroverse3D mini-context size l")
    p.add_argument("-j", "--threads", type=_cli.positive_int, help="CPU threads")
    p.add_argument("-g", "--gpu", action="store_true", help="use the GPU")
    return p


def _models(values):
    models = []
    for value in values:
        name, path = value.split("=", 1) if "=" in value and not os.path.exists(value) else (
            None, value)
        if not os.path.exists(path):
            default = _cli.default_model_path(path)
            if default is not None:
                name, path = name or path, default
        if not os.path.exists(path):
            raise _cli.UsageError(f"--model: no such model file: {path}")
        if os.path.isdir(path):
            raise _cli.UsageError(f"--model: {path} is a folder; give the model file (e.g. "
                                  f"{os.path.join(path, 'model.h5')})")
        models.append((name, path))
    return models


def _count_subjects(args):
    """The number of subjects of the one source, without reading any image."""
    given = [flag for flag, value in (("--labels", args.labels), ("--mni", args.mni),
                                      ("--procedural", args.procedural), ("--real", args.real))
             if value]
    if len(given) != 1:
        raise _cli.UsageError("give exactly one source of subjects: --labels, --mni N, "
                              f"--procedural N or --real NAME (got {', '.join(given) or 'none'})")
    if args.labels:
        paths = []
        for item in args.labels:
            if os.path.isdir(item):
                paths += [p for p in sorted(glob.glob(os.path.join(item, "*")))
                          if p.endswith(NIFTI)]
            elif os.path.isfile(item):
                paths.append(item)
            else:
                raise _cli.UsageError(f"--labels: no such file or folder: {item}")
        if len(args.labels) > 1 and any(os.path.isdir(i) for i in args.labels):
            raise _cli.UsageError("--labels: give one folder or a list of files, not both")
        if not paths:
            raise _cli.UsageError(f"--labels: no NIfTI label maps ({', '.join(NIFTI)}) in "
                                  f"{' '.join(args.labels)}")
        return len(paths)
    if args.real:
        if args.real == "colin27":
            missing = [p for p in COLIN27_FILES if not os.path.isfile(p)]
            if missing:
                raise _cli.UsageError(f"--real colin27: {missing[0]} not found; install "
                                      "Debian's mricron-data package")
        return args.n_real
    count = args.mni or args.procedural
    if count < 0:
        raise _cli.UsageError("--mni and --procedural take a number >= 2")
    return count


def _check(args):
    models = _models(args.model)
    count = _count_subjects(args)
    if count < 2:
        raise _cli.UsageError(f"the source has {count} subject(s); an evaluation needs at least "
                              "2 (one target, one context)")
    if args.holdout >= count:
        raise _cli.UsageError(f"--holdout {args.holdout} leaves no context pool: the source has "
                              f"{count} subjects")
    pool = count - args.holdout
    too_big = [L for L in args.context_sizes if L > pool]
    if too_big:
        raise _cli.UsageError(f"--context-sizes: L = {too_big[0]} is larger than the context "
                              f"pool ({pool} subjects: {count} minus {args.holdout} held out)")
    tasks = None
    if args.tasks is not None:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        unknown = [t for t in tasks if t not in TASK_NAMES]
        if unknown or not tasks:
            raise _cli.UsageError(f"--tasks: unknown task {unknown[0] if unknown else '(none)'!r}"
                                  f"; known: {', '.join(TASK_NAMES)}")
    if len(args.shape) not in (2, 3) or min(args.shape) < 8:
        raise _cli.UsageError(f"--shape: give 2 or 3 sizes >= 8, got {args.shape}")
    if args.mini_context and len(args.shape) != 3:
        raise _cli.UsageError("--mini-context is for 3D models (Neuroverse3D); give 3 sizes")
    return models, tasks


def _body(argv):
    args = _parser().parse(argv)
    models, tasks = _check(args)
    _cli.set_runtime(args.threads, args.gpu)

    from neuroicl_tf import evaluation

    names = evaluation.model_names([p for _, p in models])
    names = [given or default for (given, _), default in zip(models, names)]
    if len(set(names)) != len(names):
        raise _cli.UsageError(f"--model: two models have the same name ({names})")
    try:
        sources = evaluation.make_sources(
            labels=args.labels, mni=args.mni, procedural=args.procedural, real=args.real,
            n_real=args.n_real, holdout=args.holdout, seed=args.seed, shape=args.shape)
        print(f"Subjects: {sources.description}; targets: {', '.join(sources.targets.names)}")
        summary = evaluation.evaluate(
            args.out, dict(zip(names, (p for _, p in models))), sources, tasks=tasks,
            context_sizes=args.context_sizes, draws=args.draws, shape=args.shape,
            seed=args.seed, slice_axis=args.slice_axis, fewshot_steps=args.fewshot_steps,
            fewshot=args.fewshot, swap_context=args.swap_context,
            mini_context=args.mini_context, strict_tasks=tasks is not None,
            notes=["command: neuroicl-evaluate "
                   + " ".join(sys.argv[1:] if argv is None else argv)])
    except (ValueError, FileNotFoundError) as err:
        raise _cli.UsageError(str(err)) from None
    print("\nVerdict:")
    for task, lines in summary["verdicts"].items():
        print(f"{task}:")
        for line in lines:
            print(f"  {line}")
    print(f"\nWrote {summary['scores']}, {summary['table']}, {summary['plot']} and "
          f"{summary['verdict']} ({summary['groups']} episode groups, {summary['seconds']} s).")
    print(_cli.CITATION)
    return 0


def main(argv=None):
    return _cli.run(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
