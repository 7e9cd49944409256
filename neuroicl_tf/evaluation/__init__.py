"""Evaluation of in-context models against baselines and input ablations (``neuroicl-evaluate``).

- :mod:`~neuroicl_tf.evaluation.tasks`: named evaluation tasks (fixed label sets, image tasks).
- :mod:`~neuroicl_tf.evaluation.episodes`: the seeded episode set, identical for every method:
  held-out targets, contexts of size L drawn from a pool of other subjects.
- :mod:`~neuroicl_tf.evaluation.baselines`: (a) the context-label average, (b) a few-shot U-Net
  trained on the L context pairs, (c) the identity.
- :mod:`~neuroicl_tf.evaluation.ablation`: the model with the target image or the context images
  blanked (or the context images swapped between pairs).
- :mod:`~neuroicl_tf.evaluation.report`: ``scores.csv``, ``table.md``, ``scores.png``, verdicts.
- :mod:`~neuroicl_tf.evaluation.run`: :func:`evaluate` and :func:`make_sources`.
- :mod:`~neuroicl_tf.evaluation.sources`: Colin27 (Debian's ``mricron-data``) as a real scan.

See ``docs/evaluation.md``.
"""

from .ablation import ABLATIONS, blank_context_images, blank_target, swap_context_images
from .baselines import FewShotUNet, context_average, identity, unet_parameters, width_for
from .episodes import EpisodeGroup, build_episodes, group_seed
from .report import (
    SCORE_COLUMNS,
    plot_scores,
    read_scores,
    summarise,
    verdicts,
    write_scores,
    write_table,
)
from .run import REAL_SCANS, EvalSources, evaluate, make_sources, model_names, score
from .tasks import DEFAULT_TASKS, EVAL_TASKS, EvalTask, get_eval_task

__all__ = [
    "ABLATIONS",
    "DEFAULT_TASKS",
    "EVAL_TASKS",
    "REAL_SCANS",
    "SCORE_COLUMNS",
    "EpisodeGroup",
    "EvalSources",
    "EvalTask",
    "FewShotUNet",
    "blank_context_images",
    "blank_target",
    "build_episodes",
    "context_average",
    "evaluate",
    "get_eval_task",
    "group_seed",
    "identity",
    "make_sources",
    "model_names",
    "plot_scores",
    "read_scores",
    "score",
    "summarise",
    "swap_context_images",
    "unet_parameters",
    "verdicts",
    "width_for",
    "write_scores",
    "write_table",
]
