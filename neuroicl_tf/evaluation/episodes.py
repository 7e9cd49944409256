"""The fixed, seeded episode set of an evaluation: one group per (task, L, draw).

A group holds T target subjects (all held-out subjects) and L context subjects drawn from the
context pool, imaged with one episode-level synthetic contrast and turned into pairs with one
set of episode-level task parameters. Every method (ICL models, baselines, ablations) is scored
on exactly these arrays, so the comparison is on identical episodes; the same seed gives the
same set, whatever the order in which groups are built.

Pairs are kept with one channel, ``(*S, 1)``; :meth:`EpisodeGroup.model_inputs` pads them to a
model's channel count (Neuralizer's unused channels are zero) and repeats the context for every
target.
"""

import dataclasses
import zlib

import numpy as np

from .tasks import KIND_SEGMENTATION, get_eval_task

__all__ = ["EpisodeGroup", "build_episodes", "group_seed", "missing_labels"]

# A 2D slice must show at least this many voxels of a segmentation task's labels; slices that do
# not are drawn again (a structure that is absent everywhere scores Dice 1 for an empty
# prediction, which would flatter every method).
MIN_LABEL_VOXELS = 5
_MAX_TRIES = 30


@dataclasses.dataclass
class EpisodeGroup:
    """One (task, L, draw) of the evaluation, with all its targets.

    Attributes:
        task: evaluation task name (:data:`~neuroicl_tf.evaluation.tasks.EVAL_TASKS`).
        kind: 0 segmentation-like, 1 image.
        context_size: L.
        draw: index of the random context draw.
        targets: names of the T target subjects.
        context: names of the L context subjects.
        target_in: float32 (T, *S, 1) target inputs.
        target_out: float32 (T, *S, 1) the true outputs.
        context_in: float32 (L, *S, 1) context inputs.
        context_out: float32 (L, *S, 1) context outputs.
        episode: the task's episode-level parameters (e.g. the labels, the noise SD).
        slice_axis: the 2D slice axis (None in 3D).
        seed: the group's seed.
    """

    task: str
    kind: int
    context_size: int
    draw: int
    targets: list
    context: list
    target_in: np.ndarray
    target_out: np.ndarray
    context_in: np.ndarray
    context_out: np.ndarray
    episode: dict
    slice_axis: object
    seed: int

    @property
    def metric(self):
        return "dice" if self.kind == KIND_SEGMENTATION else "psnr"

    def model_inputs(self, channels_in=1, channels_out=None):
        """The group as a model batch (one episode per target, the context repeated).

        Args:
            channels_in: Cin of the model (unused channels are zero).
            channels_out: Cout of the model (default ``channels_in``).

        Returns:
            dict ``target`` (T, *S, Cin), ``context_in`` (T, L, *S, Cin), ``context_out``
            (T, L, *S, Cout), float32.
        """
        channels_out = channels_in if channels_out is None else channels_out
        count = len(self.targets)
        return {
            "target": _pad(self.target_in, channels_in),
            "context_in": np.repeat(_pad(self.context_in, channels_in)[None], count, axis=0),
            "context_out": np.repeat(_pad(self.context_out, channels_out)[None], count, axis=0),
        }


def _pad(array, channels):
    array = np.asarray(array, np.float32)
    if array.shape[-1] > channels:
        raise ValueError(f"cannot fit {array.shape[-1]} channels into a model with {channels}")
    if array.shape[-1] == channels:
        return array
    pad = np.zeros((*array.shape[:-1], channels - array.shape[-1]), np.float32)
    return np.concatenate([array, pad], axis=-1)


def group_seed(seed, task, context_size, draw):
    """The seed of one group: a pure function of (seed, task name, L, draw)."""
    parts = [int(seed), zlib.crc32(task.encode()), int(context_size), int(draw)]
    return int(np.random.SeedSequence(parts).generate_state(1)[0])


def missing_labels(source, labels, index=0):
    """The labels of ``labels`` absent from subject ``index`` of ``source`` (whole volume).

    Args:
        source: a :class:`generators.LabelMapSource`.
        labels: label numbers.
        index: the subject to look at.

    Returns:
        Sorted list of the missing label numbers (empty if all are there).
    """
    present = np.isin(np.asarray(labels), np.unique(source.load(index).labels))
    return sorted(int(v) for v, ok in zip(labels, present) if not ok)


def _encode(image, what, task):
    image = np.asarray(image, np.float32)
    if not np.isfinite(image).all():
        raise ValueError(f"task {task!r} returned non-finite values in {what}")
    if image.min() < -1e-4 or image.max() > 1 + 1e-4:
        raise ValueError(f"task {task!r} returned {what} outside [0, 1]: "
                         f"[{image.min():.4g}, {image.max():.4g}]")
    if image.shape[-1] != 1:
        raise ValueError(f"task {task!r} returned {what} with {image.shape[-1]} channels; the "
                         "evaluation handles one-channel tasks")
    return np.clip(image, 0.0, 1.0)


def _sample_subject(source, index, shape, voxel_size, axis, rng, jitter, labels):
    """One subject's label map (and real images); 2D slices are drawn again until they show
    ``labels`` (when given), after some tries anywhere in the brain."""
    for attempt in range(_MAX_TRIES):
        # a third of the tries near the brain's centre as asked, then anywhere in the brain
        wide = jitter if attempt < _MAX_TRIES // 3 else 1.0
        maps, images = source.sample(int(index), shape, voxel_size, axis, rng, wide)
        if not labels or np.isin(maps, labels).sum() >= MIN_LABEL_VOXELS:
            return maps, images
        if len(shape) == 3:
            break
    raise ValueError(f"subject {source.names[int(index)]!r} shows fewer than "
                     f"{MIN_LABEL_VOXELS} voxels of labels {list(labels)} in "
                     f"{'its crop' if len(shape) == 3 else f'{_MAX_TRIES} slices'} "
                     f"(slice axis {axis}); choose another task or slice axis")


def build_episodes(targets, pool, tasks, context_sizes, draws, shape, seed=0, slice_axis=1,
                   voxel_size=None, slice_jitter=0.2, real=False, synthesizer=None,
                   progress=None):
    """Build the evaluation's episode groups.

    Args:
        targets: a :class:`generators.LabelMapSource` of the target (held-out) subjects; every
            group uses all of them.
        pool: a :class:`generators.LabelMapSource` of the context subjects; each group draws L
            of them without replacement.
        tasks: evaluation task names.
        context_sizes: the L values (each <= ``len(pool)``).
        draws: number of random context draws per (task, L).
        shape: spatial shape *S (2 ints for slices, 3 for volumes).
        seed: the same seed gives the same groups.
        slice_axis: 2D only: 0, 1, 2 (sagittal, coronal, axial) or None (drawn per group).
        voxel_size: isotropic voxel size in mm; None fits each head in ``shape`` (as training).
        slice_jitter: 2D slices are drawn within this fraction of the brain's half-extent.
        real: use the subjects' real scans (``images["real"]``) as the input images.
        synthesizer: a :class:`generators.ImageSynthesizer` (default: one seeded with ``seed``);
            a new one, not yet run at this grid (its model is traced here under ``seed``).
        progress: optional callable ``(done, total)``.

    Returns:
        List of :class:`EpisodeGroup`, ordered by task, L, draw.

    Raises:
        ValueError: empty sources, an L larger than the pool, a bad number of draws, an
            unknown task, or a subject without the task's labels.
    """
    import generators

    from .. import _compat

    tf = _compat.import_tensorflow()
    shape = tuple(int(s) for s in shape)
    if len(targets) < 1:
        raise ValueError("targets: the source of target subjects is empty")
    if len(pool) < 1:
        raise ValueError("pool: the context pool is empty")
    overlap = sorted(set(targets.names) & set(pool.names))
    if overlap:
        raise ValueError(f"targets and pool share subjects {overlap[:5]}; targets must be "
                         "held out of the context pool")
    sizes = [int(v) for v in context_sizes]
    too_big = [v for v in sizes if v > len(pool)]
    if too_big or any(v < 1 for v in sizes):
        raise ValueError(f"context_sizes: every L must be in [1, {len(pool)}] (the context pool "
                         f"has {len(pool)} subjects), got {sizes}")
    if int(draws) < 1:
        raise ValueError(f"draws must be >= 1, got {draws!r}")
    specs = [get_eval_task(name) for name in tasks]
    synthesizer = generators.ImageSynthesizer(seed=seed) if synthesizer is None else synthesizer
    # A TensorFlow random op takes the global seed in force when its function is traced, and
    # tf.random.set_seed later only resets its state: trace neurite's model under ``seed`` now,
    # so that no group's seed (whichever comes first) is baked into every later group.
    tf.random.set_seed(seed)
    synthesizer.render(np.zeros((1, *shape), np.int32))
    total = len(specs) * len(sizes) * int(draws)
    groups = []
    for spec in specs:
        task = spec.build(real=real)
        for size in sizes:
            for draw in range(int(draws)):
                s = group_seed(seed, spec.name, size, draw)
                groups.append(_build_group(spec, task, targets, pool, size, draw, s, shape,
                                           slice_axis, voxel_size, slice_jitter, synthesizer,
                                           generators, tf))
                if progress is not None:
                    progress(len(groups), total)
    return groups


def _build_group(spec, task, targets, pool, size, draw, seed, shape, slice_axis, voxel_size,
                 jitter, synthesizer, generators, tf):
    rng = np.random.default_rng(seed)
    chosen = [int(i) for i in rng.choice(len(pool), size=size, replace=False)]
    axis = None
    if len(shape) == 2:
        axis = int(rng.integers(3)) if slice_axis is None else int(slice_axis)
    labels = list(spec.labels)
    members = [(targets, i) for i in range(len(targets))] + [(pool, i) for i in chosen]
    maps = [_sample_subject(src, i, shape, voxel_size, axis, rng, jitter, labels)
            for src, i in members]
    # neurite's voxel-noise op keeps a state; resetting the global seed makes the group's
    # images a function of its own seed only.
    tf.random.set_seed(seed)
    images, _ = synthesizer.synthesize([[m[0] for m in maps]], rng)
    subjects = []
    for (src, i), (lab, real), synthetic in zip(members, maps, images[0]):
        subjects.append(generators.Subject(src.names[i], lab, {**synthetic, **real},
                                           generators.brain_mask_of(lab)))
    episode = task.sample_episode(rng, subjects)
    xs, ys = [], []
    for subject in subjects:
        x, y = task.make_pair(subject, episode, rng)
        xs.append(_encode(x, "x", spec.name))
        ys.append(_encode(y, "y", spec.name))
    count = len(targets)
    return EpisodeGroup(
        task=spec.name, kind=spec.kind, context_size=size, draw=draw,
        targets=[s.name for s in subjects[:count]], context=[s.name for s in subjects[count:]],
        target_in=np.stack(xs[:count]), target_out=np.stack(ys[:count]),
        context_in=np.stack(xs[count:]), context_out=np.stack(ys[count:]),
        episode=episode, slice_axis=axis, seed=seed,
    )
