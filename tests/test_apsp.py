"""APSP machinery (neuroicl_tf.models.apsp): chunking, running mean, the layer, its gradient.

Everything runs on a tiny 2D context U-Net (channels (2, 4), 8x8) so each test takes seconds.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from layer_testing import check_layer

import neuroicl_tf  # noqa: F401
from neuroicl_tf.models.apsp import (
    APSP,
    USE_DEFAULT,
    chunk_bounds,
    chunk_order,
    num_chunks,
    update_running_mean,
    validate_mini_context,
)
from neuroicl_tf.models.neuroverse3d import build_context_unet

CHANNELS = (2, 4)
SIZE = 8
LENGTH = 5


def _max_rel(actual, desired):
    actual, desired = np.asarray(actual), np.asarray(desired)
    return float(np.abs(actual - desired).max() / max(np.abs(desired).max(), 1e-30))


@pytest.fixture(scope="module")
def unet():
    tf.keras.utils.set_random_seed(3)
    return build_context_unet(CHANNELS, in_channels=1, out_channels=1, ndims=2)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    context_in = rng.random((2, LENGTH, SIZE, SIZE, 1), dtype=np.float32)
    context_out = (rng.random((2, LENGTH, SIZE, SIZE, 1)) > 0.5).astype(np.float32)
    t0 = rng.random((2, SIZE, SIZE, CHANNELS[0]), dtype=np.float32)
    return [tf.constant(context_in), tf.constant(context_out), tf.constant(t0)]


def _full_means(unet, inputs):
    return [tf.reduce_mean(f, axis=1).numpy() for f in unet(inputs)]


# ------------------------------------------------------------------ helpers


def test_validate_mini_context():
    assert validate_mini_context(None) is None
    assert validate_mini_context(np.int64(3)) == 3
    for bad in (0, -2):
        with pytest.raises(ValueError, match="mini_context"):
            validate_mini_context(bad)
    for bad in (2.5, "2", True):
        with pytest.raises(TypeError, match="mini_context"):
            validate_mini_context(bad)


def test_chunking_covers_the_context_in_contiguous_chunks():
    for length in range(1, 9):
        for size in (None, 1, 2, 3, 4, 10):
            count = int(num_chunks(tf.constant(length), size))
            assert count == (1 if size is None else math.ceil(length / size))
            bounds = [
                tuple(int(b) for b in chunk_bounds(tf.constant(k), tf.constant(length), size))
                for k in range(count)
            ]
            assert bounds[0][0] == 0 and bounds[-1][1] == length
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert all(s == (length if size is None else size) for s in sizes[:-1])
            assert 1 <= sizes[-1] <= (length if size is None else size)


def test_chunk_order_is_a_permutation_and_seeded():
    assert chunk_order(tf.constant(6), False).numpy().tolist() == list(range(6))
    gen_a = tf.random.Generator.from_seed(7)
    gen_b = tf.random.Generator.from_seed(7)
    seq_a = [chunk_order(tf.constant(6), True, gen_a).numpy().tolist() for _ in range(5)]
    seq_b = [chunk_order(tf.constant(6), True, gen_b).numpy().tolist() for _ in range(5)]
    assert seq_a == seq_b
    assert all(sorted(order) == list(range(6)) for order in seq_a)
    assert len({tuple(o) for o in seq_a}) > 1, "five seeded shuffles of 6 chunks all equal"


def test_running_mean_is_the_exact_mean():
    rng = np.random.default_rng(1)
    sizes = [3, 1, 4, 2]
    values = [rng.normal(size=(n, 2, 5)).astype(np.float32) for n in sizes]
    means, weight = [tf.zeros([])], tf.zeros([])
    first = None
    for v in values:
        f = tf.constant(v.mean(axis=0))
        means, weight = update_running_mean(means, weight, [f], tf.constant(float(len(v))))
        if first is None:
            first = means[0].numpy()
            # With W = 0 the update is exactly the chunk mean (not merely close).
            np.testing.assert_array_equal(first, v.mean(axis=0))
    assert float(weight) == sum(sizes)
    np.testing.assert_allclose(means[0], np.concatenate(values).mean(axis=0), atol=1e-6)


# ------------------------------------------------------------------ the layer


def test_apsp_output_is_independent_of_l_and_order(unet, inputs):
    full = _full_means(unet, inputs)
    layer = APSP(unet, mini_context=2, seed=5)
    settings = ((None, True), (1, True), (2, False), (2, True), (3, True), (8, False))
    for size, shuffle in settings:
        means = layer(inputs, mini_context=size, shuffle=shuffle)
        assert [tuple(m.shape) for m in means] == [f.shape for f in full]
        for m, f in zip(means, full):
            assert _max_rel(m, f) < 1e-5, (size, shuffle)
    reversed_order = layer(inputs, mini_context=1, order=[4, 3, 2, 1, 0])
    for m, f in zip(reversed_order, full):
        assert _max_rel(m, f) < 1e-5


def test_apsp_layer_standard_checks(unet, inputs):
    means = check_layer(
        APSP,
        {"context_unet": unet, "mini_context": 2, "shuffle": False, "seed": None},
        inputs,
        symbolic_shapes=[
            (None, SIZE, SIZE, 1),
            (None, SIZE, SIZE, 1),
            (SIZE, SIZE, CHANNELS[0]),
        ],
        run_fit=False,  # training goes through forward_for_gradient, tested below
    )
    assert len(means) == len(CHANNELS)


def test_apsp_bad_settings(unet, inputs):
    with pytest.raises(ValueError, match="mini_context"):
        APSP(unet, mini_context=0)
    with pytest.raises(TypeError, match="shuffle"):
        APSP(unet, shuffle="yes")
    layer = APSP(unet)
    with pytest.raises(ValueError, match="mini_context"):
        layer(inputs, mini_context=-1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="order"):
        layer(inputs, mini_context=2, order=[0, 1])  # K = 3 chunks, 2 entries


def test_l_is_dynamic_one_trace(unet, inputs):
    layer = APSP(unet, mini_context=2, shuffle=False)
    spec = [
        tf.TensorSpec([None, None, SIZE, SIZE, 1]),
        tf.TensorSpec([None, None, SIZE, SIZE, 1]),
        tf.TensorSpec([None, SIZE, SIZE, CHANNELS[0]]),
    ]
    fn = tf.function(lambda a, b, c: layer([a, b, c]), input_signature=spec)
    for length in (1, 2, 3, 5):
        part = [inputs[0][:, :length], inputs[1][:, :length], inputs[2]]
        want = _full_means(unet, part)
        for m, f in zip(fn(*part), want):
            assert _max_rel(m, f) < 1e-5
    assert fn.experimental_get_tracing_count() == 1


# ------------------------------------------------------------------ the training form


def _grads(layer, inputs, tape_mode, order=None, mini_context=2):
    variables = layer.context_unet.trainable_variables
    target = inputs[2]
    with tf.GradientTape() as tape:
        tape.watch(target)
        args = [inputs[0], inputs[1], target]
        if tape_mode:
            means = layer.forward_for_gradient(args, tape, mini_context=mini_context, order=order)
        else:
            means = layer(args, mini_context=None)
        loss = sum(tf.reduce_mean(m * (j + 1.0)) for j, m in enumerate(means))
    return means, tape.gradient(loss, variables + [target])


def test_forward_for_gradient_is_exact_and_unbiased(unet, inputs):
    layer = APSP(unet)
    full_means, full_grads = _grads(layer, inputs, tape_mode=False)
    # L = 5, l = 2: chunks [0,2), [2,4), [4,5); each is last once.
    per_last = []
    for order in ([1, 2, 0], [0, 2, 1], [1, 0, 2]):
        means, grads = _grads(layer, inputs, tape_mode=True, order=order)
        for m, f in zip(means, full_means):
            assert _max_rel(m, f) < 1e-5
        per_last.append(grads)
    for i, full in enumerate(full_grads):
        average = sum(g[i] for g in per_last) / 3.0
        assert _max_rel(average, full) < 1e-4
    # A single step is biased: it must differ from the full gradient (the scaling matters).
    assert max(_max_rel(g, f) for g, f in zip(per_last[0], full_grads)) > 1e-2


def test_unrecorded_chunks_get_no_gradient(unet, inputs):
    layer = APSP(unet)
    context_in = inputs[0]
    with tf.GradientTape() as tape:
        tape.watch(context_in)
        means = layer.forward_for_gradient(
            [context_in, inputs[1], inputs[2]], tape, mini_context=2, order=[2, 0, 1]
        )
        loss = tf.add_n([tf.reduce_sum(m) for m in means])
    grad = tape.gradient(loss, context_in).numpy()
    per_pair = np.abs(grad).reshape(grad.shape[0], LENGTH, -1).max(axis=(0, 2))
    # Chunk 1 = pairs [2, 4) is last: only those pairs receive gradient.
    assert np.all(per_pair[[0, 1, 4]] == 0)
    assert np.all(per_pair[[2, 3]] > 0)


def _graph_op_types(concrete):
    graph_def = concrete.graph.as_graph_def()
    ops = [node.op for node in graph_def.node]
    for function in graph_def.library.function:
        ops += [node.op for node in function.node_def]
    return ops


def test_no_graph_is_kept_for_the_unrecorded_chunks(unet, inputs):
    """In a traced step, the K - 1 first chunks form a plain loop: no gradient loop and no
    accumulators of loop intermediates (which a recorded loop would need for its backward)."""
    layer = APSP(unet)
    variables = unet.trainable_variables

    def step(apsp_training):
        def fn(a, b, c):
            with tf.GradientTape() as tape:
                if apsp_training:
                    means = layer.forward_for_gradient([a, b, c], tape, mini_context=2,
                                                       shuffle=False)
                else:
                    means = layer([a, b, c], mini_context=2, shuffle=False)
                loss = tf.add_n([tf.reduce_sum(m) for m in means])
            return tape.gradient(loss, variables)

        return tf.function(fn).get_concrete_function(*inputs)

    apsp_ops = _graph_op_types(step(True))
    recorded_ops = _graph_op_types(step(False))
    # The check can fail: a loop recorded on the tape does have these.
    assert "TensorListPushBack" in recorded_ops
    assert sum(op in ("While", "StatelessWhile") for op in recorded_ops) >= 2
    assert "TensorListPushBack" not in apsp_ops
    assert sum(op in ("While", "StatelessWhile") for op in apsp_ops) == 1


def test_use_default_sentinel():
    assert repr(USE_DEFAULT) == "USE_DEFAULT"
    import copy
    import pickle

    assert copy.deepcopy(USE_DEFAULT) is USE_DEFAULT
    assert pickle.loads(pickle.dumps(USE_DEFAULT)) is USE_DEFAULT
