"""The training configuration: :class:`TrainConfig`, its checks before any work is done, and the
context-size parser."""

import dataclasses
import json

import numpy as np

__all__ = ["DEFAULT_LR", "MODELS", "STRATEGIES", "TrainConfig", "TrainConfigError",
           "parse_context_size"]

STRATEGIES = ("default", "mirrored", "multiworker")
MODELS = ("neuralizer", "neuroverse3d")
DEFAULT_LR = 1e-4


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
    from ..models.base import read_header
    from ..predict.models import resolve_model

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
