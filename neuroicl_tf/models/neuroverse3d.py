"""Neuroverse3D: target U-Net and context U-Net joined by U-shape fusion, with APSP (SPEC §3).

Three functional sub-networks (SPEC §3.2-3.4), with S stages for ``channels = (C_0, ..., C_{S-1})``:

* ``target_encoder``: ``target (B, *S, Cin)`` -> ``[t_0, ..., t_{S-2}, t_bottom]``. t_k
  ``(B, *S/2^k, C_k)`` are the residual-unit outputs of stages 0..S-2 (shortcuts, and what the
  context branch sees); t_bottom ``(B, *S/2^(S-1), C_{S-1})`` has no residual unit yet.
* ``context_unet``: ``[context_in (B, n, *S, Cin), context_out (B, n, *S, Cout), t_0, ...,
  t_{S-2}]`` -> ``[F_0, ..., F_{S-1}]``: the bottleneck (F_0, ``(B, n, *S/2^(S-1), C_{S-1})``)
  and the S-1 decoder stages (F_j at stage k = S-1-j, ``(B, n, *S/2^k, C_k)``). Every layer is
  folded over the n pairs; target-to-context fusion at encoder stages 0..S-2 only.
* ``target_decoder``: ``[t_bottom, t_0, ..., t_{S-2}, M_0, ..., M_{S-1}]`` -> ``(B, *S, Cout)``,
  with context-to-target fusion on the context means M_j (``F_j`` averaged over all L pairs) at
  the bottleneck and at every decoder stage; raw output (no activation).

The top-level :class:`Neuroverse3D` is an ``ICLModel`` whose graph is encoder -> :class:`APSP`
layer (holding the context U-Net) -> decoder. APSP (SPEC §3.7) feeds the context through the
context U-Net in mini-contexts of ``mini_context`` pairs with an exact running mean; its training
form is :func:`apsp_forward_for_gradient`, used by ``Neuroverse3D.train_step``.
"""

import numpy as np

from .. import _compat
from .. import layers as nl
from .apsp import APSP, USE_DEFAULT, validate_mini_context, validate_shuffle
from .base import ICLModel

tf = _compat.import_tensorflow()

# No Python control flow on tensors below: skipping AutoGraph's conversion saves seconds of
# tracing per process (the APSP loop is an explicit tf.while_loop).
_no_autograph = tf.autograph.experimental.do_not_convert

KL = tf.keras.layers

__all__ = [
    "Neuroverse3D",
    "apsp_forward_for_gradient",
    "build_target_encoder",
    "build_context_unet",
    "build_target_decoder",
    "DEFAULT_CHANNELS",
]

DEFAULT_CHANNELS = (32, 64, 128, 256, 512)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {value!r} ({type(value).__name__})")
    if int(value) < 1:
        raise ValueError(f"{name}: expected a positive int, got {int(value)}")
    return int(value)


def _check_channels(channels):
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
        raise TypeError(f"channels: expected a list of positive ints, got {channels!r}")
    channels = tuple(_check_positive_int(c, "channels") for c in channels)
    if not channels:
        raise ValueError("channels: expected at least one stage, got an empty list")
    return channels


def _check_ndims(ndims):
    if ndims not in (2, 3) or isinstance(ndims, bool):
        raise ValueError(f"ndims: expected 2 or 3, got {ndims!r}")
    return int(ndims)


def _check_spatial_shape(spatial_shape, ndims, stages):
    if spatial_shape is None:
        return None
    if isinstance(spatial_shape, (int, np.integer)):
        spatial_shape = (spatial_shape,) * ndims
    spatial_shape = tuple(_check_positive_int(s, "spatial_shape") for s in spatial_shape)
    if len(spatial_shape) != ndims:
        raise ValueError(
            f"spatial_shape: expected {ndims} sizes for ndims={ndims}, got {spatial_shape}"
        )
    factor = 2 ** (stages - 1)
    if any(s % factor for s in spatial_shape):
        raise ValueError(
            f"spatial_shape: every size must be divisible by 2**(stages-1) = {factor} "
            f"({stages} stages), got {spatial_shape}"
        )
    return spatial_shape


def _stage_shape(spatial_shape, ndims, level):
    if spatial_shape is None:
        return (None,) * ndims
    return tuple(s // 2**level for s in spatial_shape)


# --------------------------------------------------------------------------------------------
# Sub-networks
# --------------------------------------------------------------------------------------------


def build_target_encoder(channels, in_channels=1, ndims=3, spatial_shape=None,
                         name="target_encoder"):
    """The target encoder (SPEC §3.2; reference ``TargetEncoder``).

    Layers (named after the PyTorch modules): ``target_embedding`` (1x1 conv Cin -> C_0),
    ``enc_blocks_k`` (residual unit at C_k), ``downsample_blocks_k`` (conv k4 s2, C_k ->
    C_{k+1}), k = 0..S-2.

    Args:
        channels: widths ``(C_0, ..., C_{S-1})``.
        in_channels: Cin.
        ndims: 2 or 3.
        spatial_shape: optional static spatial size ``S``; ``None`` leaves it dynamic.
        name: model name.

    Returns:
        A functional model ``target (B, *S, Cin)`` -> ``[t_0, ..., t_{S-2}, t_bottom]``.
    """
    stages = len(channels)
    target = tf.keras.Input(_stage_shape(spatial_shape, ndims, 0) + (in_channels,), name="target")
    t = nl.conv(channels[0], 1, ndims, name="target_embedding")(target)
    features = []
    for k in range(stages - 1):
        t = nl.ResidualUnit(channels[k], ndims, name=f"enc_blocks_{k}")(t)
        features.append(t)
        t = nl.Downsample(channels[k + 1], ndims, name=f"downsample_blocks_{k}")(t)
    features.append(t)
    return tf.keras.Model(target, features, name=name)


def build_context_unet(channels, in_channels=1, out_channels=1, ndims=3, spatial_shape=None,
                       name="context_unet"):
    """The context U-Net (SPEC §3.3; reference ``ContextUNet``), folded over the context pairs.

    Layers: ``context_embedding`` (1x1 conv over [image ‖ label], Cin + Cout -> C_0),
    ``enc_blocks_k`` (target-to-context fusion at C_k, k = 0..S-2; ``enc_blocks_{S-1}`` is the
    bottleneck residual unit, no fusion), ``downsample_blocks_k`` (conv k4 s2),
    ``upsample_blocks_j`` (1x1 conv over [up-sampled ‖ s_k], computed without the concatenation
    by ``UpsampleConcatConv``) and ``dec_blocks_j`` (residual unit), j = 0..S-2 with
    k = S-2-j. No fusion in the decoder.

    Args:
        channels: widths ``(C_0, ..., C_{S-1})``.
        in_channels: Cin (context images).
        out_channels: Cout (context labels).
        ndims: 2 or 3.
        spatial_shape: optional static spatial size; ``None`` leaves it dynamic.
        name: model name.

    Returns:
        A functional model ``[context_in (B, n, *S, Cin), context_out (B, n, *S, Cout), t_0,
        ..., t_{S-2}]`` -> ``[F_0, ..., F_{S-1}]`` (see the module docstring); n is dynamic.
    """
    stages = len(channels)
    shape0 = _stage_shape(spatial_shape, ndims, 0)
    context_in = tf.keras.Input((None,) + shape0 + (in_channels,), name="context_in")
    context_out = tf.keras.Input((None,) + shape0 + (out_channels,), name="context_out")
    targets = [
        tf.keras.Input(_stage_shape(spatial_shape, ndims, k) + (channels[k],), name=f"t_{k}")
        for k in range(stages - 1)
    ]
    pairs = KL.Concatenate(axis=-1, name="image_label")([context_in, context_out])
    c = nl.ContextFold(nl.conv(channels[0], 1, ndims, name="conv"), name="context_embedding")(
        pairs
    )
    shortcuts = []
    for k in range(stages - 1):
        c = nl.TargetToContextFusion(channels[k], ndims, name=f"enc_blocks_{k}")([c, targets[k]])
        shortcuts.append(c)
        c = nl.ContextFold(
            nl.Downsample(channels[k + 1], ndims, name="downsample"),
            name=f"downsample_blocks_{k}",
        )(c)
    c = nl.ContextFold(
        nl.ResidualUnit(channels[-1], ndims, name="residual_unit"), name=f"enc_blocks_{stages - 1}"
    )(c)
    features = [c]
    for j in range(stages - 1):
        k = stages - 2 - j
        c = nl.UpsampleConcatConv(channels[k], ndims, name=f"upsample_blocks_{j}")(
            [c, shortcuts[k]]
        )
        c = nl.ContextFold(
            nl.ResidualUnit(channels[k], ndims, name="residual_unit"), name=f"dec_blocks_{j}"
        )(c)
        features.append(c)
    return tf.keras.Model([context_in, context_out, *targets], features, name=name)


def build_target_decoder(channels, out_channels=1, ndims=3, spatial_shape=None,
                         name="target_decoder"):
    """The target decoder with context-to-target fusion (SPEC §3.4; reference ``TargetDecoder``).

    Layers: ``enc_blocks_0`` (fusion at the bottleneck, C_{S-1}), ``upsample_blocks_j`` (1x1
    conv over [up-sampled ‖ t_k], an ``UpsampleConcatConv``) and ``dec_blocks_j`` (fusion at
    C_k), j = 0..S-2 with
    k = S-2-j, then ``output_block_0`` (residual unit at C_0) and ``output_block_1`` (1x1 conv
    C_0 -> Cout, no activation).

    Args:
        channels: widths ``(C_0, ..., C_{S-1})``.
        out_channels: Cout.
        ndims: 2 or 3.
        spatial_shape: optional static spatial size; ``None`` leaves it dynamic.
        name: model name.

    Returns:
        A functional model ``[t_bottom, t_0, ..., t_{S-2}, M_0, ..., M_{S-1}]`` -> ``(B, *S,
        Cout)``, where M_j ``(B, *S_j, C_j)`` is the context mean of F_j.
    """
    stages = len(channels)
    bottom_level = stages - 1
    bottom = tf.keras.Input(
        _stage_shape(spatial_shape, ndims, bottom_level) + (channels[-1],), name="t_bottom"
    )
    shortcuts = [
        tf.keras.Input(_stage_shape(spatial_shape, ndims, k) + (channels[k],), name=f"t_{k}")
        for k in range(stages - 1)
    ]
    means = [
        tf.keras.Input(
            _stage_shape(spatial_shape, ndims, bottom_level - j)
            + (channels[bottom_level - j],),
            name=f"m_{j}",
        )
        for j in range(stages)
    ]
    t = nl.ContextToTargetFusion(channels[-1], ndims, name="enc_blocks_0")([bottom, means[0]])
    for j in range(stages - 1):
        k = stages - 2 - j
        t = nl.UpsampleConcatConv(channels[k], ndims, name=f"upsample_blocks_{j}")(
            [t, shortcuts[k]]
        )
        t = nl.ContextToTargetFusion(channels[k], ndims, name=f"dec_blocks_{j}")([t, means[j + 1]])
    t = nl.ResidualUnit(channels[0], ndims, name="output_block_0")(t)
    y = nl.conv(out_channels, 1, ndims, name="output_block_1")(t)
    return tf.keras.Model([bottom, *shortcuts, *means], y, name=name)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@_no_autograph
def apsp_forward_for_gradient(model, inputs, tape=None, training=True, mini_context=USE_DEFAULT,
                              shuffle=USE_DEFAULT, order=None):
    """The Neuroverse3D forward pass of a training step (SPEC §3.7), under a ``GradientTape``.

    Target encoder with gradient; the first K - 1 chunks of the (shuffled) order through the
    context U-Net under ``tape.stop_recording()`` (no recorded graph, no gradient, also none to
    the target features); the last chunk with gradient, its per-stage chunk means scaled in the
    backward pass by K before the running-mean weighting; then the target decoder. The output
    equals the plain forward pass. ``Neuroverse3D.train_step`` uses exactly this function.

    Args:
        model: a :class:`Neuroverse3D`.
        inputs: a dict or list ``(target (B, *S, Cin), context_in (B, L, *S, Cin),
            context_out (B, L, *S, Cout))``.
        tape: the recording ``tf.GradientTape`` (``None``: a plain forward pass).
        training: passed to the sub-networks.
        mini_context: l, ``None`` (one chunk) or ``USE_DEFAULT`` (the model's setting).
        shuffle: bool or ``USE_DEFAULT``.
        order: optional int tensor ``(K,)``: process the chunks in this order (overrides
            ``shuffle``; its last entry is the chunk that carries the gradient).

    Returns:
        The output ``(B, *S, Cout)``.
    """
    target, context_in, context_out = (
        tf.convert_to_tensor(x) for x in model.validate_inputs(inputs)
    )
    mini_context, shuffle = model._resolve_apsp_settings(mini_context, shuffle)
    *shortcuts, bottom = tf.nest.flatten(model.target_encoder(target, training=training))
    means = model.apsp.forward_for_gradient(
        [context_in, context_out, *shortcuts],
        tape,
        training=training,
        mini_context=mini_context,
        shuffle=shuffle,
        order=order,
    )
    return model.target_decoder([bottom, *shortcuts, *means], training=training)


def _stream_piece(piece, index):
    """``(context_in, context_out)`` of one piece of :meth:`Neuroverse3D.predict_stream`."""
    if isinstance(piece, dict):
        missing = [k for k in ("context_in", "context_out") if k not in piece]
        if missing:
            raise ValueError(f"context piece {index}: a dict piece needs the keys context_in "
                             f"and context_out; missing {', '.join(missing)}")
        return piece["context_in"], piece["context_out"]
    if isinstance(piece, (list, tuple)) and len(piece) == 2:
        return piece[0], piece[1]
    raise ValueError(f"context piece {index}: expected a pair (context_in, context_out), got "
                     f"{type(piece).__name__}"
                     + (f" of {len(piece)} items" if isinstance(piece, (list, tuple)) else ""))


class Neuroverse3D(ICLModel):
    """Neuroverse3D (SPEC §3) with Adaptive Parallel-Sequential Processing of the context.

    Args:
        channels: stage widths ``(C_0, ..., C_{S-1})``; S = len(channels) stages. The default
            (32, 64, 128, 256, 512) has 70,854,913 parameters.
        in_channels: Cin of the target and context images.
        out_channels: Cout of the context labels and the output.
        ndims: 2 or 3 spatial dimensions.
        mini_context: ``None`` processes the whole context at once (K = 1); an int l processes
            K = ceil(L / l) contiguous chunks one after another (exact running mean).
        shuffle: shuffle the chunk order (the reference does, also in inference; the output
            does not depend on it beyond float rounding, the training gradient does).
        seed: optional int seeding the shuffles (a ``tf.random.Generator``).
        spatial_shape: optional static spatial size (each divisible by 2**(S-1)); ``None``
            accepts any divisible size.
        name: model name.

    Call:
        ``model(inputs, training=None, mini_context=..., shuffle=...)``; ``inputs`` is a dict
        with ``target (B, *S, Cin)``, ``context_in (B, L, *S, Cin)``, ``context_out
        (B, L, *S, Cout)`` (other keys ignored) or that list. ``mini_context`` and ``shuffle``
        override the model's settings for this call. Returns ``(B, *S, Cout)``, raw.

    ``predict``, ``evaluate`` and ``fit`` take the same two keyword overrides for one run.
    Training (``fit``) uses the APSP gradient of :func:`apsp_forward_for_gradient`; a plain
    call under a user's own ``GradientTape`` gives the exact full-context gradient instead.
    """

    def __init__(self, channels=DEFAULT_CHANNELS, in_channels=1, out_channels=1, ndims=3,
                 mini_context=None, shuffle=True, seed=None, spatial_shape=None,
                 name="neuroverse3d"):
        channels = _check_channels(channels)
        in_channels = _check_positive_int(in_channels, "in_channels")
        out_channels = _check_positive_int(out_channels, "out_channels")
        ndims = _check_ndims(ndims)
        mini_context = validate_mini_context(mini_context)
        shuffle = validate_shuffle(shuffle)
        spatial_shape = _check_spatial_shape(spatial_shape, ndims, len(channels))

        encoder = build_target_encoder(channels, in_channels, ndims, spatial_shape)
        unet = build_context_unet(channels, in_channels, out_channels, ndims, spatial_shape)
        decoder = build_target_decoder(channels, out_channels, ndims, spatial_shape)
        apsp = APSP(unet, mini_context=mini_context, shuffle=shuffle, seed=seed, name="apsp")

        shape = _stage_shape(spatial_shape, ndims, 0)
        target = tf.keras.Input(shape + (in_channels,), name="target")
        context_in = tf.keras.Input((None,) + shape + (in_channels,), name="context_in")
        context_out = tf.keras.Input((None,) + shape + (out_channels,), name="context_out")
        *shortcuts, bottom = tf.nest.flatten(encoder(target))
        means = tf.nest.flatten(apsp([context_in, context_out, *shortcuts]))
        output = decoder([bottom, *shortcuts, *means])
        super().__init__(inputs=[target, context_in, context_out], outputs=output, name=name)

        self.target_encoder = encoder
        self.apsp = apsp
        self.target_decoder = decoder
        self.channels = channels
        # Per-run overrides set by predict/evaluate/fit; not tracked by Keras.
        object.__setattr__(self, "_apsp_run_override", {})

    # ---------------------------------------------------------------- APSP settings

    @property
    def context_unet(self):
        """The context U-Net sub-model (held by the APSP layer)."""
        return self.apsp.context_unet

    @property
    def mini_context(self):
        """Default mini-context size (``None``: the whole context at once)."""
        return self.apsp.mini_context

    @mini_context.setter
    def mini_context(self, value):
        self.apsp.mini_context = validate_mini_context(value)
        self._record_setting("mini_context", self.apsp.mini_context)

    @property
    def shuffle(self):
        """Whether the chunk order is shuffled by default."""
        return self.apsp.shuffle

    @shuffle.setter
    def shuffle(self, value):
        self.apsp.shuffle = validate_shuffle(value)
        self._record_setting("shuffle", self.apsp.shuffle)

    def _record_setting(self, key, value):
        config = self.__dict__.get("_neuroicl_config")
        if config is not None:
            config[key] = value
        # Keras caches traced predict/train/test functions, which baked in the old value.
        self._reset_compile_cache()

    def _resolve_apsp_settings(self, mini_context, shuffle):
        """Per-call value, else the value of the current run (predict/fit), else the default."""
        override = self.__dict__.get("_apsp_run_override") or {}
        if mini_context is USE_DEFAULT:
            mini_context = override.get("mini_context", self.apsp.mini_context)
        else:
            mini_context = validate_mini_context(mini_context)
        if shuffle is USE_DEFAULT:
            shuffle = override.get("shuffle", self.apsp.shuffle)
        else:
            shuffle = validate_shuffle(shuffle)
        return mini_context, shuffle

    def _run_with(self, method, mini_context, shuffle, args, kwargs):
        """Run a Keras loop (predict/evaluate/fit) with per-run APSP overrides."""
        override = {}
        if mini_context is not USE_DEFAULT:
            override["mini_context"] = validate_mini_context(mini_context)
        if shuffle is not USE_DEFAULT:
            override["shuffle"] = validate_shuffle(shuffle)
        if not override:
            return method(*args, **kwargs)
        previous = self.__dict__.get("_apsp_run_override") or {}
        object.__setattr__(self, "_apsp_run_override", {**previous, **override})
        self._reset_compile_cache()
        try:
            return method(*args, **kwargs)
        finally:
            object.__setattr__(self, "_apsp_run_override", previous)
            # The functions traced during this run baked in the overrides.
            self._reset_compile_cache()

    def predict(self, x, *args, mini_context=USE_DEFAULT, shuffle=USE_DEFAULT, **kwargs):
        """``Model.predict`` with optional ``mini_context``/``shuffle`` for this run."""
        return self._run_with(super().predict, mini_context, shuffle, (x, *args), kwargs)

    def predict_stream(self, target, context, mini_context=USE_DEFAULT):
        """Predict with a context that arrives piece by piece and is never whole in memory.

        The forward pass of calling the model (equal up to float rounding): the target encoder
        runs once; each piece of the context goes through the context U-Net (cut into
        mini-contexts of at most ``mini_context`` pairs) and its per-stage features are added in
        place into running sums; the decoder runs on their mean. Only the piece being processed
        has to exist, so memory does not grow with the context length beyond one set of running
        sums (one copy of the context U-Net's features): contexts read from disk one subject at
        a time, or made on the fly, of any length.

        Args:
            target: ``(B, *S, Cin)`` array or tensor.
            context: an iterable (list, generator, ``tf.data.Dataset``) of pieces
                ``(context_in, context_out)`` (or dicts with those keys), each
                ``(B, n, *S, Cin)`` and ``(B, n, *S, Cout)``; n may differ between pieces.
            mini_context: pairs per context U-Net pass: pieces with more pairs are cut
                (``USE_DEFAULT``: the model's ``mini_context``; ``None``: each piece at once).

        Returns:
            ``(B, *S, Cout)`` ``tf.Tensor``, raw (as ``call``).

        Raises:
            ValueError: a piece whose shape does not fit (named, with the shape wanted), a
                piece that is not a pair, or a context without pairs.
            RuntimeError: called inside a ``tf.function`` (it runs eagerly).
        """
        if not tf.executing_eagerly():
            raise RuntimeError(
                f"{self.name}.predict_stream iterates over the context in Python and runs "
                "eagerly; inside a tf.function, call the model on the whole context instead"
            )
        mini_context, _ = self._resolve_apsp_settings(mini_context, USE_DEFAULT)
        target = tf.cast(tf.convert_to_tensor(target), tf.float32)
        fns = self._stream_functions()
        *shortcuts, bottom = tf.nest.flatten(fns["encode"](target))
        sums, pairs = None, 0
        for index, piece in enumerate(context):
            context_in, context_out = _stream_piece(piece, index)
            try:
                self.validate_inputs([target, context_in, context_out])
            except ValueError as err:
                raise ValueError(f"context piece {index}: {err}") from None
            n = int(context_in.shape[1])
            step = n if mini_context is None else mini_context
            for start in range(0, n, step):
                pair_in = tf.cast(tf.convert_to_tensor(context_in[:, start:start + step]),
                                  tf.float32)
                pair_out = tf.cast(tf.convert_to_tensor(context_out[:, start:start + step]),
                                   tf.float32)
                if sums is None:
                    # The first pass fixes the sums' shapes; from then on they are updated in
                    # place (no new copy per pass).
                    sums = [tf.Variable(f, trainable=False)
                            for f in fns["first"](pair_in, pair_out, *shortcuts)]
                else:
                    fns["add"](sums, pair_in, pair_out, *shortcuts)
                pairs += int(pair_in.shape[1])
                del pair_in, pair_out
        if sums is None:
            raise ValueError(f"{self.name}: context: no pairs (L = 0); give at least one "
                             "(context_in, context_out) piece")
        means = [tf.convert_to_tensor(v) / float(pairs) for v in sums]
        del sums
        return fns["decode"](bottom, shortcuts, means)

    def _stream_functions(self):
        """The traced pieces of :meth:`predict_stream` (traced once per model and shape)."""
        cache = self.__dict__.get("_stream_fns")
        if cache is not None:
            return cache
        unet = self.apsp.context_unet

        def chunk_sums(pair_in, pair_out, *shortcuts):
            features = tf.nest.flatten(unet([pair_in, pair_out, *shortcuts], training=False))
            return [tf.reduce_sum(f, axis=1) for f in features]

        def add(sums, pair_in, pair_out, *shortcuts):
            for total, value in zip(sums, chunk_sums(pair_in, pair_out, *shortcuts)):
                total.assign_add(value)

        cache = {
            "encode": tf.function(lambda t: self.target_encoder(t, training=False),
                                  autograph=False, reduce_retracing=True),
            "first": tf.function(chunk_sums, autograph=False, reduce_retracing=True),
            "add": tf.function(add, autograph=False, reduce_retracing=True),
            "decode": tf.function(
                lambda bottom, shortcuts, means: self.target_decoder(
                    [bottom, *shortcuts, *means], training=False),
                autograph=False, reduce_retracing=True),
        }
        object.__setattr__(self, "_stream_fns", cache)
        return cache

    def evaluate(self, x=None, *args, mini_context=USE_DEFAULT, shuffle=USE_DEFAULT, **kwargs):
        """``Model.evaluate`` with optional ``mini_context``/``shuffle`` for this run."""
        return self._run_with(super().evaluate, mini_context, shuffle, (x, *args), kwargs)

    def fit(self, x=None, *args, mini_context=USE_DEFAULT, shuffle=USE_DEFAULT, **kwargs):
        """``Model.fit`` with optional ``mini_context``/``shuffle`` for this run (also used by
        its validation passes)."""
        return self._run_with(super().fit, mini_context, shuffle, (x, *args), kwargs)

    # ---------------------------------------------------------------- forward and training

    def call(self, inputs, training=None, mask=None, mini_context=USE_DEFAULT,
             shuffle=USE_DEFAULT):
        """Encoder -> APSP over the context -> decoder; see the class docstring."""
        return self._forward(inputs, training, mini_context, shuffle)

    @_no_autograph
    def _forward(self, inputs, training, mini_context, shuffle):
        target, context_in, context_out = self.validate_inputs(inputs)
        mini_context, shuffle = self._resolve_apsp_settings(mini_context, shuffle)
        *shortcuts, bottom = tf.nest.flatten(self.target_encoder(target, training=training))
        means = self.apsp(
            [context_in, context_out, *shortcuts],
            training=training,
            mini_context=mini_context,
            shuffle=shuffle,
        )
        means = tf.nest.flatten(means)  # one stage: Keras may hand back a bare tensor
        return self.target_decoder([bottom, *shortcuts, *means], training=training)

    @_no_autograph
    def train_step(self, data):
        """One APSP training step (SPEC §3.7), see :func:`apsp_forward_for_gradient`.

        Args:
            data: ``(x, y)`` or ``(x, y, sample_weight)`` in the episode format.

        Returns:
            The metric values (``loss`` and compiled metrics).
        """
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = apsp_forward_for_gradient(self, x, tape, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
        self._validate_target_and_loss(y, loss)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self.compute_metrics(x, y, y_pred, sample_weight)
