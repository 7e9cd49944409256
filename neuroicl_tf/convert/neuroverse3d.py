"""PyTorch Neuroverse3D state dicts <-> the Keras :class:`~neuroicl_tf.models.Neuroverse3D`.

The reference state dict (SPEC §3.6) has 132 tensors for the default 5 stages: a ``.weight``
``(O, I, *k)`` and a ``.bias`` ``(O,)`` for every convolution. Keras kernels are ``(*k, I, O)``
(SPEC §6.1). Every concatenation conv of the Keras model concatenates in the reference's order
(SPEC §1.4: [context ‖ target], [image ‖ label], [up-sampled ‖ shortcut]), so a transpose is
the whole conversion.

The mapping is driven by the layer names of the three sub-networks, which follow the PyTorch
module names (``enc_blocks_k`` <-> ``enc_blocks.k``, ...).
"""

import re

from ._common import match_state_dict, state_dict_of, to_numpy

__all__ = [
    "config_from_state_dict",
    "keras_weights_from_state_dict",
    "state_dict_from_keras",
    "conv_mapping",
]

_EMBEDDING_KEY = "target_encoder.target_embedding.weight"


def _strip_prefix(state_dict):
    """Drop a common prefix such as ``model.`` (Lightning) or ``module.`` (DataParallel)."""
    keys = list(state_dict)
    hits = [k for k in keys if k.endswith(_EMBEDDING_KEY)]
    if len(hits) != 1:
        return dict(state_dict)
    prefix = hits[0][: -len(_EMBEDDING_KEY)]
    if not prefix:
        return dict(state_dict)
    if not all(k.startswith(prefix) for k in keys):
        return dict(state_dict)
    return {k[len(prefix):]: v for k, v in state_dict.items()}


def config_from_state_dict(state_dict):
    """Infer the Neuroverse3D constructor arguments from a reference state dict (SPEC §3.6).

    Args:
        state_dict: mapping from PyTorch keys to arrays/tensors (a common ``model.`` or
            ``module.`` prefix is ignored).

    Returns:
        ``{"channels": [C_0, ...], "in_channels": Cin, "out_channels": Cout, "ndims": d}``.

    Raises:
        ValueError: if the keys do not describe a Neuroverse3D or their shapes disagree.
    """
    sd = _strip_prefix(state_dict)
    if _EMBEDDING_KEY not in sd:
        raise ValueError(
            f"state_dict: no {_EMBEDDING_KEY!r}; this is not a Neuroverse3D state dict "
            f"(first keys: {sorted(sd)[:5]})"
        )
    embedding = to_numpy(sd[_EMBEDDING_KEY])
    ndims = embedding.ndim - 2
    if ndims not in (2, 3):
        raise ValueError(
            f"state_dict: {_EMBEDDING_KEY} has shape {embedding.shape}; wanted (C_0, Cin, *k) "
            "with 2 or 3 kernel axes"
        )
    in_channels = int(embedding.shape[1])
    pattern = re.compile(
        r"^context_unet\.enc_blocks\.(\d+)\.context_conv\.module\.layers\.0\.weight$"
    )
    widths = {}
    for key in sd:
        match = pattern.match(key)
        if match:
            widths[int(match.group(1))] = int(to_numpy(sd[key]).shape[0])
    if not widths or sorted(widths) != list(range(len(widths))):
        raise ValueError(
            "state_dict: the context_unet.enc_blocks.{k}.context_conv keys must exist for "
            f"k = 0, 1, ...; found stages {sorted(widths)}"
        )
    channels = [widths[k] for k in range(len(widths))]
    if int(embedding.shape[0]) != channels[0]:
        raise ValueError(
            f"state_dict: {_EMBEDDING_KEY} has {embedding.shape[0]} outputs, but the first "
            f"context stage has {channels[0]} channels"
        )
    context_key = "context_unet.context_embedding.module.weight"
    output_key = "target_decoder.output_block.block.1.weight"
    for key in (context_key, output_key):
        if key not in sd:
            raise ValueError(f"state_dict: missing {key!r}")
    pair_channels = int(to_numpy(sd[context_key]).shape[1])
    out_channels = pair_channels - in_channels
    decoder_out = int(to_numpy(sd[output_key]).shape[0])
    if out_channels < 1 or decoder_out != out_channels:
        raise ValueError(
            f"state_dict: {context_key} takes {pair_channels} channels (Cin + Cout) with "
            f"Cin = {in_channels}, but {output_key} gives {decoder_out} outputs"
        )
    return {
        "channels": channels,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "ndims": ndims,
    }


def _residual_unit_entries(prefix, unit):
    """(PyTorch prefix, conv layer) pairs of a residual unit: convs are ``layers.0, 2, ...``."""
    return [(f"{prefix}.layers.{2 * i}", conv) for i, conv in enumerate(unit.convs)]


def conv_mapping(model):
    """Every convolution of a Keras Neuroverse3D with its PyTorch module path.

    Args:
        model: a :class:`~neuroicl_tf.models.Neuroverse3D` (anything with ``target_encoder``,
            ``context_unet`` and ``target_decoder`` built by this package).

    Returns:
        A list of ``(pytorch_prefix, keras_conv_layer)``; the keys are the prefix plus
        ``.weight`` / ``.bias``.
    """
    encoder, unet, decoder = model.target_encoder, model.context_unet, model.target_decoder
    stages = len([layer for layer in decoder.layers if layer.name.startswith("dec_blocks_")]) + 1
    entries = [("target_encoder.target_embedding", encoder.get_layer("target_embedding"))]
    for k in range(stages - 1):
        block = encoder.get_layer(f"enc_blocks_{k}")
        entries += _residual_unit_entries(f"target_encoder.enc_blocks.{k}.target_conv", block)
        down = encoder.get_layer(f"downsample_blocks_{k}")
        entries.append((f"target_encoder.downsample_blocks.{k}.target_linear_layer", down.conv))

    cu = "context_unet"
    entries.append((f"{cu}.context_embedding.module", unet.get_layer("context_embedding").layer))
    for k in range(stages - 1):
        block = unet.get_layer(f"enc_blocks_{k}")
        entries += _residual_unit_entries(
            f"{cu}.enc_blocks.{k}.context_conv.module", block.context_conv
        )
        entries.append(
            (f"{cu}.enc_blocks.{k}.combine_conv_context.module", block.combine_conv_context)
        )
        down = unet.get_layer(f"downsample_blocks_{k}").layer
        entries.append((f"{cu}.downsample_blocks.{k}.context_linear_layer.module", down.conv))
    bottleneck = unet.get_layer(f"enc_blocks_{stages - 1}").layer
    entries += _residual_unit_entries(
        f"{cu}.enc_blocks.{stages - 1}.context_conv.module", bottleneck
    )
    for j in range(stages - 1):
        up = unet.get_layer(f"upsample_blocks_{j}").conv
        entries.append((f"{cu}.upsample_blocks.{j}.context_conv_layer.module", up))
        dec = unet.get_layer(f"dec_blocks_{j}").layer
        entries += _residual_unit_entries(f"{cu}.dec_blocks.{j}.context_conv.module", dec)

    td = "target_decoder"
    bottleneck = decoder.get_layer("enc_blocks_0")
    entries += _residual_unit_entries(f"{td}.enc_blocks.0.target_conv", bottleneck.target_conv)
    entries.append(
        (f"{td}.enc_blocks.0.combine_conv_target.module", bottleneck.combine_conv_target)
    )
    for j in range(stages - 1):
        up = decoder.get_layer(f"upsample_blocks_{j}").conv
        entries.append((f"{td}.upsample_blocks.{j}.target_conv_layer", up))
        dec = decoder.get_layer(f"dec_blocks_{j}")
        entries += _residual_unit_entries(f"{td}.dec_blocks.{j}.target_conv", dec.target_conv)
        entries.append((f"{td}.dec_blocks.{j}.combine_conv_target.module", dec.combine_conv_target))
    entries += _residual_unit_entries(
        f"{td}.output_block.block.0", decoder.get_layer("output_block_0")
    )
    entries.append((f"{td}.output_block.block.1", decoder.get_layer("output_block_1")))
    return entries


def _all_variables(model):
    return [*model.target_encoder.weights, *model.context_unet.weights,
            *model.target_decoder.weights]


def keras_weights_from_state_dict(state_dict, model):
    """Match a reference state dict to the variables of a built Keras Neuroverse3D.

    Args:
        state_dict: mapping from PyTorch keys to arrays/tensors in PyTorch layout (a common
            ``model.``/``module.`` prefix is ignored).
        model: the Keras model, built with the configuration of
            :func:`config_from_state_dict`.

    Returns:
        A list of ``(keras variable, numpy value)``, one per variable of the model, values in
        Keras layout (assign with ``variable.assign(value)``).

    Raises:
        ValueError: naming every missing key, unexpected key, shape mismatch, and any model
            variable left without a value.
    """
    sd = {k: to_numpy(v) for k, v in _strip_prefix(state_dict).items()}
    return match_state_dict(sd, conv_mapping(model), _all_variables(model), "Neuroverse3D")


def state_dict_from_keras(model):
    """The inverse conversion: a Keras Neuroverse3D's weights as a PyTorch-layout state dict.

    Args:
        model: a built Keras Neuroverse3D.

    Returns:
        A dict from PyTorch keys to float32 numpy arrays (kernels ``(O, I, *k)``).
    """
    return state_dict_of(conv_mapping(model))
