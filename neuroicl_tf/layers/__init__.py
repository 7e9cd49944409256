"""N-D Keras layers shared by Neuralizer and Neuroverse3D (2D and 3D from one code path).

Shapes are channels-last: a target is ``(B, *S, C)``, a context ``(B, L, *S, C)`` with a dynamic
context length L. Context-side layers fold L into the batch, so their weights are shared over
the context set (the reference's "Vmap", SPEC §1.2).

Initialisation follows PyTorch's default for convolutions (SPEC §1.7): kernels and biases are
both drawn from U(-1/sqrt(fan_in), +1/sqrt(fan_in)). :func:`conv` makes such a convolution.

Concatenation convolutions (a 1x1 conv over ``[a ‖ b]``) keep a single kernel of shape
``(1, ..., 1, Ca + Cb, F)`` so that PyTorch weights convert one to one, but are computed as
``a @ K[:Ca] + b @ K[Ca:] + bias``: this never materialises the concatenation, and lets a
target term be broadcast over L instead of being copied L times.

Speed: on the CPU the convolutions run at close to the machine's matmul rate, and the
element-wise work around them (exact GELU, residual sums, the fusion 1x1 convs, up-sampling)
costs about as much again when every TF op makes its own pass over memory. The layers therefore
use as few passes as they can in plain TF ops (a 4-op GELU, no materialised concatenations, one
ResizeBilinear op for 2D up-sampling). Optionally (:func:`set_xla_fusion(True)
<set_xla_fusion>` or ``NEUROICL_XLA_FUSION=1``) the element-wise parts are compiled with XLA into
fused kernels while the 3x3 convolutions stay on TensorFlow's oneDNN kernels; this is off by
default because every new input shape then costs seconds of compilation and the measured gain
was small and inconsistent (see ``benchmarks/bench_models.py --levers``). The setting is read
when a layer's call is traced; both give the same values to float32 rounding.

Modules: :mod:`.conv` (PyTorch-initialised convolutions), :mod:`.blocks` (residual unit, context
folding, Pairwise-Conv-Avg and the two U-shape fusions), :mod:`.resampling` (x2 up-sampling,
down-sampling, the decoder's up-sample-concatenate-convolve), :mod:`.gradient` (the APSP
gradient scaling) and :mod:`._core` (registration, checks, element-wise kernels, helpers).
Everything public is importable from :mod:`neuroicl_tf.layers` itself.
"""

from . import _core  # noqa: F401  (TensorFlow set up as tf-keras first)
from ._core import (  # noqa: F401
    KL,
    _fold,
    _gelu_fused,
    _gelu_of_sum_fused,
    _register,
    _unfold,
    gelu,
    set_xla_fusion,
    xla_fusion_enabled,
)
from .blocks import (  # noqa: F401
    ContextFold,
    ContextToTargetFusion,
    PairwiseConvAvg,
    ResidualUnit,
    TargetToContextFusion,
)
from .conv import (  # noqa: F401
    TorchBiasUniform,
    TorchConv2D,
    TorchConv3D,
    conv,
)
from .gradient import (  # noqa: F401
    ScaleGradient,
    scale_gradient,
)
from .resampling import (  # noqa: F401
    Downsample,
    Upsample,
    UpsampleConcatConv,
    _upsample_separable,
    upsample2x,
)

__all__ = [
    "TorchBiasUniform",
    "TorchConv2D",
    "TorchConv3D",
    "conv",
    "gelu",
    "ResidualUnit",
    "ContextFold",
    "PairwiseConvAvg",
    "TargetToContextFusion",
    "ContextToTargetFusion",
    "Upsample",
    "Downsample",
    "ScaleGradient",
    "scale_gradient",
    "upsample2x",
    "UpsampleConcatConv",
    "set_xla_fusion",
    "xla_fusion_enabled",
]

