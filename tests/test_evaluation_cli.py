"""neuroicl-evaluate: a tiny run on procedural subjects, and its errors (before TensorFlow)."""

import csv
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_task_names_match_the_library():
    from neuroicl_tf.evaluation import EVAL_TASKS
    from scripts import evaluate

    assert evaluate.TASK_NAMES == tuple(EVAL_TASKS)


def test_cli_run_on_procedural_subjects(tmp_path, capsys):
    from neuroicl_tf.models import Neuralizer
    from scripts import evaluate

    model_path = str(tmp_path / "tiny.h5")
    Neuralizer(ndims=2, stages=2, channels=2).save(model_path)
    out = tmp_path / "eval"
    code = evaluate.main(["-o", str(out), "--model", model_path, "--procedural", "5",
                          "--holdout", "2", "--shape", "32", "32", "--context-sizes", "1", "2",
                          "--draws", "1", "--tasks", "brain_mask,denoising",
                          "--fewshot-steps", "3", "--swap-context"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Verdict:" in printed and "blank target" in printed
    assert sorted(os.listdir(out)) == ["scores.csv", "scores.png", "table.md", "verdict.txt"]
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["task", "metric", "L", "draw", "target", "method", "value"]
    methods = {(r["task"], r["method"]) for r in rows}
    for task in ("brain_mask", "denoising"):
        for method in ("model", "model | blank target", "model | blank context images",
                       "context average", "few-shot U-Net"):
            assert (task, method) in methods
    assert ("denoising", "identity") in methods and ("brain_mask", "identity") not in methods
    swapped = {r["L"] for r in rows if r["method"] == "model | swapped context images"}
    assert swapped == {"2"}  # nothing to swap with one pair
    # per target (2) and L: model, 2 ablations, atlas, few-shot, + swap at L = 2; denoising
    # also the identity: brain_mask (5 + 6) * 2 + denoising (6 + 7) * 2
    assert len(rows) == 48
    assert {r["metric"] for r in rows if r["task"] == "denoising"} == {"psnr"}
    table = (out / "table.md").read_text()
    assert "## brain_mask (Dice)" in table and "## denoising (PSNR, dB)" in table
    assert "beats the context average" in (out / "verdict.txt").read_text()


ERROR_CASES = {
    "missing_model": (["--model", "{tmp}/nope.h5", "--procedural", "6"], "no such model file"),
    "L_too_large": (["--model", "{model}", "--procedural", "6", "--holdout", "2",
                     "--context-sizes", "1", "8"], "larger than the context pool"),
    "unknown_task": (["--model", "{model}", "--procedural", "6", "--context-sizes", "1",
                      "--tasks", "seg_brain"],
                     "unknown task 'seg_brain'"),
    "empty_folder": (["--model", "{model}", "--labels", "{tmp}"], "no NIfTI label maps"),
    "no_source": (["--model", "{model}"], "exactly one source"),
    "two_sources": (["--model", "{model}", "--mni", "6", "--procedural", "6"],
                    "exactly one source"),
    "too_few_subjects": (["--model", "{model}", "--procedural", "1"], "at least 2"),
    "holdout_all": (["--model", "{model}", "--procedural", "4", "--holdout", "4"],
                    "leaves no context pool"),
    "bad_shape": (["--model", "{model}", "--procedural", "6", "--context-sizes", "1",
                   "--shape", "32"],
                  "--shape"),
}


def test_errors_are_one_line_before_tensorflow(tmp_path):
    model = tmp_path / "m.h5"
    model.write_bytes(b"not checked before TensorFlow")
    cases = {name: [a.format(tmp=tmp_path, model=model) for a in argv]
             for name, (argv, _) in ERROR_CASES.items()}
    code = (
        "import contextlib, io, json, sys\n"
        "from scripts import evaluate\n"
        "out = {}\n"
        "for name, argv in json.loads(sys.argv[1]).items():\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        rc = evaluate.main(['-o', sys.argv[2]] + argv)\n"
        "    out[name] = [rc, err.getvalue()]\n"
        "out['tensorflow'] = 'tensorflow' in sys.modules\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, json.dumps(cases),
                             str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome.pop("tensorflow") is False
    for name, (_, message) in ERROR_CASES.items():
        rc, err = outcome[name]
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 1, (name, err)
        assert len(lines) == 1 and lines[0].startswith("Error: "), (name, err)
        assert message in lines[0], (name, lines[0])
    assert not os.path.exists(tmp_path / "out")


def test_help_without_arguments(capsys):
    from scripts import evaluate

    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([])
    assert exit_info.value.code in (0, None)
    assert "neuroicl-evaluate" in capsys.readouterr().out


def test_model_names_resolve_to_the_shipped_weights(monkeypatch):
    from scripts import _cli
    from scripts import evaluate as evaluate_cli

    models = evaluate_cli._models(["default-2d", "mine=default-3d"])
    assert models == [("default-2d", _cli.default_model_path("default-2d")),
                      ("mine", _cli.default_model_path("default-3d"))]
    assert all(os.path.isfile(path) for _, path in models)
    monkeypatch.setitem(_cli.DEFAULT_MODELS, "default-2d", "not-installed.h5")
    with pytest.raises(_cli.UsageError, match="not-installed.h5.*reinstall"):
        evaluate_cli._models(["default-2d"])
