"""neuroicl_tf.training / neuroicl-train: bad configurations stop before any work, resume is
exact, MirroredStrategy matches one device, and two workers on 127.0.0.1 train together."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from neuroicl_tf.training import TrainConfigError, parse_context_size, train

TINY = dict(model="neuralizer", ndims=2, shape=(16, 16), channels=4, stages=2, procedural=6,
            holdout=2, context_size=(1, 2), tasks={"segmentation": 1.0}, val_every=2,
            val_episodes=1, checkpoint_every=2, progress=False, tensorboard=False, seed=3)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _weights_of_checkpoint(folder):
    import tensorflow as tf

    path = tf.train.latest_checkpoint(folder)
    reader = tf.train.load_checkpoint(path)
    names = sorted(n for n in reader.get_variable_to_shape_map()
                   if n.startswith("model/") and "OPTIMIZER_SLOT" not in n)
    return {n: reader.get_tensor(n) for n in names}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model="neuroverse3d", ndims=3, shape=(16, 16, 16), channels="2,4",
              context_size=(1, 2), mini_context=3), "larger than the largest context"),
        (dict(mini_context=1), "Neuralizer has no mini-context"),
        (dict(strategy="multiworker"), "TF_CONFIG"),
        (dict(gpus=4), "needs 4 GPU"),
        (dict(shape=(17, 17)), "divisible"),
        (dict(procedural=0), "no subjects"),
        (dict(context_size="0-3"), "at least one context pair"),
        (dict(strategy="nccl"), "strategy"),
        (dict(time_limit=0), "time_limit"),
        (dict(lr=0), "lr: expected a positive"),
        (dict(context_size=(1, 4)), "needs 5 training subjects"),
        (dict(tasks={"segmentatoin": 1.0}), "unknown task 'segmentatoin'"),
        (dict(tasks={"segmentation": {"weight": 1, "loss_weight": 0}}), "loss_weight must"),
        (dict(tasks={"segmentation": {"weight": 1, "params": {"group_q": 1}}}), "group_q"),
        (dict(tasks={"segmentation": {"weight": 1, "params": {"group_p": 2}}}), "group_p"),
    ],
)
def test_bad_configurations_stop_before_any_work(tmp_path, kwargs, message):
    out = tmp_path / "run"
    with pytest.raises(TrainConfigError, match=message):
        train(out, **{**TINY, **kwargs, "steps": 2})
    assert not out.exists(), "a refused configuration must not create its output folder"


def test_parse_context_size():
    assert parse_context_size("1-8") == (1, 8)
    assert parse_context_size("1..8") == (1, 8)
    assert parse_context_size(4) == (4, 4)
    with pytest.raises(TrainConfigError):
        parse_context_size("eight")


def test_resume_continues_exactly_and_refuses_another_architecture(tmp_path):
    straight = train(tmp_path / "straight", **{**TINY, "tensorboard": True}, steps=4)
    assert straight["steps"] == 4 and os.path.exists(straight["model"])
    assert os.listdir(tmp_path / "straight" / "logs"), "no TensorBoard events written"
    summary = json.load(open(tmp_path / "straight" / "summary.json"))
    assert "val_dice/segmentation" in summary["validation"]

    # The first part stops on its time limit at the first round boundary (step 2) and still
    # leaves a loadable model; the resumed part must not notice the difference.
    first = train(tmp_path / "split", **TINY, steps=4, time_limit=1e-6)
    assert first["steps"] == 2 and first["stopped"].startswith("time limit")
    assert os.path.exists(first["model"]) and straight["stopped"] == "finished"
    with pytest.raises(TrainConfigError, match="already holds a run"):
        train(tmp_path / "split", **TINY, steps=4)
    with pytest.raises(TrainConfigError, match="another architecture"):
        train(tmp_path / "split", **{**TINY, "channels": 8}, steps=4, resume=True)
    resumed = train(tmp_path / "split", **TINY, steps=4, resume=True)
    assert resumed["steps"] == 4 and resumed["steps_this_run"] == 2
    runs = [json.loads(line) for line in open(tmp_path / "split" / "runs.jsonl")]
    assert [r["steps"] for r in runs] == [2, 4]

    a = _weights_of_checkpoint(str(tmp_path / "straight" / "checkpoints"))
    b = _weights_of_checkpoint(str(tmp_path / "split" / "checkpoints"))
    assert a.keys() == b.keys() and len(a) > 4
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_resume_keeps_the_checkpoints_rate_unless_one_is_given(tmp_path, capsys):
    default = train(tmp_path / "default", **TINY, steps=2)
    assert json.load(open(tmp_path / "default" / "train_config.json"))["train"]["lr"] == 1e-4
    assert default["final"]["lr"] == pytest.approx(1e-4)
    out = tmp_path / "run"
    train(out, **TINY, steps=2, lr=3e-4)
    kept = train(out, **TINY, steps=4, resume=True)
    assert kept["final"]["lr"] == pytest.approx(3e-4)
    assert "replaces" not in capsys.readouterr().err
    changed = train(out, **TINY, steps=6, resume=True, lr=1e-5)
    assert changed["final"]["lr"] == pytest.approx(1e-5)
    assert "lr: 1e-05 replaces the checkpoint's 0.0003" in capsys.readouterr().err
    # Other loss weights on resume: recorded per run, and the plateau rule starts over (the
    # validation loss is on another scale).
    weighted = {"segmentation": {"weight": 1.0, "loss_weight": 50.0}}
    train(out, **{**TINY, "tasks": weighted}, steps=8, resume=True)
    assert "plateau rule starts over" in capsys.readouterr().err
    train(out, **{**TINY, "tasks": weighted}, steps=10, resume=True)
    assert "starts over" not in capsys.readouterr().err
    runs = [json.loads(line) for line in open(out / "runs.jsonl")]
    assert [(r["start_step"], r["steps"]) for r in runs] == [(0, 2), (2, 4), (4, 6), (6, 8),
                                                              (8, 10)]
    assert [r["start_lr"] for r in runs] == pytest.approx([3e-4, 3e-4, 1e-5, 1e-5, 1e-5])
    assert [r["tasks"]["segmentation"]["loss_weight"] for r in runs] == [1, 1, 1, 50, 50]


def test_init_starts_a_new_run_from_a_model_file(tmp_path):
    from neuroicl_tf.models import ICLModel

    source = train(tmp_path / "source", **TINY, steps=4, lr=1e-2)
    # Architecture options left out come from the file. At lr 1e-9 one Adam step moves no
    # weight by more than about 1e-9, so the new run ends where the source run did, while the
    # same run without init starts from the seed's random weights.
    unset = {k: v for k, v in TINY.items() if k not in ("model", "ndims", "channels", "stages")}
    tuned = train(tmp_path / "tuned", **unset, steps=1, lr=1e-9, init=source["model"])
    fresh = train(tmp_path / "fresh", **TINY, steps=1, lr=1e-9)
    weights = {k: ICLModel.load(run["model"]).get_weights()
               for k, run in (("source", source), ("tuned", tuned), ("fresh", fresh))}
    assert tuned["steps"] == 1
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(weights["tuned"], weights["source"]))
    assert not all(np.allclose(a, b, atol=1e-3)
                   for a, b in zip(weights["fresh"], weights["source"]))
    with open(tmp_path / "tuned" / "train_config.json") as f:
        saved = json.load(f)
    with open(tmp_path / "source" / "train_config.json") as f:
        assert saved["model"] == json.load(f)["model"]
    assert saved["train"]["init"] == os.path.abspath(source["model"])

    for kwargs, message in [
        ({**TINY, "channels": 8}, r"another architecture: channels 4 \(requested 8\)"),
        ({**unset, "model": "neuroverse3d"}, "holds a Neuralizer, but model is 'neuroverse3d'"),
        ({**TINY, "init": str(tmp_path / "missing.h5")}, "init: no such model file"),
        ({**TINY, "init": str(tmp_path / "source" / "train_config.json")}, "expected default-2d"),
    ]:
        with pytest.raises(TrainConfigError, match=message):
            train(tmp_path / "bad", **{"init": source["model"], **kwargs}, steps=1)
        assert not (tmp_path / "bad").exists()


def _run_python(code, env=None, timeout=600):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def test_mirrored_update_matches_single_device(tmp_path):
    code = f"""
        import numpy as np
        from neuroicl_tf.training import train
        kwargs = {TINY!r}
        kwargs.update(batch_size=2, steps=1, val_every=1, checkpoint_every=1)
        train({str(tmp_path / 'mirrored')!r}, strategy="mirrored", cpu_devices=2, **kwargs)
        train({str(tmp_path / 'single')!r}, strategy="default", **kwargs)
    """
    result = _run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    a = _weights_of_checkpoint(str(tmp_path / "single" / "checkpoints"))
    b = _weights_of_checkpoint(str(tmp_path / "mirrored" / "checkpoints"))
    assert a.keys() == b.keys() and a
    for name in a:
        scale = np.max(np.abs(a[name])) + 1e-12
        assert np.max(np.abs(a[name] - b[name])) / scale < 1e-5, name


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_on_localhost_train_to_the_same_weights(tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    code = """
        import sys
        from neuroicl_tf.training import train
        kwargs = {tiny!r}
        kwargs.update(batch_size=2, steps=3, val_every=3, checkpoint_every=3)
        train(sys.argv[1] if len(sys.argv) > 1 else {out!r}, strategy="multiworker", **kwargs)
    """
    procs = []
    for index in range(2):
        env = {"TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        out = str(tmp_path / f"w{index}")
        script = textwrap.dedent(code.format(tiny=TINY, out=out))
        procs.append(subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                                      env={**os.environ, **env}, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    chief = _weights_of_checkpoint(str(tmp_path / "w0" / "checkpoints"))
    other = _weights_of_checkpoint(str(tmp_path / "w1" / "worker-1-scratch"))
    assert chief.keys() == other.keys() and chief
    for name in chief:
        np.testing.assert_allclose(other[name], chief[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_interrupted_run_leaves_a_checkpoint_that_resumes(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    code = f"""
        from neuroicl_tf.training import train
        kwargs = {TINY!r}
        # More steps than any machine runs before the signal: the run must be stopped by it.
        kwargs.update(steps=10 ** 7, val_every=400, checkpoint_every=400)
        try:
            train({str(out)!r}, **kwargs)
        except KeyboardInterrupt:
            raise SystemExit(130)
        raise SystemExit(0)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "train_config.json").exists() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(8)  # well into validation-set synthesis or the first fit round
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "checkpoint saved" in err
    saved = _weights_of_checkpoint(str(out / "checkpoints"))
    assert saved, "the interrupted run left no checkpoint"
    import tensorflow as tf

    interrupted_at = int(tf.train.latest_checkpoint(str(out / "checkpoints")).rsplit("-", 1)[1])
    resumed = train(out, **{**TINY, "val_every": 400, "checkpoint_every": 400},
                    steps=interrupted_at + 2, resume=True)
    assert resumed["steps"] == interrupted_at + 2 and resumed["steps_this_run"] == 2
    runs = [json.loads(line) for line in open(out / "runs.jsonl")]
    assert [r["stopped"] for r in runs] == [f"interrupted at step {interrupted_at}", "finished"]
    assert [(r["start_step"], r["steps"]) for r in runs] == [
        (0, interrupted_at), (interrupted_at, interrupted_at + 2)]
