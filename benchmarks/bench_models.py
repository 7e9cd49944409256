"""Forward-pass speed and peak memory of Neuralizer and Neuroverse3D on the CPU.

Every configuration runs in a fresh subprocess (so peak RSS is its own), after a TF float32
4096x4096 matmul measured in the same run, whose GFLOP/s is the practical ceiling of the CPU.
The achieved rate uses the reference FLOP formulas (convolutions only, 2 x MAC; SPEC §2.5,
§3.5): Neuralizer at 192^2 20.61 + 18.365 L GFLOP; Neuroverse3D (1286.1 + 1053.6 L) / 8 GFLOP at
64^3 and 8 times that at 128^3. The port computes fewer FLOPs than these formulas (it averages
before the fusion conv and skips the unused last context update), so the rate is "reference
work per second".

    python benchmarks/bench_models.py --markdown                      # everything (long!)
    python benchmarks/bench_models.py --only nz192-L1,nz192-L4 --markdown
    python benchmarks/bench_models.py --only nz192-L4 --mode eager function xla --markdown
    python benchmarks/bench_models.py --only nz192-L1,nz192-L4 --variant fused direct \
        --xla-fusion 0 1 --markdown                 # the speed levers, one process each
    python benchmarks/bench_models.py --only nz192-L1,nz192-L4 --levers  # interleaved A/B

A full run takes a long time (Neuroverse3D at 128^3 is minutes per forward on 2 cores); run it
on an otherwise idle machine. ``--reference`` adds the reference's timings from a markdown table
(as in REFERENCE_CPU_TIMINGS.md) when that file exists.
"""

import argparse
import itertools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

NZ_GFLOP = (20.61, 18.365)  # Neuralizer at 192^2: a + b L
NV_GFLOP_128 = (1286.1, 1053.6)  # Neuroverse3D at 128^3: a + b L (scales with the voxel count)
DEFAULT_REFERENCE = "/work/shared/reference/REFERENCE_CPU_TIMINGS.md"


def _configs():
    out = []
    for length in (1, 4, 16, 32):
        out.append(dict(name=f"nz192-L{length}", model="neuralizer", size=192, L=length, l=None,
                        gflop=NZ_GFLOP[0] + NZ_GFLOP[1] * length))
    for length, mini in ((1, 1), (4, 1), (4, 4), (8, 1), (8, 8), (16, 1), (16, 16)):
        out.append(dict(name=f"nv64-L{length}-l{mini}", model="neuroverse3d", size=64, L=length,
                        l=mini, gflop=(NV_GFLOP_128[0] + NV_GFLOP_128[1] * length) / 8))
    for length in (1, 4):
        out.append(dict(name=f"nv128-L{length}-l1", model="neuroverse3d", size=128, L=length,
                        l=1, gflop=NV_GFLOP_128[0] + NV_GFLOP_128[1] * length))
    return out


CONFIGS = _configs()


def _resized(config, size):
    if not size:
        return config
    ndims = 2 if config["model"] == "neuralizer" else 3
    return dict(config, size=size, gflop=config["gflop"] * (size / config["size"]) ** ndims)


# ------------------------------------------------------------------------------- worker side


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _setup_tf(threads, inter):
    from neuroicl_tf import _compat  # tf-keras set-up before TensorFlow

    tf = _compat.import_tensorflow()

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    return tf


def _timed(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def worker_matmul(args):
    tf = _setup_tf(args.threads, args.inter)
    n = 4096
    a = tf.random.uniform((n, n), seed=1)
    b = tf.random.uniform((n, n), seed=2)

    def run():
        tf.matmul(a, b).numpy()

    times = _timed(run, 2, max(args.repeats, 5))
    return {"name": "matmul4096", "median_s": statistics.median(times), "times": times,
            "gflop": 2 * n**3 / 1e9}


def _use_direct_forms():
    """Benchmark-only: swap the layers' fused forms for the direct ones (same values).

    Pairwise-Conv-Avg with materialised [context ‖ target] pairs, a 2C->C conv per pair and the
    mean after it; the up-block as up-sample, concatenate, 1x1 conv; ``tf.nn.gelu``.
    """
    import tensorflow as tf

    from neuroicl_tf import layers as nl

    def gelu(t):
        return tf.nn.gelu(t, approximate=False)

    def up_block_call(self, inputs):
        a, skip = inputs
        fold = a.shape.rank == self.ndims + 3
        if fold:
            a, batch, length = nl._fold(a)
            skip, _, _ = nl._fold(skip)
        out = self.conv(tf.concat([nl._upsample_separable(a), skip], axis=-1))
        return nl._unfold(out, batch, length) if fold else out

    nl._gelu_fused = gelu
    nl._gelu_of_sum_fused = lambda *terms: gelu(tf.add_n(list(terms)))
    nl.gelu = gelu
    nl.PairwiseConvAvg.call = _direct_pca_call
    nl.UpsampleConcatConv.call = up_block_call


def _direct_pca_call(self, inputs):
    import tensorflow as tf

    from neuroicl_tf import layers as nl

    x, c = inputs
    r_x = self.target_conv(x)
    folded, batch, length = nl._fold(c)
    r_c = nl._unfold(self.context_conv(folded), batch, length, c.shape[:2])
    tiled = tf.broadcast_to(tf.expand_dims(r_x, 1), tf.shape(r_c))
    pairs, _, _ = nl._fold(tf.concat([r_c, tiled], axis=-1))
    u_x = tf.reduce_mean(nl._unfold(self.combine_conv_target(pairs), batch, length), axis=1)
    x_new = nl.gelu(r_x + u_x)
    if not self.update_context:
        return [x_new, c]
    u_c = nl._unfold(self.combine_conv_context(pairs), batch, length)
    return [x_new, nl.gelu(r_c + u_c)]


def worker_model(args, config):
    tf = _setup_tf(args.threads, args.inter)
    import numpy as np

    from neuroicl_tf import layers as nl

    nl.set_xla_fusion(args.xla_fusion[0] == "1")
    if args.variant[0] == "direct":
        _use_direct_forms()
    if config["model"] == "neuralizer":
        from neuroicl_tf.models import Neuralizer

        model = Neuralizer()
        cin = cout = 3
        call_kwargs = {}
    else:
        try:
            from neuroicl_tf.models import Neuroverse3D
        except Exception as err:  # the other model may be missing or broken
            return {"name": config["name"], "skipped": f"Neuroverse3D unavailable: {err}"}
        model = Neuroverse3D()
        cin = cout = 1
        call_kwargs = {"mini_context": config["l"]}
    rng = np.random.default_rng(0)
    s = (config["size"],) * (2 if config["model"] == "neuralizer" else 3)
    length = config["L"]
    inputs = {
        "target": tf.constant(rng.uniform(size=(1, *s, cin)).astype(np.float32)),
        "context_in": tf.constant(rng.uniform(size=(1, length, *s, cin)).astype(np.float32)),
        "context_out": tf.constant(rng.uniform(size=(1, length, *s, cout)).astype(np.float32)),
    }

    def forward(x):
        return model(x, training=False, **call_kwargs)

    mode = args.mode[0]
    if mode == "function":
        forward = tf.function(forward)
    elif mode == "xla":
        forward = tf.function(forward, jit_compile=True)

    def run():
        forward(inputs).numpy()

    times = _timed(run, args.warmup, args.repeats)
    return {"name": config["name"], "median_s": statistics.median(times), "times": times,
            "gflop": config["gflop"], "peak_rss_mib": _peak_rss_mib()}


# ------------------------------------------------------------------------------- driver side


LEVER_SETUPS = ("fused", "fused+xla-elementwise", "direct", "eager", "xla-whole-model")


def worker_levers(args, config):
    """Neuralizer only: every speed lever traced in one process and timed in interleaved rounds
    (so that load from other processes hits all of them alike), with the matmul ceiling."""
    tf = _setup_tf(args.threads, args.inter)
    import numpy as np

    from neuroicl_tf import layers as nl
    from neuroicl_tf.models import Neuralizer

    model = Neuralizer()
    rng = np.random.default_rng(0)
    s, length = (config["size"],) * 2, config["L"]
    x = {
        "target": tf.constant(rng.uniform(size=(1, *s, 3)).astype(np.float32)),
        "context_in": tf.constant(rng.uniform(size=(1, length, *s, 3)).astype(np.float32)),
        "context_out": tf.constant(rng.uniform(size=(1, length, *s, 3)).astype(np.float32)),
    }
    saved = {k: getattr(nl, k) for k in ("_gelu_fused", "_gelu_of_sum_fused", "gelu")}
    saved_calls = (nl.PairwiseConvAvg.call, nl.UpsampleConcatConv.call)
    calls, outputs = {}, {}
    for name in LEVER_SETUPS:
        # Each setup is fixed when its tf.function is traced (first call below).
        nl.set_xla_fusion(name == "fused+xla-elementwise")
        if name == "direct":
            _use_direct_forms()
        if name == "eager":
            calls[name] = model
        elif name == "xla-whole-model":
            calls[name] = tf.function(lambda v: model(v), jit_compile=True)
        else:
            calls[name] = tf.function(lambda v: model(v))
        outputs[name] = calls[name](x).numpy()
        for k, v in saved.items():
            setattr(nl, k, v)
        nl.PairwiseConvAvg.call, nl.UpsampleConcatConv.call = saved_calls
    nl.set_xla_fusion(False)
    n = 4096
    a, b = tf.random.uniform((n, n), seed=1), tf.random.uniform((n, n), seed=2)
    calls["matmul4096"] = lambda v: tf.matmul(a, b)
    times = {k: [] for k in calls}
    for _ in range(args.warmup):
        for f in calls.values():
            f(x).numpy()
    for _ in range(args.repeats):
        for k, f in calls.items():
            start = time.perf_counter()
            f(x).numpy()
            times[k].append(time.perf_counter() - start)
    ref = outputs["fused"]
    return {
        "name": config["name"], "times": times, "gflop": config["gflop"],
        "matmul_gflop": 2 * n**3 / 1e9,
        "max_rel_diff_vs_fused": {k: float(np.abs(v - ref).max() / np.abs(ref).max())
                                  for k, v in outputs.items()},
    }


def _report_levers(res):
    times = res["times"]
    ceiling = res["matmul_gflop"] / min(times["matmul4096"])
    base = min(times["fused"])
    print(f"\n{res['name']}: matmul 4096^2 {ceiling:.1f} GFLOP/s (best of "
          f"{len(times['matmul4096'])}); rounds interleaved; min / median in seconds\n")
    print("| setup | min [s] | median [s] | GFLOP/s (min) | % of matmul | time vs fused "
          "| max rel. diff vs fused |")
    print("|---|---|---|---|---|---|---|")
    for k in LEVER_SETUPS:
        t = times[k]
        rate = res["gflop"] / min(t)
        print(f"| {k} | {min(t):.3f} | {statistics.median(t):.3f} | {rate:.1f} | "
              f"{100 * rate / ceiling:.0f} | {min(t) / base:.2f} | "
              f"{res['max_rel_diff_vs_fused'][k]:.1e} |")


def _run_worker(args, target, setup=None):
    mode, variant, xla = setup or (args.mode[0], args.variant[0], args.xla_fusion[0])
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", target,
           "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--inter", str(args.inter),
           "--mode", mode, "--variant", variant, "--xla-fusion", xla]
    if args.size:
        cmd += ["--size", str(args.size)]
    env = dict(os.environ)
    if args.onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = args.onednn
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"name": target, "error": " | ".join(tail) or f"exit {proc.returncode}"}
    return json.loads(lines[-1])


def _reference_times(path):
    """{(model, size, L, l): seconds} from a markdown table like REFERENCE_CPU_TIMINGS.md."""
    if not path or not os.path.exists(path):
        return {}
    out = {}
    current = None
    for line in open(path, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not re.match(r"^\d+\^\d$", cells[1]):
            continue
        if cells[0]:
            current = "neuralizer" if cells[0].lower().startswith("neuralizer") else "neuroverse3d"
        number = re.search(r"[\d.]+", cells[4])
        if current and number and cells[2].isdigit():
            mini = int(cells[3]) if cells[3].isdigit() else None
            out[(current, int(cells[1].split("^")[0]), int(cells[2]), mini)] = float(
                number.group())
    return out


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None,
                        help="comma-separated configuration names, or prefixes such as nv64 "
                        f"(all: {', '.join(c['name'] for c in CONFIGS)})")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards first")
    parser.add_argument("--mode", nargs="+", default=["function"],
                        choices=["eager", "function", "xla"],
                        help="how the model is called: eager, tf.function, or tf.function "
                        "with XLA jit_compile (several: compared in one run)")
    parser.add_argument("--variant", nargs="+", default=["fused"], choices=["fused", "direct"],
                        help="the layers as written (fused) or in their direct forms "
                        "(materialised pairs, concatenating up-block, tf.nn.gelu)")
    parser.add_argument("--xla-fusion", nargs="+", default=["0"], choices=["0", "1"],
                        help="compile the layers' element-wise parts with XLA "
                        "(neuroicl_tf.layers.set_xla_fusion)")
    parser.add_argument("--size", type=int, default=None,
                        help="override the spatial size (a quick check of the script; the "
                        "FLOPs are scaled by the voxel count)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--inter", type=int, default=2, help="inter-op threads")
    parser.add_argument("--onednn", choices=["0", "1"], default=None,
                        help="set TF_ENABLE_ONEDNN_OPTS for the workers")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE,
                        help="markdown table of reference timings to compare with (optional)")
    parser.add_argument("--levers", action="store_true",
                        help="Neuralizer configs only: compare the speed levers "
                        f"({', '.join(LEVER_SETUPS)}) in one process, interleaved")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if args.levers:
            config = _resized(next(c for c in CONFIGS if c["name"] == args.worker), args.size)
            print(json.dumps(worker_levers(args, config)))
            return 0
        if args.worker == "matmul4096":
            result = worker_matmul(args)
        else:
            config = _resized(next(c for c in CONFIGS if c["name"] == args.worker), args.size)
            result = worker_model(args, config)
        print(json.dumps(result))
        return 0

    selected = [_resized(c, args.size) for c in CONFIGS]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        names = {c["name"] for c in selected}
        # An exact name selects itself; any other entry is a prefix ("nv64" = all nv64-*).
        selected = [c for c in selected
                    if any(c["name"] == w or (w not in names and c["name"].startswith(w))
                           for w in wanted)]
        if not selected:
            print(f"Error: --only {args.only!r} matches no configuration", file=sys.stderr)
            return 1

    if args.levers:
        results = []
        for config in selected:
            if config["model"] != "neuralizer":
                print(f"{config['name']}: --levers covers Neuralizer only; skipped")
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", config["name"],
                   "--levers", "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                   "--threads", str(args.threads), "--inter", str(args.inter)]
            if args.size:
                cmd += ["--size", str(args.size)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                print(f"Error: {config['name']}: {proc.stderr.strip().splitlines()[-1:]}",
                      file=sys.stderr)
                return 1
            results.append(json.loads(lines[-1]))
            _report_levers(results[-1])
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
        return 0

    matmul = _run_worker(args, "matmul4096")
    if "error" in matmul:
        print(f"Error: matmul benchmark failed: {matmul['error']}", file=sys.stderr)
        return 1
    ceiling = matmul["gflop"] / matmul["median_s"]
    print(f"matmul 4096^2 float32: {ceiling:.1f} GFLOP/s (median of {len(matmul['times'])})",
          flush=True)
    reference = _reference_times(args.reference)

    rows = []
    for config in selected:
        for mode, variant, xla in itertools.product(args.mode, args.variant, args.xla_fusion):
            res = _run_worker(args, config["name"], (mode, variant, xla))
            label = f"{mode}/{variant}/xla{xla}"
            res.update(mode=label, config=config)
            if "median_s" in res:
                res["gflops"] = config["gflop"] / res["median_s"]
                res["fraction_of_matmul"] = res["gflops"] / ceiling
            key = (config["model"], config["size"], config["L"], config["l"])
            res["reference_s"] = reference.get(key)
            rows.append(res)
            if "skipped" in res or "error" in res:
                print(f"{config['name']} [{label}]: {res.get('skipped') or res.get('error')}",
                      flush=True)
            else:
                print(f"{config['name']} [{label}]: {res['median_s']:.3f} s, "
                      f"{res['peak_rss_mib']:.0f} MiB, {res['gflops']:.1f} GFLOP/s "
                      f"({100 * res['fraction_of_matmul']:.0f}% of matmul)", flush=True)

    if args.markdown:
        print()
        print(f"TF float32 4096x4096 matmul: {ceiling:.1f} GFLOP/s; threads {args.threads}/"
              f"{args.inter}; setup = call mode / layer forms / XLA-fused element-wise")
        print()
        print("| config | setup | input | L | l | median [s] | peak RSS [MiB] | GFLOP | GFLOP/s "
              "| % of matmul | reference [s] | reference / ours |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            c = r["config"]
            ndims = 2 if c["model"] == "neuralizer" else 3
            ratio = (r["reference_s"] / r["median_s"]
                     if r.get("reference_s") and r.get("median_s") else None)
            if "median_s" not in r:
                print(f"| {c['name']} | {r['mode']} | {c['size']}^{ndims} | {c['L']} | "
                      f"{c['l'] or '-'} | {r.get('skipped') or r.get('error')} |||||||")
                continue
            print(f"| {c['name']} | {r['mode']} | {c['size']}^{ndims} | {c['L']} | "
                  f"{c['l'] or '-'} | {r['median_s']:.3f} | {r['peak_rss_mib']:.0f} | "
                  f"{c['gflop']:.1f} | {r['gflops']:.1f} | {100 * r['fraction_of_matmul']:.0f} | "
                  f"{_fmt(r['reference_s'], '.3g')} | {_fmt(ratio, '.2f')} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"matmul_gflops": ceiling, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
