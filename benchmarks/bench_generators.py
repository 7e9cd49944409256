"""Episode-generator throughput versus the models' training-step rate, in one run.

For each configuration (2D/3D, size, context length L) the benchmark

1. builds the training generator of that system (``EpisodeGenerator.from_preset`` with the
   preset's task table, and the spatial and task augmentations and (3D) the task overlap
   switched on), loads every subject once (the sources cache resampled volumes, as in a long
   training run), draws ``--warmup`` batches (TensorFlow tracing of the synthesizer) and then
   times ``--episodes`` batches of one episode: **episodes/s**, with the time split into
   spatial augmentation, task pairs, task augmentation, task overlap and the rest (sources,
   image synthesis, encoding);
2. builds the model at the same size (``Neuralizer`` for 2D, ``Neuroverse3D`` for 3D, default
   widths unless ``--channels``), compiles it with Adam and the task-routed loss, runs one warm-up
   ``train_on_batch`` on a generated batch and times ``--steps`` more: **training episodes/s**;
3. prints the ratio generator / model. The goal is a ratio >= 5: the generator must not be what
   limits training.

If ``neuroicl_tf.models`` cannot be imported (or ``--no-model``), only the generator is timed
and the model columns say why.

Configurations: ``2d-192-L8`` and ``3d-96-L4`` (the sizes of the brief) and smaller ones
``2d-96-L8``, ``2d-64-L4``, ``3d-64-L4``, ``3d-32-L2``; ``--tiny`` runs ``2d-32-L2`` and
``3d-16-L2`` with tiny model widths as a quick check of the script itself (seconds).

Full run (several minutes and a few GB; run it on an otherwise idle machine, since absolute
rates depend on the load)::

    python benchmarks/bench_generators.py --configs 2d-192-L8 3d-96-L4 2d-64-L4 3d-32-L2 \\
        --source mni --episodes 10 --steps 3 --json bench_generators.json

Quick check of the script::

    python benchmarks/bench_generators.py --tiny
"""

import argparse
import json
import os
import sys
import time

CONFIGS = {
    # name: (ndims, side, L)
    "2d-192-L8": (2, 192, 8),
    "2d-96-L8": (2, 96, 8),
    "2d-64-L4": (2, 64, 4),
    "2d-32-L2": (2, 32, 2),
    "3d-96-L4": (3, 96, 4),
    "3d-64-L4": (3, 64, 4),
    "3d-32-L2": (3, 32, 2),
    "3d-16-L2": (3, 16, 2),
}
TINY = ("2d-32-L2", "3d-16-L2")
TINY_CHANNELS = {2: [8], 3: [4, 8, 16, 32, 64]}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["2d-192-L8", "3d-96-L4"],
                        choices=sorted(CONFIGS), help="configurations to run")
    parser.add_argument("--tiny", action="store_true",
                        help=f"quick check: configs {TINY} and tiny model widths")
    parser.add_argument("--source", default="procedural",
                        help="'procedural', 'mni', or a folder of NIfTI label maps")
    parser.add_argument("--subjects", type=int, default=12,
                        help="subjects of the procedural/MNI source (>= L + 1)")
    parser.add_argument("--episodes", type=int, default=10, help="timed generator batches")
    parser.add_argument("--warmup", type=int, default=2, help="untimed generator batches")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--channels", type=int, nargs="+", default=None,
                        help="model widths: one int (Neuralizer) or the stage widths "
                             "(Neuroverse3D); default: the published models")
    parser.add_argument("--mini-context", type=int, default=1,
                        help="Neuroverse3D APSP mini-context l for training (default 1)")
    parser.add_argument("--no-augment", action="store_true",
                        help="time the generator without augmentations")
    parser.add_argument("--no-model", action="store_true", help="time the generator only")
    parser.add_argument("-j", "--threads", type=int, default=None, help="TensorFlow threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.configs = list(TINY)
        args.episodes, args.warmup, args.steps = min(args.episodes, 3), 1, min(args.steps, 1)
        args.subjects = min(args.subjects, 4)
    for name in args.configs:
        if args.subjects < CONFIGS[name][2] + 1:
            parser.error(f"--subjects {args.subjects} is too few for {name} (needs L + 1)")
    if args.source not in ("procedural", "mni") and not os.path.isdir(args.source):
        parser.error(f"--source: not 'procedural', 'mni' or a folder: {args.source!r}")
    if min(args.episodes, args.steps) < 1 or args.warmup < 0:
        parser.error("--episodes and --steps must be >= 1, --warmup >= 0")
    return args


class _Timer:
    """Accumulates the time spent inside wrapped callables, by label."""

    def __init__(self):
        self.totals = {}

    def wrap(self, label, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - start
        return timed


class _TimedAugmentation:
    """A task-augmentation tree whose sample_episode/apply are timed."""

    def __init__(self, tree, timer):
        self.sample_episode = timer.wrap("task augmentation", tree.sample_episode)
        self.apply = timer.wrap("task augmentation", tree.apply)


def make_source(args, G, ndims, side):
    if args.source == "procedural":
        return G.ProceduralLabelMaps(n=args.subjects, shape=(max(32, min(side, 96)),) * 3,
                                     seed=args.seed)
    if args.source == "mni":
        return G.MNISubjects(n=args.subjects, seed=args.seed)
    return G.LabelMapFolder(args.source)


def bench_generator(args, name):
    """Episodes per second of the training generator of one configuration."""
    import numpy as np

    import generators as G
    from generators import augment as A

    ndims, side, length = CONFIGS[name]
    shape = (side,) * ndims
    preset = "neuralizer" if ndims == 2 else "neuroverse3d"
    source = make_source(args, G, ndims, side)
    timer = _Timer()
    extra = {}
    if not args.no_augment:
        if ndims == 2:
            spatial, tree, overlap = (A.neuralizer_spatial_augmentation(),
                                      A.neuralizer_task_augmentation(), None)
        else:
            spatial, tree, overlap = (A.neuroverse3d_spatial_augmentation(),
                                      A.neuroverse3d_task_augmentation(),
                                      A.neuroverse3d_task_overlap())
        extra["spatial_augmentation"] = timer.wrap("spatial augmentation", spatial)
        extra["task_augmentation"] = _TimedAugmentation(tree, timer)
        if overlap is not None:
            extra["task_overlap"] = timer.wrap("task overlap", overlap)
    generator = G.EpisodeGenerator.from_preset(
        preset, source, shape=shape, context_size=length, batch_size=1, seed=args.seed, **extra)
    for task in generator.tasks:
        task.make_pair = timer.wrap("task pairs", task.make_pair)
        task.sample_episode = timer.wrap("task pairs", task.sample_episode)

    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    for index in range(len(source)):  # fill the caches, as after the first minutes of training
        source.sample(index, shape, None, 1 if ndims == 2 else None, rng)
    for _ in range(args.warmup):
        generator.sample()
    setup = time.perf_counter() - start

    timer.totals.clear()
    tasks = []
    start = time.perf_counter()
    for _ in range(args.episodes):
        batch = generator.sample()
        tasks.append(generator.last_info[0]["task"])
    elapsed = time.perf_counter() - start
    parts = {k: round(v / args.episodes, 4) for k, v in timer.totals.items()}
    parts["rest (sources, synthesis, encoding)"] = round(
        (elapsed - sum(timer.totals.values())) / args.episodes, 4)
    return {
        "episodes_per_s": args.episodes / elapsed,
        "s_per_episode": elapsed / args.episodes,
        "breakdown_s_per_episode": parts,
        "setup_s": setup,
        "tasks_seen": sorted(set(tasks)),
        "batch": batch,
    }


def bench_model(args, name, batch):
    """Training episodes per second of the model at the configuration's size."""
    import numpy as np
    import tensorflow as tf

    from neuroicl_tf.losses import TaskLoss

    try:
        from neuroicl_tf.models import Neuralizer, Neuroverse3D
    except Exception as err:  # a missing or broken models module: report, do not fail
        return {"skipped": f"neuroicl_tf.models not importable: {type(err).__name__}: {err}"}

    ndims, side, length = CONFIGS[name]
    channels = args.channels
    if args.tiny and channels is None:
        channels = TINY_CHANNELS[ndims]
    if ndims == 2:
        model = Neuralizer(ndims=2, channels=channels[0] if channels else 64)
        loss = TaskLoss(segmentation="dice", image="mse")
    else:
        kwargs = {"channels": tuple(channels)} if channels else {}
        model = Neuroverse3D(mini_context=args.mini_context, seed=args.seed, **kwargs)
        loss = TaskLoss(segmentation="modified_l1", image="l1", image_gradient_weight=1.0)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-4, clipnorm=1.0), loss=loss)
    inputs, y_true, weights = batch
    for value in (*inputs.values(), y_true):
        if not np.all(np.isfinite(value)):
            raise ValueError("the generated batch has non-finite values")
    start = time.perf_counter()
    model.train_on_batch(inputs, y_true, sample_weight=weights)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        loss_value = model.train_on_batch(inputs, y_true, sample_weight=weights)
    elapsed = time.perf_counter() - start
    episodes = args.steps * int(y_true.shape[0])
    return {
        "model": type(model).__name__,
        "parameters": int(model.count_params()),
        "train_episodes_per_s": episodes / elapsed,
        "s_per_step": elapsed / args.steps,
        "first_step_s": warmup,
        "last_loss": float(np.asarray(loss_value).reshape(-1)[0]),
    }


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.threads:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    import neuroicl_tf  # noqa: F401  (sets up tf-keras before TensorFlow is used)

    results = []
    for name in args.configs:
        print(f"== {name}", flush=True)
        gen = bench_generator(args, name)
        print(f"   generator: {gen['episodes_per_s']:.3f} episodes/s "
              f"({gen['s_per_episode']:.3f} s each; setup {gen['setup_s']:.1f} s)", flush=True)
        for part, seconds in gen["breakdown_s_per_episode"].items():
            print(f"     {part:<38s} {seconds:8.4f} s/episode")
        if args.no_model:
            model = {"skipped": "--no-model"}
        else:
            model = bench_model(args, name, gen["batch"])
        if "skipped" in model:
            print(f"   model: skipped ({model['skipped']})")
            ratio = None
        else:
            ratio = gen["episodes_per_s"] / model["train_episodes_per_s"]
            print(f"   model {model['model']} ({model['parameters']:,} parameters): "
                  f"{model['train_episodes_per_s']:.3f} training episodes/s "
                  f"({model['s_per_step']:.3f} s/step; first step {model['first_step_s']:.1f} s)")
            verdict = "ok" if ratio >= 5 else "BELOW the goal of 5"
            print(f"   ratio generator / training = {ratio:.1f}x ({verdict})", flush=True)
        gen.pop("batch")
        results.append({"config": name, "generator": gen, "model": model, "ratio": ratio,
                        "augment": not args.no_augment, "source": args.source})
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
