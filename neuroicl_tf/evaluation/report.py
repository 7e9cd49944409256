"""Evaluation reports: the score table (CSV), the summary table and verdict (Markdown), the plot.

A score row is a dict with the keys of :data:`SCORE_COLUMNS`: one value of one metric for one
target of one (task, L, draw) and one method. Method names: a model's name, ``"context
average"``, ``"few-shot U-Net"``, ``"identity"``, and ablations as ``"<model> | blank target"``,
``"<model> | blank context images"`` (``"<model> | swapped context images"``).
"""

import csv
import io
import math
import os

import numpy as np

__all__ = [
    "ATLAS",
    "FEWSHOT",
    "IDENTITY",
    "SCORE_COLUMNS",
    "plot_scores",
    "read_scores",
    "summarise",
    "verdicts",
    "write_scores",
    "write_table",
]

SCORE_COLUMNS = ("task", "metric", "L", "draw", "target", "method", "value")
ATLAS, FEWSHOT, IDENTITY = "context average", "few-shot U-Net", "identity"
BASELINES = (ATLAS, FEWSHOT, IDENTITY)
ABLATION_SEPARATOR = " | "
# The smallest drop that counts as "the ablation lowers the score".
DROP = {"dice": 0.05, "psnr": 1.0}


def _atomic_write(path, text, mode="w"):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, mode, newline="" if "b" not in mode else None) as f:
        f.write(text)
    os.replace(tmp, path)


def write_scores(rows, path):
    """Write score rows as CSV with the header :data:`SCORE_COLUMNS` (atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SCORE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        missing = [c for c in SCORE_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"score row {row} lacks the columns {missing}")
        writer.writerow({c: _cell(row[c]) for c in SCORE_COLUMNS})
    _atomic_write(path, buffer.getvalue())


def _cell(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_scores(path):
    """Read a scores CSV back into rows (L, draw as int, value as float)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["L"], row["draw"], row["value"] = int(row["L"]), int(row["draw"]), float(row["value"])
    return rows


def summarise(rows):
    """Mean, SD and count of the values per (task, method, L).

    Returns:
        dict ``(task, method, L) -> (mean, sd, n)``; the SD is over all draws and targets
        (``ddof=0``).
    """
    groups = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"], int(row["L"])), []).append(
            float(row["value"]))
    return {key: (float(np.mean(v)), float(np.std(v)), len(v)) for key, v in groups.items()}


def _order(methods):
    """Models first (each followed by its ablations), then the baselines."""
    models = sorted({m.split(ABLATION_SEPARATOR)[0] for m in methods} - set(BASELINES))
    ordered = []
    for model in models:
        ordered.append(model)
        ordered += sorted(m for m in methods if m.startswith(model + ABLATION_SEPARATOR))
    ordered += [b for b in BASELINES if b in methods]
    return [m for m in ordered if m in methods]


def _tasks(rows):
    seen = []
    for row in rows:
        if row["task"] not in seen:
            seen.append(row["task"])
    return seen


def _metric_of(rows, task):
    return next(r["metric"] for r in rows if r["task"] == task)


def _fmt(value, metric):
    if math.isinf(value):
        return "inf"
    return f"{value:.3f}" if metric == "dice" else f"{value:.2f}"


def verdicts(rows):
    """A short text verdict per task and model.

    For every model (a method without ``" | "`` that is not a baseline):

    - segmentation-like tasks: does it beat the context average by >= 0.05 Dice at every
      L >= 4; image tasks: does it beat the context average at every L >= 4;
    - does it beat the few-shot U-Net at every L <= 8;
    - image tasks: does it improve over the identity at every L;
    - how much the blank-target (and blank-context) ablations drop the score, averaged over L,
      and whether the drop reaches 0.05 Dice / 1 dB.

    Returns:
        dict task -> list of lines.
    """
    summary = summarise(rows)
    out = {}
    for task in _tasks(rows):
        metric = _metric_of(rows, task)
        methods = {m for (t, m, _) in summary if t == task}
        sizes = sorted({L for (t, _, L) in summary if t == task})
        models = [m for m in _order(methods) if m not in BASELINES
                  and ABLATION_SEPARATOR not in m]
        out[task] = [line for model in models
                     for line in _model_verdict(summary, task, metric, model, methods, sizes)]
    return out


def _model_verdict(summary, task, metric, model, methods, sizes):
    unit = "Dice" if metric == "dice" else "dB"

    def mean(method, size):
        return summary.get((task, method, size), (math.nan,))[0]

    def compare(other, where, margin=0.0):
        picked = [s for s in sizes if where(s)]
        if other not in methods or not picked:
            return None
        diffs = {s: mean(model, s) - mean(other, s) for s in picked}
        ok = all(d >= margin if margin else d > 0 for d in diffs.values())
        digits = 3 if metric == "dice" else 2
        detail = ", ".join(f"L={s}: {d:+.{digits}f}" for s, d in diffs.items())
        return ("YES" if ok else "NO") + f" ({detail})"

    parts = []
    if metric == "dice":
        text = compare(ATLAS, lambda s: s >= 4, 0.05)
        parts.append("beats the context average by >= 0.05 Dice at L >= 4: "
                     f"{text or 'not measured (no L >= 4)'}")
    else:
        text = compare(ATLAS, lambda s: s >= 4)
        parts.append(f"beats the context average at L >= 4: {text or 'not measured'}")
    text = compare(FEWSHOT, lambda s: s <= 8)
    parts.append(f"beats the few-shot U-Net at L <= 8: {text or 'not measured'}")
    if metric == "psnr":
        text = compare(IDENTITY, lambda s: True)
        parts.append(f"improves over the identity: {text or 'not measured'}")
    lines = []
    drops = {}
    for ablation in ("blank target", "blank context images"):
        name = f"{model}{ABLATION_SEPARATOR}{ablation}"
        if name not in methods:
            continue
        drop = float(np.mean([mean(model, s) - mean(name, s) for s in sizes]))
        drops[ablation] = drop
        threshold = DROP[metric]
        judged = ("drops the score" if drop >= threshold else
                  f"does NOT drop the score by {threshold:g} {unit}")
        before = _fmt(float(np.mean([mean(model, s) for s in sizes])), metric)
        after = _fmt(float(np.mean([mean(name, s) for s in sizes])), metric)
        parts.append(f"{ablation}: {judged} (mean drop {drop:+.3f} {unit} over L; "
                     f"{before} -> {after})")
    lines.append(f"{model}: " + "; ".join(parts) + ".")
    if "blank target" in drops and drops["blank target"] < DROP[metric]:
        lines.append(f"{model}: its score hardly depends on the target image: it is not "
                     "reading the target (TRAINING_NOTES lesson; see docs/evaluation.md).")
    return lines


def write_table(rows, path, notes=()):
    """Write the Markdown summary: per task, mean ± SD per method and L, then the verdicts.

    Args:
        rows: score rows.
        path: output ``.md`` path (written atomically).
        notes: extra lines put under the title (e.g. the command, skipped tasks).
    """
    summary = summarise(rows)
    lines = ["# In-context evaluation", ""]
    lines += [f"- {n}" for n in notes]
    if notes:
        lines.append("")
    lines.append("Mean ± SD over all draws and targets (n per cell in brackets).")
    lines.append("")
    judged = verdicts(rows)
    for task in _tasks(rows):
        metric = _metric_of(rows, task)
        sizes = sorted({L for (t, _, L) in summary if t == task})
        methods = _order({m for (t, m, _) in summary if t == task})
        lines.append(f"## {task} ({'Dice' if metric == 'dice' else 'PSNR, dB'})")
        lines.append("")
        lines.append("| method | " + " | ".join(f"L = {s}" for s in sizes) + " |")
        lines.append("| --- |" + " --- |" * len(sizes))
        for method in methods:
            cells = []
            for s in sizes:
                if (task, method, s) not in summary:
                    cells.append("")
                    continue
                m, sd, n = summary[(task, method, s)]
                cells.append(f"{_fmt(m, metric)} ± {_fmt(sd, metric)} ({n})")
            shown = method.replace("|", "\\|")  # a bare "|" would split the Markdown cell
            lines.append(f"| {shown} | " + " | ".join(cells) + " |")
        lines.append("")
        for line in judged.get(task, []):
            lines.append(f"- {line}")
        lines.append("")
    _atomic_write(path, "\n".join(lines))


def plot_scores(rows, path, dpi=80):
    """Score vs L per task (one panel each), one line per method, SD as error bars (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows)
    tasks = _tasks(rows)
    cols = min(3, len(tasks))
    nrows = int(math.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    styles = {ATLAS: ("k", "--"), FEWSHOT: ("tab:green", "--"), IDENTITY: ("tab:gray", ":")}
    palette = ["tab:blue", "tab:red", "tab:purple", "tab:orange", "tab:brown", "tab:pink"]
    handles = {}
    for ax, task in zip(axes.ravel(), tasks):
        metric = _metric_of(rows, task)
        methods = _order({m for (t, m, _) in summary if t == task})
        models = [m for m in methods if m not in BASELINES and ABLATION_SEPARATOR not in m]
        for method in methods:
            sizes = sorted(L for (t, m, L) in summary if t == task and m == method)
            means = np.array([summary[(task, method, s)][0] for s in sizes])
            sds = np.array([summary[(task, method, s)][1] for s in sizes])
            base = method.split(ABLATION_SEPARATOR)[0]
            if method in styles:
                color, style = styles[method]
            else:
                color = palette[models.index(base) % len(palette)]
                style = "-" if method == base else (
                    ":" if "blank target" in method else "-.")
            finite = np.isfinite(means)
            line = ax.errorbar(np.asarray(sizes)[finite], means[finite], yerr=sds[finite],
                               color=color, linestyle=style, marker="o", markersize=3,
                               capsize=2, linewidth=1.2)
            handles.setdefault(method, line)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({L for (t, _, L) in summary if t == task}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("context size L", fontsize=8)
        ax.set_ylabel("Dice" if metric == "dice" else "PSNR (dB)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=min(4, len(handles)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(handles) / 4), 1, 1))
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
