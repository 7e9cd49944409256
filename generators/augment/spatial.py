"""Spatial augmentation of whole subjects: affine + elastic warps and left-right-safe flips."""

import numpy as np
from scipy import ndimage

from .._params import as_range as _range
from ._util import _json

# ----------------------------------------------------------------------------------------------
# spatial augmentation (per subject)

# FreeSurfer left/right label pairs (cerebrum, ventricles, cerebellum, deep grey matter, vessel,
# choroid plexus). Used to keep "left" labels on one side of the array when flipping left-right.
FREESURFER_LR_PAIRS = (
    (2, 41), (3, 42), (4, 43), (5, 44), (7, 46), (8, 47), (10, 49), (11, 50), (12, 51),
    (13, 52), (17, 53), (18, 54), (26, 58), (28, 60), (30, 62), (31, 63),
)


def _swap_lr(labels):
    out = labels.copy()
    for left, right in FREESURFER_LR_PAIRS:
        out[labels == left] = right
        out[labels == right] = left
    return out


def _linear_weights(n_out, n_in):
    """(n_out, n_in) weights that linearly interpolate n_in control points over n_out voxels."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2) if n_in > 1 else np.zeros(n_out, int)
    frac = pos - lo
    w = np.zeros((n_out, n_in))
    w[np.arange(n_out), lo] += 1.0 - frac
    if n_in > 1:
        w[np.arange(n_out), lo + 1] += frac
    return w


def _upsample_separable(coarse, shape):
    """Linear up-sampling of a coarse lattice to ``shape``, one axis at a time (float32).

    The last axis is done first, so the big final step (axis 0) is one matrix product over a
    contiguous array.
    """
    out = np.asarray(coarse, np.float32)
    for axis in reversed(range(len(shape))):
        w = _linear_weights(shape[axis], out.shape[axis]).astype(np.float32)
        moved = np.moveaxis(out, axis, 0)
        rest = moved.shape[1:]
        out = (w @ moved.reshape(moved.shape[0], -1)).reshape((shape[axis],) + rest)
        out = np.moveaxis(out, 0, axis)
    return np.ascontiguousarray(out)


def _rotation_matrix(angles_deg):
    angles = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if angles.size == 1:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        r = np.eye(3)
        r[a, a], r[a, b], r[b, a], r[b, b] = np.cos(angle), -np.sin(angle), np.sin(angle), \
            np.cos(angle)
        rotation = r @ rotation
    return rotation


class SpatialAugmentation:
    """A random affine + elastic warp (and optional flip) of one subject.

    Output voxel o samples the input at ``A (o - c) + c + t + d(o)``: c the centre, A = rotation
    @ shear @ diag(scale), t a translation and d a smooth displacement field (random control-point
    displacements on a coarse grid, linearly interpolated). Labels and the brain mask are
    resampled with nearest neighbour, images linearly; outside the field of view labels are 0 and
    images 0. A fresh warp is drawn for every call (every subject), so target and context are not
    aligned by construction.

    The defaults are strong on purpose (rotation up to 15 degrees per axis, scale 0.85-1.15 per
    axis, translation up to 8 % of the size, shear up to 0.05, elastic displacements with a std
    of 2 % of the size): the training notes found that roughly aligned subjects let a model fuse
    the context labels without reading the image. Neuroverse3D's paper uses p = 0.05 for each of
    affine, elastic, flip and rotation (see :func:`neuroverse3d_spatial_augmentation`).

    Flips do not leak only if the task does not depend on left/right: they are off unless
    ``flip_axis`` is given, and then, with ``swap_lr_labels`` (default), the FreeSurfer left and
    right labels are swapped (:data:`FREESURFER_LR_PAIRS`) so that after the flip a "left" label
    is still on the same side of the array as in unflipped subjects. ``flip_axis`` must be the
    array axis that runs left-right in the subjects of the source.

    Args:
        rotation: max |angle| in degrees (each of the 3 angles in 3D), or a (min, max) range.
        scale: (min, max) per-axis scale factors (or one number for a fixed scale).
        translation: max |shift| as a fraction of each axis length.
        shear: max |off-diagonal shear| entry.
        elastic: std of control-point displacements as a fraction of the mean axis length.
        elastic_points: control points per axis (>= 2).
        p_rotation, p_affine, p_elastic, p_flip: probabilities of rotation, of the rest of the
            affine (scale, translation, shear), of the elastic field and of the flip.
        flip_axis: the left-right array axis, or None (no flips).
        swap_lr_labels: swap FreeSurfer left/right labels when flipping.
    """

    def __init__(self, rotation=15.0, scale=(0.85, 1.15), translation=0.08, shear=0.05,
                 elastic=0.02, elastic_points=5, p_rotation=1.0, p_affine=1.0, p_elastic=1.0,
                 p_flip=0.5, flip_axis=None, swap_lr_labels=True):
        def sym(value, name, **bounds):  # a number v means the range (-v, v)
            return _range((-value, value) if np.isscalar(value) else value, name, **bounds)

        self._rot = sym(rotation, "rotation", low=-180.0, high=180.0)
        self._scale = _range(scale, "scale", low=1e-3)
        self._trans = sym(translation, "translation", low=-1.0, high=1.0)
        self._shear = sym(shear, "shear", low=-1.0, high=1.0)
        if float(elastic) < 0:
            raise ValueError(f"elastic must be >= 0, got {elastic!r}")
        if int(elastic_points) != elastic_points or elastic_points < 2:
            raise ValueError(f"elastic_points must be an integer >= 2, got {elastic_points!r}")
        for name, p in (("p_rotation", p_rotation), ("p_affine", p_affine),
                        ("p_elastic", p_elastic), ("p_flip", p_flip)):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p!r}")
        if flip_axis is not None and int(flip_axis) not in (0, 1, 2):
            raise ValueError(f"flip_axis must be None or an axis 0-2, got {flip_axis!r}")
        self.elastic = float(elastic)
        self.elastic_points = int(elastic_points)
        self.p_rotation, self.p_affine = float(p_rotation), float(p_affine)
        self.p_elastic, self.p_flip = float(p_elastic), float(p_flip)
        self.flip_axis = None if flip_axis is None else int(flip_axis)
        self.swap_lr_labels = bool(swap_lr_labels)
        self._config = {
            "rotation": _json(rotation), "scale": _json(scale), "translation": _json(translation),
            "shear": _json(shear), "elastic": self.elastic, "elastic_points": self.elastic_points,
            "p_rotation": self.p_rotation, "p_affine": self.p_affine,
            "p_elastic": self.p_elastic, "p_flip": self.p_flip, "flip_axis": self.flip_axis,
            "swap_lr_labels": self.swap_lr_labels,
        }

    def get_config(self):
        """The JSON-safe constructor arguments."""
        return dict(self._config)

    def __repr__(self):
        return f"SpatialAugmentation(**{self.get_config()!r})"

    def sample_coordinates(self, shape, rng):
        """The sampling coordinates of one random warp.

        Args:
            shape: spatial shape *S (2 or 3 axes).
            rng: random generator.

        Returns:
            ``(coords, flip)``: coords float32 (ndims, *S), the input coordinate of every output
            voxel; flip a bool (flip along ``flip_axis`` after warping).
        """
        shape = tuple(int(s) for s in shape)
        nd = len(shape)
        size = np.asarray(shape, dtype=np.float64)
        matrix = np.eye(nd)
        shift = np.zeros(nd)
        if rng.random() < self.p_rotation:
            matrix = _rotation_matrix(rng.uniform(*self._rot, size=1 if nd == 2 else 3))
        if rng.random() < self.p_affine:
            shear = np.eye(nd)
            off = ~np.eye(nd, dtype=bool)
            shear[off] = rng.uniform(*self._shear, size=nd * nd - nd)
            matrix = matrix @ shear @ np.diag(rng.uniform(*self._scale, size=nd))
            shift = rng.uniform(*self._trans, size=nd) * size
        # cos(90 deg) is 6e-17, not 0: that would put border samples a hair outside the grid
        matrix[np.abs(matrix) < 1e-12] = 0.0
        centre = (size - 1) / 2
        # coords[i] = sum_j A_ij (o_j - c_j) + c_i + t_i, built from broadcast 1D ramps (an
        # np.indices grid and a tensordot were 5x slower at 96^3)
        ramps = []
        for j, n in enumerate(shape):
            view = [1] * nd
            view[j] = n
            ramps.append((np.arange(n, dtype=np.float32) - np.float32(centre[j])).reshape(view))
        coords = np.empty((nd,) + shape, np.float32)
        for i in range(nd):
            coords[i].fill(centre[i] + shift[i])
            for j in range(nd):
                if matrix[i, j] != 0:
                    coords[i] += np.float32(matrix[i, j]) * ramps[j]
        if self.elastic > 0 and rng.random() < self.p_elastic:
            std = self.elastic * float(size.mean())
            points = (self.elastic_points,) * nd
            for axis in range(nd):
                coarse = rng.normal(0.0, std, size=points)
                coords[axis] += _upsample_separable(coarse, shape)
        if self.flip_axis is not None and self.flip_axis >= nd:
            raise ValueError(f"flip_axis {self.flip_axis} is not an axis of a {nd}D subject")
        flip = self.flip_axis is not None and rng.random() < self.p_flip
        return coords, bool(flip)

    def __call__(self, subject, rng):
        """Warp one subject.

        Args:
            subject: a :class:`~generators.subject.Subject` with spatial shape *S.
            rng: random generator.

        Returns:
            A new Subject (same name and shape): labels int32 (nearest), images float32 in
            [0, 1] (linear), brain_mask bool (nearest).
        """
        coords, flip = self.sample_coordinates(subject.shape, rng)

        def warp(a, order, dtype):
            out = ndimage.map_coordinates(a, coords, order=order, mode="constant", cval=0,
                                          output=dtype, prefilter=False)
            return np.flip(out, self.flip_axis) if flip else out

        labels = warp(np.asarray(subject.labels, np.int32), 0, np.int32)
        if flip and self.swap_lr_labels:
            labels = _swap_lr(labels)
        images = {
            key: np.clip(warp(np.asarray(v, np.float32), 1, np.float32), 0.0, 1.0)
            for key, v in subject.images.items()
        }
        mask = warp(np.asarray(subject.brain_mask, np.uint8), 0, np.uint8).astype(bool)
        return subject.replace(labels=np.ascontiguousarray(labels), images={
            k: np.ascontiguousarray(v) for k, v in images.items()},
            brain_mask=np.ascontiguousarray(mask))


def neuralizer_spatial_augmentation(**overrides):
    """Strong per-subject affine + elastic augmentation for 2D Neuralizer episodes.

    No flips by default: which array axis of a 2D slice runs left-right depends on the slice
    orientation (with :mod:`generators.sources`' RAS+ volumes it is axis 0 for coronal and axial
    slices; pass ``flip_axis=0`` there, never for sagittal slices).

    Args:
        **overrides: any :class:`SpatialAugmentation` argument.
    """
    return SpatialAugmentation(**overrides)


def neuroverse3d_spatial_augmentation(paper_probabilities=False, **overrides):
    """Per-subject spatial augmentation for 3D Neuroverse3D episodes.

    Flips along axis 0, the left-right axis of :mod:`generators.sources`' RAS+ volumes, with the
    FreeSurfer left/right labels swapped so that lateralised tasks stay consistent.

    Args:
        paper_probabilities: use the paper's p = 0.05 for each of affine, elastic, flip and
            rotation (SPEC §4.5). The default (False) applies affine and elastic always and
            flips with p = 0.5, because with p = 0.05 nearly all subjects stay aligned and the
            model can learn label fusion (training notes).
        **overrides: any :class:`SpatialAugmentation` argument.
    """
    params = {"flip_axis": 0}
    if paper_probabilities:
        params.update(p_rotation=0.05, p_affine=0.05, p_elastic=0.05, p_flip=0.05)
    params.update(overrides)
    return SpatialAugmentation(**params)
