"""In-context models: the ``ICLModel`` base, ``Neuralizer`` (2D/3D) and ``Neuroverse3D`` (3D).

``Neuroverse3D`` is imported on first use, so this package stays importable on its own.
"""

from .base import INPUT_NAMES, ICLModel
from .neuralizer import Neuralizer

__all__ = ["ICLModel", "INPUT_NAMES", "Neuralizer", "Neuroverse3D"]


def __getattr__(name):
    if name == "Neuroverse3D":
        from .neuroverse3d import Neuroverse3D

        return Neuroverse3D
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
