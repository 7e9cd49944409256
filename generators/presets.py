"""Task tables of the two published systems, with their sampling and loss weights.

- ``"neuralizer"``: Neuralizer's supplementary Table 7 (SPEC 4.1), 2D, 3 channels, L ~ U{1..32},
  batch 8. The paper's losses are chosen by task type (Dice or MSE) with no per-task weights, so
  every loss weight is 1.
- ``"neuroverse3d"``: Neuroverse3D's task table (SPEC 4.2): sampling rate / loss weight,
  segmentation 2 / 50, 2D -> 3D 1 / 0.5, every other task 1 / 1. 3D, 1 channel, L ~ U{1..8}
  (the last training phase, SPEC 3.9), batch 1.

Each preset also names the augmentations of its system in ``generators.augment`` (task
augmentations, per-subject spatial augmentations and, for Neuroverse3D, task overlap);
``EpisodeGenerator.from_preset`` switches them on, the plain constructor does not.

Together the two presets name all 11 tasks. Rows whose task is not registered (or does not
support the episode's number of spatial axes) are skipped by the episode sampler with a
warning; tasks requested explicitly by name are never skipped.
"""

import dataclasses

__all__ = ["PRESETS", "TaskSpec", "get_preset"]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One row of a task table.

    Attributes:
        name: registered task name.
        weight: sampling weight (relative).
        loss_weight: the task's loss weight lambda_t, yielded as ``sample_weight``.
        params: constructor arguments of the task.
        ndims: numbers of spatial axes the row applies to.
        note: where the row comes from.
    """

    name: str
    weight: float
    loss_weight: float = 1.0
    params: dict = dataclasses.field(default_factory=dict)
    ndims: tuple = (2, 3)
    note: str = ""


_NEURALIZER = (
    TaskSpec("segmentation", 2.0, note="Table 7: Segmentation 2.0"),
    TaskSpec("modality_transfer", 2.0, params={"p_real": 1.0},
             note="Table 7: Modality transfer 2.0 (real pairs when the source has them)"),
    TaskSpec("modality_transfer", 1.0, params={"p_real": 0.0},
             note="Table 7: Simulated modality 1.0 (synthetic contrasts a -> b)"),
    TaskSpec("super_resolution", 1.0, params={"factors": [2, 3, 4]},
             note="Table 7: Super-resolution 1.0 (factors x2-x4: not given in SPEC, chosen)"),
    TaskSpec("skull_stripping", 0.5, params={"output": "image"},
             note="Table 7: Skull stripping 0.5 (brain-masked image)"),
    TaskSpec("skull_stripping", 0.5, params={"output": "mask"},
             note="Table 7: Masking 0.5 (brain mask, Dice)"),
    TaskSpec("motion_correction", 0.5, note="Table 7: Motion 0.5"),
    TaskSpec("denoising_gaussian", 0.25, note="Table 7: Denoise & Bias 0.5, half to denoising"),
    TaskSpec("bias_correction", 0.25, note="Table 7: Denoise & Bias 0.5, half to bias"),
    TaskSpec("kspace_undersampling", 1.0, note="Table 7: k-space undersampling 1.0"),
    TaskSpec("inpainting", 1.0, note="Table 7: Inpainting 1.0"),
)

_NEUROVERSE3D = (
    TaskSpec("segmentation", 2.0, 50.0, params={"group_p": 0.5, "group_size": (2, 10)},
             note="Segmentation 2 / 50, random foreground grouping p = 0.5, <= 10 classes"),
    TaskSpec("bias_correction", 1.0, 1.0, note="Bias 1 / 1"),
    TaskSpec("denoising_gaussian", 1.0, 1.0, note="Gaussian denoise 1 / 1"),
    TaskSpec("denoising_salt_pepper", 1.0, 1.0, note="Salt & pepper 1 / 1"),
    TaskSpec("slices_to_volume", 1.0, 0.5, ndims=(3,), note="2D->3D 1 / 0.5 (3D only)"),
    TaskSpec("inpainting", 1.0, 1.0, note="Inpainting 1 / 1"),
    TaskSpec("super_resolution", 1.0, 1.0, note="Super-resolution 1 / 1 (factor 2)"),
    TaskSpec("skull_stripping", 1.0, 1.0, note="Skull stripping 1 / 1"),
    TaskSpec("modality_transfer", 1.0, 1.0, note="Modality 1 / 1"),
)



def _augment(name):
    """A factory that imports generators.augment only when the preset is used."""
    def factory():
        from . import augment

        return getattr(augment, name)()

    factory.__name__ = name
    return factory


# name -> {"tasks": rows, the generator settings of the published system, and factories of its
# augmentations (used by EpisodeGenerator.from_preset)}
PRESETS = {
    "neuralizer": {
        "tasks": _NEURALIZER,
        "ndims": 2,
        "shape": (192, 192),
        "encoding": "neuralizer",
        "context_size": (1, 32),
        "batch_size": 8,
        "slice_axis": 1,  # coronal slices of MNI-aligned volumes (SPEC 4.3)
        "task_augmentation_factory": _augment("neuralizer_task_augmentation"),
        "spatial_augmentation_factory": _augment("neuralizer_spatial_augmentation"),
        "task_overlap_factory": None,
    },
    "neuroverse3d": {
        "tasks": _NEUROVERSE3D,
        "ndims": 3,
        "shape": (128, 128, 128),
        "encoding": "neuroverse3d",
        "context_size": (1, 8),
        "batch_size": 1,
        "slice_axis": None,
        "task_augmentation_factory": _augment("neuroverse3d_task_augmentation"),
        "spatial_augmentation_factory": _augment("neuroverse3d_spatial_augmentation"),
        "task_overlap_factory": _augment("neuroverse3d_task_overlap"),
    },
}


def get_preset(name):
    """The preset ``name`` (a dict, see :data:`PRESETS`).

    Raises:
        ValueError: naming the unknown preset and the known ones.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]
