"""The task interface and registry.

A task turns one :class:`~generators.subject.Subject` into one ``(input, output)`` pair. It works
in two steps so that every pair of an episode shows the *same* mapping: :meth:`Task.sample_episode`
draws the episode-level parameters once (which labels to segment, the down-sampling factor, the
noise level, ...) and :meth:`Task.make_pair` applies them to each subject (target and context).

New tasks subclass :class:`Task`, set ``name`` and ``kind``, and are added to :data:`TASKS` with
the :func:`register_task` decorator.
"""

from typing import ClassVar

import numpy as np

__all__ = ["KIND_IMAGE", "KIND_SEGMENTATION", "TASKS", "Task", "get_task", "register_task"]

KIND_SEGMENTATION = 0  # the loss is Dice (soft, per channel)
KIND_IMAGE = 1  # the loss is MSE / L1

TASKS = {}


class Task:
    """Base class of all tasks.

    Subclasses set the class attributes ``name`` (registry key) and ``kind`` (0 segmentation-like,
    1 image) and override :meth:`sample_episode` and :meth:`make_pair`. Their constructor takes
    keyword parameters only, stores them, and :meth:`get_config` returns them.

    Args:
        **params: the task's documented parameters (JSON-safe values).
    """

    name: ClassVar[str] = "task"
    kind: ClassVar[int] = KIND_IMAGE

    def __init__(self, **params):
        self._params = dict(params)

    def get_config(self) -> dict:
        """The JSON-safe constructor arguments; ``type(task)(**task.get_config())`` rebuilds it."""
        return {key: _json_safe(value) for key, value in self._params.items()}

    @classmethod
    def from_config(cls, config):
        """Rebuild a task from :meth:`get_config`'s output."""
        return cls(**config)

    def sample_episode(self, rng: np.random.Generator, subjects: list) -> dict:
        """Draw the episode-level parameters shared by target and context.

        Args:
            rng: the episode's random generator.
            subjects: the subjects of the episode (target first), e.g. to choose labels that
                are present in them.

        Returns:
            A dict of parameters, passed unchanged to :meth:`make_pair` for every subject.
        """
        return {}

    def make_pair(self, subject, episode: dict, rng: np.random.Generator):
        """Make one pair from one subject.

        Args:
            subject: a :class:`~generators.subject.Subject` with spatial shape *S.
            episode: the dict returned by :meth:`sample_episode`.
            rng: random generator for per-pair randomness (e.g. the noise itself).

        Returns:
            ``(x, y)``, each float32 (*S, c) with c >= 1 channels, values in [0, 1].
        """
        raise NotImplementedError(f"{type(self).__name__}.make_pair")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _json_safe(value):
    """Turn numpy scalars/arrays and tuples into plain Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return value


def register_task(cls):
    """Class decorator: add ``cls`` to :data:`TASKS` under ``cls.name``.

    Raises:
        TypeError: if ``cls`` is not a :class:`Task` subclass.
        ValueError: if ``cls.kind`` is not 0 or 1, or another class already has the name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task: expected a Task subclass, got {cls!r}")
    if cls.kind not in (KIND_SEGMENTATION, KIND_IMAGE):
        raise ValueError(f"register_task: {cls.__name__}.kind must be 0 or 1, got {cls.kind!r}")
    existing = TASKS.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(
            f"register_task: name {cls.name!r} of {cls.__name__} is already used by "
            f"{existing.__name__}"
        )
    TASKS[cls.name] = cls
    return cls


def get_task(name, **params) -> Task:
    """Build a registered task by name.

    Args:
        name: registry key, e.g. ``"segmentation"``.
        **params: the task's constructor arguments.

    Returns:
        The task instance.

    Raises:
        ValueError: naming the unknown ``name`` and the known names.
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task name {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name](**params)
