"""generators: endless in-context-learning episodes synthesised from label maps.

The public pieces are added as they land; see docs/tasks.md.
"""

from .subject import Subject
from .tasks import TASKS, Task, get_task, register_task

__all__ = ["TASKS", "Subject", "Task", "get_task", "register_task"]
