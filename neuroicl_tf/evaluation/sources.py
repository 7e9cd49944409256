"""A real scan with labels for evaluation: Colin27 from Debian's ``mricron-data`` package.

``mricron-data`` (``apt-get install mricron-data``) ships the Colin27 single-subject T1 with its
skull (``ch2.nii.gz``), a brain-extracted copy (``ch2bet.nii.gz``) and the AAL atlas
(``aal.nii.gz``), all on one 1 mm MNI grid. A FreeSurfer-numbered label map is derived from them
the way :func:`generators.sources.mni_label_map` derives one from the MNI152 template:

- brain = the filled brain-extracted mask; inside it each voxel takes the tissue class (CSF, GM,
  WM) of a three-class k-means of the T1 intensities, split by hemisphere (x < 0 is left);
- CSF deeper than 8 mm is lateral ventricle (4/43); the MNI152 rules place the cerebellum and
  the brain stem;
- AAL gives the hippocampus (17/53), amygdala (18/54), caudate (11/50), putamen (12/51),
  pallidum (13/52) and thalamus (10/49) where the tissue is not CSF, and the cerebellar cortex;
- outside the brain, the head (T1 above a low threshold, holes filled) is a 2 mm CSF rim, dark
  skull (165) and the rest scalp (258).

The regions are approximate (AAL was drawn on this very scan, the tissue split is a threshold).
Subjects are random smooth deformations of that map and scan (as :class:`generators.MNISubjects`
makes them), with the scan as ``images["real"]``, so a task can use a real T1 with a skull.
"""

import functools
import os

import numpy as np
from scipy import ndimage

from generators.sources import LabelMapSource, Volume
from generators.sources.mni import _deform  # the MNI subjects' deformation, reused as is

__all__ = ["COLIN27_FOLDER", "Colin27Subjects", "colin27_files", "colin27_label_map"]

COLIN27_FOLDER = "/usr/share/mricron/templates"
COLIN27_FILES = {"t1": "ch2.nii.gz", "brain": "ch2bet.nii.gz", "aal": "aal.nii.gz"}

# AAL index -> (left, right) FreeSurfer labels
_AAL_DEEP = {(37, 38): (17, 53), (41, 42): (18, 54), (71, 72): (11, 50), (73, 74): (12, 51),
             (75, 76): (13, 52), (77, 78): (10, 49)}
_AAL_CEREBELLUM = range(91, 117)


def colin27_files(folder=COLIN27_FOLDER):
    """Paths of the Colin27 T1, brain and AAL files.

    Raises:
        ValueError: if a file is missing (the package is not installed).
    """
    paths = {k: os.path.join(folder, v) for k, v in COLIN27_FILES.items()}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"Colin27: {missing} not found; install Debian's mricron-data package "
                         "(apt-get install mricron-data)")
    return paths


def _kmeans_1d(values, centres, iterations=20):
    centres = np.asarray(centres, np.float64)
    for _ in range(iterations):
        assign = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
        centres = np.array([values[assign == k].mean() if (assign == k).any() else centres[k]
                            for k in range(len(centres))])
    return np.sort(centres)


@functools.lru_cache(maxsize=2)
def colin27_label_map(resolution=2, folder=COLIN27_FOLDER):
    """The derived Colin27 label map and T1 (see the module docstring).

    Args:
        resolution: 1 or 2 mm (2 mm: the masks and atlas taken at every other voxel, the T1
            averaged over 2x2x2 blocks, before the labels are derived).
        folder: where the ``mricron-data`` templates are.

    Returns:
        :class:`generators.sources.Volume` with ``images["t1"]`` in [0, 1] (with skull).
    """
    import nibabel as nib

    if resolution not in (1, 2):
        raise ValueError(f"resolution must be 1 or 2 (mm), got {resolution!r}")
    images = {k: nib.as_closest_canonical(nib.load(p)) for k, p in colin27_files(folder).items()}
    affine = images["t1"].affine
    t1 = np.asarray(images["t1"].dataobj).astype(np.float32)
    brain = ndimage.binary_fill_holes(np.asarray(images["brain"].dataobj) > 0)
    aal = np.asarray(images["aal"].dataobj).astype(np.int32)
    step = int(resolution)
    if step == 2:  # work at 2 mm from here on (8x fewer voxels): masks subsampled, T1 averaged
        brain, aal = brain[::2, ::2, ::2], aal[::2, ::2, ::2]
        padded = np.pad(t1, [(0, s % 2) for s in t1.shape], mode="edge")
        t1 = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2,
                            padded.shape[2] // 2, 2).mean(axis=(1, 3, 5))
    ijk = np.indices(t1.shape, dtype=np.float32).reshape(3, -1) * step
    x, y, z = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(3, *t1.shape)
    left = x < 0

    values = t1[brain]
    centres = _kmeans_1d(values, np.percentile(values, [10, 50, 90]))
    edges = (centres[:-1] + centres[1:]) / 2
    tissue = np.digitize(t1, edges)  # 0 CSF, 1 GM, 2 WM
    depth = ndimage.distance_transform_edt(brain, sampling=step)
    outside = ndimage.distance_transform_edt(~brain, sampling=step)
    cerebellum = brain & (np.isin(aal, list(_AAL_CEREBELLUM)) | ((y < -42) & (z < -15)))
    stem = brain & (np.abs(x) < 12) & (y >= -42) & (y <= -14) & (z < -12) & (aal == 0)

    labels = np.zeros(t1.shape, np.int32)

    def side(mask, left_label, right_label):
        labels[mask & left] = left_label
        labels[mask & ~left] = right_label

    cerebrum = brain & ~cerebellum & ~stem
    side(cerebrum & (tissue == 2), 2, 41)
    side(cerebrum & (tissue == 1), 3, 42)
    labels[cerebrum & (tissue == 0)] = 24
    side(cerebrum & (tissue == 0) & (depth > 8), 4, 43)
    for (a_left, a_right), (fs_left, fs_right) in _AAL_DEEP.items():
        where = cerebrum & (tissue != 0)
        labels[where & (aal == a_left)] = fs_left
        labels[where & (aal == a_right)] = fs_right
    side(cerebellum & (tissue == 2), 7, 46)
    side(cerebellum & (tissue != 2), 8, 47)
    labels[stem] = 16
    head = ndimage.binary_fill_holes(ndimage.binary_closing(t1 > 0.3 * centres[0],
                                                            iterations=4 // step))
    extra = head & ~brain
    labels[extra & (outside <= 2)] = 24
    labels[extra & (outside > 2) & (t1 < edges[0])] = 165
    labels[extra & (outside > 2) & (t1 >= edges[0])] = 258
    image = np.clip(t1 / max(float(np.percentile(t1[head], 99.5)), 1e-6), 0, 1)
    return Volume(labels.astype(np.uint16), (float(step),) * 3, {"t1": image.astype(np.float32)})


class Colin27Subjects(LabelMapSource):
    """Subjects made by random smooth deformations of the Colin27 scan and its derived
    label map (affine within +-8 % / +-8 degrees and a smooth ~3 mm displacement, as
    :class:`generators.MNISubjects`), with the scan as ``images["real"]``. Subject ``i``
    is drawn from ``np.random.default_rng([seed, i])``.

    Args:
        n: number of subjects.
        seed: seed of the deformations.
        resolution: 1 or 2 mm.
        warp_mm: SD of the smooth displacement in mm.
        folder: where the ``mricron-data`` templates are.

    Raises:
        ValueError: a bad argument, or the package's files are missing.
    """

    def __init__(self, n=12, seed=0, resolution=2, warp_mm=3.0, folder=COLIN27_FOLDER,
                 cache=True):
        super().__init__(cache=cache, cache_native=True)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        colin27_files(folder)
        self.n, self.seed, self.resolution = int(n), int(seed), int(resolution)
        self.warp_mm, self.folder = float(warp_mm), folder

    @property
    def names(self):
        return [f"colin27_{self.resolution}mm_s{self.seed}_{i:03d}" for i in range(self.n)]

    def _load(self, index):
        base = colin27_label_map(self.resolution, self.folder)
        rng = np.random.default_rng([self.seed, index])
        volume = Volume(base.labels, base.spacing, {"real": base.images["t1"]})
        return _deform(volume, rng, warp_mm=self.warp_mm)
