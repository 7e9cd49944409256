"""The model card's goal figures, computed from evaluation reports.

Reads the ``scores.csv`` of a ``neuroicl-evaluate`` output folder, or a ``table.md`` (such as
the pages under ``docs/model_card/``, which keep only the cell means), and prints, per model,
over the tasks of the goals (the ``seg_*`` structures and the image tasks; ``brain_mask``, an
extra segmentation-like task, is left out):

* (a) the mean Dice over the context average, over the segmentation-like tasks and L >= 4;
* (b) how many (task, L) cells with L <= 8 it wins against the few-shot U-Net;
* (c) per image task, the mean PSNR over the identity, over L;
* the mean segmentation Dice lost when the target image is blanked, over tasks and L.

Usage::

    python benchmarks/goals.py docs/model_card/2d-*.md
    python benchmarks/goals.py runs/eval/2d-synthseg runs/eval/2d-colin27

Several CSVs of one part (for example the model rows and the few-shot rows from two runs on
the same episodes) are read together when given with ``+``:
``python benchmarks/goals.py runs/a/scores.csv+runs/b/scores.csv``.
"""

import argparse
import os
import re
import sys

from neuroicl_tf.evaluation import report

ATLAS, FEWSHOT, IDENTITY = report.ATLAS, report.FEWSHOT, report.IDENTITY
BASELINES = report.BASELINES
BLANK_TARGET = report.ABLATION_SEPARATOR + "blank target"


def read_csv(path):
    """Cell means ``{(task, method, L): mean}`` and ``{task: metric}`` from a scores CSV."""
    rows = report.read_scores(path)
    means = {key: mean for key, (mean, _, _) in report.summarise(rows).items()}
    return means, {row["task"]: row["metric"] for row in rows}


_SECTION = re.compile(r"^## (\S+) \((Dice|PSNR, dB)\)\s*$")
_HEADER = re.compile(r"^\| method \|(.*)\|\s*$")


def read_table(path):
    """Cell means and task metrics from a ``table.md`` written by ``neuroicl-evaluate``."""
    means, metrics = {}, {}
    task, sizes = None, None
    with open(path) as f:
        for line in f:
            section = _SECTION.match(line)
            if section:
                task = section.group(1)
                metrics[task] = "dice" if section.group(2) == "Dice" else "psnr"
                sizes = None
                continue
            header = _HEADER.match(line)
            if header and task:
                sizes = [int(c.strip().split("=")[1]) for c in header.group(1).split("|")]
                continue
            if task and sizes and line.startswith("| ") and not line.startswith("| ---"):
                cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
                method = cells[0].replace("\\|", "|")
                for L, cell in zip(sizes, cells[1:]):
                    if cell and cell != "–":
                        means[(task, method, L)] = float(cell.split()[0])
    if not means:
        raise ValueError(f"{path}: no score tables found (is it a neuroicl-evaluate table.md?)")
    return means, metrics


def read(source):
    """Read one part: a folder with scores.csv, a CSV, a table.md, or CSVs joined by '+'."""
    means, metrics = {}, {}
    for path in source.split("+"):
        if os.path.isdir(path):
            path = os.path.join(path, "scores.csv")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: not found")
        m, t = read_csv(path) if path.endswith(".csv") else read_table(path)
        for key, value in m.items():
            if key in means and abs(means[key] - value) > 1e-6 and key[1] in (ATLAS, IDENTITY):
                raise ValueError(f"{source}: {key} differs between the files ({means[key]} and "
                                 f"{value}): not the same episodes")
            means.setdefault(key, value)
        metrics.update(t)
    return means, metrics


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def goals(means, metrics):
    """The goal figures per model: a dict model -> dict of figures."""
    models = sorted({m for (_, m, _) in means
                     if m not in BASELINES and report.ABLATION_SEPARATOR not in m})
    out = {}
    for model in models:
        seg = [t for t, m in metrics.items() if m == "dice" and t.startswith("seg_")]
        img = [t for t, m in metrics.items() if m == "psnr"]
        cells = [(t, L) for (t, m, L) in means if m == model and (t in seg or t in img)]
        a = _mean(means[(t, model, L)] - means[(t, ATLAS, L)] for t, L in cells
                  if t in seg and L >= 4 and (t, ATLAS, L) in means)
        fewshot = [(t, L) for t, L in cells if L <= 8 and (t, FEWSHOT, L) in means]
        won = sum(means[(t, model, L)] > means[(t, FEWSHOT, L)] for t, L in fewshot)
        c = {t: _mean(means[(t, model, L)] - means[(t, IDENTITY, L)] for tt, L in cells
                      if tt == t and (t, IDENTITY, L) in means) for t in img}
        blank = _mean(means[(t, model, L)] - means[(t, model + BLANK_TARGET, L)]
                      for t, L in cells if t in seg and (t, model + BLANK_TARGET, L) in means)
        out[model] = {"a": a, "b": (won, len(fewshot)), "c": c, "blank_target_drop": blank}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="+", help="output folders, scores.csv or table.md files")
    args = parser.parse_args(argv)
    for part in args.parts:
        try:
            figures = goals(*read(part))
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for model, f in figures.items():
            won, n = f["b"]
            image = ", ".join(f"{t} {v:+.2f}" for t, v in f["c"].items())
            print(f"{part}: {model}: (a) {f['a']:+.3f} Dice; "
                  f"(b) {won} of {n} cells" + (" (no few-shot rows)" if not n else "") +
                  f"; (c) {image or 'no image tasks'} dB; "
                  f"blank target drop {f['blank_target_drop']:.3f} Dice")
    return 0


if __name__ == "__main__":
    sys.exit(main())
