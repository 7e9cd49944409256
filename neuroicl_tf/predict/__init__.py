"""In-context prediction on NIfTI files (the library behind ``neuroicl-predict``).

- :mod:`.geometry`: loading with checks, the RAS model grid, resampling there and back, label
  binarisation, writing with the input's exact header.
- :mod:`.registration`: affine registration of context images to the target (SimpleITK).
- :mod:`.models`: :func:`resolve_model` (``default-2d``/``default-3d``/path), the model's grid,
  the APSP mini-context size from a memory budget.
- :mod:`.ensemble`: context bootstrapping and the uncertainty map.
- :mod:`.pipeline`: :class:`Predictor` and :func:`predict`.
- :mod:`.batch`: many targets with one context.
- :mod:`.montage`: the PNG overview.
"""

from .batch import read_targets, run_batch
from .models import choose_mini_context, load_model, model_size, resolve_model
from .pipeline import Predictor, predict, prepare_context

__all__ = [
    "Predictor",
    "predict",
    "prepare_context",
    "resolve_model",
    "load_model",
    "model_size",
    "choose_mini_context",
    "read_targets",
    "run_batch",
]
