"""Every declared neuroicl-<verb> command exists, prints help without arguments (the demo runs
instead), and reports bad input as one 'Error: ...' line with exit code 1, before TensorFlow is
imported."""

import importlib
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _commands():
    with open(os.path.join(REPO, "setup.py")) as f:
        text = f.read()
    verbs = re.search(r"for verb in \(([^)]*)\)", text).group(1)
    return [v.strip().strip('"') for v in verbs.split(",") if v.strip()]


def test_commands_are_declared():
    assert {"demo", "train", "synth", "convert", "export"} <= set(_commands())


@pytest.mark.parametrize("verb", [v for v in _commands() if v != "demo"])
def test_help_without_arguments(verb, capsys):
    module = importlib.import_module(f"scripts.{verb}")
    try:
        code = module.main([])
    except SystemExit as exit_info:
        code = exit_info.code
    assert code in (0, None)
    assert "usage:" in capsys.readouterr().out.lower()


@pytest.mark.parametrize("verb", [v for v in _commands() if v != "demo"])
def test_bad_flag_is_one_error_line_before_tensorflow(verb):
    code = (f"import sys; from scripts import {verb} as m; rc = m.main(['--no-such-flag']); "
            "print('TF', 'tensorflow' in sys.modules); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "TF False" in result.stdout


def test_train_tasks_take_an_optional_loss_weight():
    from scripts import _cli
    from scripts.train import parse_tasks

    assert parse_tasks("segmentation:4:50,inpainting:1") == {
        "segmentation": {"weight": 4.0, "loss_weight": 50.0}, "inpainting": 1.0}
    for bad, message in [("segmentation", "name:weight"), ("segmentation:x", "name:weight"),
                         ("segmentation:1:2:3", "name:weight"), ("segmentation:0", "> 0"),
                         ("segmentation:1:-5", "> 0"), ("inpainting:1,inpainting:2", "twice")]:
        with pytest.raises(_cli.UsageError, match=message):
            parse_tasks(bad)


def test_train_tasks_from_a_json_file(tmp_path):
    from scripts import _cli
    from scripts.train import read_tasks

    table = {"segmentation": {"weight": 4, "loss_weight": 50, "params": {"group_p": 0.5}},
             "inpainting": 1}
    (tmp_path / "tasks.json").write_text(json.dumps(table))
    assert read_tasks(str(tmp_path / "tasks.json")) == table
    (tmp_path / "bad.json").write_text("{segmentation: 1}")
    for path, message in [(tmp_path / "bad.json", "not valid JSON"),
                          (tmp_path / "missing.json", "cannot read")]:
        with pytest.raises(_cli.UsageError, match=message):
            read_tasks(str(path))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(_cli.UsageError, match="non-empty object"):
        read_tasks(str(tmp_path / "list.json"))
