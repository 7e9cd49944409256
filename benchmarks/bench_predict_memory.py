"""Memory per context pair of Neuroverse3D inference with APSP, for neuroicl-predict's --mem-gb.

For each configuration, fresh subprocesses run one inference (``tf.function``, no shuffling) with
L context pairs and mini-context sizes l = 1 and l = L, and report the peak resident memory
(``ru_maxrss``) minus the memory just before the call. The growth per extra pair in a
mini-context, divided by ``4 bytes * sum_k V_k C_k`` (one float32 feature map per context U-Net
stage: V_k voxels, C_k channels at stage k), is the factor ``ALPHA`` of
:mod:`neuroicl_tf.predict.models` (``context_pair_bytes``).

Quick check (a minute on 2 cores)::

    python benchmarks/bench_predict_memory.py

Bigger configurations (minutes each; run on an idle machine)::

    python benchmarks/bench_predict_memory.py --configs 64:8,16,32,64,128 96:16,32,64,128,256
"""

import argparse
import json
import resource
import subprocess
import sys


def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def worker(spec):
    import numpy as np

    from neuroicl_tf import _compat

    tf = _compat.import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(2)
    from neuroicl_tf.models import Neuroverse3D

    size, channels, pairs, mini = spec["size"], spec["channels"], spec["pairs"], spec["mini"]
    model = Neuroverse3D(channels=channels, seed=0)
    shape = (1, size, size, size, 1)
    target = tf.random.uniform(shape)
    ctx = tf.random.uniform((1, pairs, size, size, size, 1))
    fn = tf.function(lambda t, ci, co: model([t, ci, co], training=False, mini_context=mini,
                                             shuffle=False), autograph=False)
    fn.get_concrete_function(target, ctx, ctx)  # trace outside the measurement
    before = _rss_kb()
    out = fn(target, ctx, ctx)
    float(np.asarray(out).sum())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kb": before, "peak_kb": peak}))


def measure(size, channels, pairs, mini):
    spec = json.dumps({"size": size, "channels": channels, "pairs": pairs, "mini": mini})
    out = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True,
                         text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return (row["peak_kb"] - row["before_kb"]) * 1024.0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["48:4,8,16,32", "32:8,16,32,64,128"],
                   help="SIZE:C0,C1,... per configuration")
    p.add_argument("--pairs", type=int, default=4, help="context size L")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    for config in args.configs:
        size, channels = config.split(":")
        size, channels = int(size), [int(c) for c in channels.split(",")]
        one = measure(size, channels, args.pairs, 1)
        full = measure(size, channels, args.pairs, args.pairs)
        per_pair = (full - one) / (args.pairs - 1)
        unit = 4.0 * sum(size**3 / 8**k * c for k, c in enumerate(channels))
        print(json.dumps({"size": size, "channels": channels, "pairs": args.pairs,
                          "growth_l1_MiB": round(one / 2**20, 1),
                          "growth_lL_MiB": round(full / 2**20, 1),
                          "per_pair_MiB": round(per_pair / 2**20, 1),
                          "unit_MiB": round(unit / 2**20, 2),
                          "alpha": round(per_pair / unit, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
