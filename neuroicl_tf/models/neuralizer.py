"""Neuralizer (Czolbe & Dalca, CVPR 2023): a U-Net of Pairwise-Conv-Avg blocks (SPEC §2).

Layer names follow the PyTorch state-dict keys (``enc_blocks_0`` for ``enc_blocks.0`` ...), which
is what :mod:`neuroicl_tf.convert.neuralizer` relies on.
"""

from .. import _compat
from .. import layers as nl
from .base import ICLModel

tf = _compat.import_tensorflow()
KL = tf.keras.layers

__all__ = ["Neuralizer"]


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class Neuralizer(ICLModel):
    """Neuralizer: target and context carried through a U-Net of Pairwise-Conv-Avg blocks.

    Embedding 1x1 convs (target: Cin -> C; context: [image ‖ label] Cin + Cout -> C), ``stages``
    encoder blocks with 2-max-pooling between them, ``stages - 1`` decoder steps (x2 bilinear
    up-sampling, [up-sampled ‖ shortcut], separate target/context 1x1 convs 2C -> C, a block),
    then a residual unit and a 1x1 conv to ``out_channels``, with no output activation.
    The last block's context update is skipped (nothing reads it); its weights exist.

    Args:
        ndims: 2 (the reference) or 3.
        stages: U-Net stages; spatial sizes must be divisible by ``2 ** (stages - 1)``.
        channels: width C of every stage.
        in_channels: channels Cin of the target and context images.
        out_channels: channels Cout of the context labels and of the output.
        spatial_shape: fixed spatial shape, or None for any size divisible as above.
        name: model name.

    Call:
        inputs: dict with ``target`` ``(B, *S, Cin)``, ``context_in`` ``(B, L, *S, Cin)``,
            ``context_out`` ``(B, L, *S, Cout)`` (other keys ignored), or that list.

    Returns:
        ``(B, *S, Cout)``, raw.
    """

    def __init__(self, ndims=2, stages=4, channels=64, in_channels=3, out_channels=3,
                 spatial_shape=None, name="neuralizer"):
        if ndims not in (2, 3):
            raise ValueError(f"ndims must be 2 or 3, got {ndims!r}")
        _positive_int(stages, "stages")
        _positive_int(channels, "channels")
        _positive_int(in_channels, "in_channels")
        _positive_int(out_channels, "out_channels")
        divisor = 2 ** (stages - 1)
        if spatial_shape is None:
            spatial = (None,) * ndims
        else:
            spatial = tuple(spatial_shape)
            if len(spatial) != ndims or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 1 or s % divisor
                for s in spatial
            ):
                raise ValueError(
                    f"spatial_shape must be {ndims} positive sizes divisible by {divisor} "
                    f"(2**(stages-1)), got {spatial_shape!r}"
                )

        target = tf.keras.Input((*spatial, in_channels), name="target")
        context_in = tf.keras.Input((None, *spatial, in_channels), name="context_in")
        context_out = tf.keras.Input((None, *spatial, out_channels), name="context_out")

        c_, d = channels, ndims
        t = nl.conv(c_, 1, d, name="target_embedding")(target)
        pairs = KL.Concatenate(axis=-1, name="context_pairs")([context_in, context_out])
        c = nl.ContextFold(nl.conv(c_, 1, d, name="module"), name="context_embedding")(pairs)

        n_blocks = 2 * stages - 1
        block = 0
        shortcuts = []
        for s in range(stages):
            block += 1
            t, c = nl.PairwiseConvAvg(
                c_, d, update_context=block < n_blocks, name=f"enc_blocks_{s}"
            )([t, c])
            if s < stages - 1:
                shortcuts.append((t, c))
                t = nl.Downsample(None, d, method="maxpool", name=f"pool_target_{s}")(t)
                c = nl.ContextFold(
                    nl.Downsample(None, d, method="maxpool", name="module"),
                    name=f"pool_context_{s}",
                )(c)

        for j in range(stages - 1):
            skip_t, skip_c = shortcuts[stages - 2 - j]
            # x2 bilinear up-sampling, [up-sampled ‖ shortcut], 1x1 conv (SPEC §1.6).
            t = nl.UpsampleConcatConv(
                c_, d, name=f"upsample_blocks_{j}_target_conv_layer"
            )([t, skip_t])
            c = nl.UpsampleConcatConv(
                c_, d, name=f"upsample_blocks_{j}_context_conv_layer"
            )([c, skip_c])
            block += 1
            t, c = nl.PairwiseConvAvg(
                c_, d, update_context=block < n_blocks, name=f"dec_blocks_{j}"
            )([t, c])

        t = nl.ResidualUnit(c_, d, name="output_block_0")(t)
        output = nl.conv(out_channels, 1, d, name="output_block_1")(t)
        super().__init__(inputs=[target, context_in, context_out], outputs=output, name=name)
        self.stages = stages
        self.channels = channels
