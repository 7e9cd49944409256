"""The model of a run, its subjects and its episodes: training episodes streamed as a
``tf.data.Dataset`` whose step ``s`` depends only on ``(seed, worker, s)``, and the fixed
validation sets."""

import numpy as np

from .. import _compat
from .config import TrainConfigError

tf = _compat.import_tensorflow()

__all__ = ["build_model"]


def build_model(config):
    """Build the model and its loss for a validated :class:`TrainConfig`."""
    from ..losses import TaskLoss
    from ..models import Neuralizer, Neuroverse3D

    spec = config.model_config()
    if spec["class"] == "Neuralizer":
        model = Neuralizer(ndims=config.ndims, stages=config.stages, channels=config.channels)
        loss = TaskLoss.neuralizer()
    else:
        model = Neuroverse3D(channels=config.channels, ndims=config.ndims, shuffle=True,
                             mini_context=config.mini_context)
        loss = TaskLoss.neuroverse3d()
    return model, loss


def _subjects(config):
    """Training and validation subject sources: the last ``holdout`` of each source validate."""
    import generators

    sources = []
    if config.labels:
        sources.append(generators.LabelMapFolder(list(config.labels)))
    if config.mni:
        sources.append(generators.MNISubjects(n=int(config.mni), seed=config.seed))
    if config.procedural:
        shape = tuple(max(s, 32) for s in config.shape) + (max(config.shape),) * (
            3 - config.ndims
        )
        sources.append(
            generators.ProceduralLabelMaps(n=int(config.procedural), shape=shape, seed=config.seed)
        )
    train, val = [], []
    for source in sources:
        fit_part, held_part = source.split(config.holdout, seed=config.seed)
        train.append(fit_part)
        val.append(held_part)
    return train, val


_AUGMENTATIONS = {}


def _augmentations(config):
    """The model family's preset augmentations (task, spatial, task overlap), made once."""
    import generators

    family = "neuralizer" if config.model == "neuralizer" else "neuroverse3d"
    if family not in _AUGMENTATIONS:
        preset = generators.get_preset(family)
        _AUGMENTATIONS[family] = {
            key: (factory() if factory else None)
            for key, factory in (
                (key, preset.get(f"{key}_factory"))
                for key in ("task_augmentation", "spatial_augmentation", "task_overlap")
            )
        }
    return _AUGMENTATIONS[family]


def _episode_kwargs(config, augment=False):
    extra = _augmentations(config) if augment and config.augment else {}
    return dict(
        **extra,
        synthesizer=_synthesizer(config),
        tasks=config.tasks,
        ndims=config.ndims,
        shape=config.shape,
        context_size=config.context_size,
        batch_size=config.batch_size,
        encoding="neuralizer" if config.model == "neuralizer" else "neuroverse3d",
    )


_SYNTHESIZERS = {}


def _synthesizer(config):
    """One image synthesizer per run: building neurite's model and tracing it is the costly
    part of synthesis (seconds), so every generator of the run shares it."""
    import generators

    key = config.seed
    if key not in _SYNTHESIZERS:
        _SYNTHESIZERS[key] = generators.ImageSynthesizer(seed=config.seed)
    return _SYNTHESIZERS[key]


def _step_seed(*parts):
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _round_start(step, config):
    """The step at which the fit round holding ``step`` began (rounds end at every multiple
    of ``checkpoint_every`` and of ``val_every``)."""
    return max(step // config.checkpoint_every * config.checkpoint_every,
               step // config.val_every * config.val_every)


def _episode_dataset(sources, config, step, stop, worker):
    """Batches for the global steps ``step, ..., stop - 1`` of one fit round.

    The round's episodes depend only on ``(seed, worker, round start)``: the numpy draws come
    from a generator seeded with it, and neurite's TensorFlow random ops, whose state lives in
    the run's one synthesis function, are reset to it with ``tf.random.set_seed``. A run resumed
    in the middle of a round (after an interrupt) fast-forwards from the round's start, so it
    sees the data an uninterrupted run saw. ``take`` keeps the input pipeline from drawing
    episodes past the round's end in a background thread, which would move that state.
    """
    import generators

    start = _round_start(step, config)
    seed = _step_seed(config.seed, worker, start)
    tf.random.set_seed(seed)
    episodes = generators.EpisodeGenerator(sources, seed=seed,
                                           **_episode_kwargs(config, augment=True))
    for _ in range(step - start):
        next(episodes)
    first = next(episodes)
    # Batch and context length free; the episode grid and the channels stay static.
    signature = _signature(first)

    def stream():
        yield first
        yield from episodes

    dataset = tf.data.Dataset.from_generator(stream, output_signature=signature)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).take(stop - step).prefetch(2)


def _spec(array, context=False):
    """A TensorSpec with the batch (and for context tensors the L) dimension free."""
    array = np.asarray(array)
    shape = [None] + list(array.shape[1:])
    if context:
        shape[1] = None
    return tf.TensorSpec(shape, tf.as_dtype(array.dtype))


def _signature(batch):
    inputs = {key: _spec(value, context=key.startswith("context"))
              for key, value in batch[0].items()}
    return (inputs, *(_spec(part) for part in batch[1:]))


def _validation_sets(sources, config):
    """Fixed validation batches for every row of the task table, from held-out subjects."""
    import generators

    kwargs = dict(_episode_kwargs(config), batch_size=1)
    available = max(len(source) for source in sources) - 1
    if available < 1:
        raise TrainConfigError(
            f"holdout: validation needs at least 2 held-out subjects per source, got "
            f"{available + 1}"
        )
    lo, hi = config.context_size
    kwargs["context_size"] = (min(lo, available), min(hi, available))
    table = generators.EpisodeGenerator(sources, seed=config.seed, **kwargs).task_table
    names = [spec.name for spec, _, _ in table]
    sets = {}
    for index, (spec, _, _) in enumerate(table):
        label = spec.name
        if names.count(spec.name) > 1:
            label += "(" + ",".join(f"{k}={v}" for k, v in sorted(spec.params.items())) + ")"
        seed = _step_seed(config.seed, 10**6, index)
        tf.random.set_seed(seed)
        episodes = generators.EpisodeGenerator(sources, seed=seed, **dict(kwargs, tasks=[spec]))
        sets[label] = [next(episodes) for _ in range(config.val_episodes)]
    return sets
