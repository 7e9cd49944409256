"""Training in-context models: one library function behind ``neuroicl-train``.

:func:`train` builds a model inside a ``tf.distribute`` strategy, streams synthetic episodes from
label maps, fits with Adam and learning-rate halving on a validation plateau (as Neuroverse3D
did), checkpoints every N steps and on interrupt, resumes exactly, logs to TensorBoard and ends
with a per-task validation summary.

Exact resume rests on three choices:

* the global step is the optimiser's own ``iterations`` counter, updated in the same graph as
  the weights, so a checkpoint never disagrees with the weights it holds;
* the episodes of step ``s`` are a pure function of ``(seed, worker, s)``, so the data after a
  resume are the data an uninterrupted run would have seen;
* the plateau state (best validation loss, validations without improvement, learning rate) is
  part of the checkpoint.
"""

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np

from . import _compat
from ._interrupt import Interrupt, StopOnSignal

tf = _compat.import_tensorflow()

__all__ = ["TrainConfigError", "train", "build_strategy", "parse_context_size"]

STRATEGIES = ("default", "mirrored", "multiworker")
MODELS = ("neuralizer", "neuroverse3d")
CONFIG_NAME = "train_config.json"
SUMMARY_NAME = "summary.json"
HISTORY_NAME = "runs.jsonl"


class TrainConfigError(ValueError):
    """A training configuration that cannot run; raised before any work is done."""


def parse_context_size(value):
    """Parse a context-size distribution.

    Args:
        value: an int L, a pair ``(lo, hi)`` (uniform, inclusive), or a string ``"8"`` /
            ``"1-8"`` / ``"1..8"``.

    Returns:
        ``(lo, hi)`` with ``1 <= lo <= hi``.

    Raises:
        TrainConfigError: for anything else, or L < 1.
    """
    if isinstance(value, str):
        text = value.replace("..", "-").strip()
        try:
            parts = [int(p) for p in text.split("-")] if text else []
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            raise TrainConfigError(
                f"context_size: expected 'L' or 'LO-HI' (e.g. '1-8'), got {value!r}"
            )
        value = parts
    if isinstance(value, (int, np.integer)):
        lo = hi = int(value)
    else:
        values = [int(v) for v in value]
        if len(values) == 1:
            values = values * 2
        if len(values) != 2:
            raise TrainConfigError(f"context_size: expected L or (lo, hi), got {value!r}")
        lo, hi = values
    if lo < 1 or hi < lo:
        raise TrainConfigError(
            f"context_size: need 1 <= lo <= hi (at least one context pair), got ({lo}, {hi})"
        )
    return lo, hi


# --------------------------------------------------------------------------------------------
# Strategies


def build_strategy(name="default", cpu_devices=None, gpus=None):
    """Make the ``tf.distribute`` strategy for a run.

    Args:
        name: ``"default"`` (one device), ``"mirrored"`` (all GPUs of this machine, or
            ``cpu_devices`` logical CPUs when there is no GPU) or ``"multiworker"`` (a cluster
            described by the ``TF_CONFIG`` environment variable).
        cpu_devices: split the CPU into this many logical devices (only before TensorFlow has
            initialised its devices). Lets ``mirrored`` be tested on a CPU-only machine.
        gpus: the number of GPUs the run needs; an error if fewer are present.

    Returns:
        A ``tf.distribute.Strategy``.

    Raises:
        TrainConfigError: unknown name, missing devices, or missing/invalid ``TF_CONFIG``.
    """
    if name not in STRATEGIES:
        raise TrainConfigError(f"strategy: expected one of {STRATEGIES}, got {name!r}")
    if name == "multiworker":
        _check_tf_config()
    if cpu_devices:
        _split_cpu(int(cpu_devices))
    present = tf.config.list_physical_devices("GPU")
    if gpus is not None and int(gpus) > len(present):
        raise TrainConfigError(
            f"gpus: the run needs {gpus} GPU(s) but this machine has {len(present)}"
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if present:
            devices = [f"/gpu:{i}" for i in range(int(gpus) if gpus else len(present))]
        else:
            cpus = tf.config.list_logical_devices("CPU")
            devices = [d.name for d in cpus]
        return tf.distribute.MirroredStrategy(devices=devices)
    communication = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=communication)


def _check_tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise TrainConfigError(
            "strategy 'multiworker' needs the TF_CONFIG environment variable (cluster and task); "
            "see docs/training.md"
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise TrainConfigError(f"TF_CONFIG is not a valid cluster description: {err}") from err
    if task.get("type") != "worker" or not 0 <= index < len(workers):
        raise TrainConfigError(
            f"TF_CONFIG task {task} does not name one of the {len(workers)} workers"
        )


def _split_cpu(count):
    if count < 1:
        raise TrainConfigError(f"cpu_devices: expected >= 1, got {count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as err:
        raise TrainConfigError(
            f"cpu_devices={count}: TensorFlow's devices are already initialised in this "
            "process; split the CPU before anything else runs"
        ) from err


def _is_chief_from_env(strategy_name):
    if strategy_name != "multiworker":
        return True
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    return int(task["index"]) == 0


def _worker_info(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0, 1, True
    index = int(resolver.task_id)
    count = len(resolver.cluster_spec().as_dict().get("worker", [])) or 1
    return index, count, index == 0


# --------------------------------------------------------------------------------------------
# Configuration


DEFAULT_LR = 1e-4


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved as JSON beside the checkpoints."""

    out: str
    # None: the family of ``init``'s model, else "neuralizer".
    model: str = None
    ndims: int = None
    shape: tuple = None
    channels: object = None
    stages: int = None
    tasks: object = None
    labels: tuple = ()
    mni: int = 0
    procedural: int = 0
    holdout: int = 4
    context_size: object = (1, 8)
    mini_context: int = None
    batch_size: int = 1
    # None: DEFAULT_LR for a new run; on resume, None keeps the checkpoint's rate (which the
    # plateau rule may have lowered) and a value replaces it.
    lr: float = None
    clipnorm: float = 1.0
    plateau_patience: int = 20
    plateau_factor: float = 0.5
    min_lr: float = 1e-6
    steps: int = 1000
    val_every: int = 100
    val_episodes: int = 8
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    time_limit: float = None
    strategy: str = "default"
    cpu_devices: int = None
    gpus: int = None
    seed: int = 0
    augment: bool = True
    tensorboard: bool = True
    progress: bool = True
    # A model file (or default-2d / default-3d) whose weights start a new run.
    init: str = None

    def model_config(self):
        """The architecture part: a resume must match it exactly."""
        if self.model == "neuralizer":
            return {
                "class": "Neuralizer",
                "ndims": self.ndims,
                "stages": self.stages,
                "channels": self.channels,
                "in_channels": 3,
                "out_channels": 3,
            }
        return {
            "class": "Neuroverse3D",
            "ndims": self.ndims,
            "channels": list(self.channels),
            "in_channels": 1,
            "out_channels": 1,
        }


_FAMILIES = {"Neuralizer": "neuralizer", "Neuroverse3D": "neuroverse3d"}


def _read_init(config):
    """Resolve ``config.init`` and fill the architecture fields left unset from its file.

    Returns:
        The saved model's architecture (the keys of :meth:`TrainConfig.model_config`), to be
        compared once the configuration is complete.
    """
    from .models.base import read_header
    from .predict.models import resolve_model

    try:
        config.init = resolve_model(config.init, option="init")
    except (OSError, ValueError) as err:
        raise TrainConfigError(str(err)) from None
    try:
        class_name, saved = read_header(config.init)
    except (OSError, ValueError) as err:
        raise TrainConfigError(f"init: {err}") from None
    if class_name not in _FAMILIES:
        raise TrainConfigError(f"init: {config.init} holds a {class_name}, which neuroicl-train "
                               f"does not train (it trains {sorted(_FAMILIES)})")
    family = _FAMILIES[class_name]
    if config.model is None:
        config.model = family
    elif config.model != family:
        raise TrainConfigError(f"init: {config.init} holds a {class_name}, but model is "
                               f"{config.model!r}; drop --model or give --model {family}")
    for name in ("ndims", "channels") + (("stages",) if family == "neuralizer" else ()):
        if getattr(config, name) is None:
            setattr(config, name, saved[name])
    return {"class": class_name, **saved}


def _validate(config):
    """Fill defaults and refuse configurations that cannot run, before any work."""
    saved = _read_init(config) if config.init is not None else None
    if config.model is None:
        config.model = "neuralizer"
    if config.model not in MODELS:
        raise TrainConfigError(f"model: expected one of {MODELS}, got {config.model!r}")
    if config.strategy not in STRATEGIES:
        raise TrainConfigError(f"strategy: expected one of {STRATEGIES}, got {config.strategy!r}")
    neuralizer = config.model == "neuralizer"
    if config.ndims is None:
        config.ndims = 2 if neuralizer else 3
    if config.ndims not in (2, 3):
        raise TrainConfigError(f"ndims: expected 2 or 3, got {config.ndims}")
    if config.shape is None:
        config.shape = (64,) * config.ndims
    config.shape = tuple(int(s) for s in config.shape)
    if len(config.shape) != config.ndims:
        raise TrainConfigError(
            f"shape: {config.ndims}D model needs {config.ndims} sizes, got {config.shape}"
        )
    if neuralizer:
        config.channels = int(config.channels or 64)
        config.stages = int(config.stages or 4)
        stages = config.stages
        if config.mini_context is not None:
            raise TrainConfigError(
                "mini_context: Neuralizer has no mini-context processing (APSP is Neuroverse3D's)"
            )
    else:
        if config.channels is None:
            config.channels = (32, 64, 128, 256, 512)
        if isinstance(config.channels, str):
            config.channels = [int(c) for c in config.channels.split(",")]
        config.channels = [int(c) for c in config.channels]
        stages = len(config.channels)
    factor = 2 ** (stages - 1)
    if any(s % factor for s in config.shape):
        raise TrainConfigError(
            f"shape: every size must be divisible by 2**(stages-1) = {factor}, got {config.shape}"
        )
    config.context_size = parse_context_size(config.context_size)
    lo, hi = config.context_size
    if config.mini_context is not None:
        if int(config.mini_context) < 1:
            raise TrainConfigError(f"mini_context: expected >= 1, got {config.mini_context}")
        if int(config.mini_context) > hi:
            raise TrainConfigError(
                f"mini_context: {config.mini_context} is larger than the largest context "
                f"({hi}); it must be at most the context size"
            )
        config.mini_context = int(config.mini_context)
    if config.time_limit is not None:
        if not (isinstance(config.time_limit, (int, float)) and config.time_limit > 0):
            raise TrainConfigError(
                f"time_limit: expected a positive number of minutes, got {config.time_limit!r}"
            )
        config.time_limit = float(config.time_limit)
    if config.lr is not None:
        if isinstance(config.lr, bool) or not isinstance(config.lr, (int, float)) or \
                not config.lr > 0:
            raise TrainConfigError(f"lr: expected a positive learning rate, got {config.lr!r}")
        config.lr = float(config.lr)
    for name in ("steps", "val_every", "checkpoint_every", "batch_size", "val_episodes"):
        if int(getattr(config, name)) < 1:
            raise TrainConfigError(f"{name}: expected >= 1, got {getattr(config, name)}")
    if not config.labels and not config.mni and not config.procedural:
        raise TrainConfigError(
            "no subjects: give label maps (labels=...), MNI-derived subjects (mni=N) or "
            "procedural ones (procedural=N)"
        )
    if config.tasks is None:
        config.tasks = "neuralizer" if neuralizer else "neuroverse3d"
    _check_tasks(config.tasks)
    config.labels = tuple(str(p) for p in config.labels)
    if saved is not None:
        wanted = json.loads(json.dumps(config.model_config()))
        found = {k: saved.get(k) for k in wanted}
        if found != wanted:
            differ = ", ".join(f"{k} {found[k]!r} (requested {wanted[k]!r})" for k in wanted
                               if found[k] != wanted[k])
            raise TrainConfigError(f"init: {config.init} is another architecture: {differ}; "
                                   "leave these options out to take them from the file")
    return config


def _check_tasks(tasks):
    """Refuse a task table whose tasks, weights or parameters cannot be built."""
    if not isinstance(tasks, dict):
        return  # a preset name (or a list of tasks) is checked by the episode generator
    from generators.tasks import TASKS, get_task

    if not tasks:
        raise TrainConfigError("tasks: the table is empty")
    for name, value in tasks.items():
        if name not in TASKS:
            raise TrainConfigError(f"tasks: unknown task {name!r}; known tasks: {sorted(TASKS)}")
        value = value if isinstance(value, dict) else {"weight": value}
        unknown = set(value) - {"weight", "loss_weight", "params"}
        if unknown:
            raise TrainConfigError(f"tasks[{name!r}]: unknown keys {sorted(unknown)}; use "
                                   "weight, loss_weight, params")
        for key in ("weight", "loss_weight"):
            number = value.get(key, 1.0)
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
                raise TrainConfigError(f"tasks[{name!r}]: {key} must be a number > 0, got "
                                       f"{number!r}")
        params = value.get("params", {})
        if not isinstance(params, dict):
            raise TrainConfigError(f"tasks[{name!r}]: params must be a dict, got {params!r}")
        try:
            get_task(name, **params)
        except (TypeError, ValueError) as err:
            raise TrainConfigError(f"tasks[{name!r}]: {err}") from None


# --------------------------------------------------------------------------------------------
# Model, subjects and episodes


def build_model(config):
    """Build the model and its loss for a validated :class:`TrainConfig`."""
    from .losses import TaskLoss
    from .models import Neuralizer, Neuroverse3D

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


# --------------------------------------------------------------------------------------------
# Checkpoints


def _prepare_out(config, resume):
    """Refuse to overwrite a run, or to resume one of another architecture."""
    ckpt_dir = os.path.join(config.out, "checkpoints")
    config_path = os.path.join(config.out, CONFIG_NAME)
    has_run = os.path.exists(config_path) or tf.train.latest_checkpoint(ckpt_dir)
    if has_run and not resume:
        raise TrainConfigError(
            f"out: {config.out!r} already holds a run; pass resume=True (--resume) to continue "
            "it, or choose a new output folder"
        )
    if resume:
        if not tf.train.latest_checkpoint(ckpt_dir) or not os.path.exists(config_path):
            raise TrainConfigError(f"resume: no checkpoint to resume in {ckpt_dir!r}")
        with open(config_path) as f:
            saved = json.load(f)
        wanted = json.loads(json.dumps(config.model_config()))
        if saved.get("model") != wanted:
            raise TrainConfigError(
                f"resume: the checkpoint in {config.out!r} is of another architecture: "
                f"saved {saved.get('model')}, requested {wanted}"
            )
    return ckpt_dir


def _task_rows(tasks):
    """``tasks`` in one comparable form: a preset name, or ``{name: {weight, loss_weight,
    params}}`` with every field filled."""
    if not isinstance(tasks, dict):
        return tasks
    rows = {}
    for name, value in sorted(tasks.items()):
        value = value if isinstance(value, dict) else {"weight": value}
        rows[name] = {"weight": float(value.get("weight", 1.0)),
                      "loss_weight": float(value.get("loss_weight", 1.0)),
                      "params": dict(value.get("params", {}))}
    return json.loads(json.dumps(rows))


def _previous_tasks(out):
    """The task table the checkpoint in ``out`` was last trained on: the last runs.jsonl line
    that records one, else train_config.json's (the first run's)."""
    tasks = None
    history = os.path.join(out, HISTORY_NAME)
    if os.path.exists(history):
        with open(history) as f:
            for line in f:
                if line.strip():
                    tasks = json.loads(line).get("tasks", tasks)
    if tasks is None:
        with open(os.path.join(out, CONFIG_NAME)) as f:
            tasks = json.load(f)["train"].get("tasks")
    return _task_rows(tasks)


def _write_json(path, payload):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# The run


def train(out, **kwargs):
    """Train an in-context model on synthetic episodes.

    The keyword names are those of ``neuroicl-train``'s flags (see :class:`TrainConfig` for
    every field and its default).

    Args:
        out: output folder: ``train_config.json``, ``checkpoints/``, ``logs/`` (TensorBoard),
            ``model.h5`` (final weights, loadable with ``ICLModel.load``), ``summary.json``.
        **kwargs: model (``"neuralizer"``/``"neuroverse3d"``; default ``init``'s family, else
            ``"neuralizer"``), ndims, shape, channels, stages,
            tasks (preset name or ``{name: weight}``), labels (NIfTI label-map folders/files),
            mni, procedural (numbers of embedded/procedural subjects), holdout, context_size,
            mini_context, batch_size, lr (default 1e-4; with ``resume``, a value replaces the
            checkpoint's rate and ``None`` keeps it), clipnorm, plateau_patience,
            plateau_factor, min_lr,
            steps, val_every, val_episodes, checkpoint_every, keep_checkpoints, resume,
            time_limit (minutes of wall time: at the first round boundary past it the run
            checkpoints, writes ``model.h5`` and returns; ``--resume`` continues it),
            augment (the model family's preset task/spatial augmentations on training episodes),
            strategy (``"default"``/``"mirrored"``/``"multiworker"``), cpu_devices, gpus, seed,
            tensorboard, progress, init (``"default-2d"``, ``"default-3d"`` or an
            ``ICLModel`` ``.h5`` file, e.g. another run's ``model.h5``: a new run starts from
            its weights with a fresh optimiser at step 0; unset architecture options are taken
            from the file, given ones must match it; ignored on ``resume``, whose checkpoint
            holds the weights).

    Returns:
        The summary dict (also written to ``summary.json``).

    Raises:
        TrainConfigError: for a configuration that cannot run, before any work is done.
        KeyboardInterrupt: after saving a checkpoint, when the run is interrupted.
    """
    resume = bool(kwargs.pop("resume", False))
    unknown = set(kwargs) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise TrainConfigError(f"unknown training option(s): {sorted(unknown)}")
    config = _validate(TrainConfig(out=str(out), **kwargs))
    if config.strategy == "multiworker":
        _check_tf_config()
    # Only the chief (worker 0) owns the output folder; others may share it on a cluster.
    ckpt_dir = os.path.join(config.out, "checkpoints")
    if _is_chief_from_env(config.strategy):
        _prepare_out(config, resume)
    strategy = build_strategy(config.strategy, config.cpu_devices, config.gpus)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise TrainConfigError(
            f"batch_size: {config.batch_size} does not split over the strategy's {replicas} "
            "replicas; use a multiple"
        )
    worker, _, chief = _worker_info(strategy)
    train_sources, val_sources = _subjects(config)
    largest = max(len(source) for source in train_sources)
    if config.context_size[1] + 1 > largest:
        raise TrainConfigError(
            f"context_size: the largest context ({config.context_size[1]} pairs) needs "
            f"{config.context_size[1] + 1} training subjects in one source (target + context); "
            f"the largest training source has {largest} after holding out {config.holdout}: "
            "lower the context size or give more subjects"
        )

    if config.lr is None and not resume:
        config.lr = DEFAULT_LR
    # Same seed, same initial weights: a resumed run restores them anyway, and two runs of one
    # configuration start alike.
    tf.keras.utils.set_random_seed(config.seed)
    # Weights to start from: read outside the strategy's scope (plain variables), assigned
    # to the run's (possibly mirrored) ones below. A resumed run takes its checkpoint's.
    initial = None
    if config.init and not resume:
        from .models import ICLModel

        initial = ICLModel.load(config.init).get_weights()
    with strategy.scope():
        model, loss = build_model(config)
        if initial is not None:
            model.set_weights(initial)
        # Resumed without a rate (config.lr None), the checkpoint's rate overwrites this one.
        optimizer = tf.keras.optimizers.Adam(config.lr or DEFAULT_LR, clipnorm=config.clipnorm)
        model.compile(optimizer=optimizer, loss=loss)
        optimizer.build(model.trainable_variables)
        best = tf.Variable(np.inf, dtype=tf.float32, trainable=False, name="plateau_best")
        wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_wait")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, best=best, wait=wait)
    # Only the chief keeps checkpoints; other workers write to a scratch folder (TF requires
    # every worker to take part in saving under MultiWorkerMirroredStrategy).
    save_dir = ckpt_dir if chief else os.path.join(config.out, f"worker-{worker}-scratch")
    manager = tf.train.CheckpointManager(checkpoint, save_dir, config.keep_checkpoints)
    if resume:
        checkpoint.restore(tf.train.latest_checkpoint(ckpt_dir)).assert_existing_objects_matched()
        restored = float(optimizer.learning_rate.numpy())
        if config.lr is not None and not np.isclose(restored, config.lr, rtol=1e-6, atol=0):
            # An explicit rate on resume replaces the checkpoint's (which may be the plateau
            # rule's); without one the run continues exactly.
            optimizer.learning_rate.assign(config.lr)
            if chief:
                print(f"lr: {config.lr:g} replaces the checkpoint's {restored:g}",
                      file=sys.stderr)
        if _previous_tasks(config.out) != _task_rows(config.tasks):
            # Another task table (e.g. other loss weights) puts the validation loss on another
            # scale: the plateau rule starts over instead of comparing with the old best.
            best.assign(np.inf)
            wait.assign(0)
            if chief:
                print("tasks differ from the checkpoint's last run: the plateau rule starts "
                      "over", file=sys.stderr)
    elif chief:
        os.makedirs(config.out, exist_ok=True)
        _write_json(os.path.join(config.out, CONFIG_NAME),
                    {"model": config.model_config(), "train": dataclasses.asdict(config)})

    step = int(optimizer.iterations.numpy())
    start_step, started = step, time.perf_counter()
    start_lr = float(optimizer.learning_rate.numpy())
    fit_seconds, history, stopped = 0.0, [], None
    # From here on an interrupt (Ctrl-C, or SIGTERM from a scheduler) leaves a checkpoint.
    interrupt = Interrupt()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals reach only that one
        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        writer = None
        if config.tensorboard and chief:
            writer = tf.summary.create_file_writer(os.path.join(config.out, "logs"))
        val_sets = _validation_sets(val_sources, config)
        fit_kwargs = {"mini_context": config.mini_context} if config.mini_context else {}
        progbar = tf.keras.utils.Progbar(config.steps, verbose=1 if config.progress else 0,
                                         unit_name="step")
        while step < config.steps:
            interrupt.check()
            boundary = min(
                _next_multiple(step, config.checkpoint_every),
                _next_multiple(step, config.val_every),
                config.steps,
            )
            dataset = _episode_dataset(train_sources, config, step, boundary, worker)
            tick = time.perf_counter()
            logs = model.fit(dataset, steps_per_epoch=boundary - step, epochs=1, verbose=0,
                             callbacks=[StopOnSignal(interrupt)], **fit_kwargs).history
            fit_seconds += time.perf_counter() - tick
            interrupt.check()
            step = int(optimizer.iterations.numpy())
            train_loss = float(logs["loss"][-1])
            record = {"step": step, "loss": train_loss,
                      "lr": float(optimizer.learning_rate.numpy())}
            if step % config.val_every == 0 or step >= config.steps:
                scores = _validate_model(model, val_sets, config)
                record.update(scores)
                _plateau(optimizer, best, wait, scores["val_loss"], config)
            if step % config.checkpoint_every == 0 or step >= config.steps:
                manager.save(checkpoint_number=step)
            history.append(record)
            _log(writer, record)
            progbar.update(step, [("loss", train_loss)])
            elapsed = time.perf_counter() - started
            if config.time_limit and step < config.steps and elapsed >= 60 * config.time_limit:
                if step % config.checkpoint_every:
                    manager.save(checkpoint_number=step)
                stopped = f"time limit ({config.time_limit:g} min) reached at step {step}"
                break
    except KeyboardInterrupt:
        step = int(optimizer.iterations.numpy())
        path = manager.save(checkpoint_number=step)
        print(f"\nInterrupted at step {step}; checkpoint saved to {path}. "
              "Continue with --resume.", file=sys.stderr)
        if chief:  # the run's record, so that a recipe's history has no hole
            done = step - start_step
            _append_run(config, start_step, start_lr, {
                "steps": step, "steps_this_run": done,
                "wall_seconds": round(time.perf_counter() - started, 1),
                "steps_per_second": round(done / fit_seconds, 4) if fit_seconds else None,
                "replicas": replicas, "stopped": f"interrupted at step {step}",
                "final": history[-1] if history else None, "checkpoint": path,
            })
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    wall = time.perf_counter() - started
    done = step - start_step
    summary = {
        "steps": step,
        "steps_this_run": done,
        "wall_seconds": round(wall, 1),
        "steps_per_second": round(done / fit_seconds, 4) if fit_seconds else None,
        "replicas": replicas,
        "stopped": stopped or "finished",
        "final": history[-1] if history else None,
        "validation": _validate_model(model, val_sets, config) if not history else {
            k: v for k, v in history[-1].items() if k.startswith("val")
        },
        "checkpoint": manager.latest_checkpoint,
    }
    if chief:
        model_path = os.path.join(config.out, "model.h5")
        model.save(model_path)
        summary["model"] = model_path
        _write_json(os.path.join(config.out, SUMMARY_NAME), summary)
        _append_run(config, start_step, start_lr, summary)
    return summary


def _append_run(config, start_step, start_lr, summary):
    """One line per run (a first run, each --resume, and an interrupted run), so a recipe spread
    over several runs keeps its wall time, step counts, and the rate and task table each run
    started with (a --lr or --tasks given with --resume shows here; train_config.json keeps the
    first run's)."""
    with open(os.path.join(config.out, HISTORY_NAME), "a") as f:
        f.write(json.dumps({"target_steps": config.steps, "time_limit": config.time_limit,
                            "start_step": start_step, "start_lr": start_lr,
                            "tasks": _task_rows(config.tasks), **summary}, default=str) + "\n")


def _next_multiple(step, every):
    return (step // every + 1) * every


def _plateau(optimizer, best, wait, val_loss, config):
    """Halve the learning rate after ``plateau_patience`` validations without improvement."""
    if not math.isfinite(val_loss):
        return
    if val_loss < float(best.numpy()):
        best.assign(val_loss)
        wait.assign(0)
        return
    wait.assign_add(1)
    if int(wait.numpy()) >= config.plateau_patience:
        lr = max(float(optimizer.learning_rate.numpy()) * config.plateau_factor, config.min_lr)
        optimizer.learning_rate.assign(lr)
        wait.assign(0)


def _validate_model(model, val_sets, config):
    """Validation loss and, per task, Dice (segmentation-like) or PSNR (image tasks)."""
    from . import metrics

    scores, losses = {}, []
    predict_kwargs = {"mini_context": config.mini_context} if config.mini_context else {}
    for name, batches in val_sets.items():
        values = []
        for batch in batches:
            inputs, y_true = batch[0], batch[1]
            weight = batch[2] if len(batch) > 2 else None
            # A direct call, not predict(): predict would split a one-episode batch over the
            # replicas of a distribution strategy and hand some of them an empty batch.
            y_pred = model(inputs, training=False, **predict_kwargs).numpy()
            losses.append(float(tf.reduce_mean(
                model.loss.per_sample(y_true, y_pred, inputs["task_kind"])
            )) * (float(np.mean(weight)) if weight is not None else 1.0))
            if int(np.asarray(inputs["task_kind"])[0]) == 0:
                values.append(float(np.mean(metrics.dice(y_true, y_pred))))
            else:
                values.append(float(np.mean(metrics.psnr(y_true, np.clip(y_pred, 0, 1)))))
        metric = "dice" if int(np.asarray(batches[0][0]["task_kind"])[0]) == 0 else "psnr"
        scores[f"val_{metric}/{name}"] = round(float(np.mean(values)), 4)
    scores["val_loss"] = float(np.mean(losses)) if losses else float("nan")
    return scores


def _log(writer, record):
    if writer is None:
        return
    with writer.as_default(step=record["step"]):
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                tf.summary.scalar(key, value)
    writer.flush()
