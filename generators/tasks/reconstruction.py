"""Reconstruction tasks: 2D-to-3D from three slices, k-space undersampling, motion correction.

All three are image tasks (``kind = 1``, MSE/L1 losses): the output ``y`` is the clean image of
the subject's input contrast (``subject.images["a"]`` by default) and the input ``x`` is a
degraded version of it. Pairs are float32 ``(*S, 1)`` with values in [0, 1].

- ``"slices_to_volume"`` (Neuroverse3D, paper Sec. B.1; not in the reference code): the input is
  zero except the three central orthogonal slices of the volume; 3D only.
- ``"kspace_undersampling"`` (Neuralizer): random Cartesian undersampling in k-space (the centre
  lines plus a random subset of the others), input = magnitude of the zero-filled inverse FFT.
- ``"motion_correction"`` (Neuralizer): multi-shot rigid motion: each shot's k-space lines come
  from the image under a different small rigid transform; input = magnitude of the inverse FFT.

The pure functions :func:`central_slices`, :func:`cartesian_mask`, :func:`zero_filled`,
:func:`rigid_transform`, :func:`shot_schedule` and :func:`motion_kspace` are public so that the
relations of the tasks can be checked directly (tests) and reused.
"""


import numpy as np
from scipy import ndimage

from .._params import as_range as _as_range
from .._params import draw as _uniform
from .base import KIND_IMAGE, Task, register_task

__all__ = [
    "KSpaceUndersampling",
    "MotionCorrection",
    "SlicesToVolume",
    "cartesian_mask",
    "central_slices",
    "motion_kspace",
    "rigid_transform",
    "shot_schedule",
    "zero_filled",
]


# ----------------------------------------------------------------------------------------------
# helpers


def _clean_image(subject, contrast):
    """The subject's clean image of ``contrast`` as float32 (*S)."""
    if contrast not in subject.images:
        raise ValueError(
            f"Subject {subject.name!r} has no contrast {contrast!r}; it has "
            f"{sorted(subject.images)}"
        )
    return np.asarray(subject.images[contrast], dtype=np.float32)


def _pair(x, y):
    """(x, y) as float32 (*S, 1) in [0, 1]."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)[..., None]
    y = np.clip(np.asarray(y, dtype=np.float32), 0.0, 1.0)[..., None]
    return x, y


def _check_ndims(subjects, allowed, task_name):
    for subject in subjects:
        if subject.ndims not in allowed:
            raise ValueError(
                f"Task {task_name!r} needs {' or '.join(f'{n}D' for n in allowed)} subjects, got "
                f"{subject.name!r} with spatial shape {subject.shape}"
            )


# ----------------------------------------------------------------------------------------------
# 2D -> 3D from three central slices


def central_slices(volume, offsets=(0, 0, 0)):
    """Keep only the three orthogonal slices through the volume's centre (plus offsets).

    Args:
        volume: (D1, D2, D3) array.
        offsets: per-axis shift of the slice index from the centre ``D_i // 2``, in voxels.

    Returns:
        (D1, D2, D3) array of ``volume``'s dtype: equal to ``volume`` on the three slices
        ``volume[c1]``, ``volume[:, c2]``, ``volume[:, :, c3]`` and zero elsewhere.

    Raises:
        ValueError: if ``volume`` is not 3D or an offset leaves the volume.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(
            f"central_slices: volume must be 3D (D1, D2, D3), got shape {volume.shape}"
        )
    out = np.zeros_like(volume)
    for axis, (size, offset) in enumerate(zip(volume.shape, offsets)):
        index = size // 2 + int(offset)
        if not 0 <= index < size:
            raise ValueError(
                f"central_slices: offset {offset} on axis {axis} leaves the volume of size {size}"
            )
        where = [slice(None)] * 3
        where[axis] = index
        out[tuple(where)] = volume[tuple(where)]
    return out


@register_task
class SlicesToVolume(Task):
    """Neuroverse3D's 2D->3D task: reconstruct a volume from its three central slices.

    Input: the volume with everything zeroed except the three central orthogonal slices (one per
    axis). Output: the whole volume. The paper (Sec. B.1) restricts this task to MNI-space
    images; here it is applied to whatever subjects the episode has (with spatial augmentation
    they are not aligned, so the slices cut different anatomy in each subject, which makes the
    task harder but not different). The reference code has no implementation; the paper gives
    the sampling rate 1 and loss weight 0.5 (SPEC §4.2).

    Args:
        contrast: the image of the subject that is reconstructed (default ``"a"``).
        max_offset: the slice indices are shifted from the centre by an offset drawn once per
            episode, per axis, uniformly from ``[-max_offset, max_offset]`` voxels (0 = exactly
            central, the paper's setting).

    Raises:
        ValueError: for a negative ``max_offset``; in :meth:`sample_episode` and
            :meth:`make_pair` for subjects that are not 3D.
    """

    name = "slices_to_volume"
    kind = KIND_IMAGE

    def __init__(self, contrast="a", max_offset=0):
        if int(max_offset) != max_offset or max_offset < 0:
            raise ValueError(f"max_offset must be an integer >= 0, got {max_offset!r}")
        super().__init__(contrast=str(contrast), max_offset=int(max_offset))
        self.contrast = str(contrast)
        self.max_offset = int(max_offset)

    def sample_episode(self, rng, subjects):
        """Draw the per-axis slice offsets (shared by all pairs). 3D subjects only.

        Returns:
            ``{"offsets": [o1, o2, o3]}`` (ints).
        """
        _check_ndims(subjects, (3,), self.name)
        offsets = rng.integers(-self.max_offset, self.max_offset + 1, size=3)
        return {"offsets": [int(o) for o in offsets]}

    def make_pair(self, subject, episode, rng):
        """Returns ``(x, y)``, float32 (D1, D2, D3, 1): the three slices only, and the volume."""
        _check_ndims([subject], (3,), self.name)
        y = _clean_image(subject, self.contrast)
        # Clamp so that a subject smaller than max_offset still has its three slices.
        offsets = [
            max(-(size // 2), min(size - 1 - size // 2, offset))
            for size, offset in zip(y.shape, episode["offsets"])
        ]
        return _pair(central_slices(y, offsets), y)


# ----------------------------------------------------------------------------------------------
# k-space undersampling


def cartesian_mask(shape, phase_axes, acceleration, center_fraction, rng):
    """A random Cartesian undersampling mask in (unshifted) FFT layout.

    Along the phase-encoding axes, the low frequencies ``|k| <= center_fraction * n / 2`` are
    always kept; every other phase-encoding position is kept with the probability that makes the
    expected kept fraction ``1 / acceleration``. The mask is constant along the other
    (read-out) axes, so whole k-space lines (2D) or lines through the phase plane (3D) are kept.

    Args:
        shape: the spatial shape *S.
        phase_axes: the phase-encoding axes (1 or 2 of the spatial axes).
        acceleration: R >= 1; ``1`` keeps everything.
        center_fraction: fraction of each phase axis always kept around k = 0, in [0, 1].
        rng: random generator.

    Returns:
        bool (*S) mask with ``mask[0, ..., 0]`` (DC) True, in the layout of ``np.fft.fftn``.

    Raises:
        ValueError: for an acceleration < 1, a fraction outside [0, 1] or bad axes.
    """
    shape = tuple(int(s) for s in shape)
    phase_axes = tuple(sorted({int(a) for a in phase_axes}))
    if not phase_axes or any(a < 0 or a >= len(shape) for a in phase_axes):
        raise ValueError(f"phase_axes must be axes of a {len(shape)}D shape, got {phase_axes}")
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if not 0 <= center_fraction <= 1:
        raise ValueError(f"center_fraction must be in [0, 1], got {center_fraction}")
    phase_shape = [shape[a] for a in phase_axes]
    centre = np.ones(phase_shape, dtype=bool)
    for i, n in enumerate(phase_shape):
        k = np.abs(np.fft.fftfreq(n) * n)  # integer frequencies, unshifted order
        half = max(center_fraction * n / 2.0, 0.5)  # at least the DC line
        view = [1] * len(phase_shape)
        view[i] = n
        centre &= (k <= half).reshape(view)
    n_total = centre.size
    n_centre = int(centre.sum())
    wanted = n_total / float(acceleration)
    p = 0.0 if n_total == n_centre else (wanted - n_centre) / (n_total - n_centre)
    p = min(max(p, 0.0), 1.0)
    phase_mask = centre | (rng.random(phase_shape) < p)
    view = [1] * len(shape)
    for a, n in zip(phase_axes, phase_shape):
        view[a] = n
    return np.broadcast_to(phase_mask.reshape(view), shape).copy()


def zero_filled(image, mask):
    """Zero-filled reconstruction: ``ifftn(mask * fftn(image))``.

    Args:
        image: (*S) real array.
        mask: (*S) bool k-space mask in unshifted FFT layout (see :func:`cartesian_mask`).

    Returns:
        (*S) complex128 image; its magnitude is the task's input.
    """
    image = np.asarray(image, dtype=np.float64)
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} != image shape {image.shape}")
    return np.fft.ifftn(np.fft.fftn(image) * mask)


@register_task
class KSpaceUndersampling(Task):
    """Neuralizer's k-space undersampling reconstruction task.

    The clean image is Fourier transformed, a random Cartesian mask (:func:`cartesian_mask`)
    keeps the central phase-encoding lines plus a random subset of the others, and the input is
    the magnitude of the zero-filled inverse FFT (aliasing and blurring artefacts); the output is
    the clean image. Both are clipped to [0, 1] (the magnitude can overshoot 1 by Gibbs ringing).

    Per episode: the acceleration R, the centre fraction and the phase-encoding axes (2D: one of
    the two axes; 3D: the two axes other than a randomly chosen read-out axis, i.e. 3D Cartesian
    sampling) are shared by all pairs. The mask itself is drawn anew for every pair
    (``same_mask=False``), as a scanner protocol with a random pattern would be; with
    ``same_mask=True`` one mask is drawn per episode. The Neuralizer paper names the task without
    numbers (its sampling weight is 1.0, SPEC §4.1); the defaults (R in [2, 8], 8 % centre, as
    in common fastMRI-style masks) are this project's choice.

    Args:
        contrast: the image of the subject that is degraded (default ``"a"``).
        acceleration: R, a number or a (min, max) range drawn uniformly per episode; >= 1.
        center_fraction: fraction of each phase axis kept around k = 0; number or range in [0, 1].
        same_mask: one mask for all pairs of an episode instead of one per pair.
    """

    name = "kspace_undersampling"
    kind = KIND_IMAGE

    def __init__(self, contrast="a", acceleration=(2.0, 8.0), center_fraction=0.08,
                 same_mask=False):
        self._acc = _as_range(acceleration, "acceleration", low=1.0)
        self._cf = _as_range(center_fraction, "center_fraction", low=0.0, high=1.0)
        super().__init__(contrast=str(contrast), acceleration=acceleration,
                         center_fraction=center_fraction, same_mask=bool(same_mask))
        self.contrast = str(contrast)
        self.same_mask = bool(same_mask)

    def sample_episode(self, rng, subjects):
        """Draw R, the centre fraction, the phase axes and (``same_mask``) a mask seed.

        Returns:
            ``{"acceleration", "center_fraction", "phase_axes", "mask_seed"}``.
        """
        _check_ndims(subjects, (2, 3), self.name)
        ndims = subjects[0].ndims if subjects else 2
        if ndims == 2:
            phase_axes = [int(rng.integers(2))]
        else:
            readout = int(rng.integers(3))
            phase_axes = [a for a in range(3) if a != readout]
        return {
            "acceleration": _uniform(rng, self._acc),
            "center_fraction": _uniform(rng, self._cf),
            "phase_axes": phase_axes,
            "mask_seed": int(rng.integers(2**31)) if self.same_mask else None,
        }

    def make_pair(self, subject, episode, rng):
        """Returns ``(x, y)``, float32 (*S, 1): |zero-filled recon| and the clean image."""
        y = _clean_image(subject, self.contrast)
        mask_rng = rng if episode["mask_seed"] is None else np.random.default_rng(
            episode["mask_seed"])
        mask = cartesian_mask(y.shape, episode["phase_axes"], episode["acceleration"],
                              episode["center_fraction"], mask_rng)
        return _pair(np.abs(zero_filled(y, mask)), y)


# ----------------------------------------------------------------------------------------------
# motion


def rigid_transform(image, angles, translation, order=1):
    """Rotate ``image`` about its centre and translate it (scipy, zero outside).

    Args:
        image: (*S) real array, 2D or 3D.
        angles: rotation in degrees: 1 angle in 2D, 3 angles (about axes 0, 1, 2) in 3D.
        translation: (ndims,) shift in voxels (positive moves the content to larger indices).
        order: spline order of the interpolation (1 = linear).

    Returns:
        (*S) float64 array. With zero angles and zero translation it is ``image`` exactly.
    """
    image = np.asarray(image, dtype=np.float64)
    ndims = image.ndim
    angles = np.deg2rad(np.atleast_1d(np.asarray(angles, dtype=np.float64)))
    translation = np.asarray(translation, dtype=np.float64)
    if not np.any(angles) and not np.any(translation):
        return image.copy()
    if ndims == 2:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        rotation = np.array([[c, -s], [s, c]])
    else:
        rotation = np.eye(3)
        for axis, angle in enumerate(angles[:3]):
            c, s = np.cos(angle), np.sin(angle)
            a, b = [i for i in range(3) if i != axis]
            r = np.eye(3)
            r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
            rotation = r @ rotation
    centre = (np.asarray(image.shape, dtype=np.float64) - 1) / 2
    # affine_transform maps output coordinates o to input coordinates M o + offset; the content
    # moves by rotation R and shift t when M = R^T and offset = c - R^T (c + t).
    matrix = rotation.T
    offset = centre - matrix @ (centre + translation)
    return ndimage.affine_transform(image, matrix, offset=offset, order=order, mode="constant",
                                    cval=0.0)


def shot_schedule(n_lines, n_shots, ordering):
    """Which shot acquires each phase-encoding line.

    Args:
        n_lines: the number of k-space lines along the phase axis.
        n_shots: number of shots (>= 1).
        ordering: ``"sequential"`` (shot s acquires the s-th contiguous block of lines, from the
            most negative to the most positive frequency) or ``"interleaved"`` (line i, counted
            from the most negative frequency, goes to shot i mod n_shots).

    Returns:
        (n_lines,) int array in unshifted FFT order (index 0 = DC), values in [0, n_shots).
    """
    if ordering not in ("sequential", "interleaved"):
        raise ValueError(f"ordering must be 'sequential' or 'interleaved', got {ordering!r}")
    if n_shots < 1:
        raise ValueError(f"n_shots must be >= 1, got {n_shots}")
    order = np.arange(n_lines)  # position in centred (fftshift) order
    if ordering == "sequential":
        shot_centred = (order * n_shots) // n_lines
    else:
        shot_centred = order % n_shots
    return np.fft.ifftshift(shot_centred).astype(np.int64)


def motion_kspace(image, transforms, schedule, axis):
    """Combine the k-space lines of differently moved copies of ``image``.

    Args:
        image: (*S) real array.
        transforms: one ``(angles, translation)`` per shot (see :func:`rigid_transform`).
        schedule: (S[axis],) shot index of every line, unshifted FFT order (see
            :func:`shot_schedule`).
        axis: the phase-encoding axis along which lines are assigned to shots.

    Returns:
        (*S) complex128 image whose k-space equals, on the lines of shot s, the k-space of
        ``image`` moved by ``transforms[s]``.
    """
    image = np.asarray(image, dtype=np.float64)
    schedule = np.asarray(schedule)
    if schedule.shape != (image.shape[axis],):
        raise ValueError(
            f"schedule must have shape ({image.shape[axis]},) for axis {axis}, got "
            f"{schedule.shape}"
        )
    kspace = np.zeros(image.shape, dtype=np.complex128)
    view = [1] * image.ndim
    view[axis] = -1
    for shot, (angles, translation) in enumerate(transforms):
        lines = (schedule == shot).reshape(view)
        if not lines.any():
            continue
        moved = rigid_transform(image, angles, translation)
        kspace = np.where(lines, np.fft.fftn(moved), kspace)
    return np.fft.ifftn(kspace)


@register_task
class MotionCorrection(Task):
    """Neuralizer-style motion-artefact removal (multi-shot rigid motion in k-space).

    The phase-encoding lines are split into ``n_shots`` shots (:func:`shot_schedule`). The shot
    that acquires the centre of k-space (DC) sees the subject in its reference position; every
    other shot sees it under its own small rigid transform (rotation about the centre plus
    translation). The k-space lines of each shot are taken from the correspondingly moved image
    (:func:`motion_kspace`); the input is the magnitude of the inverse FFT (ghosting and
    blurring), the output is the clean image in the reference position. Both are clipped to
    [0, 1].

    Per episode: the phase axis, the number of shots, the line ordering, and the motion bounds
    (drawn from the given ranges) are shared; the transforms of the shots are drawn per pair,
    uniformly within the episode's bounds (every subject moves differently). The Neuralizer paper
    describes motion simulated in k-space (sampling weight 0.5, SPEC §4.1) without numbers; the
    defaults here are this project's choice: 2-8 shots, rotations bounded by 2-8 degrees and
    translations by 1-4 % of the image size (smaller bounds gave artefacts that were hard to see
    in the montage, docs/images/tasks_montage.png).

    Args:
        contrast: the image of the subject that is degraded (default ``"a"``).
        n_shots: integer or (min, max) range, >= 1.
        max_rotation: bound of each rotation angle in degrees, number or range (per episode).
        max_translation: bound of each translation as a fraction of the axis length, number or
            range (per episode).
        orderings: the line orderings to choose from per episode, subset of
            ``("sequential", "interleaved")``.
    """

    name = "motion_correction"
    kind = KIND_IMAGE

    def __init__(self, contrast="a", n_shots=(2, 8), max_rotation=(2.0, 8.0),
                 max_translation=(0.01, 0.04), orderings=("sequential", "interleaved")):
        self._shots = _as_range(n_shots, "n_shots", low=1, integer=True)
        self._rot = _as_range(max_rotation, "max_rotation", low=0.0, high=180.0)
        self._trans = _as_range(max_translation, "max_translation", low=0.0, high=1.0)
        orderings = [orderings] if isinstance(orderings, str) else list(orderings)
        if not orderings or any(o not in ("sequential", "interleaved") for o in orderings):
            raise ValueError(
                f"orderings must be a non-empty subset of ('sequential', 'interleaved'), got "
                f"{orderings!r}"
            )
        super().__init__(contrast=str(contrast), n_shots=n_shots, max_rotation=max_rotation,
                         max_translation=max_translation, orderings=orderings)
        self.contrast = str(contrast)
        self.orderings = orderings

    def sample_episode(self, rng, subjects):
        """Draw the phase axis, the shot count, the ordering and the motion bounds.

        Returns:
            ``{"axis", "n_shots", "ordering", "max_rotation", "max_translation"}``.
        """
        _check_ndims(subjects, (2, 3), self.name)
        ndims = subjects[0].ndims if subjects else 2
        return {
            "axis": int(rng.integers(ndims)),
            "n_shots": int(rng.integers(self._shots[0], self._shots[1] + 1)),
            "ordering": self.orderings[int(rng.integers(len(self.orderings)))],
            "max_rotation": _uniform(rng, self._rot),
            "max_translation": _uniform(rng, self._trans),
        }

    def make_pair(self, subject, episode, rng):
        """Returns ``(x, y)``, float32 (*S, 1): |motion-corrupted recon| and the clean image."""
        y = _clean_image(subject, self.contrast)
        ndims = y.ndim
        axis = episode["axis"]
        if not 0 <= axis < ndims:
            raise ValueError(f"episode axis {axis} is not an axis of the {ndims}D subject")
        schedule = shot_schedule(y.shape[axis], episode["n_shots"], episode["ordering"])
        reference = int(schedule[0])  # the shot that acquires DC stays in place
        n_angles = 1 if ndims == 2 else 3
        size = np.asarray(y.shape, dtype=np.float64)
        transforms = []
        for shot in range(episode["n_shots"]):
            if shot == reference:
                transforms.append((np.zeros(n_angles), np.zeros(ndims)))
                continue
            angles = rng.uniform(-1, 1, n_angles) * episode["max_rotation"]
            shift = rng.uniform(-1, 1, ndims) * episode["max_translation"] * size
            transforms.append((angles, shift))
        x = np.abs(motion_kspace(y, transforms, schedule, axis))
        return _pair(x, y)
