"""Peak resident memory of an exported SavedModel at inference, by context length L and size.

For each configuration the model is built with random weights, exported with
:func:`neuroicl_tf.export.export_saved_model`, and then loaded and run once in a FRESH process
(``python -I``, neuroicl_tf not importable, as a server would see it) with batch 1. That process
reports its peak RSS (``ru_maxrss``) after importing TensorFlow, after loading the SavedModel and
after the prediction; the prediction's own cost is the difference between the last two.

Default (about a minute on 2 CPU cores)::

    python benchmarks/serving_memory.py

Heavier sweeps, e.g. the default Neuroverse3D at 128^3 (needs tens of GB)::

    python benchmarks/serving_memory.py --model neuroverse3d --channels 32 64 128 256 512 \\
        --size 128 --lengths 1 4 8 --mini-contexts 1 2

Prints one line per configuration and a least-squares fit ``peak = a + b * L`` per (size, l).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

RUNNER = """
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("neuroicl_tf", "tf_keras"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, _Refuse())
import json, resource, time
import numpy as np
import tensorflow as tf
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB -> MiB on Linux
export_dir, ndims, size, cin, cout, length = sys.argv[1], *map(int, sys.argv[2:7])
report = {"after_import_mib": rss()}
fn = tf.saved_model.load(export_dir).signatures["serving_default"]
report["after_load_mib"] = rss()
rng = np.random.default_rng(0)
s = (size,) * ndims
inputs = {"target": rng.random((1, *s, cin), dtype=np.float32),
          "context_in": rng.random((1, length, *s, cin), dtype=np.float32),
          "context_out": rng.random((1, length, *s, cout), dtype=np.float32)}
report["inputs_mib"] = sum(a.nbytes for a in inputs.values()) / 2**20
start = time.perf_counter()
out = fn(**{k: tf.constant(v) for k, v in inputs.items()})["output"].numpy()
report["seconds"] = time.perf_counter() - start
report["peak_mib"] = rss()
report["finite"] = bool(np.isfinite(out).all())
print(json.dumps(report))
"""


def _build(args, size, mini_context):
    from neuroicl_tf.models import Neuralizer, Neuroverse3D

    if args.model == "neuralizer":
        return Neuralizer(ndims=args.ndims, stages=args.stages, channels=args.channels[0],
                          spatial_shape=(size,) * args.ndims), None
    return Neuroverse3D(channels=tuple(args.channels), spatial_shape=(size,) * 3), mini_context


def _measure(export_dir, ndims, size, cin, cout, length):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CUDA_VISIBLE_DEVICES"] = "-1"
    result = subprocess.run(
        [sys.executable, "-I", "-c", RUNNER, export_dir, *map(str, (ndims, size, cin, cout,
                                                                    length))],
        capture_output=True, text=True, env=env, cwd="/")
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fit(points):
    """Least-squares a + b x over (x, y) points."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("neuralizer", "neuroverse3d", "both"), default="both")
    p.add_argument("--channels", type=int, nargs="+",
                   help="Neuralizer width (one int) or Neuroverse3D widths "
                   "(default: 16, or 4 8 16 32)")
    p.add_argument("--stages", type=int, default=4, help="Neuralizer stages")
    p.add_argument("--ndims", type=int, default=2, choices=(2, 3), help="Neuralizer ndims")
    p.add_argument("--size", type=int, nargs="+", help="spatial sizes (default 64 for "
                   "Neuralizer, 32 for Neuroverse3D)")
    p.add_argument("--lengths", type=int, nargs="+", default=[1, 4, 8], help="context lengths L")
    p.add_argument("--mini-contexts", dest="mini_contexts", type=int, nargs="+", default=[1],
                   help="Neuroverse3D mini-context sizes l (0 = the whole context at once)")
    args = p.parse_args(argv)
    if args.model == "both":
        for model in ("neuralizer", "neuroverse3d"):
            main([*(argv or sys.argv[1:]), "--model", model])
        return 0

    import neuroicl_tf  # noqa: F401  (tf-keras set-up)
    from neuroicl_tf.export import export_saved_model

    if args.channels is None:
        args.channels = [16] if args.model == "neuralizer" else [4, 8, 16, 32]
    sizes = args.size or ([64] if args.model == "neuralizer" else [32])
    minis = [None] if args.model == "neuralizer" else [m or None for m in args.mini_contexts]
    ndims = args.ndims if args.model == "neuralizer" else 3
    cin = cout = 3 if args.model == "neuralizer" else 1
    print(f"# {args.model} channels={args.channels} (batch 1, float32, CPU)")
    print(f"{'size':>6} {'l':>4} {'L':>4} {'inputs MiB':>10} {'TF MiB':>8} {'load MiB':>9} "
          f"{'peak MiB':>9} {'predict MiB':>11} {'s':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            for mini in minis:
                model, fixed = _build(args, size, mini)
                export_dir = export_saved_model(model, os.path.join(tmp, f"{size}_{mini}"),
                                                mini_context=fixed)
                points = []
                for length in args.lengths:
                    r = _measure(export_dir, ndims, size, cin, cout, length)
                    assert r["finite"], "non-finite output"
                    extra = r["peak_mib"] - r["after_load_mib"]
                    points.append((length, r["peak_mib"]))
                    print(f"{size:>6} {str(mini):>4} {length:>4} {r['inputs_mib']:>10.1f} "
                          f"{r['after_import_mib']:>8.0f} {r['after_load_mib']:>9.0f} "
                          f"{r['peak_mib']:>9.0f} {extra:>11.0f} {r['seconds']:>6.2f}")
                fit = _fit(points)
                if fit:
                    print(f"# size {size}, l={mini}: peak ~ {fit[0]:.0f} + {fit[1]:.1f} * L MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
