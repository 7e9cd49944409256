"""neuroicl-train: train an in-context model on synthetic episodes from label maps.

A thin command line over :func:`neuroicl_tf.training.train`; every flag is one of its keyword
arguments, with the same name.
"""

from . import _cli


def _parser():
    p = _cli.Parser(
        prog="neuroicl-train",
        description="Train Neuralizer or Neuroverse3D on synthetic in-context episodes.",
        epilog="Example: neuroicl-train -o runs/demo2d --model neuralizer --procedural 24 "
        "--shape 64 64 --channels 16 --stages 3 --steps 500",
    )
    p.add_argument("-o", "--out", required=True, help="output folder of the run")
    p.add_argument("--model", choices=("neuralizer", "neuroverse3d"),
                   help="default: the --init model's family, else neuralizer")
    p.add_argument("--init", metavar="MODEL",
                   help="start a new run from the weights of default-2d, default-3d or a "
                        "model .h5 (fresh optimiser, step 0); architecture options left out "
                        "are taken from it")
    p.add_argument("--ndims", type=int, choices=(2, 3),
                   help="default: 2 for Neuralizer, 3 for Neuroverse3D")
    p.add_argument("--shape", type=_cli.positive_int, nargs="+", help="episode size per axis")
    p.add_argument("--channels", help="Neuralizer: width (e.g. 64); Neuroverse3D: list, e.g. "
                   "16,32,64,128")
    p.add_argument("--stages", type=_cli.positive_int, help="Neuralizer stages (default 4)")
    p.add_argument("--tasks", help="task preset (neuralizer, neuroverse3d), "
                   "name:weight[:loss_weight],... or a .json task table")
    p.add_argument("--labels", nargs="+", default=[], type=_cli.existing_path,
                   help="folders or files of NIfTI label maps")
    p.add_argument("--mni", type=int, default=0, help="number of embedded MNI152-derived subjects")
    p.add_argument("--procedural", type=int, default=0, help="number of procedural subjects")
    p.add_argument("--holdout", type=int, default=4, help="subjects per source kept for validation")
    p.add_argument("--context-size", dest="context_size", default="1-8",
                   help="L, or LO-HI drawn uniformly per step (default 1-8)")
    p.add_argument("--mini-context", dest="mini_context", type=_cli.positive_int,
                   help="Neuroverse3D mini-context size l (APSP)")
    p.add_argument("--batch-size", dest="batch_size", type=_cli.positive_int, default=1)
    p.add_argument("--lr", type=_cli.positive_float,
                   help="Adam learning rate (default 1e-4); with --resume, a given rate replaces "
                        "the checkpoint's, else the run continues with the checkpoint's")
    p.add_argument("--clipnorm", type=_cli.positive_float, default=1.0)
    p.add_argument("--plateau-patience", dest="plateau_patience", type=_cli.positive_int,
                   default=20, help="validations without improvement before halving the rate")
    p.add_argument("--steps", type=_cli.positive_int, default=1000)
    p.add_argument("--val-every", dest="val_every", type=_cli.positive_int, default=100)
    p.add_argument("--val-episodes", dest="val_episodes", type=_cli.positive_int, default=8)
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=_cli.positive_int,
                   default=100)
    p.add_argument("--time-limit", dest="time_limit", type=_cli.positive_float,
                   help="minutes of wall time: then checkpoint, write model.h5 and stop "
                        "(continue with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default")
    p.add_argument("--cpu-devices", dest="cpu_devices", type=_cli.positive_int,
                   help="split the CPU into N logical devices (to run 'mirrored' without GPUs)")
    p.add_argument("--gpus", type=int, help="number of GPUs the run needs (checked at start)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="train without the preset task and spatial augmentations")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("-j", "--threads", type=_cli.positive_int, help="CPU threads")
    p.add_argument("-g", "--gpu", action="store_true", help="use the GPU(s)")
    return p


def parse_tasks(text):
    """``name:weight[:loss_weight],...`` -> the ``tasks`` dict of ``train``.

    ``weight`` is the sampling weight; ``loss_weight`` (the task's lambda_t, default 1) scales
    its loss, e.g. ``segmentation:2:50`` is Neuroverse3D's segmentation row.
    """
    tasks = {}
    for item in text.split(","):
        fields = item.split(":")
        try:
            if not 2 <= len(fields) <= 3 or not fields[0]:
                raise ValueError
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise _cli.UsageError(
                f"--tasks: expected name:weight[:loss_weight],..., got {item!r} in {text!r}"
            ) from None
        if not all(v > 0 for v in values):
            raise _cli.UsageError(f"--tasks: weights must be > 0, got {item!r}")
        if fields[0] in tasks:
            raise _cli.UsageError(f"--tasks: {fields[0]!r} given twice")
        tasks[fields[0]] = (values[0] if len(values) == 1
                            else {"weight": values[0], "loss_weight": values[1]})
    return tasks


def read_tasks(path):
    """A task table from a JSON file: ``{name: weight}`` or ``{name: {"weight": w,
    "loss_weight": l, "params": {...}}}`` (task parameters, e.g. segmentation's ``group_p``)."""
    import json

    try:
        with open(path) as f:
            tasks = json.load(f)
    except OSError as err:
        raise _cli.UsageError(f"--tasks: cannot read {path!r}: {err.strerror}") from None
    except ValueError as err:
        raise _cli.UsageError(f"--tasks: {path!r} is not valid JSON: {err}") from None
    if not isinstance(tasks, dict) or not tasks or not all(
            isinstance(v, (int, float, dict)) and not isinstance(v, bool)
            for v in tasks.values()):
        raise _cli.UsageError(f"--tasks: {path!r} must hold a non-empty object "
                              "{name: weight or {weight, loss_weight, params}}")
    return tasks


def _body(argv):
    args = _parser().parse(argv)
    if args.mni < 0 or args.procedural < 0:
        raise _cli.UsageError("--mni and --procedural take a number >= 0")
    if not (args.labels or args.mni or args.procedural):
        raise _cli.UsageError("no subjects: give --labels, --mni N or --procedural N")
    if args.gpus and not args.gpu:
        raise _cli.UsageError("--gpus needs -g/--gpu")
    kwargs = vars(args)
    _cli.set_runtime(kwargs.pop("threads"), kwargs.pop("gpu"))
    if kwargs["tasks"] and kwargs["tasks"].endswith(".json"):
        kwargs["tasks"] = read_tasks(kwargs["tasks"])
    elif kwargs["tasks"] and ":" in kwargs["tasks"]:
        kwargs["tasks"] = parse_tasks(kwargs["tasks"])

    from neuroicl_tf.training import TrainConfigError, train

    try:
        summary = train(**kwargs)
    except TrainConfigError as err:
        raise _cli.UsageError(str(err)) from None
    print(f"\nTrained {summary['steps_this_run']} steps to step {summary['steps']} in "
          f"{summary['wall_seconds']} s ({summary['steps_per_second']} steps/s); "
          f"{summary['stopped']}.")
    for key, value in (summary.get("validation") or {}).items():
        print(f"  {key}: {value}")
    print(f"Model: {summary.get('model')}\nCheckpoint: {summary['checkpoint']}")
    print(_cli.CITATION)
    return 0


def main(argv=None):
    return _cli.run(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
