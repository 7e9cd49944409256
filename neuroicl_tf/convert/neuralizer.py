"""PyTorch Neuralizer state dicts <-> the Keras :class:`~neuroicl_tf.models.Neuralizer`.

The reference state dict (SPEC §2.6, 106 tensors for the default) holds a ``.weight``
``(O, I, *k)`` and a ``.bias`` ``(O,)`` per convolution. Keras kernels are ``(*k, I, O)``
(SPEC §6.1). The Keras layers keep the reference's concatenation orders (SPEC §1.4: pair fusion
[context ‖ target], context embedding [image ‖ label], up-block [up-sampled ‖ shortcut]), so a
transpose is the whole conversion. Layer names follow the PyTorch module names.
"""

import re

from ._common import match_state_dict, state_dict_of, to_numpy

__all__ = [
    "config_from_state_dict",
    "keras_weights_from_state_dict",
    "state_dict_from_keras",
    "conv_mapping",
]

_TARGET_EMBEDDING = "target_embedding.weight"
_CONTEXT_EMBEDDING = "context_embedding.module.weight"
_OUTPUT = "output_block.block.1.weight"


def _indices(keys, pattern):
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for m in map(regex.match, keys) if m})


def config_from_state_dict(state_dict):
    """Infer the Neuralizer constructor arguments from a reference state dict.

    Args:
        state_dict: mapping from PyTorch keys (no prefix) to arrays/tensors.

    Returns:
        ``{"ndims", "stages", "channels", "in_channels", "out_channels"}``.

    Raises:
        ValueError: the keys do not describe a Neuralizer, or their shapes disagree.
    """
    keys = list(state_dict)
    for key in (_TARGET_EMBEDDING, _CONTEXT_EMBEDDING, _OUTPUT):
        if key not in state_dict:
            raise ValueError(
                f"state_dict: no {key!r}; this is not a Neuralizer state dict "
                f"(first keys: {sorted(keys)[:5]})"
            )
    embedding = to_numpy(state_dict[_TARGET_EMBEDDING])
    ndims = embedding.ndim - 2
    if ndims not in (2, 3):
        raise ValueError(
            f"state_dict: {_TARGET_EMBEDDING} has shape {embedding.shape}, wanted "
            "(C, Cin, *k) with 2 or 3 kernel axes"
        )
    channels, in_channels = int(embedding.shape[0]), int(embedding.shape[1])
    pair = to_numpy(state_dict[_CONTEXT_EMBEDDING])
    out = to_numpy(state_dict[_OUTPUT])
    out_channels = int(pair.shape[1]) - in_channels
    if out_channels < 1 or int(out.shape[0]) != out_channels:
        raise ValueError(
            f"state_dict: {_CONTEXT_EMBEDDING} takes {pair.shape[1]} channels (Cin + Cout) "
            f"with Cin = {in_channels}, but {_OUTPUT} gives {out.shape[0]} outputs"
        )
    enc = _indices(keys, r"^enc_blocks\.(\d+)\.")
    dec = _indices(keys, r"^dec_blocks\.(\d+)\.")
    ups = _indices(keys, r"^upsample_blocks\.(\d+)\.")
    stages = len(enc)
    if (not enc or enc != list(range(stages)) or dec != list(range(stages - 1))
            or ups != list(range(stages - 1))):
        raise ValueError(
            "state_dict: wanted enc_blocks.0..S-1, dec_blocks.0..S-2 and "
            f"upsample_blocks.0..S-2; found enc {enc}, dec {dec}, upsample {ups}"
        )
    return {
        "ndims": ndims,
        "stages": stages,
        "channels": channels,
        "in_channels": in_channels,
        "out_channels": out_channels,
    }


def _residual_unit(prefix, unit):
    """A residual unit's convs are ``layers.0, layers.2, ...`` (GELUs sit between them)."""
    return [(f"{prefix}.layers.{2 * i}", conv) for i, conv in enumerate(unit.convs)]


def _pca_block(prefix, block):
    return [
        *_residual_unit(f"{prefix}.context_conv.module", block.context_conv),
        *_residual_unit(f"{prefix}.target_conv", block.target_conv),
        (f"{prefix}.combine_conv_target.module", block.combine_conv_target),
        (f"{prefix}.combine_conv_context.module", block.combine_conv_context),
    ]


def conv_mapping(model):
    """Every convolution of a Keras Neuralizer with its PyTorch module path.

    Args:
        model: a :class:`~neuroicl_tf.models.Neuralizer`.

    Returns:
        A list of ``(pytorch module path, Keras conv layer)``.
    """
    stages = model.get_config()["stages"]
    get = model.get_layer
    entries = [
        ("target_embedding", get("target_embedding")),
        ("context_embedding.module", get("context_embedding").layer),
    ]
    for s in range(stages):
        entries += _pca_block(f"enc_blocks.{s}", get(f"enc_blocks_{s}"))
    for j in range(stages - 1):
        entries += _pca_block(f"dec_blocks.{j}", get(f"dec_blocks_{j}"))
        entries.append((f"upsample_blocks.{j}.target_conv_layer",
                        get(f"upsample_blocks_{j}_target_conv_layer").conv))
        entries.append((f"upsample_blocks.{j}.context_conv_layer.module",
                        get(f"upsample_blocks_{j}_context_conv_layer").conv))
    entries += _residual_unit("output_block.block.0", get("output_block_0"))
    entries.append(("output_block.block.1", get("output_block_1")))
    return entries


def keras_weights_from_state_dict(state_dict, model):
    """Match a reference state dict to the variables of a built Keras Neuralizer.

    Args:
        state_dict: mapping from PyTorch keys (no prefix) to arrays/tensors, PyTorch layout.
        model: the Keras Neuralizer (built with :func:`config_from_state_dict`'s config).

    Returns:
        A list of ``(keras variable, numpy value)`` covering every model variable once,
        values in Keras layout.

    Raises:
        ValueError: listing every missing key, unexpected key, shape mismatch and model
            variable left without a value.
    """
    sd = {k: to_numpy(v) for k, v in state_dict.items()}
    return match_state_dict(sd, conv_mapping(model), model.weights, "Neuralizer")


def state_dict_from_keras(model):
    """The inverse conversion: a Keras Neuralizer's weights as a PyTorch-layout state dict.

    Args:
        model: a :class:`~neuroicl_tf.models.Neuralizer`.

    Returns:
        ``{pytorch key: numpy array}`` (kernels ``(O, I, *k)``, biases ``(O,)``).
    """
    return state_dict_of(conv_mapping(model))
