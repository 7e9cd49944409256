"""In-context prediction on NIfTI files: context preparation, registration, the model run (slice
by slice for 2D models, APSP for 3D models), ensembling and writing the outputs.

:class:`Predictor` holds what is shared by every target of a run: the model (loaded once) and the
context pairs (loaded, checked, normalised and binarised once). What depends on the target is
done per target: the model grid, the registration of every context image to the target, the
resampling onto the grid and the forward passes. Context *features* are not cached across
targets: in both models the context branch reads the target's features (Neuralizer averages
target and context features in every Pairwise-Conv-Avg block; Neuroverse3D fuses target encoder
features into the context U-Net), so they change with every target.
"""

import dataclasses
import os
import time

import numpy as np

from .. import io as nio
from . import geometry
from .ensemble import bootstrap, combine
from .models import choose_mini_context, load_model, model_size

__all__ = ["ContextPair", "prepare_context", "Predictor", "predict"]

TASKS = ("seg", "image")


@dataclasses.dataclass
class ContextPair:
    """One prepared context pair on its own (native) grid.

    Attributes:
        name: the image file's name (for the log).
        image: (X, Y, Z) float32 in [0, 1], normalised.
        output: (X, Y, Z) float32: the binary mask (seg) or the normalised output image.
        affine: (4, 4).
    """

    name: str
    image: np.ndarray
    output: np.ndarray
    affine: np.ndarray


def prepare_context(ctx_in, ctx_out, task="seg", labels=None):
    """Load, check and normalise the context pairs (once per run).

    Images are normalised like the references (percentile clip 2/98, then min-max to [0, 1]).
    For segmentation the label maps become binary masks of ``labels`` (all non-zero labels if
    None); binary masks are not percentile-clipped (a small structure would vanish). For image
    tasks the outputs are normalised like the images.

    Args:
        ctx_in: list of context image paths.
        ctx_out: list of context label map (seg) or output image (image) paths, same length.
        task: ``"seg"`` or ``"image"``.
        labels: label values for segmentation, or None.

    Returns:
        list of :class:`ContextPair`.

    Raises:
        FileNotFoundError: a missing file.
        ValueError: different numbers of images and outputs, no pairs, a file that is not a 3D
            NIfTI image, NaN/Inf voxels, a pair whose two files differ in shape, an empty label
            map, none of ``labels`` present, or ``labels`` with ``task="image"``.
    """
    ctx_in, ctx_out = list(ctx_in), list(ctx_out)
    if task not in TASKS:
        raise ValueError(f"--task must be one of {TASKS}, got {task!r}")
    if labels is not None and task != "seg":
        raise ValueError("--labels only applies to --task seg")
    if len(ctx_in) != len(ctx_out):
        raise ValueError(
            f"--ctx-in has {len(ctx_in)} files but --ctx-out has {len(ctx_out)}; give one "
            "output per context image, in the same order"
        )
    if not ctx_in:
        raise ValueError("no context: give at least one pair with --ctx-in and --ctx-out")
    pairs = []
    for i, (path_in, path_out) in enumerate(zip(ctx_in, ctx_out), start=1):
        image, affine, _ = geometry.load_volume(path_in, f"--ctx-in {i}")
        output, affine_out, _ = geometry.load_volume(path_out, f"--ctx-out {i}")
        geometry.check_same_grid(image.shape, affine, output.shape, affine_out,
                                 f"context pair {i} ({os.path.basename(path_in)}, "
                                 f"{os.path.basename(path_out)})")
        if task == "seg":
            out = geometry.binarize_labels(output, labels, f"--ctx-out {i} ({path_out})")
        else:
            out = nio.normalize_intensity(output)
        pairs.append(ContextPair(os.path.basename(os.fspath(path_in)),
                                 nio.normalize_intensity(image), out, affine))
    return pairs


def _check_output(path, what, suffixes=(".nii", ".nii.gz")):
    name = os.fspath(path)
    if not name.endswith(suffixes):
        raise ValueError(f"{what} must end in {' or '.join(suffixes)}; got {name}")
    folder = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(folder):
        raise ValueError(f"{what}: the output folder does not exist: {folder}")
    return name


class Predictor:
    """In-context prediction with one model and one context set, for one or many targets.

    Args:
        model: an ``ICLModel``, or a name/path for :func:`models.resolve_model`
            (``default-2d``, ``default-3d`` or an ``.h5`` file).
        ctx_in: context image paths (L files).
        ctx_out: context label maps (seg) or output images (image), L files in the same order.
        task: ``"seg"`` (binary output, thresholded at 0.5) or ``"image"`` (float output).
        labels: label values that make the segmentation target (None: every non-zero label).
        size: model grid size (1 or ``ndims`` ints); None: see :func:`models.model_size`.
        voxel_size: model grid voxel size in mm; None fits the head (as in training).
        axis: 2D models: slice axis, ``"sagittal"``, ``"coronal"``, ``"axial"`` or 0/1/2.
        mini_context: 3D models: APSP mini-context size l; None chooses it from ``mem_gb``.
        mem_gb: memory budget in GiB for choosing l (None: half of the available memory).
        ensemble: N ensemble members (context bootstrapping); 1 = plain prediction.
        register: register every context image to each target (affine, SimpleITK).
        reg_voxel_size: registration grid spacing in mm.
        seed: seed of the ensemble draws and of the registration's metric sampling.
        batch_size: 2D models: slices per forward pass.
        threads: threads for SimpleITK (TensorFlow's are set by the command line).
        log: a function taking one string (default: ``print``).

    Raises:
        ValueError, FileNotFoundError: bad options or context files (see
            :func:`prepare_context`).
    """

    def __init__(self, model, ctx_in, ctx_out, task="seg", labels=None, size=None,
                 voxel_size=None, axis="coronal", mini_context=None, mem_gb=None, ensemble=1,
                 register=True, reg_voxel_size=3.0, seed=0, batch_size=4, threads=None,
                 log=print):
        self.log = log
        if isinstance(axis, str):
            if axis not in geometry.AXES:
                raise ValueError(f"--axis must be one of {sorted(geometry.AXES)}, got {axis!r}")
            axis = geometry.AXES[axis]
        if axis not in (0, 1, 2):
            raise ValueError(f"--axis must be 0, 1 or 2, got {axis!r}")
        if int(ensemble) < 1:
            raise ValueError(f"--ensemble must be >= 1, got {ensemble}")
        if mini_context is not None and int(mini_context) < 1:
            raise ValueError(f"--mini-context must be >= 1, got {mini_context}")
        if voxel_size is not None and not voxel_size > 0:
            raise ValueError(f"--voxel-size must be > 0, got {voxel_size}")
        self.task, self.axis, self.ensemble = task, axis, int(ensemble)
        self.voxel_size, self.register, self.reg_voxel_size = voxel_size, register, reg_voxel_size
        self.seed, self.batch_size, self.threads = int(seed), int(batch_size), threads
        start = time.perf_counter()
        self.context = prepare_context(ctx_in, ctx_out, task, labels)
        if isinstance(model, (str, os.PathLike)):
            self.model, self.model_path = load_model(model)
        else:
            self.model, self.model_path = model, None
        self.size, size_source = model_size(self.model, self.model_path, size)
        self.ndims = self.model.ndims
        self.mini_context, self._mem_gb = mini_context, mem_gb
        if self.ndims == 3 and mini_context is None:
            self.mini_context, text = choose_mini_context(self.model, self.size,
                                                          len(self.context), mem_gb)
            log(text)
        elif self.ndims == 2 and mini_context is not None:
            log("note: --mini-context applies to 3D models only; ignored")
        self._fn = None
        name = type(self.model).__name__
        log(f"model {name} ({self.ndims}D, {self.model.count_params():,} parameters) from "
            f"{self.model_path or 'memory'}; grid {'x'.join(map(str, self.size))} "
            f"({size_source}); {len(self.context)} context pairs prepared in "
            f"{time.perf_counter() - start:.1f} s")

    # ------------------------------------------------------------------ the model run

    def _forward(self):
        if self._fn is None:
            from .. import _compat

            tf = _compat.import_tensorflow()
            model = self.model
            if self.ndims == 3 and hasattr(model, "apsp"):
                mini = int(self.mini_context)

                def run(t, ci, co):
                    return model([t, ci, co], training=False, mini_context=mini, shuffle=False)
            else:

                def run(t, ci, co):
                    return model([t, ci, co], training=False)

            self._fn = tf.function(run, reduce_retracing=True, autograph=False)
        return self._fn

    def _channels(self, array, channels):
        out = np.zeros(array.shape + (channels,), np.float32)
        out[..., 0] = array
        return out

    def run_model(self, target, images, outputs, grid):
        """One forward pass over a whole volume on the model grid.

        Args:
            target: ``grid.shape`` float32.
            images: (L, *grid.shape) context images.
            outputs: (L, *grid.shape) context outputs.
            grid: :class:`geometry.ModelGrid`.

        Returns:
            ``grid.shape`` float32, the raw output (first channel).
        """
        fn = self._forward()
        cin, cout = self.model.in_channels, self.model.out_channels
        if self.ndims == 3:
            result = fn(self._channels(target[None], cin), self._channels(images[None], cin),
                        self._channels(outputs[None], cout))
            return np.asarray(result)[0, ..., 0]
        a = grid.axis
        t = np.moveaxis(target, a, 0)
        ci = np.moveaxis(images, a + 1, 0)  # (N, L, S1, S2)
        co = np.moveaxis(outputs, a + 1, 0)
        out = np.empty(t.shape, np.float32)
        for s in range(0, t.shape[0], self.batch_size):
            part = slice(s, s + self.batch_size)
            result = fn(self._channels(t[part], cin), self._channels(ci[part], cin),
                        self._channels(co[part], cout))
            out[part] = np.asarray(result)[..., 0]
        return np.moveaxis(out, 0, a)

    # ------------------------------------------------------------------ one target

    def _context_on_grid(self, moved, member, grid):
        images, outputs = [], []
        order = 0 if self.task == "seg" else 1
        for index, jitter in zip(member.indices, member.jitters):
            pair = self.context[int(index)]
            affine = np.linalg.solve(jitter, moved[int(index)])
            images.append(geometry.to_grid(pair.image, affine, grid, 1))
            outputs.append(geometry.to_grid(pair.output, affine, grid, order).astype(np.float32))
        return np.stack(images), np.stack(outputs)

    def predict(self, image, out, uncertainty=None, png=None):
        """Predict one target and write the outputs.

        Args:
            image: target NIfTI path.
            out: output NIfTI path (seg: uint8 mask; image: float32), on the target's grid
                with the target's header (shape, affine, qform, sform).
            uncertainty: optional NIfTI path for the per-voxel standard deviation over the
                ensemble (needs ``ensemble >= 2``).
            png: optional montage path.

        Returns:
            dict summary (outputs, grid, registration, timings, predicted volume).

        Raises:
            FileNotFoundError, ValueError: bad target or output paths; nothing is written.
        """
        start = time.perf_counter()
        out = _check_output(out, "-o/--out")
        if uncertainty is not None:
            uncertainty = _check_output(uncertainty, "--uncertainty")
            if self.ensemble < 2:
                raise ValueError("--uncertainty needs --ensemble N with N >= 2 (the std over "
                                 "the ensemble members)")
        if png is not None:
            png = _check_output(png, "--png", (".png",))
        data, affine, header = geometry.load_volume(image, "-i/--image")
        full_shape = tuple(int(s) for s in header.get_data_shape())
        norm = nio.normalize_intensity(data)
        box = geometry.head_box(norm, affine)
        grid = geometry.make_grid(box, self.size, self.ndims, self.axis, self.voxel_size)
        target = geometry.to_grid(norm, affine, grid, 1)
        self.log(f"target {os.path.basename(os.fspath(image))}: {data.shape} -> model grid "
                 f"{grid.shape} at {grid.voxel_size:.2f} mm"
                 + (f", {grid.shape[grid.axis]} slices along axis {grid.axis}"
                    if self.ndims == 2 else ""))

        moved, registrations = [], []
        for i, pair in enumerate(self.context, start=1):
            if not self.register:
                moved.append(pair.affine)
                continue
            from .registration import register_affine

            result = register_affine(norm, affine, pair.image, pair.affine,
                                     voxel_size=self.reg_voxel_size, seed=self.seed,
                                     threads=self.threads)
            registrations.append(result)
            moved.append(result.moved_affine(pair.affine))
            self.log(f"  registered context {i} ({pair.name}): {result.summary()}")
            if result.correlation < 0.5:
                self.log(f"  warning: context {i} may be badly aligned (correlation "
                         f"{result.correlation:.2f}); check it, or use --no-register if the "
                         "data are already aligned")

        members = bootstrap(len(self.context), self.ensemble, grid.centre, seed=self.seed)
        raw, shown = [], None
        for m, member in enumerate(members, start=1):
            images, outputs = self._context_on_grid(moved, member, grid)
            if self.task == "seg" and not outputs.any():
                self.log("  warning: every context mask is empty on the model grid (structure "
                         "smaller than a voxel at this grid, or outside the field of view)")
            t0 = time.perf_counter()
            raw.append(self.run_model(target, images, outputs, grid))
            if self.ensemble > 1:
                self.log(f"  ensemble member {m}/{self.ensemble}: {time.perf_counter() - t0:.1f} s")
            if shown is None and self.ensemble == 1:
                shown = list(zip(images, outputs))
        mean, std = combine(raw)

        back = geometry.from_grid(mean, grid, data.shape, affine, order=1)
        if self.task == "seg":
            result = (back >= 0.5).astype(np.uint8)
        else:
            result = back.astype(np.float32)
        written = []
        try:
            geometry.save_like(out, result, header, full_shape)
            written.append(out)
            if uncertainty is not None:
                spread = geometry.from_grid(std, grid, data.shape, affine, order=1)
                geometry.save_like(uncertainty, spread.astype(np.float32), header, full_shape)
                written.append(uncertainty)
            if png is not None:
                from .ensemble import Member
                from .montage import save_montage

                if shown is None:
                    plain = Member(np.arange(len(self.context)),
                                   np.repeat(np.eye(4)[None], len(self.context), axis=0))
                    shown = list(zip(*self._context_on_grid(moved, plain, grid)))
                title = (f"{os.path.basename(os.fspath(image))}: {type(self.model).__name__}, "
                         f"L = {len(self.context)}, ensemble {self.ensemble}")
                save_montage(png, target, shown, mean, self.task, title)
                written.append(png)
        except BaseException:
            for path in written:
                if os.path.exists(path):
                    os.remove(path)
            raise
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        summary = {
            "outputs": written,
            "grid_shape": list(grid.shape),
            "voxel_size": grid.voxel_size,
            "ensemble": self.ensemble,
            "mini_context": self.mini_context if self.ndims == 3 else None,
            "registration": [dataclasses.asdict(r) | {"matrix": r.matrix.tolist()}
                             for r in registrations],
            "seconds": round(time.perf_counter() - start, 2),
        }
        if self.task == "seg":
            summary["volume_ml"] = float(result.sum() * np.prod(zooms) / 1000.0)
            self.log(f"  predicted volume {summary['volume_ml']:.2f} mL")
        return summary


def predict(image, ctx_in, ctx_out, out, model="default-3d", uncertainty=None, png=None,
            **kwargs):
    """Predict one target in context (see :class:`Predictor` for ``kwargs``).

    Returns:
        The summary dict of :meth:`Predictor.predict`.
    """
    predictor = Predictor(model, ctx_in, ctx_out, **kwargs)
    return predictor.predict(image, out, uncertainty=uncertainty, png=png)
