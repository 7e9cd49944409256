"""Shared checks for every layer and model of neuroicl_tf (keras-hub style).

``check_layer`` builds a layer, calls it eagerly, inside ``tf.function`` and symbolically in a
functional model, round-trips its config through JSON, and runs one ``fit`` step.
``check_model`` does the same for a whole model (a ``tf.keras.Model`` built by a constructor).
"""

import json

import numpy as np
import tensorflow as tf

import neuroicl_tf  # noqa: F401  (sets up tf-keras before TensorFlow is used)


def _as_tensors(inputs):
    return tf.nest.map_structure(tf.convert_to_tensor, inputs)


def _symbolic(inputs, symbolic_shapes=None):
    """Keras Inputs shaped like ``inputs`` (batch dim free), or as given in ``symbolic_shapes``."""
    if symbolic_shapes is None:
        # One map over the inputs: a shape tuple must not be read as a nested structure.
        return tf.nest.map_structure(
            lambda x: tf.keras.Input(shape=tuple(x.shape[1:]), dtype=x.dtype), inputs
        )
    flat_inputs = tf.nest.flatten(inputs)
    flat_shapes = symbolic_shapes if isinstance(symbolic_shapes, list) else [symbolic_shapes]
    flat = [tf.keras.Input(shape=s, dtype=x.dtype) for x, s in zip(flat_inputs, flat_shapes)]
    return tf.nest.pack_sequence_as(inputs, flat)


def assert_close(actual, desired, rtol=1e-5, atol=1e-6, what="output"):
    for a, d in zip(tf.nest.flatten(actual), tf.nest.flatten(desired)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(d), rtol=rtol, atol=atol, err_msg=what)


def check_layer(
    layer_cls,
    init_kwargs,
    inputs,
    expected_output_shape=None,
    symbolic_shapes=None,
    run_fit=True,
    rtol=1e-5,
    atol=1e-6,
):
    """Run the standard checks on one layer class.

    Args:
        layer_cls: the layer class (registered for serialization).
        init_kwargs: constructor keyword arguments.
        inputs: a numpy array or a (nested) list of arrays, the layer's call input.
        expected_output_shape: the shape (or nested shapes) the eager output must have.
        symbolic_shapes: per-input shapes without batch for the functional check; use
            ``None`` entries for dynamic axes such as the context length L.
        run_fit: also train one step in a functional model wrapping the layer.

    Returns:
        The eager output.
    """
    inputs = _as_tensors(inputs)
    layer = layer_cls(**init_kwargs)

    eager = layer(inputs)
    if expected_output_shape is not None:
        got = tf.nest.map_structure(lambda t: tuple(t.shape), eager)
        assert got == expected_output_shape, f"output shape {got}, wanted {expected_output_shape}"

    graph = tf.function(lambda x: layer(x))(inputs)
    assert_close(graph, eager, rtol, atol, "tf.function call differs from eager call")

    sym_in = _symbolic(inputs, symbolic_shapes)
    sym_out = layer(sym_in)
    functional = tf.keras.Model(sym_in, sym_out)
    assert_close(functional(inputs), eager, rtol, atol, "functional call differs from eager")

    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"get_config() lacks constructor argument {key!r}"
    restored = layer_cls.from_config(json.loads(json.dumps(config)))
    restored(inputs)
    restored.set_weights(layer.get_weights())
    assert_close(restored(inputs), eager, rtol, atol, "from_config copy differs")

    # The registered name must resolve through Keras' own deserialisation.
    serialized = json.loads(json.dumps(tf.keras.layers.serialize(layer)))
    assert type(tf.keras.layers.deserialize(serialized)) is layer_cls

    if run_fit and layer.trainable_weights:
        _one_fit_step(functional, inputs, eager)
    return eager


def _one_fit_step(model, inputs, outputs):
    targets = tf.nest.map_structure(lambda t: tf.random.normal(tf.shape(t), seed=1), outputs)
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
    history = model.fit(inputs, targets, epochs=1, batch_size=len(tf.nest.flatten(inputs)[0]),
                        verbose=0)
    loss = history.history["loss"][0]
    assert np.isfinite(loss), "fit step gave a non-finite loss"
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert any(changed), "one fit step changed no weight"
    return loss


def check_model(build, inputs, expected_output_shape=None, run_fit=True, rtol=1e-5, atol=1e-6,
                tmp_path=None):
    """Run the standard checks on a model built by ``build()``.

    Checks an eager call against a ``tf.function`` call and ``predict``, a rebuild from
    ``get_config`` (and ``Model.load`` when the class has one and ``tmp_path`` is given), and one
    ``fit`` step.

    Returns:
        The model and its eager output.
    """
    inputs = _as_tensors(inputs)
    model = build()
    eager = model(inputs)
    if expected_output_shape is not None:
        got = tuple(eager.shape)
        assert got == tuple(expected_output_shape), f"output {got}, wanted {expected_output_shape}"
    graph = tf.function(lambda x: model(x))(inputs)
    assert_close(graph, eager, rtol, atol, "tf.function call differs from eager call")
    assert_close(model.predict(inputs, verbose=0), eager, rtol, atol, "predict differs")

    if tmp_path is not None and hasattr(type(model), "load"):
        path = str(tmp_path / "model.h5")
        model.save(path)
        loaded = type(model).load(path)
        assert_close(loaded(inputs), eager, rtol, atol, "Model.load copy differs")

    if run_fit:
        _one_fit_step(model, inputs, eager)
    return model, eager
