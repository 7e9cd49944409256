"""The evaluation behind ``neuroicl-evaluate``: sources, scoring of every method, the reports."""

import dataclasses
import math
import os
import time

import numpy as np

from .. import _compat
from . import ablation, baselines, report
from .episodes import build_episodes, missing_labels
from .tasks import DEFAULT_TASKS, KIND_SEGMENTATION, get_eval_task

tf = _compat.import_tensorflow()

__all__ = ["EvalSources", "evaluate", "make_sources", "model_names", "score"]

REAL_SCANS = ("mni152", "colin27")


@dataclasses.dataclass
class EvalSources:
    """Target and context subjects of an evaluation.

    Attributes:
        targets: source of the held-out target subjects.
        pool: source of the context subjects.
        real: the subjects carry real scans, used as the input images.
        description: one line saying what the subjects are.
        unsuitable: task name -> why the task makes no sense for these subjects.
    """

    targets: object
    pool: object
    real: bool = False
    description: str = ""
    unsuitable: dict = dataclasses.field(default_factory=dict)


def make_sources(labels=None, mni=0, procedural=0, real=None, n_real=20, holdout=4, seed=0,
                 shape=(64, 64)):
    """Targets and context pool from one source, split as ``neuroicl-train`` splits it.

    ``neuroicl-train`` trains on ``source.split(holdout, seed)[0]`` and validates on the held-out
    part; the same ``holdout`` and ``seed`` here give targets that the model never saw and a
    context pool of its training subjects.

    Args:
        labels: a folder of NIfTI label maps, or a list of files (or of one folder).
        mni: number of MNI152-derived subjects (:class:`generators.MNISubjects`).
        procedural: number of procedural subjects (same 3D shape rule as ``neuroicl-train``).
        real: ``"mni152"`` (the MNI152 T1 of nilearn, brain only) or ``"colin27"`` (Debian's
            ``mricron-data``), deformed into ``n_real`` subjects with derived label maps.
        n_real: number of subjects made from the real scan.
        holdout: number of target subjects held out.
        seed: seed of the subjects (MNI, procedural, real) and of the split.
        shape: the episode grid (for the procedural maps' size).

    Returns:
        :class:`EvalSources`.

    Raises:
        ValueError: no source or more than one, an empty source, a bad ``holdout``.
    """
    import generators

    given = [name for name, value in (("labels", labels), ("mni", mni),
                                      ("procedural", procedural), ("real", real)) if value]
    if len(given) != 1:
        raise ValueError(f"give exactly one source of subjects (labels, mni, procedural or "
                         f"real), got {given or 'none'}")
    unsuitable = {}
    is_real = False
    if labels:
        paths = [labels] if isinstance(labels, (str, os.PathLike)) else list(labels)
        if len(paths) == 1 and os.path.isdir(paths[0]):
            paths = paths[0]
        source = generators.LabelMapFolder(paths)
        what = f"{len(source)} label maps ({source.paths[0]} ...) with synthetic contrasts"
    elif mni:
        source = generators.MNISubjects(n=int(mni), seed=seed)
        what = f"{int(mni)} MNI152-derived label maps (seed {seed}) with synthetic contrasts"
    elif procedural:
        ndims = len(shape)
        size = tuple(max(int(s), 32) for s in shape) + (max(shape),) * (3 - ndims)
        source = generators.ProceduralLabelMaps(n=int(procedural), shape=size, seed=seed)
        what = f"{int(procedural)} procedural label maps {size} (seed {seed})"
    else:
        if real not in REAL_SCANS:
            raise ValueError(f"real must be one of {REAL_SCANS}, got {real!r}")
        is_real = True
        if real == "mni152":
            source = generators.MNISubjects(n=int(n_real), seed=seed, real_image=True)
            reason = "the MNI152 template is skull-stripped (input and output would agree)"
            unsuitable = {"skull_stripping": reason, "brain_mask": reason}
            what = f"{int(n_real)} deformations of the MNI152 T1 (real scan, derived labels)"
        else:
            from .sources import Colin27Subjects

            source = Colin27Subjects(n=int(n_real), seed=seed)
            what = f"{int(n_real)} deformations of the Colin27 T1 (real scan, derived labels)"
    if len(source) < 2:
        raise ValueError(f"the source has {len(source)} subject(s); an evaluation needs at "
                         "least one target and one context subject")
    holdout = int(holdout)
    if not 1 <= holdout < len(source):
        raise ValueError(f"holdout must be in [1, {len(source) - 1}] for {len(source)} "
                         f"subjects, got {holdout}")
    pool, targets = source.split(holdout, seed=seed)
    return EvalSources(targets, pool, is_real, what, unsuitable)


def model_names(paths):
    """Report names of models: ``"model"`` for one, else file stems (made unique)."""
    if len(paths) == 1:
        return ["model"]
    names = []
    for path in paths:
        stem = os.path.basename(os.fspath(path))
        stem = stem[:-3] if stem.endswith(".h5") else stem
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}#{k}", k + 1
        names.append(name)
    return names


def score(kind, y_true, y_pred):
    """Per-target scores on the first channel.

    Args:
        kind: 0 segmentation (hard Dice at 0.5), 1 image (PSNR of the prediction clipped to
            [0, 1]).
        y_true: (T, *S, C) true outputs.
        y_pred: (T, *S, C') predictions (C' >= 1).

    Returns:
        (T,) float array.
    """
    from .. import metrics

    y_true = np.asarray(y_true, np.float32)[..., :1]
    y_pred = np.asarray(y_pred, np.float32)[..., :1]
    if kind == KIND_SEGMENTATION:
        return np.asarray(metrics.dice(y_true, y_pred), np.float64)
    return np.asarray(metrics.psnr(y_true, np.clip(y_pred, 0.0, 1.0)), np.float64)


def _stages(model):
    return int(round(math.log2(model.size_divisor()))) + 1


def _predict(model, inputs, mini_context, chunk=4):
    kwargs = {"mini_context": mini_context} if mini_context else {}
    outputs = []
    for start in range(0, len(inputs["target"]), chunk):
        part = {k: v[start:start + chunk] for k, v in inputs.items()}
        outputs.append(model(part, training=False, **kwargs).numpy())
    return np.concatenate(outputs)


def evaluate(out, models, sources, tasks=None, context_sizes=(1, 2, 4, 8, 16), draws=3,
             shape=(64, 64), seed=0, slice_axis=1, fewshot_steps=200, fewshot=True,
             fewshot_width=None, swap_context=False, mini_context=None, strict_tasks=False,
             notes=(), progress=print):
    """Score ICL models, the baselines and the ablations on one seeded episode set.

    Args:
        out: output folder (``scores.csv``, ``table.md``, ``scores.png``, ``verdict.txt``).
        models: dict name -> ICL model (or path of an ``.h5`` file for ``ICLModel.load``).
        sources: :class:`EvalSources` (see :func:`make_sources`).
        tasks: evaluation task names (default: all of
            :data:`~neuroicl_tf.evaluation.tasks.EVAL_TASKS`).
        context_sizes: the L values.
        draws: random context draws per (task, L).
        shape: the episode grid *S; its length sets 2D (slices) or 3D.
        seed: seed of the episodes and of the few-shot U-Net.
        slice_axis: 2D slice axis (0, 1, 2) or None (drawn per group).
        fewshot_steps: training steps of the few-shot U-Net per (task, L, draw).
        fewshot: run baseline (b) at all.
        fewshot_width: the U-Net's first-level width (default: the width whose parameter
            count is closest to the first model's).
        swap_context: also score the swapped-context-images ablation (L >= 2).
        mini_context: Neuroverse3D's mini-context size l at inference.
        strict_tasks: an unsuitable task is an error (tasks named by the user) instead of
            being skipped with a note (the default task list).
        notes: extra lines for the report.
        progress: callable taking one line of text, or None.

    Returns:
        dict with the output paths, ``verdicts`` (task -> lines), ``skipped`` (task -> why),
        ``groups``, ``fewshot_parameters``, ``model_parameters`` and ``seconds``.

    Raises:
        ValueError: bad arguments, unsuitable tasks with ``strict_tasks``, model/grid mismatch.
    """
    from ..models import ICLModel

    started = time.perf_counter()
    say = progress or (lambda line: None)
    shape = tuple(int(s) for s in shape)
    ndims = len(shape)
    if ndims not in (2, 3):
        raise ValueError(f"shape must have 2 or 3 sizes, got {shape}")
    if not models:
        raise ValueError("models: give at least one in-context model")
    loaded = {}
    for name, model in models.items():
        if isinstance(model, (str, os.PathLike)):
            model = ICLModel.load(model)
        if model.ndims != ndims:
            raise ValueError(f"model {name!r} is {model.ndims}D but the episodes are {ndims}D "
                             f"(shape {shape})")
        divisor = model.size_divisor()
        if any(s % divisor for s in shape):
            raise ValueError(f"shape {shape}: model {name!r} needs sizes divisible by {divisor}")
        loaded[name] = model

    names = list(DEFAULT_TASKS if tasks is None else tasks)
    specs = [get_eval_task(n) for n in names]
    skipped, kept = {}, []
    for spec in specs:
        reason = sources.unsuitable.get(spec.name)
        if reason is None and spec.labels:
            absent = missing_labels(sources.targets, spec.labels)
            if absent:
                reason = f"labels {absent} are absent from the subjects"
        if reason is None:
            kept.append(spec.name)
            continue
        if strict_tasks:
            raise ValueError(f"task {spec.name!r} cannot be evaluated on these subjects: "
                             f"{reason}")
        skipped[spec.name] = reason
        say(f"Skipping task {spec.name}: {reason}")
    if not kept:
        raise ValueError(f"no task left to evaluate (skipped: {skipped})")

    say(f"Building {len(kept) * len(context_sizes) * int(draws)} episode groups "
        f"({len(sources.targets)} targets each)...")
    groups = build_episodes(sources.targets, sources.pool, kept, context_sizes, draws, shape,
                            seed=seed, slice_axis=slice_axis, real=sources.real)

    first = next(iter(loaded.values()))
    fewshot_nets = {}
    if fewshot:
        width = fewshot_width or baselines.width_for(first.count_params(), ndims, _stages(first))
        for kind in sorted({g.kind for g in groups}):
            fewshot_nets[kind] = baselines.FewShotUNet(ndims, kind, width, _stages(first),
                                                       steps=int(fewshot_steps), seed=seed)

    rows = []
    tick = time.perf_counter()
    for i, group in enumerate(groups):
        def add(method, values, group=group):
            for target, value in zip(group.targets, values):
                rows.append({"task": group.task, "metric": group.metric,
                             "L": group.context_size, "draw": group.draw, "target": target,
                             "method": method, "value": float(value)})

        means = {}
        for name, model in loaded.items():
            inputs = group.model_inputs(model.in_channels, model.out_channels)
            variants = {name: inputs,
                        f"{name} | blank target": ablation.blank_target(inputs),
                        f"{name} | blank context images": ablation.blank_context_images(inputs)}
            if swap_context and group.context_size >= 2:
                variants[f"{name} | swapped context images"] = ablation.swap_context_images(
                    inputs)
            for method, batch in variants.items():
                values = score(group.kind, group.target_out,
                               _predict(model, batch, mini_context))
                add(method, values)
                means[method] = float(np.mean(values))
        atlas = baselines.context_average(group.context_out, group.kind)
        values = score(group.kind, group.target_out,
                       np.repeat(atlas[None], len(group.targets), axis=0))
        add(report.ATLAS, values)
        means[report.ATLAS] = float(np.mean(values))
        if group.kind != KIND_SEGMENTATION:
            values = score(group.kind, group.target_out, baselines.identity(group.target_in))
            add(report.IDENTITY, values)
            means[report.IDENTITY] = float(np.mean(values))
        if fewshot:
            net = fewshot_nets[group.kind]
            net.fit(group.context_in, group.context_out, np.random.default_rng(group.seed))
            values = score(group.kind, group.target_out, net.predict(group.target_in))
            add(report.FEWSHOT, values)
            means[report.FEWSHOT] = float(np.mean(values))
        elapsed = time.perf_counter() - tick
        left = elapsed / (i + 1) * (len(groups) - i - 1)
        shown = ", ".join(f"{k} {v:.3g}" for k, v in means.items())
        say(f"{i + 1}/{len(groups)} {group.task} L={group.context_size} draw={group.draw}: "
            f"{shown} ({left:.0f} s left)")

    os.makedirs(out, exist_ok=True)
    paths = {k: os.path.join(out, v) for k, v in (
        ("scores", "scores.csv"), ("table", "table.md"), ("plot", "scores.png"),
        ("verdict", "verdict.txt"))}
    lines = [f"subjects: {sources.description}; {len(sources.targets)} held-out targets, "
             f"context pool of {len(sources.pool)}",
             f"grid {'x'.join(map(str, shape))}"
             + (f", slice axis {slice_axis}" if ndims == 2 else "")
             + f", seed {seed}, {draws} draw(s) per L",
             "models: " + ", ".join(f"{n} ({m.count_params():,} parameters)"
                                    for n, m in loaded.items())]
    if fewshot:
        net = next(iter(fewshot_nets.values()))
        lines.append(f"few-shot U-Net: width {net.width}, {net.stages} levels, "
                     f"{net.parameters:,} parameters, {fewshot_steps} steps of batch "
                     f"{net.batch_size} on the L context pairs (flips + small affine), Adam 1e-3")
    lines += [f"skipped {k}: {v}" for k, v in skipped.items()]
    lines += list(notes)
    report.write_scores(rows, paths["scores"])
    report.write_table(rows, paths["table"], lines)
    report.plot_scores(rows, paths["plot"])
    judged = report.verdicts(rows)
    text = "\n".join(f"{task}:\n" + "\n".join(f"  {line}" for line in task_lines)
                     for task, task_lines in judged.items())
    report._atomic_write(paths["verdict"], text + "\n")
    return {
        **paths,
        "verdicts": judged,
        "skipped": skipped,
        "groups": len(groups),
        "rows": len(rows),
        "model_parameters": {n: int(m.count_params()) for n, m in loaded.items()},
        "fewshot_parameters": (next(iter(fewshot_nets.values())).parameters
                               if fewshot_nets else None),
        "seconds": round(time.perf_counter() - started, 1),
    }
