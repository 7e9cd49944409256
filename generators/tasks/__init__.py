"""Tasks: a registry of classes that turn a subject into an (input, output) pair.

Importing this package registers the core tasks (:mod:`generators.tasks.core`) and, when
present, the reconstruction tasks (:mod:`generators.tasks.reconstruction`).
"""

from . import core
from .base import KIND_IMAGE, KIND_SEGMENTATION, TASKS, Task, get_task, register_task
from .core import (
    BiasCorrection,
    GaussianDenoising,
    Inpainting,
    ModalityTransfer,
    SaltPepperDenoising,
    Segmentation,
    SkullStripping,
    SuperResolution,
)

try:
    from . import reconstruction
except ModuleNotFoundError as err:  # the reconstruction module is written separately
    if err.name != f"{__name__}.reconstruction":
        raise
    reconstruction = None

__all__ = [
    "KIND_IMAGE",
    "KIND_SEGMENTATION",
    "TASKS",
    "BiasCorrection",
    "GaussianDenoising",
    "Inpainting",
    "ModalityTransfer",
    "SaltPepperDenoising",
    "Segmentation",
    "SkullStripping",
    "SuperResolution",
    "Task",
    "core",
    "get_task",
    "reconstruction",
    "register_task",
]
