"""What the Neuralizer and Neuroverse3D converters share: array and kernel layouts, and the
matching of a state dict to a model's convolutions with one report of everything that does not
fit."""

import numpy as np


def to_numpy(value):
    """A state-dict value (numpy array, torch tensor, list) as a float32 numpy array."""
    if hasattr(value, "detach"):  # a torch tensor; no torch import needed
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def kernel_to_keras(weight):
    """``(O, I, *k)`` -> ``(*k, I, O)``."""
    ndims = weight.ndim - 2
    return np.transpose(weight, tuple(range(2, 2 + ndims)) + (1, 0))


def kernel_to_torch(kernel):
    """``(*k, I, O)`` -> ``(O, I, *k)``."""
    ndims = kernel.ndim - 2
    return np.transpose(kernel, (ndims + 1, ndims) + tuple(range(ndims)))


def match_state_dict(sd, mapping, variables, what):
    """Pair every convolution of a model with its state-dict entries.

    Args:
        sd: ``{pytorch key: float32 numpy array}`` in PyTorch layout, prefixes removed.
        mapping: ``[(pytorch module path, Keras conv layer), ...]``.
        variables: every variable of the model that must receive a value.
        what: the model's name for the error message.

    Returns:
        ``[(keras variable, numpy value in Keras layout), ...]``, one per variable.

    Raises:
        ValueError: naming every missing key, unexpected key, shape mismatch and model
            variable left without a value, or a key or variable that would be used twice.
    """
    pairs, used, missing, mismatched = [], set(), [], []
    for prefix, layer in mapping:
        for suffix, variable in ((".weight", layer.kernel), (".bias", layer.bias)):
            key = prefix + suffix
            if key not in sd:
                missing.append(key)
                continue
            if key in used:
                raise ValueError(f"state_dict conversion: key {key!r} would be used twice")
            used.add(key)
            value, want = sd[key], tuple(variable.shape)
            if suffix == ".weight":
                if value.ndim != len(want):
                    mismatched.append(f"{key}: {value.shape} cannot become Keras {want}")
                    continue
                value = kernel_to_keras(value)
            if tuple(value.shape) != want:
                mismatched.append(
                    f"{key}: {tuple(sd[key].shape)} (Keras layout {tuple(value.shape)}) does "
                    f"not fit {variable.name} {want}"
                )
                continue
            pairs.append((variable, value))
    covered = [id(v) for v, _ in pairs]
    if len(set(covered)) != len(covered):
        raise ValueError("state_dict conversion: a model variable would be set twice")
    unexpected = sorted(set(sd) - used)
    unset = [v.name for v in variables if id(v) not in set(covered)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {mismatched}")
    if unset and not (missing or mismatched):
        problems.append(f"model variables without a value ({len(unset)}): {unset}")
    if problems:
        raise ValueError(f"state_dict does not match the {what} model: " + "; ".join(problems))
    return pairs


def state_dict_of(mapping):
    """A Keras model's convolutions as a PyTorch-layout state dict (the inverse conversion).

    Args:
        mapping: ``[(pytorch module path, Keras conv layer), ...]``.

    Returns:
        ``{pytorch key: float32 numpy array}`` (kernels ``(O, I, *k)``).
    """
    out = {}
    for prefix, layer in mapping:
        out[prefix + ".weight"] = kernel_to_torch(layer.kernel.numpy())
        out[prefix + ".bias"] = layer.bias.numpy().copy()
    return out
