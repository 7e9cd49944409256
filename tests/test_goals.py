"""benchmarks/goals.py: the model card's goal figures, from a scores CSV and from its table.md."""

import importlib.util
import os

import pytest

from neuroicl_tf.evaluation import report

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def goals():
    spec = importlib.util.spec_from_file_location(
        "goals", os.path.join(HERE, "..", "benchmarks", "goals.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows():
    """Two targets; the model beats the atlas by 0.2 Dice at L = 4 and 0.1 at L = 8."""
    values = {
        # (task, metric, method, L): value for both targets
        ("seg_thalamus", "dice", "m", 4): 0.5, ("seg_thalamus", "dice", "context average", 4): 0.3,
        ("seg_thalamus", "dice", "m", 8): 0.6, ("seg_thalamus", "dice", "context average", 8): 0.5,
        ("seg_thalamus", "dice", "m", 2): 0.2, ("seg_thalamus", "dice", "context average", 2): 0.9,
        ("seg_thalamus", "dice", "m | blank target", 4): 0.1,
        ("seg_thalamus", "dice", "few-shot U-Net", 4): 0.4,
        ("seg_thalamus", "dice", "few-shot U-Net", 8): 0.7,
        # brain_mask is not a goal task: a large loss here must not count
        ("brain_mask", "dice", "m", 4): 0.0, ("brain_mask", "dice", "context average", 4): 0.9,
        ("denoising", "psnr", "m", 4): 25.0, ("denoising", "psnr", "identity", 4): 20.0,
        ("denoising", "psnr", "m", 8): 21.0, ("denoising", "psnr", "identity", 8): 22.0,
        ("denoising", "psnr", "few-shot U-Net", 4): 26.0,
    }
    return [{"task": t, "metric": metric, "L": L, "draw": 0, "target": target, "method": m,
             "value": v} for (t, metric, m, L), v in values.items() for target in ("a", "b")]


def test_goals_from_csv_and_table_agree(goals, tmp_path):
    rows = _rows()
    report.write_scores(rows, tmp_path / "scores.csv")
    report.write_table(rows, tmp_path / "table.md")
    from_csv = goals.goals(*goals.read(str(tmp_path)))
    from_md = goals.goals(*goals.read(str(tmp_path / "table.md")))
    for figures in (from_csv["m"], from_md["m"]):
        assert figures["a"] == pytest.approx(0.15)  # mean of +0.2 (L=4) and +0.1 (L=8)
        assert figures["b"] == (1, 3)  # thalamus L=4 won; thalamus L=8 and denoising L=4 lost
        assert figures["c"] == {"denoising": pytest.approx(2.0)}  # (+5 - 1) / 2
        assert figures["blank_target_drop"] == pytest.approx(0.4)
    assert set(from_md) == {"m"}


def test_joined_csvs_must_share_episodes(goals, tmp_path):
    rows = _rows()
    os.makedirs(tmp_path / "one")
    os.makedirs(tmp_path / "two")
    report.write_scores(rows, tmp_path / "one" / "scores.csv")
    shifted = [dict(r, value=r["value"] + 1.0) if r["method"] == "identity" else r for r in rows]
    report.write_scores(shifted, tmp_path / "two" / "scores.csv")
    with pytest.raises(ValueError, match="not the same episodes"):
        goals.read(f"{tmp_path / 'one' / 'scores.csv'}+{tmp_path / 'two' / 'scores.csv'}")
    assert goals.main([str(tmp_path / "missing")]) == 2
