"""generators: endless in-context-learning episodes synthesised from label maps.

Sources of label maps (:mod:`generators.sources`) -> synthetic contrasts shared by the subjects
of an episode (:mod:`generators.synth`) -> tasks that turn each subject into an (input, output)
pair (:mod:`generators.tasks`) -> the episode sampler (:mod:`generators.episodes`, presets in
:mod:`generators.presets`) and its ``tf.data`` wrapper (:mod:`generators.data`). See
``docs/tasks.md``.

Importing this package does not import TensorFlow; the synthesizer does so on first use.
"""

from .data import episode_dataset, episode_signature
from .episodes import EpisodeGenerator
from .presets import PRESETS, TaskSpec, get_preset
from .sources import (
    LabelMapFolder,
    LabelMapSource,
    MNISubjects,
    ProceduralLabelMaps,
    SourceSubset,
    brain_mask_of,
    split_indices,
)
from .subject import Subject
from .synth import ImageSynthesizer, load_synthseg_t1_priors
from .tasks import TASKS, Task, get_task, register_task

__all__ = [
    "PRESETS",
    "TASKS",
    "EpisodeGenerator",
    "ImageSynthesizer",
    "LabelMapFolder",
    "LabelMapSource",
    "MNISubjects",
    "ProceduralLabelMaps",
    "SourceSubset",
    "Subject",
    "Task",
    "TaskSpec",
    "brain_mask_of",
    "episode_dataset",
    "episode_signature",
    "get_preset",
    "get_task",
    "load_synthseg_t1_priors",
    "register_task",
    "split_indices",
]
