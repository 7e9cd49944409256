"""Batch prediction: many targets, one shared context, one model.

The model is loaded and the context pairs are loaded, checked and normalised once (by the
:class:`~neuroicl_tf.predict.pipeline.Predictor`); registration, resampling and the forward
passes are per target (the context features depend on the target, see the pipeline module).
Finished outputs are skipped on a re-run (outputs are written atomically, so an existing file is
complete); a failing target is reported and the run goes on; the summary lists the failures.
"""

import csv
import os
import time

__all__ = ["read_targets", "output_paths", "run_batch"]

_SUFFIXES = (".nii.gz", ".nii")


def _stem(path):
    name = os.path.basename(os.fspath(path))
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def read_targets(spec):
    """The target images of a batch.

    Args:
        spec: a folder (every ``.nii``/``.nii.gz`` file in it, sorted) or a CSV file whose first
            column holds the image paths (relative paths are relative to the CSV's folder; a
            first row whose first cell is not a NIfTI path is a header; empty rows and rows
            starting with ``#`` are skipped).

    Returns:
        list of paths.

    Raises:
        FileNotFoundError: ``spec`` does not exist.
        ValueError: no targets, or two targets with the same file name (their outputs would
            collide).
    """
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        targets = sorted(os.path.join(spec, f) for f in os.listdir(spec)
                         if f.endswith(_SUFFIXES) and not f.startswith("."))
    elif os.path.isfile(spec):
        base = os.path.dirname(os.path.abspath(spec))
        targets = []
        with open(spec, newline="") as f:
            for row_number, row in enumerate(csv.reader(f)):
                if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                    continue
                cell = row[0].strip()
                if row_number == 0 and not cell.endswith(_SUFFIXES):
                    continue  # header
                targets.append(cell if os.path.isabs(cell) else os.path.join(base, cell))
    else:
        raise FileNotFoundError(f"--batch: no such file or folder: {spec}")
    if not targets:
        raise ValueError(f"--batch: no .nii/.nii.gz targets in {spec}")
    stems = {}
    for path in targets:
        stems.setdefault(_stem(path), []).append(path)
    clashes = [paths for paths in stems.values() if len(paths) > 1]
    if clashes:
        raise ValueError(f"--batch: targets with the same file name would write the same "
                         f"output: {clashes[0]}")
    return targets


def output_paths(target, outdir, uncertainty_dir=None, png_dir=None):
    """Output paths of one target: ``OUTDIR/<name>_pred.nii.gz`` (+ ``_std.nii.gz``, ``.png``).

    Returns:
        dict with keys ``out``, ``uncertainty``, ``png`` (None when not asked for).
    """
    stem = _stem(target)
    return {
        "out": os.path.join(outdir, f"{stem}_pred.nii.gz"),
        "uncertainty": (os.path.join(uncertainty_dir, f"{stem}_std.nii.gz")
                        if uncertainty_dir else None),
        "png": os.path.join(png_dir, f"{stem}.png") if png_dir else None,
    }


def _hms(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_batch(predictor, targets, outdir, uncertainty_dir=None, png_dir=None, log=print):
    """Predict every target with one :class:`Predictor`.

    Args:
        predictor: a ``Predictor`` (model and context already prepared).
        targets: list of target paths (see :func:`read_targets`).
        outdir: output folder (created).
        uncertainty_dir: folder for the uncertainty maps, or None.
        png_dir: folder for the montages, or None.
        log: a function taking one string.

    Returns:
        dict with ``done``, ``skipped`` (lists of targets) and ``failed`` (list of
        ``(target, message)``).
    """
    for folder in (outdir, uncertainty_dir, png_dir):
        if folder:
            os.makedirs(folder, exist_ok=True)
    done, skipped, failed = [], [], []
    n = len(targets)
    seconds = []
    for i, target in enumerate(targets, start=1):
        paths = output_paths(target, outdir, uncertainty_dir, png_dir)
        wanted = [p for p in paths.values() if p]
        if all(os.path.exists(p) for p in wanted):
            skipped.append(target)
            log(f"[{i}/{n}] {target}: outputs exist, skipped")
            continue
        start = time.perf_counter()
        try:
            predictor.predict(target, paths["out"], uncertainty=paths["uncertainty"],
                              png=paths["png"])
        except Exception as err:  # one bad subject must not stop the batch
            failed.append((target, f"{type(err).__name__}: {err}"))
            log(f"[{i}/{n}] {target}: FAILED: {err}")
            continue
        seconds.append(time.perf_counter() - start)
        done.append(target)
        left = (n - i) * sum(seconds) / len(seconds)
        log(f"[{i}/{n}] {target}: done in {seconds[-1]:.1f} s, about {_hms(left)} left")
    log(f"batch: {len(done)} done, {len(skipped)} skipped, {len(failed)} failed")
    for target, message in failed:
        log(f"  failed: {target}: {message}")
    return {"done": done, "skipped": skipped, "failed": failed}
