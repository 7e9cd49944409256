"""Convert PyTorch reference weights (Neuralizer, Neuroverse3D) to the Keras models.

    from neuroicl_tf.convert import load_reference, convert_state_dict
    model = convert_state_dict(load_reference("neuralizer.ckpt"))   # architecture inferred
    model.save("neuralizer.h5")                                      # ICLModel.load reads it

A state dict is a mapping from PyTorch keys to arrays in PyTorch layout (SPEC §1.8, §2.6, §3.6).
Accepted wrappers: the fixtures' ``w/<key>`` entries (other entries are ignored), a Lightning
checkpoint's ``state_dict`` entry, and a ``model.``/``module.`` prefix shared by every key.

Each architecture has a module with the same two functions, ``config_from_state_dict(sd) ->
dict`` and ``keras_weights_from_state_dict(sd, model) -> [(keras variable, numpy value)]``:
:mod:`neuroicl_tf.convert.neuralizer` and :mod:`neuroicl_tf.convert.neuroverse3d`.
"""

import importlib
import os
import re
from collections.abc import Mapping

import numpy as np

__all__ = [
    "ARCHITECTURES",
    "convert_state_dict",
    "detect_architecture",
    "load_reference",
    "normalize_state_dict",
]

ARCHITECTURES = ("neuralizer", "neuroverse3d")
_MODEL_CLASSES = {"neuralizer": "Neuralizer", "neuroverse3d": "Neuroverse3D"}
_NESTING_KEYS = ("state_dict", "model_state_dict")
_PREFIXES = ("model.", "module.")
REFERENCE_SUFFIXES = (".npz", ".ckpt", ".pt", ".pth")


def _is_tensor(value):
    return hasattr(value, "shape")


def normalize_state_dict(state_dict):
    """Unwrap a state dict: nesting, ``w/`` fixture keys and a shared ``model.`` prefix.

    Args:
        state_dict: a mapping (a plain state dict, a Lightning checkpoint dict, a fixture).

    Returns:
        ``{pytorch key: array or tensor}`` with the reference's own key names.

    Raises:
        TypeError: ``state_dict`` is not a mapping.
        ValueError: it holds no tensors.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    sd = state_dict
    for key in _NESTING_KEYS:
        if key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    keys = list(sd.keys())
    if any(k.startswith("w/") for k in keys):
        sd = {k[2:]: sd[k] for k in keys if k.startswith("w/")}
    else:
        sd = {k: sd[k] for k in keys if _is_tensor(sd[k])}
    stripped = True
    while sd and stripped:
        stripped = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped = True
    if not sd:
        raise ValueError("state_dict holds no weight tensors")
    return sd


def detect_architecture(state_dict):
    """``"neuralizer"`` or ``"neuroverse3d"`` from the keys of a (normalised) state dict.

    Raises:
        ValueError: the keys match neither model.
    """
    keys = set(state_dict)
    if "target_encoder.target_embedding.weight" in keys:
        return "neuroverse3d"
    if "target_embedding.weight" in keys and "context_embedding.module.weight" in keys:
        return "neuralizer"
    raise ValueError(
        "cannot tell the architecture: wanted the key 'target_embedding.weight' (Neuralizer) "
        f"or 'target_encoder.target_embedding.weight' (Neuroverse3D); first keys: "
        f"{sorted(keys)[:5]}"
    )


def _arch_module(arch):
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES} or 'auto', got {arch!r}")
    return importlib.import_module(f"{__name__}.{arch}")


def _model_class(arch):
    from .. import models

    return getattr(models, _MODEL_CLASSES[arch])


def convert_state_dict(state_dict, model=None, arch="auto"):
    """Load a PyTorch reference state dict into a Keras model.

    Args:
        state_dict: mapping of PyTorch key -> array (PyTorch layout); wrappers as in
            :func:`normalize_state_dict`.
        model: a Keras Neuralizer/Neuroverse3D to fill; None builds one with the architecture,
            dimensionality, widths, stages and channel counts inferred from the keys and shapes.
        arch: "auto", "neuralizer" or "neuroverse3d".

    Returns:
        The model with every weight set from the state dict.

    Raises:
        ValueError: unknown architecture, or keys/shapes that do not match the model (the
            message lists missing and unexpected keys and shape mismatches).
    """
    sd = normalize_state_dict(state_dict)
    detected = detect_architecture(sd)
    if arch == "auto":
        arch = detected
    elif arch != detected:
        _arch_module(arch)  # reject unknown names first
        raise ValueError(f"arch={arch!r}, but the state dict holds a {detected} model")
    module = _arch_module(arch)
    klass = _model_class(arch)
    if model is None:
        model = klass(**module.config_from_state_dict(sd))
    elif not isinstance(model, klass):
        raise ValueError(
            f"model is a {type(model).__name__}, but the state dict holds a {klass.__name__}"
        )
    for variable, value in module.keras_weights_from_state_dict(sd, model):
        variable.assign(value)
    return model


def load_reference(path, trust_pickle=False):
    """Read reference weights from disk as a normalised state dict of numpy arrays.

    Args:
        path: an ``.npz`` (a fixture with ``w/<key>`` entries, or a plain state dict), or a
            PyTorch ``.ckpt``/``.pt``/``.pth`` file (needs torch).
        trust_pickle: PyTorch files are read with ``weights_only=True``, which refuses the
            arbitrary Python objects a Lightning checkpoint may carry (e.g. an
            ``argparse.Namespace`` of hyper-parameters). Pass True only for a file from a
            source you trust: unpickling it can run code.

    Returns:
        ``{pytorch key: numpy array}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unsupported suffix.
        ImportError: a PyTorch file without torch installed.
        ValueError: a PyTorch file that needs ``trust_pickle=True``, or that is not a
            PyTorch file at all.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"reference weights not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            raw = {k: data[k] for k in data.files}
        return normalize_state_dict(raw)
    if suffix not in REFERENCE_SUFFIXES:
        raise ValueError(f"reference weights must be one of {REFERENCE_SUFFIXES}, got {path}")
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"reading {path} needs PyTorch: pip install 'neuroicl_tf[torch]', or export the "
            "state dict to .npz elsewhere (numpy.savez(out, **{k: v.numpy() for k, v in "
            "state_dict.items()}))"
        ) from err
    import pickle

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        # torch names the first non-tensor object as "Unsupported global: GLOBAL module.Name".
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if trust_pickle or not found:
            raise ValueError(f"{path} is not a readable PyTorch file: "
                             f"{str(err).strip().splitlines()[0][:300]}") from err
        raise ValueError(
            f"{path} holds Python objects besides tensors (first: {found.group(1)}); if you "
            "trust its source, load it with trust_pickle=True (neuroicl-convert "
            "--trust-pickle): unpickling can run code"
        ) from err
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path} is not a readable PyTorch file: {err}") from err
    sd = normalize_state_dict(checkpoint)
    return {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            for k, v in sd.items()}
