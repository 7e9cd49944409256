"""Adaptive Parallel-Sequential Processing (APSP) of a context set (Neuroverse3D, SPEC §3.7-3.8).

A context pair's features in Neuroverse3D do not depend on the other pairs, so the context set
of L pairs can be cut into K = ceil(L / l) contiguous mini-contexts ("chunks") of at most l pairs
and pushed through the context U-Net one chunk after another. The decoder only needs the mean of
each of the U-Net's per-stage features over all L pairs; it is kept as an exact running mean whose
weights are the chunks' pair counts::

    M_j <- M_j * W / (W + w) + f_j * w / (W + w);    W <- W + w

where f_j is the chunk's mean of feature j over its w pairs. The result is the mean over all L
pairs whatever l and the chunk order, so memory is set by l and time by L.

Inference runs the chunks in a ``tf.while_loop`` (L dynamic, one trace for every L) with
``parallel_iterations=1``, so only one chunk's activations are alive at a time.

Training (:meth:`APSP.forward_for_gradient`) follows the reference exactly: the first K - 1 chunks
of the (possibly shuffled) order run without a recorded graph and send no gradient anywhere; the
last chunk runs with gradient, and its per-stage chunk means pass through
``scale_gradient(., K)`` before the running-mean weighting. The forward value is exact; the
gradient is an unbiased estimate of the full-context gradient when the last chunk is uniformly
random (shuffle on).
"""

import numpy as np

from .. import _compat
from ..layers import scale_gradient

tf = _compat.import_tensorflow()

# The APSP code has no Python control flow on tensors (its loop is an explicit tf.while_loop), so
# AutoGraph has nothing to convert; skipping the conversion saves seconds of tracing per process.
_no_autograph = tf.autograph.experimental.do_not_convert

__all__ = [
    "APSP",
    "USE_DEFAULT",
    "validate_mini_context",
    "num_chunks",
    "chunk_order",
    "chunk_bounds",
    "update_running_mean",
]


class _UseDefault:
    """Sentinel type: "take the value configured on the layer or model"."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "USE_DEFAULT"

    def __reduce__(self):
        return (_UseDefault, ())


#: Default of the per-call ``mini_context``/``shuffle`` overrides. ``None`` cannot play this role
#: because ``mini_context=None`` means "the whole context as one chunk".
USE_DEFAULT = _UseDefault()


def validate_mini_context(value, name="mini_context"):
    """Check a mini-context size.

    Args:
        value: ``None`` (the whole context as one chunk) or an int l >= 1.
        name: the argument name used in error messages.

    Returns:
        ``None`` or the value as a Python int.

    Raises:
        TypeError: if the value is not ``None`` or an integer.
        ValueError: if the value is smaller than 1.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected None or an int >= 1, got {value!r} "
                        f"({type(value).__name__})")
    if int(value) < 1:
        raise ValueError(f"{name}: expected None or an int >= 1, got {int(value)}")
    return int(value)


def validate_shuffle(value, name="shuffle"):
    """Check a shuffle switch (a Python bool; numpy bools are accepted).

    Raises:
        TypeError: if the value is not a bool.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def num_chunks(length, mini_context):
    """The number of mini-contexts K = ceil(L / l).

    Args:
        length: int32 scalar tensor, the context length L (>= 1).
        mini_context: ``None`` (K = 1) or a Python int l >= 1.

    Returns:
        int32 scalar tensor K.
    """
    length = tf.convert_to_tensor(length, tf.int32)
    if mini_context is None:
        return tf.ones_like(length)
    return (length + (mini_context - 1)) // mini_context


def chunk_bounds(chunk, length, mini_context):
    """The pair range ``[start, stop)`` of chunk ``chunk`` (contiguous; the last may be smaller).

    Args:
        chunk: int32 scalar tensor, the chunk index in ``[0, K)``.
        length: int32 scalar tensor L.
        mini_context: ``None`` (one chunk holding all L pairs) or a Python int l.

    Returns:
        ``(start, stop)``, int32 scalar tensors.
    """
    if mini_context is None:
        return tf.zeros_like(length), length
    start = chunk * mini_context
    return start, tf.minimum(start + mini_context, length)


def chunk_order(count, shuffle, generator=None):
    """The order in which the chunks are processed.

    Args:
        count: int32 scalar tensor K.
        shuffle: Python bool; ``False`` gives ``0, 1, ..., K - 1``.
        generator: optional ``tf.random.Generator`` (seeded shuffles); without one the stateful
            ``tf.random.uniform`` op is used (governed by the global seed).

    Returns:
        int32 tensor ``(K,)``, a permutation of ``range(K)``.
    """
    if not shuffle:
        return tf.range(count)
    if generator is not None:
        keys = generator.uniform(tf.reshape(count, [1]))
    else:
        keys = tf.random.uniform(tf.reshape(count, [1]))
    return tf.cast(tf.argsort(keys), tf.int32)


def update_running_mean(means, weight, chunk_means, chunk_weight):
    """One step of the exact running mean (SPEC §3.7, ``fuse_feature``).

    ``M_j <- M_j * W / (W + w) + f_j * w / (W + w)`` for every j, ``W <- W + w``. With W = 0 the
    result is exactly ``f_j`` (whatever M_j holds, e.g. the scalar 0 the reference starts from).

    Args:
        means: list of float tensors M_j (broadcastable to ``chunk_means``).
        weight: float32 scalar tensor W, the pairs averaged so far.
        chunk_means: list of float tensors f_j ``(B, *S_j, C_j)``.
        chunk_weight: float32 scalar tensor w, the pairs in this chunk.

    Returns:
        ``(new_means, new_weight)``.
    """
    total = weight + chunk_weight
    new_means = []
    for mean, chunk_mean in zip(means, chunk_means):
        old = tf.cast(weight, chunk_mean.dtype)
        new = tf.cast(chunk_weight, chunk_mean.dtype)
        tot = tf.cast(total, chunk_mean.dtype)
        new_means.append(mean * old / tot + chunk_mean * new / tot)
    return new_means, total


@tf.keras.utils.register_keras_serializable(package="neuroicl")
class APSP(tf.keras.layers.Layer):
    """Runs a context U-Net over a context set in mini-contexts and returns the feature means.

    The wrapped ``context_unet`` is called as ``context_unet([context_in, context_out, *extra])``
    on a chunk of n pairs, ``context_in (B, n, *S, Cin)``, ``context_out (B, n, *S, Cout)``, and
    must return a list of per-pair features ``F_j (B, n, *S_j, C_j)`` in which a pair's features
    do not depend on the other pairs. ``extra`` (for Neuroverse3D the target features t_k) is
    passed unchanged to every chunk.

    Args:
        context_unet: a Keras model (or its serialized config) as described above.
        mini_context: ``None`` (the whole context as one chunk, K = 1) or an int l >= 1.
        shuffle: whether the chunk order is shuffled (the reference always shuffles).
        seed: optional int; a seeded ``tf.random.Generator`` then drives the shuffles, so the
            same seed gives the same sequence of orders. Without it, ``tf.random.uniform``.
        **kwargs: ``tf.keras.layers.Layer`` arguments (``name``, ...).

    Call arguments:
        inputs: ``[context_in (B, L, *S, Cin), context_out (B, L, *S, Cout), *extra]``.
        training: passed to the context U-Net.
        mini_context: per-call override of ``mini_context`` (``USE_DEFAULT`` keeps the layer's).
        shuffle: per-call override of ``shuffle``.
        order: optional int tensor ``(K,)``, an explicit chunk order (overrides ``shuffle``).

    Returns:
        The list of means ``M_j (B, *S_j, C_j)`` of every ``F_j`` over all L pairs.
    """

    def __init__(self, context_unet, mini_context=None, shuffle=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(context_unet, dict):
            context_unet = tf.keras.layers.deserialize(context_unet)
        if not callable(context_unet):
            raise TypeError(f"context_unet: expected a Keras model, got {type(context_unet)}")
        self.context_unet = context_unet
        self.mini_context = validate_mini_context(mini_context)
        self.shuffle = validate_shuffle(shuffle)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed: expected None or an int, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._generator = None

    def build(self, input_shape):
        # Created here, not in __init__, so that a model built under a distribution strategy's
        # scope gets a generator that belongs to that strategy.
        if self.seed is not None and self._generator is None:
            self._generator = tf.random.Generator.from_seed(self.seed)
        super().build(input_shape)

    @property
    def generator(self):
        """The ``tf.random.Generator`` behind seeded shuffles (``None`` without a seed)."""
        return self._generator

    def _settings(self, mini_context, shuffle):
        if mini_context is USE_DEFAULT:
            mini_context = self.mini_context
        else:
            mini_context = validate_mini_context(mini_context)
        shuffle = self.shuffle if shuffle is USE_DEFAULT else validate_shuffle(shuffle)
        return mini_context, shuffle

    def _order(self, count, shuffle, order):
        if order is not None:
            order = tf.cast(tf.convert_to_tensor(order), tf.int32)
            tf.debugging.assert_equal(
                tf.size(order), count, message="order: needs one entry per chunk (K = ceil(L/l))"
            )
            return order
        return chunk_order(count, shuffle, self._generator)

    @_no_autograph
    def chunk_means(self, inputs, chunk, mini_context, training=None):
        """The context U-Net's features of one chunk, averaged over its pairs.

        Args:
            inputs: ``[context_in, context_out, *extra]`` as in ``call``.
            chunk: int32 scalar tensor, the chunk index.
            mini_context: ``None`` or the chunk size l.
            training: passed to the context U-Net.

        Returns:
            ``(f, w)``: the list of chunk means ``f_j (B, *S_j, C_j)`` and the float32 pair count.
        """
        context_in, context_out, *extra = inputs
        length = tf.shape(context_in)[1]
        start, stop = chunk_bounds(chunk, length, mini_context)
        features = self.context_unet(
            [context_in[:, start:stop], context_out[:, start:stop], *extra], training=training
        )
        features = tf.nest.flatten(features)
        return [tf.reduce_mean(f, axis=1) for f in features], tf.cast(stop - start, tf.float32)

    @_no_autograph
    def accumulate(self, inputs, chunks, mini_context, means=None, weight=None, training=None):
        """Fold the chunks ``chunks`` (in that order) into the running means, one at a time.

        Args:
            inputs: ``[context_in, context_out, *extra]``.
            chunks: int32 tensor ``(m,)`` of chunk indices (m may be 0).
            mini_context: ``None`` or l.
            means: running means to continue from; ``None`` starts from scalar zeros (W = 0).
            weight: float32 scalar W that goes with ``means``.
            training: passed to the context U-Net.

        Returns:
            ``(means, weight)``. With ``m = 0`` the means are the scalar zeros given or made.
        """
        outputs = tf.nest.flatten(self.context_unet.outputs)
        if means is None:
            means = [tf.zeros([], f.dtype) for f in outputs]
            weight = tf.zeros([], tf.float32)
        chunks = tf.cast(tf.convert_to_tensor(chunks), tf.int32)
        count = tf.size(chunks)

        def body(i, weight, *means):
            chunk_means, chunk_weight = self.chunk_means(
                inputs, chunks[i], mini_context, training=training
            )
            means, weight = update_running_mean(list(means), weight, chunk_means, chunk_weight)
            return (i + 1, weight, *means)

        # parallel_iterations=1: the chunks' U-Net passes do not depend on each other, so TF would
        # otherwise run several at once and hold several chunks' activations.
        # The means start as scalar zeros (as in the reference) and take the feature shape after
        # the first chunk, hence the unknown-shape invariants.
        _, weight, *means = tf.while_loop(
            lambda i, *_: i < count,
            body,
            (tf.constant(0), weight, *means),
            shape_invariants=(
                tf.TensorShape([]), tf.TensorShape([]), *[tf.TensorShape(None) for _ in means]
            ),
            parallel_iterations=1,
        )
        return list(means), weight

    def _with_static_shapes(self, means):
        outputs = tf.nest.flatten(self.context_unet.outputs)
        shaped = []
        for mean, feature in zip(means, outputs):
            shape = feature.shape
            mean = tf.ensure_shape(mean, tf.TensorShape([None]).concatenate(shape[2:]))
            shaped.append(mean)
        return shaped

    def call(self, inputs, training=None, mini_context=USE_DEFAULT, shuffle=USE_DEFAULT,
             order=None):
        return self._forward(inputs, training, mini_context, shuffle, order)

    @_no_autograph
    def _forward(self, inputs, training, mini_context, shuffle, order):
        mini_context, shuffle = self._settings(mini_context, shuffle)
        length = tf.shape(inputs[0])[1]
        count = num_chunks(length, mini_context)
        order = self._order(count, shuffle, order)
        means, _ = self.accumulate(inputs, order, mini_context, training=training)
        return self._with_static_shapes(means)

    @_no_autograph
    def forward_for_gradient(self, inputs, tape=None, training=True, mini_context=USE_DEFAULT,
                             shuffle=USE_DEFAULT, order=None):
        """The APSP forward pass of training (SPEC §3.7), for use under a ``GradientTape``.

        The first K - 1 chunks of the order run under ``tape.stop_recording()``: no graph is
        recorded, their activations are freed, and neither they nor the target features they see
        receive gradient. The last chunk runs with gradient; its chunk means pass through a
        gradient scaling by K before the running-mean weighting. The forward value equals
        ``call``'s.

        Args:
            inputs: ``[context_in, context_out, *extra]``.
            tape: the ``tf.GradientTape`` recording the step. ``None``: no chunk is recorded
                specially (same as ``call``).
            training: passed to the context U-Net.
            mini_context, shuffle, order: as in ``call``.

        Returns:
            The list of means ``M_j (B, *S_j, C_j)``.
        """
        if tape is None:
            return self._forward(inputs, training, mini_context, shuffle, order)
        mini_context, shuffle = self._settings(mini_context, shuffle)
        length = tf.shape(inputs[0])[1]
        count = num_chunks(length, mini_context)
        order = self._order(count, shuffle, order)
        with tape.stop_recording():
            means, weight = self.accumulate(
                inputs, order[:-1], mini_context, training=training
            )
            means = [tf.stop_gradient(m) for m in means]
        chunk_means, chunk_weight = self.chunk_means(
            inputs, order[-1], mini_context, training=training
        )
        chunk_means = [scale_gradient(f, count) for f in chunk_means]
        means, _ = update_running_mean(means, weight, chunk_means, chunk_weight)
        return self._with_static_shapes(means)

    def compute_output_shape(self, input_shape):
        outputs = tf.nest.flatten(self.context_unet.outputs)
        return [tf.TensorShape([input_shape[0][0]]).concatenate(f.shape[2:]) for f in outputs]

    def get_config(self):
        config = super().get_config()
        config.update(
            context_unet=tf.keras.layers.serialize(self.context_unet),
            mini_context=self.mini_context,
            shuffle=self.shuffle,
            seed=self.seed,
        )
        return config
