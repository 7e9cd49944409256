"""Tasks: a registry of classes that turn a subject into an (input, output) pair.

Importing this package registers the core tasks (:mod:`generators.tasks.core`) and, when present,
the reconstruction tasks (:mod:`generators.tasks.reconstruction`).
"""

from .base import KIND_IMAGE, KIND_SEGMENTATION, TASKS, Task, get_task, register_task

__all__ = ["KIND_IMAGE", "KIND_SEGMENTATION", "TASKS", "Task", "get_task", "register_task"]
