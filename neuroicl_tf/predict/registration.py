"""Affine registration of a context image to the target with SimpleITK.

Why SimpleITK (measured in docs/predict.md, ``benchmarks/bench_registration.py``): on the MNI152
template against a rotated/scaled/shifted copy both SimpleITK and ANTsPy recover the transform
well within a voxel, SimpleITK faster at our settings; SimpleITK reports the final metric and
the optimiser's iterations and stop condition directly (what the log must show), its wheel is
small and has no upper pins on numpy/scipy, whereas ``antspyx`` 0.6 pins ``numpy<2.4`` and
``scipy<1.16`` (it downgrades this project's stack).

Both images are first resampled (with a Gaussian anti-aliasing blur) onto RAS-aligned isotropic
grids at ``voxel_size`` mm around their heads, and handed to SimpleITK with identity directions
and RAS origins, so the physical space SimpleITK works in *is* the NIfTI world (RAS) and the
resulting matrix needs no LPS sign flips. Registration is rigid (Euler, moments-initialised)
then affine, each multi-resolution, with Mattes mutual information (works across contrasts).
"""

import dataclasses
import time

import numpy as np
from scipy import ndimage

from .. import io as nio
from .geometry import head_box

__all__ = ["RegistrationResult", "register_affine", "registration_grid"]


@dataclasses.dataclass
class RegistrationResult:
    """The outcome of :func:`register_affine`.

    Attributes:
        matrix: (4, 4) world-to-world transform mapping a target (fixed) point to the context
            (moving) point that corresponds; the registered context is resampled with
            ``inv(matrix) @ moving_affine`` as its affine.
        metric_start: Mattes MI (negative; lower is better) at the moments initialisation.
        metric: the final Mattes MI (of the returned matrix; if the identity scores better
            than the optimised affine, the identity is returned and ``stop`` says so).
        iterations: optimiser iterations, rigid and affine stage summed over all levels.
        stop: the optimiser's stop condition of the last level.
        correlation: Pearson correlation of target and registered context inside the target's
            head on the registration grid (an interpretable check: near 1 = well aligned for
            similar contrasts).
        correlation_start: the same before registration (identity transform).
        seconds: wall time.
    """

    matrix: np.ndarray
    metric_start: float
    metric: float
    iterations: int
    stop: str
    correlation: float
    correlation_start: float
    seconds: float

    def summary(self):
        """One line for the log."""
        return (f"Mattes MI {self.metric_start:.3f} -> {self.metric:.3f} in {self.iterations} "
                f"iterations ({self.stop}); correlation in the head "
                f"{self.correlation_start:.2f} -> {self.correlation:.2f}; {self.seconds:.1f} s")

    def moved_affine(self, moving_affine):
        """The affine under which the context image lies registered in the target's world."""
        return np.linalg.solve(self.matrix, np.asarray(moving_affine, dtype=np.float64))


def registration_grid(norm, affine, voxel_size, margin_mm=10.0):
    """A RAS isotropic grid of ``voxel_size`` mm around an image's head, and the image on it.

    Args:
        norm: (X, Y, Z) intensities in [0, 1].
        affine: (4, 4) affine.
        voxel_size: mm.
        margin_mm: room around the head box (at most 3 voxels).

    Returns:
        ``(array, grid_affine)``: float32 volume on the grid and its (4, 4) affine.
    """
    lo, hi = head_box(norm, affine)
    margin = min(margin_mm, 3 * voxel_size)
    lo, hi = lo - margin, hi + margin
    shape = np.maximum(np.ceil((hi - lo) / voxel_size).astype(int), 4)
    grid = np.diag([voxel_size] * 3 + [1.0])
    grid[:3, 3] = (lo + hi) / 2.0 - voxel_size * (shape - 1) / 2.0
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    # Anti-aliasing before down-sampling: sigma ~ 0.4 output voxels, in input voxels per axis.
    sigma = np.maximum(0.4 * voxel_size / zooms - 0.25, 0.0)
    smooth = ndimage.gaussian_filter(np.asarray(norm, np.float32), sigma) if sigma.any() else norm
    return nio.resample_to(smooth, affine, tuple(shape), grid, order=1), grid


def _sitk_image(sitk, array, grid):
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing([float(grid[0, 0])] * 3)
    image.SetOrigin([float(v) for v in grid[:3, 3]])
    return image  # identity direction: physical space = RAS world


def _matrix_of(transform):
    """4x4 matrix of a SimpleITK Euler3D/Affine transform (x -> A (x - c) + c + t)."""
    a = np.asarray(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)
    c = np.asarray(transform.GetCenter(), dtype=np.float64)
    t = np.asarray(transform.GetTranslation(), dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = a
    out[:3, 3] = c + t - a @ c
    return out


def _correlation(fixed, moving, mask):
    a, b = fixed[mask], moving[mask]
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _metric(method, fixed, moving):
    try:
        return float(method.MetricEvaluate(fixed, moving))
    except RuntimeError:  # no overlap at this transform
        return float("inf")


def register_affine(fixed, fixed_affine, moving, moving_affine, voxel_size=3.0,
                    iterations=(200, 200), sampling=0.25, seed=0, threads=None):
    """Affine registration of a moving (context) image to a fixed (target) image.

    Args:
        fixed: (X, Y, Z) target intensities in [0, 1].
        fixed_affine: (4, 4).
        moving: (X', Y', Z') context intensities in [0, 1].
        moving_affine: (4, 4).
        voxel_size: registration grid spacing in mm (3 mm: seconds per pair; pyramid shrink
            factors 4, 2, 1 on top of it for the rigid stage, 2, 1 for the affine stage). Made
            finer for small heads, so that the head spans at least 32 voxels.
        iterations: maximum iterations per level of the rigid and of the affine stage.
        sampling: fraction of voxels the metric samples (random, seeded).
        seed: metric sampling seed (any integer >= 0; the same seed gives the same result
            whatever the thread count). SimpleITK reads a seed of 0 as "seed from the wall
            clock", so the seed is passed on as ``seed + 1``.
        threads: SimpleITK threads (None: its default).

    Returns:
        :class:`RegistrationResult`.

    Raises:
        ImportError: SimpleITK is not installed.
        RuntimeError: SimpleITK failed (e.g. images with no overlap).
    """
    try:
        import SimpleITK as sitk
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("registration needs SimpleITK: pip install SimpleITK (or pass "
                          "--no-register for pre-aligned data)") from err
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    start = time.perf_counter()
    # At least ~32 voxels across the target's head, whatever voxel_size says (small images).
    lo, hi = head_box(fixed, fixed_affine)
    voxel_size = min(float(voxel_size), float((hi - lo).max()) / 32.0)
    f_arr, f_grid = registration_grid(fixed, fixed_affine, voxel_size)
    m_arr, m_grid = registration_grid(moving, moving_affine, voxel_size)
    f_img, m_img = _sitk_image(sitk, f_arr, f_grid), _sitk_image(sitk, m_arr, m_grid)
    counter = {"n": 0}

    def method(transform, shrink, smooth, max_iter):
        reg = sitk.ImageRegistrationMethod()
        if threads:
            reg.SetNumberOfThreads(int(threads))  # this registration only, not process-wide
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(float(sampling), int(seed) + 1)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=1e-3, numberOfIterations=int(max_iter),
            relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel(list(shrink))
        reg.SetSmoothingSigmasPerLevel(list(smooth))
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        reg.SetInitialTransform(transform, inPlace=True)
        reg.AddCommand(sitk.sitkIterationEvent, lambda: counter.__setitem__("n", counter["n"] + 1))
        return reg

    rigid = sitk.CenteredTransformInitializer(
        f_img, m_img, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
    metric_start = _metric(method(sitk.Euler3DTransform(rigid), [1], [0], 1), f_img, m_img)
    metric_identity = _metric(method(sitk.Euler3DTransform(), [1], [0], 1), f_img, m_img)
    reg = method(rigid, (4, 2, 1), (2, 1, 0), iterations[0])
    reg.Execute(f_img, m_img)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    reg = method(affine, (2, 1), (1, 0), iterations[1])
    reg.Execute(f_img, m_img)
    matrix = _matrix_of(affine)
    stop = reg.GetOptimizerStopConditionDescription().split(". ")[0].strip(". ")
    metric = _metric(method(sitk.AffineTransform(affine), [1], [0], 1), f_img, m_img)
    if metric_identity < metric:
        # Pre-aligned images where the optimiser wandered off: the identity is better.
        matrix, metric, stop = np.eye(4), metric_identity, "kept the identity (better metric)"

    mask = f_arr > 0.1
    identity_moved = nio.resample_to(m_arr, m_grid, f_arr.shape, f_grid, order=1)
    moved = nio.resample_to(m_arr, np.linalg.solve(matrix, m_grid), f_arr.shape, f_grid, order=1)
    return RegistrationResult(
        matrix=matrix,
        metric_start=metric_start,
        metric=metric,
        iterations=counter["n"],
        stop=stop,
        correlation=_correlation(f_arr, moved, mask),
        correlation_start=_correlation(f_arr, identity_moved, mask),
        seconds=time.perf_counter() - start,
    )
