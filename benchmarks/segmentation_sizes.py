"""How large is the structure a random segmentation episode asks for, at a given grid?

Draws ``--episodes`` segmentation episodes (context size 1, the generator's default
augmentations off) from SynthSeg label maps at ``--shape`` and prints the foreground voxel count
of each target: median, quartiles, the share under 100 voxels and the median fraction of the
grid. ``--group-p`` and ``--group-size`` set the segmentation task's random foreground grouping
(``generators.tasks.core.Segmentation``). The figures are quoted in docs/tasks.md::

    python benchmarks/segmentation_sizes.py --shape 64 64 64
    python benchmarks/segmentation_sizes.py --shape 64 64 64 --group-p 1
    python benchmarks/segmentation_sizes.py --shape 96 96
"""

import argparse
import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LABELS = os.path.join(HERE, "..", "..", "shared", "data", "synthseg_label_maps")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", default=DEFAULT_LABELS, help="folder of NIfTI label maps")
    p.add_argument("--maps", type=int, default=8, help="use the first N maps (sorted)")
    p.add_argument("--shape", type=int, nargs="+", required=True, help="grid: 2 or 3 sizes")
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--group-p", type=float, default=0.0)
    p.add_argument("--group-size", type=int, nargs=2, default=(2, 10))
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)
    if len(args.shape) not in (2, 3):
        p.error("--shape takes 2 or 3 sizes")
    files = sorted(glob.glob(os.path.join(args.labels, "*.nii*")))
    files = [f for f in files if "seg" in os.path.basename(f)][: args.maps]
    if not files:
        p.error(f"no label maps (*seg*.nii*) in {args.labels!r}")

    sys.path.insert(0, os.path.join(HERE, ".."))
    import numpy as np

    import generators
    import neuroicl_tf  # noqa: F401  (tf-keras and the neurite shim before neurite loads)

    shape = tuple(args.shape)
    ndims = len(shape)
    params = {"group_p": args.group_p, "group_size": list(args.group_size)}
    episodes = generators.EpisodeGenerator(
        [generators.LabelMapFolder(files)],
        tasks={"segmentation": {"weight": 1.0, "params": params}}, ndims=ndims, shape=shape,
        context_size=(1, 1), encoding="neuroverse3d" if ndims == 3 else "neuralizer",
        slice_axis=1 if ndims == 2 else None, seed=args.seed)
    counts = []
    for _ in range(args.episodes):
        y = np.asarray(next(episodes)[1])[..., :1]
        counts.append(int((y > 0.5).sum()))
    counts = np.array(counts)
    q1, q3 = np.percentile(counts, [25, 75])
    print(f"grid {'x'.join(map(str, shape))}, {len(files)} maps, {args.episodes} episodes, "
          f"group_p {args.group_p}, group_size {tuple(args.group_size)}")
    print(f"foreground voxels: median {np.median(counts):.0f}, quartiles {q1:.0f}-{q3:.0f}, "
          f"under 100: {np.mean(counts < 100):.0%}, median fraction of the grid "
          f"{np.median(counts) / np.prod(shape):.2%}")


if __name__ == "__main__":
    main()
