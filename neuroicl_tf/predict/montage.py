"""PNG montage of one prediction: target, context pairs and prediction in three planes.

Everything is drawn on the RAS model grid (so the planes are true sagittal, coronal and axial
sections, shown with anterior/superior up), through the centre of the predicted structure (the
grid centre if the prediction is empty or an image).
"""

import os
import tempfile

import numpy as np

__all__ = ["save_montage"]

_PLANES = (("sagittal", 0), ("coronal", 1), ("axial", 2))


def _section(volume, axis, index):
    # Take the slice and orient it for imshow: rows = the second remaining axis, top up.
    plane = np.take(volume, index, axis=axis)
    return np.flipud(plane.T)


def save_montage(path, target, contexts, prediction, task="seg", title=None, max_pairs=4):
    """Write the montage.

    Columns: the target, up to ``max_pairs`` context pairs (image with its label outlined in
    red for segmentation, or image and output side by side for image tasks) and the prediction
    (red on the target for segmentation, the image for image tasks). Rows: sagittal, coronal,
    axial.

    Args:
        path: ``.png`` file (written to a temporary name, then renamed).
        target: (X, Y, Z) target on the model grid, [0, 1].
        contexts: list of ``(image, output)`` pairs on the model grid.
        prediction: (X, Y, Z) prediction on the model grid (probability for segmentation).
        task: ``"seg"`` or ``"image"``.
        title: figure title.
        max_pairs: context pairs shown at most.

    Raises:
        ValueError: ``path`` does not end in ``.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = os.fspath(path)
    if not name.lower().endswith(".png"):
        raise ValueError(f"--png must end in .png; got {name!r}")
    seg = task == "seg"
    shown = list(contexts)[:max_pairs]
    mask = prediction >= 0.5 if seg else None
    if seg and mask.any():
        centre = [int(round(c)) for c in np.argwhere(mask).mean(axis=0)]
    else:
        centre = [s // 2 for s in target.shape]

    columns = [("target", target, None)]
    for i, (image, output) in enumerate(shown):
        if seg:
            columns.append((f"context {i + 1}", image, output >= 0.5))
        else:
            columns.append((f"context {i + 1} in", image, None))
            columns.append((f"context {i + 1} out", output, None))
    columns.append(("prediction", target if seg else prediction, mask))

    fig, axes = plt.subplots(3, len(columns), figsize=(1.9 * len(columns), 5.9), squeeze=False)
    for row, (plane_name, axis) in enumerate(_PLANES):
        for col, (label, image, overlay) in enumerate(columns):
            ax = axes[row, col]
            ax.imshow(_section(image, axis, centre[axis]), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            if overlay is not None:
                section = _section(overlay.astype(np.float32), axis, centre[axis])
                if label == "prediction":
                    ax.imshow(np.ma.masked_where(section < 0.5, section), cmap="autumn",
                              alpha=0.6, vmin=0, vmax=1, interpolation="nearest")
                elif section.any():
                    ax.contour(section, levels=[0.5], colors="red", linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=8)
            if col == 0:
                ax.set_ylabel(plane_name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(name))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(name)}.", suffix=".png", dir=folder)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, name)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    finally:
        plt.close(fig)
