"""Sources of subjects: 3D label maps (and optional real images) resampled to an episode's grid.

Three sources share one base class, :class:`LabelMapSource`:

- :class:`LabelMapFolder`: NIfTI/MGZ label maps on disk (FreeSurfer ``aseg``, SynthSeg training
  maps, ...), optionally paired with real images of the same subjects.
- :class:`MNISubjects`: an embedded default that needs no download. Tissue labels are derived
  from the MNI152 2009 template and its GM/WM probability maps shipped inside the ``nilearn``
  wheel, a head (CSF rim, skull, scalp) is added around the brain, and each subject is a random
  smooth deformation of that map.
- :class:`ProceduralLabelMaps`: blobby nested head/brain/ventricle label maps made from random
  smooth fields (for tests and first demos).

Every volume is held in RAS+ orientation (``nibabel.as_closest_canonical``), so ``slice_axis`` 0,
1, 2 are sagittal, coronal and axial slices. :meth:`LabelMapSource.sample` returns one subject's
label map (and real images) on the episode grid: a 3D crop/pad at a voxel size, or a 2D slice
near the centre of the brain. Labels are resampled with nearest neighbour, images linearly, on
exactly the same voxel centres. Resampled volumes are cached per source and voxel size, so
episodes are cheap once every subject has been seen.
"""

from .base import (
    EXTRACEREBRAL_LABELS,
    EXTRACEREBRAL_MIN,
    LEFT_RIGHT_PAIRS,
    LabelMapSource,
    SourceSubset,
    Volume,
    brain_mask_of,
    smooth_noise,
    split_indices,
)
from .folder import NIFTI_SUFFIXES, LabelMapFolder
from .mni import MNI_FILES, MNISubjects, mni_files, mni_label_map
from .procedural import ProceduralLabelMaps, procedural_label_map

__all__ = [
    "EXTRACEREBRAL_LABELS",
    "EXTRACEREBRAL_MIN",
    "LEFT_RIGHT_PAIRS",
    "MNI_FILES",
    "NIFTI_SUFFIXES",
    "LabelMapFolder",
    "LabelMapSource",
    "MNISubjects",
    "ProceduralLabelMaps",
    "SourceSubset",
    "Volume",
    "brain_mask_of",
    "mni_files",
    "mni_label_map",
    "procedural_label_map",
    "smooth_noise",
    "split_indices",
]
