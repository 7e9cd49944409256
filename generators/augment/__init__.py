"""Augmentations: task augmentations, spatial augmentations and Neuroverse3D's task overlap.

Three kinds, applied by the episode sampler (:mod:`generators.episodes`) at three places:

1. **Spatial augmentations** (:class:`SpatialAugmentation`) act on one
   :class:`~generators.subject.Subject` before the task makes its pair: one random affine
   (rotation, scale, translation, shear) and elastic warp per subject, applied identically to
   its labels (nearest), images (linear) and brain mask (nearest). Target and context subjects
   are warped independently, so they are not aligned by construction, which weakens the
   location prior (see the training notes: roughly aligned subjects let a model fuse context
   labels without reading the image).
2. **Task augmentations** change the task itself: their parameters are drawn once per episode
   (:meth:`TaskAugmentation.sample_episode`) and the same transformation is applied to every
   pair of the episode (:meth:`TaskAugmentation.apply`). They compose as trees of
   :class:`Compose` and :class:`OneOf` with probabilities, as in the Neuralizer supplement.
3. **Task overlap** (:class:`TaskOverlap`, Neuroverse3D paper Sec. B.1): bias field, Gaussian
   noise, salt-and-pepper, inpainting and super-resolution degradations overlaid on an *input*
   independently (p = 0.05 each), per image, not per episode.

Arrays are channels-last: a pair is ``x (*S, Cx)``, ``y (*S, Cy)`` float32 in [0, 1]; *S has 2 or
3 axes.

The task kind (0 segmentation-like, 1 image) decides what an augmentation may touch: operations
that only make sense on masks (contour, dilation, erosion, and the Sobel edge map of a mask) act on
``y`` only when the task is segmentation-like, and intensity curves act on ``y`` only when it is an
image. The caller passes the task's kind to ``sample_episode(rng, kind=...)`` and reads the kind of
the *augmented* task from the returned ``episode["kind"]`` (a Sobel filter turns a mask into an
image, so the loss changes from Dice to MSE). Without a kind (``kind=None``), mask-only operations
decide per pair whether ``y`` is a binary mask (all values 0 or 1).
"""

from ._util import KIND_IMAGE, KIND_SEGMENTATION
from .overlap import TaskOverlap, neuroverse3d_task_overlap
from .spatial import (
    FREESURFER_LR_PAIRS,
    SpatialAugmentation,
    neuralizer_spatial_augmentation,
    neuroverse3d_spatial_augmentation,
)
from .task import (
    AUGMENTATIONS,
    ChannelDuplication,
    ChannelPermutation,
    Compose,
    Dilation,
    Erosion,
    GaussianNoise,
    IntensityMapping,
    IntensityScale,
    IntensityShift,
    Inversion,
    MaskContour,
    OneOf,
    RandomConvContrast,
    SobelFilter,
    SyntheticModality,
    TaskAugmentation,
    augmentation_from_config,
    neuralizer_task_augmentation,
    neuroverse3d_task_augmentation,
    register_augmentation,
    sobel_magnitude,
)

__all__ = [
    "AUGMENTATIONS",
    "FREESURFER_LR_PAIRS",
    "KIND_IMAGE",
    "KIND_SEGMENTATION",
    "ChannelDuplication",
    "ChannelPermutation",
    "Compose",
    "Dilation",
    "Erosion",
    "GaussianNoise",
    "IntensityMapping",
    "IntensityScale",
    "IntensityShift",
    "Inversion",
    "MaskContour",
    "OneOf",
    "RandomConvContrast",
    "SobelFilter",
    "SpatialAugmentation",
    "SyntheticModality",
    "TaskAugmentation",
    "TaskOverlap",
    "augmentation_from_config",
    "neuralizer_spatial_augmentation",
    "neuralizer_task_augmentation",
    "neuroverse3d_spatial_augmentation",
    "neuroverse3d_task_augmentation",
    "neuroverse3d_task_overlap",
    "register_augmentation",
    "sobel_magnitude",
]
