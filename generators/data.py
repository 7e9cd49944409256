"""``tf.data`` wrapping of the episode sampler.

:func:`episode_dataset` turns an :class:`~generators.episodes.EpisodeGenerator` into an infinite
``tf.data.Dataset`` of ``(inputs, y_true, sample_weight)`` whose batch and context dimensions
are ``None`` in the ``element_spec`` (L changes from batch to batch), with prefetching so that
episode synthesis overlaps the training step.
"""

__all__ = ["episode_dataset", "episode_signature"]


def episode_signature(ndims, channels_in, channels_out=None, task_kind=True,
                      sample_weight=True):
    """The ``output_signature`` of an episode batch.

    Args:
        ndims: 2 or 3 spatial axes.
        channels_in: Cin (3 for Neuralizer, 1 for Neuroverse3D).
        channels_out: Cout (default Cin).
        task_kind: include ``inputs["task_kind"]``.
        sample_weight: include the third element.

    Returns:
        A tuple of ``tf.TensorSpec`` structures, batch and context dimensions ``None`` and the
        spatial dimensions ``None`` too (one signature fits every grid).
    """
    from neuroicl_tf import _compat

    tf = _compat.import_tensorflow()
    if ndims not in (2, 3):
        raise ValueError(f"ndims must be 2 or 3, got {ndims!r}")
    channels_out = channels_in if channels_out is None else channels_out
    spatial = (None,) * ndims
    inputs = {
        "target": tf.TensorSpec((None, *spatial, channels_in), tf.float32),
        "context_in": tf.TensorSpec((None, None, *spatial, channels_in), tf.float32),
        "context_out": tf.TensorSpec((None, None, *spatial, channels_out), tf.float32),
    }
    if task_kind:
        inputs["task_kind"] = tf.TensorSpec((None,), tf.int32)
    y_true = tf.TensorSpec((None, *spatial, channels_out), tf.float32)
    if sample_weight:
        return inputs, y_true, tf.TensorSpec((None,), tf.float32)
    return inputs, y_true


def episode_dataset(generator=None, prefetch=2, fixed_shape=True, **kwargs):
    """An infinite ``tf.data.Dataset`` of episode batches.

    Args:
        generator: an :class:`~generators.episodes.EpisodeGenerator`; if None, one is built
            from ``**kwargs`` (the constructor's arguments, ``sources`` included).
        prefetch: number of batches to prefetch (an int, or ``tf.data.AUTOTUNE``); 0 disables.
        fixed_shape: give the generator's spatial shape in the ``element_spec`` (True) or
            leave the spatial dimensions ``None``.
        **kwargs: constructor arguments of the generator when ``generator`` is None.

    Returns:
        ``tf.data.Dataset`` yielding ``(inputs, y_true, sample_weight)``: ``inputs["target"]``
        (B, *S, Cin), ``"context_in"`` (B, L, *S, Cin), ``"context_out"`` (B, L, *S, Cout),
        ``"task_kind"`` (B,) int32, ``y_true`` (B, *S, Cout), ``sample_weight`` (B,); B and L
        are ``None`` in the ``element_spec``.

    Raises:
        TypeError: if both ``generator`` and ``kwargs`` are given, or ``generator`` has the wrong
            type.
    """
    from neuroicl_tf import _compat

    from .episodes import EpisodeGenerator

    tf = _compat.import_tensorflow()
    if generator is None:
        generator = EpisodeGenerator(**kwargs)
    elif kwargs:
        raise TypeError(f"episode_dataset: pass either generator or constructor arguments, "
                        f"not both (got {sorted(kwargs)})")
    if not isinstance(generator, EpisodeGenerator):
        raise TypeError(f"generator must be an EpisodeGenerator, got {generator!r}")
    inputs, y_true, weight = episode_signature(generator.ndims, generator.channels)
    if fixed_shape:
        def fix(spec, lead):
            return tf.TensorSpec((*spec.shape[:lead], *generator.shape, spec.shape[-1]),
                                 spec.dtype)

        inputs = {
            "target": fix(inputs["target"], 1),
            "context_in": fix(inputs["context_in"], 2),
            "context_out": fix(inputs["context_out"], 2),
            "task_kind": inputs["task_kind"],
        }
        y_true = fix(y_true, 1)
    dataset = tf.data.Dataset.from_generator(lambda: generator,
                                             output_signature=(inputs, y_true, weight))
    if prefetch:
        dataset = dataset.prefetch(prefetch)
    return dataset
