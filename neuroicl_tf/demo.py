"""The main job, end to end, on data the package makes: ``neuroicl-demo`` / ``make demo``.

Until trained default weights ship with the package, the demo trains a small 2D Neuralizer for a
few hundred steps with the package's own training function on label maps derived from the MNI152
template (shipped in the nilearn wheel), then segments a structure of held-out subjects in
context, and compares the result with the context-label average (a probabilistic atlas of the
context labels) and with the same model given a blank target image. A model that does not beat
the atlas, or that scores the same without the target image, has not learned to read the image;
the demo says so rather than hiding it.
"""

import json
import os
import time

import numpy as np

from . import _compat

tf = _compat.import_tensorflow()

__all__ = ["run_demo"]


def _model_run(out, steps, seed, shape, subjects, holdout):
    from .training import train

    run = os.path.join(out, "model")
    summary_path = os.path.join(run, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("steps", 0) >= steps:
            print(f"Reusing the model trained by an earlier demo run in {run}")
            return summary
    resume = os.path.exists(os.path.join(run, "train_config.json"))
    return train(
        run, model="neuralizer", ndims=2, shape=shape, channels=16, stages=3, mni=subjects,
        holdout=holdout, context_size=(1, 6), tasks={"segmentation": 1.0}, lr=3e-4, steps=steps,
        val_every=steps, val_episodes=4, checkpoint_every=max(steps // 4, 1), seed=seed,
        resume=resume,
    )


def _atlas(context_out):
    """Context-label average thresholded at 0.5: the baseline every ICL model must beat."""
    return (np.mean(context_out, axis=1) > 0.5).astype(np.float32)


def run_demo(out="out/demo", steps=300, seed=0, size=64, context=4, episodes=8, subjects=16):
    """Train briefly, predict in context on held-out subjects, write what was done.

    Args:
        out: output folder.
        steps: training steps of the small model.
        seed: seed of the training run and of the evaluation episodes.
        size: the 2D slice size (divisible by 4).
        context: the context size L of the evaluation episodes.
        episodes: number of evaluation episodes.
        subjects: number of MNI152-derived subjects (``context + 2`` are held out for
            evaluation and never trained on).

    Returns:
        A summary dict (also written to ``out/summary.json``).
    """
    import generators

    from . import io, metrics
    from .models import ICLModel

    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    shape = (size, size)
    holdout = context + 2
    if subjects - holdout < 4:
        raise ValueError(f"subjects: {subjects} leave fewer than 4 for training after holding "
                         f"out {holdout} for evaluation; use at least {holdout + 4}")
    print(f"1/3 Training a small 2D Neuralizer for {steps} steps on {subjects - holdout} subjects "
          "derived from the MNI152 template (segmentation of random label groups)...")
    run = _model_run(out, steps, seed, shape, subjects, holdout)
    model = ICLModel.load(run["model"])

    print(f"2/3 In-context segmentation of {episodes} episodes of held-out subjects, L = {context}")
    _, held_out = generators.MNISubjects(n=subjects, seed=seed).split(holdout, seed=seed)
    stream = iter(generators.EpisodeGenerator(
        [held_out], tasks={"segmentation": 1.0}, ndims=2, shape=shape, context_size=context,
        encoding="neuralizer", seed=seed + 1,
    ))
    scores = {"model": [], "atlas": [], "model_blank_target": []}
    for _ in range(episodes):
        inputs, y_true = next(stream)[:2]
        inputs = {k: inputs[k] for k in ("target", "context_in", "context_out")}
        y_pred = model.predict(inputs, verbose=0)
        blank = dict(inputs, target=np.zeros_like(inputs["target"]))
        y_blank = model.predict(blank, verbose=0)
        truth = y_true[..., :1]
        scores["model"].append(float(metrics.dice(truth, y_pred[..., :1])[0]))
        atlas = _atlas(inputs["context_out"])[..., :1]
        scores["atlas"].append(float(metrics.dice(truth, atlas)[0]))
        scores["model_blank_target"].append(float(metrics.dice(truth, y_blank[..., :1])[0]))
    means = {k: round(float(np.mean(v)), 3) for k, v in scores.items()}

    print("3/3 Writing the last episode, the prediction and the scores")
    png = os.path.join(out, "prediction.png")
    _montage(png, inputs, truth, y_pred, means)
    nifti = os.path.join(out, "prediction.nii.gz")
    io.save_nifti(nifti, (y_pred[0, ..., 0] > 0.5).astype(np.uint8), np.eye(4))
    summary = {
        "what": "in-context segmentation with a small Neuralizer trained by this demo",
        "training_steps": run["steps"],
        "context_size": context,
        "episodes": episodes,
        "dice_mean": means,
        "seconds": round(time.perf_counter() - started, 1),
        "outputs": {"montage": png, "prediction": nifti, "model": run["model"]},
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
