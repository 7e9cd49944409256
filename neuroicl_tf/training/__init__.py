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

The modules: :mod:`.config` (the options and their checks), :mod:`.distribute` (the strategy),
:mod:`.episodes` (model, subjects, episode streams, validation sets) and :mod:`.run` (the loop,
checkpoints and records).
"""

from .config import (
    DEFAULT_LR,
    MODELS,
    STRATEGIES,
    TrainConfig,
    TrainConfigError,
    parse_context_size,
)
from .distribute import build_strategy
from .episodes import build_model
from .run import CONFIG_NAME, HISTORY_NAME, SUMMARY_NAME, train

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_LR",
    "HISTORY_NAME",
    "MODELS",
    "STRATEGIES",
    "SUMMARY_NAME",
    "TrainConfig",
    "TrainConfigError",
    "build_model",
    "build_strategy",
    "parse_context_size",
    "train",
]
