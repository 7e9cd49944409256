"""Neuroverse3D.predict_stream: the forward pass with a context that arrives piece by piece."""

import numpy as np
import pytest
import tensorflow as tf

import neuroicl_tf  # noqa: F401
from neuroicl_tf.models.neuroverse3d import Neuroverse3D


def _data(ndims, length, size=16, seed=0):
    rng = np.random.default_rng(seed)
    shape = (size,) * ndims
    target = rng.normal(size=(1, *shape, 1)).astype(np.float32)
    context_in = rng.normal(size=(1, length, *shape, 1)).astype(np.float32)
    context_out = (rng.uniform(size=(1, length, *shape, 1)) > 0.5).astype(np.float32)
    return target, context_in, context_out


def _pieces(context_in, context_out, sizes):
    start = 0
    for n in sizes:
        yield context_in[:, start:start + n], context_out[:, start:start + n]
        start += n
    assert start == context_in.shape[1]


@pytest.mark.parametrize("ndims", [2, 3])
def test_stream_equals_the_whole_context_call(ndims):
    model = Neuroverse3D(channels=(4, 8, 16), ndims=ndims, shuffle=False)
    target, context_in, context_out = _data(ndims, 5)
    expected = model([target, context_in, context_out], mini_context=None).numpy()
    scale = np.abs(expected).max()
    for sizes, mini_context in [((2, 1, 2), None), ((5,), 2), ((1,) * 5, 1)]:
        got = model.predict_stream(target, _pieces(context_in, context_out, sizes),
                                   mini_context=mini_context).numpy()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5 * scale, (sizes, mini_context)
    # The context's order does not matter either (up to float rounding).
    pieces = list(_pieces(context_in, context_out, (1,) * 5))[::-1]
    got = model.predict_stream(target, pieces).numpy()
    assert np.abs(got - expected).max() <= 1e-5 * scale


def test_stream_reads_a_dataset_and_traces_once():
    model = Neuroverse3D(channels=(4, 8, 16), shuffle=False)
    target, context_in, context_out = _data(3, 6)
    expected = model([target, context_in, context_out]).numpy()
    dataset = tf.data.Dataset.from_tensor_slices(
        {"context_in": np.moveaxis(context_in, 1, 0)[:, :, None],
         "context_out": np.moveaxis(context_out, 1, 0)[:, :, None]}
    )  # one pair per element, (1, 1, *S, 1) each
    got = model.predict_stream(target, dataset).numpy()
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    # New running sums (new variables) on every call, and other lengths: no new traces.
    model.predict_stream(target, _pieces(context_in[:, :3], context_out[:, :3], (1, 1, 1)))
    model.predict_stream(target, dataset)
    functions = model._stream_functions()
    assert functions["add"].experimental_get_tracing_count() == 1
    assert functions["first"].experimental_get_tracing_count() == 1


def test_stream_bad_input_names_the_piece():
    model = Neuroverse3D(channels=(4, 8, 16), shuffle=False)
    target, context_in, context_out = _data(3, 2)
    with pytest.raises(ValueError, match=r"no pairs \(L = 0\)"):
        model.predict_stream(target, [])
    bad = [(context_in[:, :1], context_out[:, :1]), (context_in[:, :1, :8], context_out[:, :1])]
    with pytest.raises(ValueError, match=r"context piece 1: .*'context_in'.*spatial"):
        model.predict_stream(target, bad)
    with pytest.raises(ValueError, match=r"context piece 0: expected a pair"):
        model.predict_stream(target, [(context_in, context_out, context_out)])
    with pytest.raises(ValueError, match=r"context piece 0: .*missing context_out"):
        model.predict_stream(target, [{"context_in": context_in}])
    with pytest.raises(ValueError, match=r"context piece 0: .*L = 0"):
        model.predict_stream(target, [(context_in[:, :0], context_out[:, :0])])


def test_stream_refuses_graph_mode():
    model = Neuroverse3D(channels=(4, 8, 16), shuffle=False)
    target, context_in, context_out = _data(3, 1)

    @tf.function
    def inside(t):
        return model.predict_stream(t, [(context_in, context_out)])

    with pytest.raises(RuntimeError, match="runs eagerly"):
        inside(tf.constant(target))
