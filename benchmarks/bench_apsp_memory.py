"""Peak memory of Neuroverse3D with APSP: inference should not grow with L, training should
depend on the mini-context size l and not on L.

Every configuration runs in a fresh subprocess, which reports its peak resident set size over
its whole life (``ru_maxrss`` / VmHWM), its RSS just before the measured work (model built,
inputs made, function traced) and, as "forward", how far the measured call alone raised the
RSS above that (VmHWM reset through ``/proc/self/clear_refs`` just before it). The
context is made in one piece inside a ``tf.function`` (no transient full-size temporaries, no
numpy copy, no tf.data pipeline; see ``_inputs``); the APSP loop keeps only the running means,
never per-chunk outputs.

* Inference: ``model([target, context_in, context_out], mini_context=1)`` inside a
  ``tf.function`` (L dynamic), for each L in ``--lengths``. Goal: peak growth from the smallest
  to the largest L below ``--goal`` (15 %).
* Streamed inference (``--stream``): ``model.predict_stream(target, pairs, mini_context=1)``,
  the context made one pair at a time by a generator, so it is never whole in memory (a
  context read from disk subject by subject). Same goal.
* Training: one ``train_step`` (APSP gradient, shuffle off) for each (L, l) of
  ``--train-configs``. Expected: peaks equal for equal l, larger for larger l.

Full run (default channels, 64^3 inference; takes many minutes on a CPU, run it on an idle
machine)::

    python benchmarks/bench_apsp_memory.py --json apsp_memory.json

Quick check of the script itself (seconds per configuration)::

    python benchmarks/bench_apsp_memory.py --size 32 --channels 2,4,8,16,32 --lengths 1,8 \\
        --train-size 32 --train-channels 2,4,8,16,32

Exit status: 0 when the inference goal is met, 1 otherwise, 2 when a worker failed.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

DEFAULT_CHANNELS = "32,64,128,256,512"


def _status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def _rss_kb():
    return _status_kb("VmRSS")


def _reset_high_water_mark():
    """Reset VmHWM to the current RSS (Linux >= 4.0), so that the peak of the measured call
    alone can be read; False where /proc does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux


def _inputs(size, length, seed=0):
    """Target and context as tensors, each made in one piece inside a ``tf.function``.

    Made eagerly, ``cast(uniform(...) > 0.5)`` keeps the uniform draw, the boolean mask and the
    cast alive at once, and ``tf.convert_to_tensor`` of a numpy array copies it (measured: a
    64 MB array costs 128 MB until the numpy array is dropped). In a graph, the rounding
    reuses the buffer of the draw, so each input exists once.
    """
    from neuroicl_tf import _compat

    tf = _compat.import_tensorflow()

    @tf.function
    def make(shape, salt):
        draw = tf.random.stateless_uniform(shape, seed=[seed, salt])
        return tf.round(draw) if salt == 2 else draw

    pair = [size, size, size, 1]
    return make([1] + pair, 0), make([1, length] + pair, 1), make([1, length] + pair, 2)


def run_worker(spec):
    """Measure one configuration in this (fresh) process; print one JSON line."""
    from neuroicl_tf import _compat

    tf = _compat.import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(spec["threads"])
    from neuroicl_tf.models.neuroverse3d import Neuroverse3D

    tf.keras.utils.set_random_seed(0)
    size, length, mini = spec["size"], spec["length"], spec["mini_context"]
    model = Neuroverse3D(channels=spec["channels"], mini_context=mini, shuffle=False)
    shape = (1, size, size, size, 1)
    stream = spec["mode"] == "stream"
    # Streamed: no whole context at all (the target is the same).
    target, context_in, context_out = _inputs(size, 1 if stream else length)
    signature = [
        tf.TensorSpec((None, size, size, size, 1)),
        tf.TensorSpec((None, None, size, size, size, 1)),
        tf.TensorSpec((None, None, size, size, size, 1)),
    ]
    if stream:
        del context_in, context_out

        @tf.function
        def make_pair(index):
            pair = [1, 1, size, size, size, 1]
            return (tf.random.stateless_uniform(pair, seed=[1, index]),
                    tf.round(tf.random.stateless_uniform(pair, seed=[2, index])))

        def work(t, n):
            pairs = (make_pair(tf.constant(i)) for i in range(n))
            return model.predict_stream(t, pairs, mini_context=1)

        args, small = (target, length), (target, 2)  # two pairs trace both passes
    elif spec["mode"] == "inference":

        @tf.function(input_signature=signature)
        def work(t, a, b):
            return model([t, a, b], training=False)

        args = (target, context_in, context_out)
    else:
        model.compile(tf.keras.optimizers.Adam(1e-4), loss="mae")
        model.optimizer.build(model.trainable_variables)
        y = tf.random.uniform(shape)

        @tf.function(input_signature=signature + [tf.TensorSpec((None, size, size, size, 1))])
        def work(t, a, b, y_true):
            return model.train_step(({"target": t, "context_in": a, "context_out": b}, y_true))

        args = (target, context_in, context_out, y)
    if not stream:
        small = [x[:, :1] if i in (1, 2) else x for i, x in enumerate(args)]
    # Warm up (trace, graph optimisation, kernels) on a small context, so that these costs are
    # the same for every L; the function is traced once for all L.
    tf.nest.map_structure(lambda t: t.numpy(), work(*small))
    peak_so_far = _peak_kb()
    reset = _reset_high_water_mark()
    before = _rss_kb()
    start = time.perf_counter()
    result = work(*args)
    tf.nest.map_structure(lambda t: t.numpy(), result)
    seconds = time.perf_counter() - start
    forward = (_status_kb("VmHWM") - before) / 1024 if reset else None
    print(json.dumps({**spec, "rss_before_mb": before / 1024,
                      "peak_mb": max(peak_so_far, _status_kb("VmHWM")) / 1024,
                      "forward_mb": forward, "seconds": seconds}))


def _run(spec, timeout):
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        capture_output=True, text=True, timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {spec} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _mb(value):
    return "n/a" if value is None else f"{value:.0f}"


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def _pairs(text):
    out = []
    for item in text.split(","):
        length, mini = item.split(":")
        out.append((int(length), int(mini)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="inference cube size (64)")
    parser.add_argument("--channels", default=DEFAULT_CHANNELS, help="inference widths")
    parser.add_argument("--lengths", default="1,64", help="inference context lengths L")
    parser.add_argument("--train-size", type=int, default=64, help="training cube size (64)")
    parser.add_argument("--train-channels", default=DEFAULT_CHANNELS, help="training widths")
    parser.add_argument("--train-configs", default="4:1,16:1,4:4,16:4", help="L:l pairs")
    parser.add_argument("--threads", type=int, default=2, help="TF intra/inter-op threads")
    parser.add_argument("--goal", type=float, default=0.15, help="max inference peak growth")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per worker")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--stream", action="store_true",
                        help="inference through predict_stream, the context made pair by pair")
    parser.add_argument("--json", help="also write all results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return 0

    try:
        lengths = _ints(args.lengths)
        train_configs = _pairs(args.train_configs)
        channels, train_channels = _ints(args.channels), _ints(args.train_channels)
    except ValueError as err:
        print(f"Error: bad list argument ({err})", file=sys.stderr)
        return 1
    factor = 2 ** (len(channels) - 1)
    if args.size % factor or args.train_size % (2 ** (len(train_channels) - 1)):
        print("Error: sizes must be divisible by 2**(stages-1)", file=sys.stderr)
        return 1

    results = []
    try:
        mode = "stream" if args.stream else "inference"
        print(f"{'streamed ' if args.stream else ''}inference, mini_context = 1, "
              f"{args.size}^3, channels {channels}")
        print(f"{'L':>5} {'rss before MB':>14} {'forward MB':>11} {'peak MB':>9} {'seconds':>9}")
        inference = []
        for length in lengths:
            spec = {"mode": mode, "size": args.size, "channels": channels,
                    "length": length, "mini_context": 1, "threads": args.threads}
            r = _run(spec, args.timeout)
            inference.append(r)
            results.append(r)
            print(f"{length:>5} {r['rss_before_mb']:>14.0f} {_mb(r['forward_mb']):>11} "
                  f"{r['peak_mb']:>9.0f} {r['seconds']:>9.1f}", flush=True)
        low, high = inference[0], inference[-1]
        growth = (high["peak_mb"] - low["peak_mb"]) / low["peak_mb"]
        context_mb = 2 * 4 * (high["length"] - low["length"]) * args.size**3 / 2**20
        held = ("the context is never whole in memory" if args.stream else
                f"the extra context itself is {context_mb:.0f} MB")
        print(f"peak growth L={low['length']} -> L={high['length']}: {100 * growth:.1f} % "
              f"(goal < {100 * args.goal:.0f} %; {held})")

        if not args.skip_training:
            print(f"\ntraining step, {args.train_size}^3, channels {train_channels}")
            print(f"{'L':>5} {'l':>3} {'rss before MB':>14} {'forward MB':>11} {'peak MB':>9} "
                  f"{'seconds':>9}")
            for length, mini in train_configs:
                spec = {"mode": "train", "size": args.train_size, "channels": train_channels,
                        "length": length, "mini_context": mini, "threads": args.threads}
                r = _run(spec, args.timeout)
                results.append(r)
                print(f"{length:>5} {mini:>3} {r['rss_before_mb']:>14.0f} "
                      f"{_mb(r['forward_mb']):>11} {r['peak_mb']:>9.0f} {r['seconds']:>9.1f}",
                      flush=True)
            by = {(r["length"], r["mini_context"]): r["peak_mb"] for r in results
                  if r["mode"] == "train"}
            for mini in sorted({m for _, m in by}):
                peaks = {length: p for (length, m), p in by.items() if m == mini}
                if len(peaks) > 1:
                    spread = (max(peaks.values()) - min(peaks.values())) / min(peaks.values())
                    print(f"l = {mini}: peak spread over L = {sorted(peaks)}: "
                          f"{100 * spread:.1f} %")
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, args.json)
    return 0 if growth < args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
