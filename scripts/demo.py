"""neuroicl-demo: the main job end to end on data the package makes itself.

Trains a small 2D Neuralizer briefly with the package's own training function, then segments
held-out subjects in context and writes a montage, the prediction and the scores. Runs without
arguments (unlike the other commands) because it is the first thing a newcomer runs.
"""

import argparse

from . import _cli


def _parser():
    p = _cli.Parser(prog="neuroicl-demo", description=__doc__.splitlines()[0],
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-o", "--out", default="out/demo", help="output folder")
    p.add_argument("--steps", type=_cli.positive_int, default=300, help="training steps")
    p.add_argument("--context", type=_cli.positive_int, default=4, help="context size L")
    p.add_argument("--episodes", type=_cli.positive_int, default=8, help="evaluation episodes")
    p.add_argument("--size", type=_cli.positive_int, default=64, help="slice size (multiple of 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-j", "--threads", type=_cli.positive_int, help="CPU threads")
    return p


def _body(argv):
    args = _parser().parse_args(argv)
    if args.size % 4:
        raise _cli.UsageError(f"--size must be a multiple of 4, got {args.size}")
    _cli.set_runtime(args.threads, gpu=False)

    from neuroicl_tf.demo import run_demo

    summary = run_demo(out=args.out, steps=args.steps, seed=args.seed, size=args.size,
                       context=args.context, episodes=args.episodes)
    dice = summary["dice_mean"]
    print(f"\nDone in {summary['seconds']} s. Mean Dice over {summary['episodes']} held-out "
          f"episodes (L = {summary['context_size']}):")
    print(f"  model                              {dice['model']}")
    print(f"  context-label average (baseline)   {dice['atlas']}")
    print(f"  model with a blank target image    {dice['model_blank_target']}")
    if dice["model"] <= dice["atlas"] or dice["model"] - dice["model_blank_target"] < 0.05:
        print("  A model this briefly trained does not yet read the target image well: it does "
              "not clearly beat the baseline or the blank-target ablation. Train longer with "
              "neuroicl-train (docs/training.md).")
    for name, path in summary["outputs"].items():
        print(f"  {name:<10} {path}")
    print(_cli.CITATION)
    return 0


def main(argv=None):
    return _cli.run(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
