"""neuroicl-synth: a PNG montage of synthetic episodes, one row per registered task.

Each row shows one episode of one task: the target's input and output, then two context pairs
(input, output). 2D episodes are shown as they are; 3D episodes as one coronal slice (array
axis 1 of the RAS+ volumes), taken D/8 before the centre so that the 2D-to-3D task shows its
input (the three central slices) as two crossing lines instead of the kept central slice itself.

Examples::

    neuroicl-synth -o montage.png                       # procedural label maps, 2D
    neuroicl-synth -o montage.png --ndims 2 3 --size 96 --size3d 48
    neuroicl-synth -o montage.png --mni --seed 3        # MNI152-derived subjects (nilearn)
    neuroicl-synth -o montage.png --labels /data/label_maps --tasks segmentation,inpainting

Arguments are checked before TensorFlow is imported; bad input prints one ``Error: ...`` line on
stderr and exits with code 1. The PNG is written to a temporary name and renamed.
"""

import glob
import os
import sys
import tempfile

from . import _cli

NIFTI_PATTERNS = ("*.nii", "*.nii.gz", "*.mgz")
COLUMNS = ("target in", "target out", "context 1 in", "context 1 out", "context 2 in",
           "context 2 out")


def build_parser():
    """The argument parser of ``neuroicl-synth``."""
    parser = _cli.Parser(
        prog="neuroicl-synth",
        description="Write a PNG montage of synthetic in-context episodes: one row per task "
                    "(target in/out and two context pairs).",
    )
    parser.add_argument("-o", "--out", required=True, help="output PNG path")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--labels", metavar="DIR",
                        help="folder of NIfTI/MGZ label maps (default: procedural label maps)")
    source.add_argument("--mni", action="store_true",
                        help="use the embedded MNI152-derived subjects (nilearn template)")
    parser.add_argument("--ndims", type=int, nargs="+", default=[2], metavar="{2,3}",
                        help="2 and/or 3: 2D slices and/or 3D volumes (default: 2)")
    parser.add_argument("--size", type=int, default=96, help="2D side length (default 96)")
    parser.add_argument("--size3d", type=int, default=48, help="3D side length (default 48)")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated task names (default: every registered task)")
    parser.add_argument("--subjects", type=int, default=6,
                        help="subjects of the procedural/MNI source (default 6)")
    parser.add_argument("--augment", action="store_true",
                        help="apply the presets' spatial and task augmentations and the task "
                             "overlap (default: tasks as they are)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("-j", "--threads", type=int, default=None,
                        help="CPU threads for TensorFlow (default: TensorFlow's choice)")
    parser.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    return parser


def _nifti_files(folder):
    files = []
    for pattern in NIFTI_PATTERNS:
        files.extend(glob.glob(os.path.join(folder, pattern)))
    return sorted(set(files))


def validate(args):
    """Check the parsed arguments without importing TensorFlow.

    Raises:
        _cli.UsageError: with a message naming the argument and the value seen.
    """
    if not args.out.lower().endswith(".png"):
        raise _cli.UsageError(f"-o/--out must end in .png, got {args.out!r}")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise _cli.UsageError(f"-o/--out: the folder {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise _cli.UsageError(f"-o/--out: the folder {parent!r} is not writable")
    if any(n not in (2, 3) for n in args.ndims):
        raise _cli.UsageError(f"--ndims takes 2 and/or 3, got {args.ndims}")
    args.ndims = sorted(set(args.ndims))
    if not 16 <= args.size <= 512:
        raise _cli.UsageError(f"--size must be in [16, 512], got {args.size}")
    if not 8 <= args.size3d <= 256:
        raise _cli.UsageError(f"--size3d must be in [8, 256], got {args.size3d}")
    if args.subjects < 3:
        raise _cli.UsageError(f"--subjects must be >= 3 (a target and two contexts), got "
                          f"{args.subjects}")
    if args.threads is not None and args.threads < 1:
        raise _cli.UsageError(f"-j/--threads must be >= 1, got {args.threads}")
    if not 20 <= args.dpi <= 600:
        raise _cli.UsageError(f"--dpi must be in [20, 600], got {args.dpi}")
    if args.labels is not None:
        if not os.path.isdir(args.labels):
            raise _cli.UsageError(f"--labels: no such folder: {args.labels!r}")
        count = len(_nifti_files(args.labels))
        if count < 3:
            raise _cli.UsageError(f"--labels: {args.labels!r} holds {count} NIfTI/MGZ label maps; "
                              "a montage needs at least 3 (a target and two contexts)")
    if args.tasks is not None:
        args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        if not args.tasks:
            raise _cli.UsageError("--tasks is empty")
    return args


def _display(image):
    """(*S2, C) in [0, 1] -> what imshow takes: gray if only channel 0 is used, else RGB."""
    import numpy as np

    if image.shape[-1] == 1 or not np.any(image[..., 1:]):
        return image[..., 0], {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    rgb = np.zeros(image.shape[:-1] + (3,), np.float32)
    rgb[..., : min(3, image.shape[-1])] = image[..., :3]
    return np.clip(rgb, 0, 1), {}


def _slice(volume, ndims):
    """2D: the image itself; 3D: the coronal slice D/8 before the centre (see module doc)."""
    if ndims == 2:
        return volume
    depth = volume.shape[1]
    return volume[:, depth // 2 - max(1, depth // 8)]


def collect_rows(args):
    """Sample one episode per (task, ndims); returns ``[(label, [6 panels (*S2, C)])]``."""
    import generators as G
    from generators import augment as A
    from generators.tasks import TASKS, get_task

    names = args.tasks if args.tasks is not None else sorted(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise _cli.UsageError(f"--tasks: unknown task names {unknown}; known: {sorted(TASKS)}")
    if args.labels is not None:
        source = G.LabelMapFolder(args.labels)
    elif args.mni:
        source = G.MNISubjects(n=args.subjects, seed=args.seed)
    else:
        side = max(32, args.size3d if 3 in args.ndims else 48)
        source = G.ProceduralLabelMaps(n=args.subjects, shape=(side,) * 3, seed=args.seed)
    synthesizer = G.ImageSynthesizer(seed=args.seed)
    rows = []
    for ndims in args.ndims:
        shape = (args.size,) * 2 if ndims == 2 else (args.size3d,) * 3
        encoding = "neuralizer" if ndims == 2 else "neuroverse3d"
        augmentation = {}
        if args.augment:
            augmentation = {
                "spatial_augmentation": (A.neuralizer_spatial_augmentation() if ndims == 2
                                         else A.neuroverse3d_spatial_augmentation()),
                "task_augmentation": (A.neuralizer_task_augmentation() if ndims == 2
                                      else A.neuroverse3d_task_augmentation()),
                "task_overlap": A.neuroverse3d_task_overlap() if ndims == 3 else None,
            }
        for i, name in enumerate(names):
            if name == "slices_to_volume" and ndims == 2:
                continue  # 3D only
            generator = G.EpisodeGenerator(
                source, tasks=[get_task(name)], ndims=ndims, shape=shape, context_size=2,
                encoding=encoding, slice_axis=1, seed=args.seed * 1000 + i,
                synthesizer=synthesizer, **augmentation)
            inputs, y_true, _ = generator.sample()
            panels = [inputs["target"][0], y_true[0]]
            for j in range(2):
                panels += [inputs["context_in"][0, j], inputs["context_out"][0, j]]
            kind = "Dice" if int(inputs["task_kind"][0]) == 0 else "MSE"
            label = f"{name}\n({ndims}D, {kind})"
            rows.append((label, [_slice(p, ndims) for p in panels]))
            print(f"  {len(rows)}: {name} {ndims}D", file=sys.stderr)
    return rows


def write_montage(rows, path, dpi=100, title=None):
    """Draw the rows into a PNG at ``path`` (temporary name, then renamed).

    Args:
        rows: ``[(label, panels)]``, panels a list of (H, W, C) arrays in [0, 1].
        path: output .png path.
        dpi: resolution.
        title: optional figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = max(len(p) for _, p in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.9 * n_cols + 1.2, 1.9 * len(rows)),
                             squeeze=False)
    for r, (label, panels) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(panels):
                image, style = _display(panels[c])
                # RAS+ coronal slices are (x, z): x to the right, z (superior) up
                ax.imshow(image.swapaxes(0, 1), origin="lower", interpolation="nearest", **style)
            if r == 0 and c < len(COLUMNS):
                ax.set_title(COLUMNS[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    if title:  # after tight_layout, in a strip it leaves free at the top
        top = 1.0 - 0.35 / fig.get_figheight()
        fig.subplots_adjust(top=top - 0.15 / fig.get_figheight())
        fig.suptitle(title, fontsize=10, y=0.998, va="top")
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=".neuroicl-synth-", suffix=".png", dir=folder)
    os.close(handle)
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv=None):
    """Run ``neuroicl-synth``; returns the exit code (0 ok, 1 bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    try:
        args = validate(parser.parse_args(argv))
        _cli.set_runtime(args.threads, gpu=False)
        rows = collect_rows(args)
        source = ("label maps in " + args.labels if args.labels else
                  "MNI152-derived subjects" if args.mni else "procedural label maps")
        title = (f"neuroicl-synth: {source}, seed {args.seed}"
                 + (", with augmentations" if args.augment else ""))
        write_montage(rows, args.out, dpi=args.dpi, title=title)
    except _cli.UsageError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:  # bad data or paths, reported by the library
        print(f"Error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
