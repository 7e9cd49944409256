"""Which model to run, on which grid, and how many context pairs per APSP chunk.

:func:`resolve_model` maps ``default-2d`` / ``default-3d`` to the trained default weights
under ``neuroicl_tf/weights/`` (each ``.h5`` with a ``.json`` of its training run beside it;
see ``docs/model_card.md``) and any other name to a path. :func:`model_size` reads the grid a
model was built or trained at. :func:`choose_mini_context` picks the Neuroverse3D mini-context
size l from a memory budget, with the per-pair memory estimate of :func:`context_pair_bytes`.
"""

import json
import os

import numpy as np

__all__ = [
    "DEFAULT_MODELS",
    "WEIGHTS_DIR",
    "resolve_model",
    "load_model",
    "model_size",
    "context_pair_bytes",
    "fixed_bytes",
    "choose_mini_context",
]

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "weights")

# Name -> file under WEIGHTS_DIR.
DEFAULT_MODELS = {"default-2d": "default-2d.h5", "default-3d": "default-3d.h5"}

# Default grids when neither the model nor its training run says: Neuralizer's 192x192 slices,
# Neuroverse3D's 128^3 volumes (SPEC §2.1, §3.1).
DEFAULT_SIZE = {2: (192, 192), 3: (128, 128, 128)}


def resolve_model(name, option="--model"):
    """The ``.h5`` file of a model name.

    Args:
        name: ``"default-2d"``, ``"default-3d"`` (trained defaults under
            ``neuroicl_tf/weights/``) or a path to an ``ICLModel`` ``.h5`` file (e.g. the
            ``model.h5`` of a ``neuroicl-train`` run).
        option: how the error messages name the setting that gave ``name``.

    Returns:
        The absolute path of the file.

    Raises:
        FileNotFoundError: the default weights are not installed (a broken install, or a
            checkout without them), or the path does not exist.
        ValueError: a path that is not an ``.h5`` file.
    """
    name = os.fspath(name)
    if name in DEFAULT_MODELS:
        path = os.path.join(WEIGHTS_DIR, DEFAULT_MODELS[name])
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{option} {name}: the trained default weights are not installed (looked for "
                f"{path}); reinstall the package, or train a model with neuroicl-train and "
                f"pass {option} RUN/model.h5"
            )
        return path
    if not os.path.isfile(name):
        raise FileNotFoundError(f"{option}: no such model file: {name}")
    if not name.endswith(".h5"):
        raise ValueError(f"{option}: expected default-2d, default-3d or an ICLModel .h5 file "
                         f"(neuroicl-train's model.h5), got {name}")
    return os.path.abspath(name)


def load_model(name):
    """Load a model by name or path (see :func:`resolve_model`).

    Returns:
        ``(model, path)``: the ``ICLModel`` and its file.
    """
    from ..models import ICLModel

    path = resolve_model(name)
    return ICLModel.load(path), path


def model_size(model, path=None, size=None):
    """The spatial size the model runs at.

    Order of precedence: ``size`` (the ``--size`` option); the model's static
    ``spatial_shape``; the training ``shape`` in ``<model>.json`` beside the model file (the
    shipped defaults) or in ``train_config.json`` beside it (a ``neuroicl-train`` run); the
    reference default (2D 192x192, 3D 128^3).

    Args:
        model: an ``ICLModel``.
        path: the model's file (to find its training run).
        size: one int (every axis) or ``ndims`` ints, or None.

    Returns:
        ``(size, source)``: a tuple of ``ndims`` ints and where it came from.

    Raises:
        ValueError: sizes of the wrong count or not divisible by the model's
            ``size_divisor()``.
    """
    ndims = model.ndims
    source = "--size"
    if size is None:
        static = model.inputs[0].shape[1:-1]
        config_path = None
        if path:
            # A sidecar <model>.json (the shipped defaults), else the run's train_config.json.
            path = os.fspath(path)
            stem = path[:-3] if path.endswith(".h5") else path
            candidates = (stem + ".json",
                          os.path.join(os.path.dirname(path), "train_config.json"))
            config_path = next((c for c in candidates if os.path.isfile(c)), None)
        if all(s is not None for s in static):
            size, source = tuple(int(s) for s in static), "the model's spatial_shape"
        elif config_path:
            with open(config_path) as f:
                saved = json.load(f)
            # neuroicl-train writes {"model": {...}, "train": {"shape": ...}}.
            shape = (saved.get("train") or saved).get("shape")
            if shape and len(shape) == ndims:
                size, source = tuple(int(s) for s in shape), config_path
        if size is None:
            size, source = DEFAULT_SIZE[ndims], "the reference default"
    size = tuple(int(s) for s in np.atleast_1d(size))
    if len(size) == 1:
        size = size * ndims
    if len(size) != ndims:
        raise ValueError(f"--size: the model is {ndims}D, give 1 or {ndims} sizes; got {size}")
    divisor = model.size_divisor()
    if any(s < 1 or s % divisor for s in size):
        raise ValueError(f"--size: every size must be a positive multiple of {divisor} for "
                         f"this model (2**(stages-1)); got {size}")
    return size, source


# Measured with benchmarks/bench_predict_memory.py (see docs/predict.md): peak process memory
# grows by about ALPHA * sum_k(V_k * C_k) * 4 bytes per extra pair in a mini-context, where V_k
# is the voxel count and C_k the width of stage k of the context U-Net. Measured 6.3 (CPU, 48^3,
# channels 4-32, L = 4); 8 leaves a 25 % margin.
ALPHA = 8.0


def _stage_units(channels, shape):
    voxels = float(np.prod(shape))
    return sum(voxels / 8**k * c for k, c in enumerate(channels))


def context_pair_bytes(channels, shape):
    """Estimated memory of one context pair inside a Neuroverse3D mini-context, in bytes.

    Args:
        channels: stage widths of the model (e.g. (32, 64, 128, 256, 512)).
        shape: the 3D grid (e.g. (128, 128, 128)).
    """
    return ALPHA * 4.0 * _stage_units(channels, shape)


def fixed_bytes(model, shape):
    """Memory that does not depend on l: weights, the target branch and the running means,
    estimated as the weights plus the cost of three pairs (target encoder + decoder + means)."""
    weights = 4.0 * model.count_params()
    channels = model.get_config().get("channels")
    return weights + 3 * context_pair_bytes(channels, shape)


def choose_mini_context(model, shape, n_pairs, mem_gb=None):
    """The largest mini-context size l whose estimated memory fits ``mem_gb``.

    Args:
        model: a Neuroverse3D.
        shape: the 3D model grid.
        n_pairs: the context size L (l is at most L).
        mem_gb: budget in GiB; None takes half of the available memory (``MemAvailable``).

    Returns:
        ``(l, estimate)``: l in [1, L] and a one-line description of the estimate.

    Raises:
        ValueError: even l = 1 does not fit ``mem_gb``.
    """
    channels = model.get_config().get("channels")
    if mem_gb is None:
        mem_gb = _available_gib() / 2.0
        origin = "half the available memory"
    else:
        origin = "--mem-gb"
    per_pair = context_pair_bytes(channels, shape)
    fixed = fixed_bytes(model, shape)
    budget = float(mem_gb) * 2**30
    count = int((budget - fixed) // per_pair)
    if count < 1:
        raise ValueError(
            f"--mem-gb {mem_gb:g}: one context pair at {tuple(shape)} needs about "
            f"{(fixed + per_pair) / 2**30:.2f} GiB; give more memory or a smaller --size"
        )
    l_value = max(1, min(int(n_pairs), count))
    text = (f"mini-context l = {l_value} of L = {n_pairs} ({origin}: {mem_gb:.1f} GiB; estimate "
            f"{fixed / 2**30:.2f} GiB fixed + {per_pair / 2**30:.2f} GiB per pair)")
    return l_value, text


def _available_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0
