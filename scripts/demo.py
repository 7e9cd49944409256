"""neuroicl-demo: the main job end to end on data the package ships.

Loads the trained default 2D model and segments a structure (the deep grey matter labelled
thalamus, by default) of held-out subjects in context, against the context-label average and
a blank-target ablation; writes a montage, the prediction and the scores. ``--train-steps N``
trains a small model first instead. Runs without arguments (unlike the other commands)
because it is the first thing a newcomer runs.
"""

import argparse

from . import _cli


def _parser():
    p = _cli.Parser(prog="neuroicl-demo", description=__doc__.splitlines()[0],
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-o", "--out", default="out/demo", help="output folder")
    p.add_argument("-m", "--model", default="default-2d",
                   help="default-2d or a 2D model .h5 (neuroicl-train's model.h5)")
    p.add_argument("--train-steps", dest="train_steps", type=_cli.positive_int,
                   help="train a small 2D Neuralizer for this many steps instead of --model")
    p.add_argument("--task", default="seg_thalamus",
                   choices=("seg_thalamus", "seg_lateral_ventricles", "brain_mask"),
                   help="structure to segment (labels the MNI152-derived subjects have)")
    p.add_argument("--context", type=_cli.positive_int, default=4, help="context size L")
    p.add_argument("--draws", type=_cli.positive_int, default=2,
                   help="context draws (each scores 4 held-out targets)")
    p.add_argument("--size", type=_cli.positive_int,
                   help="slice size (multiple of the model's divisor; default: its grid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-j", "--threads", type=_cli.positive_int, help="CPU threads")
    return p


def _body(argv):
    args = _parser().parse_args(argv)
    _cli.set_runtime(args.threads, gpu=False)

    from neuroicl_tf.demo import run_demo

    try:
        summary = run_demo(out=args.out, model=args.model, train_steps=args.train_steps,
                           seed=args.seed, size=args.size, context=args.context,
                           draws=args.draws, task=args.task)
    except FileNotFoundError as err:
        raise _cli.UsageError(f"{err}; or run the demo with --train-steps 300") from None
    except ValueError as err:
        raise _cli.UsageError(str(err)) from None
    dice = summary["dice_mean"]
    print(f"\nDone in {summary['seconds']} s: {summary['what']}.")
    print(f"Mean Dice over {summary['episodes']} held-out episodes (L = "
          f"{summary['context_size']}):")
    print(f"  model                              {dice['model']:.3f}")
    print(f"  context-label average (baseline)   {dice['atlas']:.3f}")
    print(f"  model with a blank target image    {dice['model_blank_target']:.3f}")
    if dice["model"] <= dice["atlas"] or dice["model"] - dice["model_blank_target"] < 0.05:
        print("  The model does not clearly beat the baseline or the blank-target ablation: it "
              "does not read the target image well (docs/model_card.md says how far the "
              "default models got and why).")
    else:
        print("  The model beats the context-label average and needs the target image.")
    for name, path in summary["outputs"].items():
        print(f"  {name:<10} {path}")
    print(_cli.CITATION)
    return 0


def main(argv=None):
    return _cli.run(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
