"""The episode sampler: endless batches of in-context-learning episodes for ``model.fit``.

One episode = one task, one target subject and L context subjects of the same source (never
the target itself), all on the same grid, all imaged with the same episode-level synthetic
contrasts, all turned into pairs with the same episode-level task parameters. A batch stacks B
episodes (each with its own task) that share L, in the format of ``docs/dev/CONVENTIONS.md``::

    inputs = {"target": (B, *S, Cin), "context_in": (B, L, *S, Cin),
              "context_out": (B, L, *S, Cout), "task_kind": (B,) int32}
    y_true = (B, *S, Cout)
    sample_weight = (B,) float32   # the task's loss weight

Order of operations per episode: label maps from the source (2D slices share one axis) ->
synthetic contrasts (:mod:`generators.synth`) -> :class:`~generators.subject.Subject` ->
``spatial_augmentation(subject, rng)`` per subject -> ``task.sample_episode`` ->
``task.make_pair`` per subject -> ``task_augmentation.apply`` (one episode draw for all pairs)
-> ``task_overlap(x, rng)`` on every input -> channel encoding.
"""

import inspect
import numbers
import warnings

import numpy as np

from .presets import TaskSpec, get_preset
from .sources import LabelMapSource, brain_mask_of
from .subject import Subject
from .synth import ImageSynthesizer
from .tasks import TASKS, Task, get_task

__all__ = ["ENCODINGS", "EpisodeGenerator"]

ENCODINGS = {"neuralizer": 3, "neuroverse3d": 1}
DEFAULT_SHAPES = {2: (64, 64), 3: (32, 32, 32)}
_TOLERANCE = 1e-4


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class EpisodeGenerator:
    """An infinite, seeded iterator of episode batches.

    Args:
        sources: a :class:`~generators.sources.LabelMapSource` or a list of them; each episode
            draws one source (uniformly among those with enough subjects) and all its subjects
            from it.
        tasks: a preset name (``"neuralizer"``, ``"neuroverse3d"``), a dict task name ->
            sampling weight (or -> dict with ``weight``, ``loss_weight``, ``params``), or a list
            whose items are :class:`~generators.tasks.Task` instances, ``(task, weight)`` or
            ``(task, weight, loss_weight)`` tuples, or :class:`~generators.presets.TaskSpec`.
        ndims: 2 (slices) or 3 (volumes).
        shape: the spatial shape *S (default (64, 64) or (32, 32, 32)).
        context_size: L, an int, a (min, max) pair drawn uniformly (inclusive) per batch, or a
            callable ``rng -> int``.
        batch_size: episodes per batch, B.
        encoding: ``"neuralizer"`` (3 channels, zero-padded) or ``"neuroverse3d"`` (1 channel).
        slice_axis: for 2D, None (a random axis per episode) or 0/1/2 (sagittal, coronal,
            axial in RAS+).
        seed: the same seed gives the same batches.
        task_augmentation: None or an object with ``sample_episode(rng) -> dict`` (or
            ``sample_episode(rng, kind=)``, then it gets the task's kind and may return a new
            one as ``episode["kind"]``) and ``apply(x, y, episode, rng) -> (x, y)``, e.g. a tree
            from :mod:`generators.augment`.
        spatial_augmentation: None or a callable ``(subject, rng) -> subject``.
        task_overlap: None or a callable ``(x, rng) -> x`` applied to every input image.
        holdout: subject names never used (e.g. the validation subjects).
        voxel_size: isotropic voxel size in mm; None fits each head in ``shape``.
        slice_jitter: 2D slices are drawn within this fraction of the brain's half-extent
            around its centre.
        synthesizer: an :class:`~generators.synth.ImageSynthesizer` (default: shared contrasts,
            seeded from ``seed``).
        contrasts: synthetic contrasts made for every subject (``"a"`` and ``"b"``).

    Raises:
        ValueError/TypeError: a bad argument, named in the message (unknown task or preset,
            L < 1, L too large for the sources, wrong ``shape`` for ``ndims``, ...).
    """

    def __init__(self, sources, tasks="neuralizer", ndims=2, shape=None, context_size=(1, 8),
                 batch_size=1, encoding="neuralizer", slice_axis=None, seed=0,
                 task_augmentation=None, spatial_augmentation=None, task_overlap=None,
                 holdout=None, voxel_size=None, slice_jitter=0.2, synthesizer=None,
                 contrasts=("a", "b")):
        if ndims not in (2, 3) or isinstance(ndims, bool):
            raise ValueError(f"ndims must be 2 or 3, got {ndims!r}")
        self.ndims = int(ndims)
        shape = DEFAULT_SHAPES[self.ndims] if shape is None else shape
        if (not isinstance(shape, (tuple, list)) or len(shape) != self.ndims
                or not all(_is_int(s) and s >= 4 for s in shape)):
            raise ValueError(f"shape must be {self.ndims} ints >= 4 for ndims={self.ndims}, "
                             f"got {shape!r}")
        self.shape = tuple(int(s) for s in shape)
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
        self.encoding, self.channels = encoding, ENCODINGS[encoding]
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        if slice_axis is not None and not (_is_int(slice_axis) and 0 <= slice_axis <= 2):
            raise ValueError(f"slice_axis must be None, 0, 1 or 2, got {slice_axis!r}")
        self.slice_axis = slice_axis
        if voxel_size is not None and not (isinstance(voxel_size, numbers.Real)
                                           and voxel_size > 0):
            raise ValueError(f"voxel_size must be None or a positive number, got {voxel_size!r}")
        self.voxel_size = voxel_size
        if not 0 <= slice_jitter <= 1:
            raise ValueError(f"slice_jitter must be in [0, 1], got {slice_jitter!r}")
        self.slice_jitter = float(slice_jitter)
        for name, value in (("spatial_augmentation", spatial_augmentation),
                            ("task_overlap", task_overlap)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be None or callable, got {value!r}")
        if task_augmentation is not None and not (
                hasattr(task_augmentation, "sample_episode") and hasattr(task_augmentation,
                                                                         "apply")):
            raise TypeError("task_augmentation must be None or have sample_episode(rng) and "
                            f"apply(x, y, episode, rng), got {task_augmentation!r}")
        self.task_augmentation = task_augmentation
        self._augmentation_takes_kind = False
        if task_augmentation is not None:
            parameters = inspect.signature(task_augmentation.sample_episode).parameters
            self._augmentation_takes_kind = "kind" in parameters or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        self.spatial_augmentation = spatial_augmentation
        self.task_overlap = task_overlap
        self.contrasts = tuple(contrasts)
        if "a" not in self.contrasts or "b" not in self.contrasts:
            raise ValueError(f"contrasts must include 'a' and 'b', got {contrasts!r}")

        self.sources = self._check_sources(sources, holdout)
        self.specs, self.tasks = self._build_tasks(tasks)
        weights = np.asarray([s.weight for s in self.specs], np.float64)
        self._probabilities = weights / weights.sum()
        self._context_size = self._check_context_size(context_size)

        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.synthesizer = (ImageSynthesizer(seed=self.seed) if synthesizer is None
                            else synthesizer)
        self.last_info = []

    # construction helpers ---------------------------------------------------------------------
    @staticmethod
    def _check_sources(sources, holdout):
        if isinstance(sources, LabelMapSource):
            sources = [sources]
        try:
            sources = list(sources)
        except TypeError as err:
            raise TypeError(f"sources must be a LabelMapSource or a list of them, got "
                            f"{sources!r}") from err
        if not sources or not all(isinstance(s, LabelMapSource) for s in sources):
            raise TypeError(f"sources must be a LabelMapSource or a non-empty list of them, got "
                            f"{sources!r}")
        held = set() if holdout is None else {str(n) for n in holdout}
        out = []
        for source in sources:
            available = [i for i, n in enumerate(source.names) if n not in held]
            out.append((source, available))
        return out

    def _build_tasks(self, tasks):
        specs = []
        if isinstance(tasks, str):
            preset = get_preset(tasks)
            skipped = []
            for spec in preset["tasks"]:
                if spec.name not in TASKS or self.ndims not in spec.ndims:
                    skipped.append(spec.name)
                    continue
                specs.append(spec)
            if skipped:
                warnings.warn(f"preset {tasks!r}: skipped tasks {skipped} (not registered or not "
                              f"available in {self.ndims}D)", stacklevel=3)
        elif isinstance(tasks, dict):
            for name, value in tasks.items():
                if name not in TASKS:
                    raise ValueError(f"tasks: unknown task name {name!r}; known tasks: "
                                     f"{sorted(TASKS)}")
                if isinstance(value, dict):
                    unknown = set(value) - {"weight", "loss_weight", "params"}
                    if unknown:
                        raise ValueError(f"tasks[{name!r}]: unknown keys {sorted(unknown)}; "
                                         "use weight, loss_weight, params")
                    specs.append(TaskSpec(name, value.get("weight", 1.0),
                                          value.get("loss_weight", 1.0),
                                          dict(value.get("params", {}))))
                else:
                    specs.append(TaskSpec(name, value))
        elif isinstance(tasks, (list, tuple)):
            instances = []
            for item in tasks:
                if isinstance(item, TaskSpec):
                    specs.append(item)
                    instances.append(None)
                    continue
                if isinstance(item, Task):
                    item = (item,)
                if (not isinstance(item, tuple) or not 1 <= len(item) <= 3
                        or not isinstance(item[0], Task)):
                    raise TypeError("tasks: list items must be Task, (Task, weight), (Task, "
                                    f"weight, loss_weight) or TaskSpec, got {item!r}")
                weight = item[1] if len(item) > 1 else 1.0
                loss_weight = item[2] if len(item) > 2 else 1.0
                specs.append(TaskSpec(item[0].name, weight, loss_weight))
                instances.append(item[0])
            if not specs:
                raise ValueError("tasks: the list is empty")
        else:
            raise TypeError(f"tasks must be a preset name, a dict or a list, got {tasks!r}")
        if not specs:
            raise ValueError(f"tasks: no task left to sample from {tasks!r}")
        built = []
        for i, spec in enumerate(specs):
            for field in ("weight", "loss_weight"):
                value = getattr(spec, field)
                if not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
                    raise ValueError(f"tasks: {field} of {spec.name!r} must be a finite number "
                                     f">= 0, got {value!r}")
            instance = instances[i] if isinstance(tasks, (list, tuple)) else None
            built.append(instance if instance is not None
                         else get_task(spec.name, **dict(spec.params)))
        if sum(s.weight for s in specs) <= 0:
            raise ValueError("tasks: the sampling weights sum to 0")
        return specs, built

    def _check_context_size(self, context_size):
        largest = max(len(a) for _, a in self.sources)
        if callable(context_size):
            return context_size
        if _is_int(context_size):
            lo = hi = int(context_size)
        elif (isinstance(context_size, (tuple, list)) and len(context_size) == 2
              and all(_is_int(v) for v in context_size)):
            lo, hi = (int(v) for v in context_size)
        else:
            raise TypeError(f"context_size must be an int, a (min, max) pair of ints or a "
                            f"callable rng -> int, got {context_size!r}")
        if lo < 1 or hi < lo:
            raise ValueError(f"context_size must satisfy 1 <= min <= max, got {context_size!r}")
        if hi + 1 > largest:
            raise ValueError(f"context_size max {hi} needs {hi + 1} subjects (context + target) "
                             f"but the largest source has {largest} usable subjects")
        return (lo, hi)

    def draw_context_size(self, rng=None):
        """Draw L (checked against the sources)."""
        rng = self.rng if rng is None else rng
        if callable(self._context_size):
            size = self._context_size(rng)
            if not _is_int(size) or size < 1:
                raise ValueError(f"context_size callable returned {size!r}; wanted an int >= 1")
        else:
            lo, hi = self._context_size
            size = int(rng.integers(lo, hi + 1))
        largest = max(len(a) for _, a in self.sources)
        if size + 1 > largest:
            raise ValueError(f"context_size {size} needs {size + 1} subjects but the largest "
                             f"source has {largest} usable subjects")
        return int(size)

    # sampling ---------------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        return self.sample()

    def sample(self, batch_size=None, context_size=None):
        """One batch.

        Args:
            batch_size: override of B for this batch.
            context_size: a fixed L for this batch (default: drawn).

        Returns:
            ``(inputs, y_true, sample_weight)`` as described in the module docstring. The
            details of each episode (task, subject names, parameters) are in
            :attr:`last_info`.
        """
        rng = self.rng
        batch = self.batch_size if batch_size is None else int(batch_size)
        if context_size is None:
            size = self.draw_context_size(rng)
        else:
            if not _is_int(context_size) or context_size < 1:
                raise ValueError(f"context_size must be an int >= 1, got {context_size!r}")
            size = int(context_size)
        eligible = [k for k, (_, a) in enumerate(self.sources) if len(a) >= size + 1]
        if not eligible:
            raise ValueError(f"context_size {size} needs {size + 1} subjects; no source has "
                             "that many")

        plans = []
        for _ in range(batch):
            t = int(rng.choice(len(self.specs), p=self._probabilities))
            k = int(eligible[int(rng.integers(len(eligible)))])
            source, available = self.sources[k]
            chosen = rng.choice(available, size=size + 1, replace=False)
            axis = None
            if self.ndims == 2:
                axis = int(rng.integers(3)) if self.slice_axis is None else int(self.slice_axis)
            maps = [source.sample(int(i), self.shape, self.voxel_size, axis, rng,
                                  self.slice_jitter) for i in chosen]
            plans.append((t, k, chosen, axis, maps))

        images, _ = self.synthesizer.synthesize([[m[0] for m in p[4]] for p in plans], rng,
                                                self.contrasts)
        targets, ctx_in, ctx_out, kinds, weights, info = [], [], [], [], [], []
        for e, (t, k, chosen, axis, maps) in enumerate(plans):
            task, spec = self.tasks[t], self.specs[t]
            names = self.sources[k][0].names
            subjects = []
            for j, (i, (labels, real)) in enumerate(zip(chosen, maps)):
                subject = Subject(names[int(i)], labels, {**images[e][j], **real},
                                  brain_mask_of(labels))
                if self.spatial_augmentation is not None:
                    subject = self.spatial_augmentation(subject, rng)
                subjects.append(subject)
            episode = task.sample_episode(rng, subjects)
            kind = int(task.kind)
            augment = None
            if self.task_augmentation is not None:
                if self._augmentation_takes_kind:
                    augment = self.task_augmentation.sample_episode(rng, kind=kind)
                else:
                    augment = self.task_augmentation.sample_episode(rng)
                # an augmentation may change the task kind (a Sobel filter turns a mask task
                # into an image task); it reports the new kind as episode["kind"]
                if isinstance(augment, dict) and augment.get("kind") in (0, 1):
                    kind = int(augment["kind"])
            xs, ys = [], []
            for subject in subjects:
                x, y = task.make_pair(subject, episode, rng)
                if augment is not None:
                    x, y = self.task_augmentation.apply(x, y, augment, rng)
                if self.task_overlap is not None:
                    x = self.task_overlap(x, rng)
                xs.append(self._encode(x, task, "x"))
                ys.append(self._encode(y, task, "y"))
            targets.append(xs[0])
            ctx_in.append(np.stack(xs[1:]))
            ctx_out.append(np.stack(ys[1:]))
            weights.append(spec.loss_weight)
            kinds.append(kind)
            info.append({
                "task": task.name, "config": task.get_config(), "episode": episode,
                "task_augmentation": augment, "subjects": [s.name for s in subjects],
                "source": k,
                "slice_axis": axis, "context_size": size,
                "y_true": ys[0],
            })
        self.last_info = info
        inputs = {
            "target": np.stack(targets).astype(np.float32),
            "context_in": np.stack(ctx_in).astype(np.float32),
            "context_out": np.stack(ctx_out).astype(np.float32),
            "task_kind": np.asarray(kinds, np.int32),
        }
        y_true = np.stack([i.pop("y_true") for i in info]).astype(np.float32)
        return inputs, y_true, np.asarray(weights, np.float32)

    def _encode(self, image, task, which):
        """Check a pair image and bring it to the encoding's channel count."""
        image = np.asarray(image, np.float32)
        if image.shape[:-1] != self.shape or image.ndim != self.ndims + 1:
            raise ValueError(f"task {task.name!r} returned {which} of shape {image.shape}; wanted "
                             f"({', '.join(map(str, self.shape))}, C)")
        if not np.isfinite(image).all():
            raise ValueError(f"task {task.name!r} returned non-finite values in {which}")
        lo, hi = float(image.min()), float(image.max())
        if lo < -_TOLERANCE or hi > 1 + _TOLERANCE:
            raise ValueError(f"task {task.name!r} (with augmentations) returned {which} values in "
                             f"[{lo:.4g}, {hi:.4g}]; wanted [0, 1]")
        image = np.clip(image, 0.0, 1.0)
        c = image.shape[-1]
        if c > self.channels:
            raise ValueError(f"task {task.name!r} returned {which} with {c} channels; encoding "
                             f"{self.encoding!r} takes at most {self.channels}")
        if c < self.channels:  # Neuralizer's pad_to_3_chan: unused channels are zero
            pad = np.zeros((*image.shape[:-1], self.channels - c), np.float32)
            image = np.concatenate([image, pad], axis=-1)
        return image

    # conveniences -----------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset, sources, **overrides):
        """A generator with a preset's tasks, settings (``shape``, ``ndims``, ``encoding``,
        ``context_size``, ``batch_size``, ``slice_axis``) and augmentations, any of them
        overridden (pass e.g. ``task_overlap=None`` to switch one off).

        Args:
            preset: ``"neuralizer"`` or ``"neuroverse3d"``.
            sources: as for the constructor.
            **overrides: constructor arguments.
        """
        settings = dict(get_preset(preset))
        settings.pop("tasks")
        settings["tasks"] = preset
        for key in ("task_augmentation", "spatial_augmentation", "task_overlap"):
            factory = settings.pop(f"{key}_factory", None)
            if key not in overrides:
                settings[key] = None if factory is None else factory()
        settings.update(overrides)
        return cls(sources, **settings)

    @property
    def task_table(self):
        """The (spec, task) rows sampled from, with the normalised probabilities."""
        return [(spec, task, float(p)) for spec, task, p in
                zip(self.specs, self.tasks, self._probabilities)]
