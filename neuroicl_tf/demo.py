"""The main job, end to end, on data the package ships: ``neuroicl-demo`` / ``make demo``.

By default the demo loads the trained default 2D model (``default-2d``, shipped under
``neuroicl_tf/weights/``, see ``docs/model_card.md``) and segments a structure (by default the
deep grey matter, labelled thalamus in these maps) of held-out subjects in context: subjects
derived from the MNI152 template that nilearn's wheel ships, split exactly as the default
model's training run split them, so the targets were never trained on and the context pairs
come from the other subjects. It compares the result with the context-label average (a
probabilistic atlas of the context labels) and with the same model given a blank target image.
A model that does not beat the atlas, or that scores the same without the target image, has
not learned to read the image; the demo says so rather than hiding it.

``train_steps=N`` (``--train-steps N``) instead trains a small 2D Neuralizer for N steps with
the package's own training function and runs the same evaluation on it.
"""

import json
import os
import time

import numpy as np

from . import _compat

tf = _compat.import_tensorflow()

__all__ = ["run_demo", "DEMO_TASK"]

DEMO_TASK = "seg_thalamus"
# The default models' training split of the embedded subjects (docs/model_card.md).
_MNI_SUBJECTS, _HOLDOUT = 20, 4


def _train_small(out, steps, seed, size):
    from .training import train

    run = os.path.join(out, "model")
    summary_path = os.path.join(run, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("steps", 0) >= steps:
            print(f"    reusing the model trained by an earlier demo run in {run}")
            return summary["model"]
    resume = os.path.exists(os.path.join(run, "train_config.json"))
    summary = train(
        run, model="neuralizer", ndims=2, shape=(size, size), channels=16, stages=3,
        mni=_MNI_SUBJECTS, holdout=_HOLDOUT, context_size=(1, 6), tasks={"segmentation": 1.0},
        lr=3e-4, steps=steps, val_every=steps, val_episodes=4,
        checkpoint_every=max(steps // 4, 1), seed=seed, resume=resume,
    )
    return summary["model"]


def run_demo(out="out/demo", model="default-2d", train_steps=None, seed=0, size=None, context=4,
             draws=2, task=DEMO_TASK):
    """Segment held-out subjects in context with a model, write what was done.

    Args:
        out: output folder.
        model: ``"default-2d"`` (the shipped weights) or a 2D model ``.h5``; ignored when
            ``train_steps`` is given.
        train_steps: train a small 2D Neuralizer for this many steps instead (64x64 slices
            unless ``size`` says otherwise).
        seed: seed of the subjects' split (0: the default models' split), of the episodes and
            of a demo training run.
        size: slice size; default: the grid the model was trained at.
        context: the context size L.
        draws: random context draws (each scores all 4 held-out targets).
        task: a segmentation task of :mod:`neuroicl_tf.evaluation.tasks` present in the
            MNI152-derived maps (``seg_lateral_ventricles``, ``seg_thalamus``, ``brain_mask``).

    Returns:
        A summary dict (also written to ``out/summary.json``).

    Raises:
        FileNotFoundError: ``default-2d`` is not installed (and no ``train_steps``).
        ValueError: a 3D model, or a context larger than the context pool.
    """
    from . import io
    from .evaluation import build_episodes, context_average, get_eval_task, make_sources, score
    from .evaluation.ablation import blank_target
    from .evaluation.tasks import KIND_SEGMENTATION
    from .models import ICLModel
    from .predict.models import model_size, resolve_model

    spec = get_eval_task(task)
    if spec.kind != KIND_SEGMENTATION:
        raise ValueError(f"task: the demo scores a segmentation task with Dice; {task!r} is "
                         "an image task (use neuroicl-evaluate for those)")
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    if train_steps:
        size = int(size or 64)
        print(f"1/3 Training a small 2D Neuralizer for {train_steps} steps on "
              f"{_MNI_SUBJECTS - _HOLDOUT} subjects derived from the MNI152 template...")
        path = _train_small(out, int(train_steps), seed, size)
        what = f"a small Neuralizer trained by this demo for {train_steps} steps"
    else:
        path = resolve_model(model)
        what = f"the trained model {model!r} ({path})"
        print(f"1/3 Loading {what}")
    net = ICLModel.load(path)
    if net.ndims != 2:
        raise ValueError(f"the demo runs a 2D model; {path} is {net.ndims}D")
    grid, _ = model_size(net, path, size)

    sources = make_sources(mni=_MNI_SUBJECTS, holdout=_HOLDOUT, seed=seed, shape=grid)
    print(f"2/3 In-context segmentation ({spec.note}): {len(sources.targets)} "
          f"held-out subjects x {draws} context draws, L = {context}, {grid[0]}x{grid[1]} "
          "coronal slices")
    groups = build_episodes(sources.targets, sources.pool, [task], [context], draws, grid,
                            seed=seed)
    channels_in = int(net.inputs[0].shape[-1])
    channels_out = int(net.outputs[0].shape[-1])
    scores = {"model": [], "atlas": [], "model_blank_target": []}
    for group in groups:
        inputs = group.model_inputs(channels_in, channels_out)
        y_pred = net(inputs, training=False).numpy()
        y_blank = net(blank_target(inputs), training=False).numpy()
        atlas = context_average(group.context_out, group.kind)
        atlas = np.repeat(atlas[None], len(group.targets), axis=0)
        scores["model"] += list(score(group.kind, group.target_out, y_pred))
        scores["atlas"] += list(score(group.kind, group.target_out, atlas))
        scores["model_blank_target"] += list(score(group.kind, group.target_out, y_blank))
    means = {k: round(float(np.mean(v)), 3) for k, v in scores.items()}

    print("3/3 Writing one episode, its prediction and the scores")
    inputs = {k: v[:1] for k, v in inputs.items()}
    truth = group.target_out[:1]
    png = os.path.join(out, "prediction.png")
    _montage(png, inputs, truth, y_pred[:1], means)
    nifti = os.path.join(out, "prediction.nii.gz")
    io.save_nifti(nifti, (y_pred[0, ..., 0] > 0.5).astype(np.uint8), np.eye(4))
    summary = {
        "what": f"in-context segmentation ({spec.note}) with {what}",
        "task": task,
        "model": path,
        "subjects": sources.description,
        "targets": list(sources.targets.names),
        "context_size": context,
        "episodes": len(scores["model"]),
        "dice_mean": means,
        "seconds": round(time.perf_counter() - started, 1),
        "outputs": {"montage": png, "prediction": nifti},
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _montage(path, inputs, truth, y_pred, means):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    context = inputs["context_in"].shape[1]
    shown = min(context, 3)
    fig, axes = plt.subplots(2, shown + 2, figsize=(2.4 * (shown + 2), 5))
    for i in range(shown):
        axes[0, i].imshow(inputs["context_in"][0, i, ..., 0].T, cmap="gray", origin="lower")
        axes[1, i].imshow(inputs["context_out"][0, i, ..., 0].T, cmap="gray", origin="lower")
        axes[0, i].set_title(f"context {i + 1}: input")
        axes[1, i].set_title(f"context {i + 1}: label")
    axes[0, shown].imshow(inputs["target"][0, ..., 0].T, cmap="gray", origin="lower")
    axes[0, shown].set_title("target")
    axes[1, shown].imshow(truth[0, ..., 0].T, cmap="gray", origin="lower")
    axes[1, shown].set_title("true label")
    axes[0, shown + 1].imshow(y_pred[0, ..., 0].T, cmap="magma", origin="lower", vmin=0, vmax=1)
    axes[0, shown + 1].set_title("prediction (raw)")
    axes[1, shown + 1].imshow((y_pred[0, ..., 0] > 0.5).T, cmap="gray", origin="lower")
    axes[1, shown + 1].set_title("prediction > 0.5")
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"mean Dice: model {means['model']}, context-label average {means['atlas']}, "
                 f"model with blank target {means['model_blank_target']}", fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
