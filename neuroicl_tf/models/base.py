"""``ICLModel``: the common base of the in-context models (Neuralizer, Neuroverse3D).

A subclass builds its graph from three ``tf.keras.Input``s named ``target`` ``(B, *S, Cin)``,
``context_in`` ``(B, L, *S, Cin)`` and ``context_out`` ``(B, L, *S, Cout)`` (L = None) and calls
``super().__init__(inputs=[target, context_in, context_out], outputs=..., name=...)``. The base
then gives it:

- constructor arguments remembered automatically: ``get_config()`` returns them (JSON-safe) and
  ``from_config(config)`` is ``cls(**config)``;
- ``save("model.h5")`` (weights + class name + config in one HDF5 file, written atomically) and
  ``ICLModel.load("model.h5")``, which rebuilds the right subclass;
- input handling: a dict (extra keys such as ``task_kind`` ignored) or a list/tuple
  ``(target, context_in, context_out)``, checked by :meth:`ICLModel.validate_inputs` with
  messages that name the input, the shape seen and the shape wanted;
- a task-aware ``compute_loss``: with ``x["task_kind"]`` and a compiled loss that has
  ``per_sample(y_true, y_pred, task_kind) -> (B,)``, the per-sample losses are weighted by
  ``sample_weight`` and averaged over the *global* batch (``tf.nn.compute_average_loss``).

The spatial sizes must be divisible by :meth:`ICLModel.size_divisor`, by default
``2 ** (stages - 1)`` where ``stages`` is the ``stages`` constructor argument or the length of a
``channels`` list argument (override the method if a subclass differs).
"""

import contextlib
import functools
import inspect
import json
import os
import tempfile

import numpy as np

from .. import _compat

tf = _compat.import_tensorflow()

__all__ = ["ICLModel", "INPUT_NAMES", "read_header"]

INPUT_NAMES = ("target", "context_in", "context_out")

# Class name -> module that defines it, for ICLModel.load before the module was imported.
_KNOWN_MODULES = {
    "Neuralizer": "neuroicl_tf.models.neuralizer",
    "Neuroverse3D": "neuroicl_tf.models.neuroverse3d",
}

_FORMAT_VERSION = 1


def _json_safe(value, where="config"):
    """Tuples -> lists, numpy scalars -> Python; raise TypeError for anything not JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, where) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"{where} holds a {type(value).__name__}, which is not JSON-safe; ICLModel subclasses "
        "must take JSON-safe constructor arguments"
    )


def _shape_str(shape):
    dims = tf.TensorShape(shape).as_list() if tf.TensorShape(shape).rank is not None else None
    if dims is None:
        return "(unknown rank)"
    return "(" + ", ".join("None" if d is None else str(d) for d in dims) + ")"


def _static_shape(x, name):
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"input {name!r} must be an array or tensor, got {type(x).__name__}")
    return tf.TensorShape(shape)


class ICLModel(tf.keras.Model):
    """Base class of the in-context models (a functional Keras model; see the module docs)."""

    _registry = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        ICLModel._registry[cls.__name__] = cls
        tf.keras.utils.register_keras_serializable(package="neuroicl")(cls)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_neuroicl_records_config", False):
            cls.__init__ = _recording_init(init)

    def __init__(self, inputs=None, outputs=None, name=None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        if len(self.inputs) != 3:
            raise ValueError(
                f"an ICLModel needs the three inputs {INPUT_NAMES}, got {len(self.inputs)}"
            )
        # Not an attribute Keras tracks: it is no weight of the model and is not saved.
        object.__setattr__(self, "_icl_loss_tracker", tf.keras.metrics.Mean("loss"))

    # ---------------------------------------------------------------- configuration

    def get_config(self):
        """The constructor arguments (JSON-safe)."""
        config = self.__dict__.get("_neuroicl_config")
        if config is None:
            raise NotImplementedError(
                f"{type(self).__name__} was not built through a subclass constructor"
            )
        return json.loads(json.dumps(config))

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)

    # ---------------------------------------------------------------- shapes and checks

    @property
    def ndims(self):
        """Number of spatial dimensions (2 or 3)."""
        return self.inputs[0].shape.rank - 2

    @property
    def in_channels(self):
        return self.inputs[0].shape[-1]

    @property
    def out_channels(self):
        return self.inputs[2].shape[-1]

    def size_divisor(self):
        """Every spatial size must be a multiple of this (``2 ** (stages - 1)``)."""
        config = self.__dict__.get("_neuroicl_config") or {}
        stages = config.get("stages")
        if stages is None and isinstance(config.get("channels"), (list, tuple)):
            stages = len(config["channels"])
        return 2 ** (int(stages) - 1) if stages else 1

    @staticmethod
    def as_input_list(inputs):
        """``[target, context_in, context_out]`` from a dict or a list/tuple.

        Raises:
            ValueError: a key is missing or the list does not have three entries.
            TypeError: ``inputs`` is neither a dict nor a list/tuple.
        """
        if isinstance(inputs, dict):
            missing = [k for k in INPUT_NAMES if k not in inputs]
            if missing:
                raise ValueError(
                    f"inputs lack the key(s) {missing}; got keys {sorted(inputs)}, "
                    f"wanted {list(INPUT_NAMES)} (others are ignored)"
                )
            return [inputs[k] for k in INPUT_NAMES]
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 3:
                raise ValueError(
                    f"inputs must be (target, context_in, context_out), got {len(inputs)} items"
                )
            return list(inputs)
        raise TypeError(
            "inputs must be a dict with keys target, context_in, context_out or a list "
            f"(target, context_in, context_out), got {type(inputs).__name__}"
        )

    def validate_inputs(self, inputs):
        """Check the static shapes of the three inputs against the model and each other.

        Unknown (None) dimensions are not checked.

        Args:
            inputs: a dict or list/tuple as accepted by :meth:`as_input_list`.

        Returns:
            The inputs as a list ``[target, context_in, context_out]``.

        Raises:
            ValueError: naming the input, the shape seen and the shape wanted.
        """
        items = self.as_input_list(inputs)
        shapes = [_static_shape(x, n) for x, n in zip(items, INPUT_NAMES)]
        nd = self.ndims
        spatial_names = ", ".join(["H", "W", "D"][:nd])
        cin, cout = self.in_channels, self.out_channels
        wanted = {
            "target": f"(B, {spatial_names}, {cin})",
            "context_in": f"(B, L, {spatial_names}, {cin})",
            "context_out": f"(B, L, {spatial_names}, {cout})",
        }

        def fail(name, shape, why):
            raise ValueError(
                f"{self.name}: input {name!r} has shape {_shape_str(shape)}, wanted "
                f"{wanted[name]}: {why}"
            )

        ranks = {"target": nd + 2, "context_in": nd + 3, "context_out": nd + 3}
        for name, shape in zip(INPUT_NAMES, shapes):
            if shape.rank is None:
                continue
            if shape.rank != ranks[name]:
                fail(name, shape, f"rank {shape.rank}, wanted rank {ranks[name]}")
        target, c_in, c_out = shapes
        for name, shape, want in (("target", target, cin), ("context_in", c_in, cin),
                                  ("context_out", c_out, cout)):
            if shape.rank is not None and shape[-1] is not None and shape[-1] != want:
                fail(name, shape, f"{shape[-1]} channels, the model takes {want}")

        batches = [(n, s[0]) for n, s in zip(INPUT_NAMES, shapes) if s.rank and s[0] is not None]
        if len({b for _, b in batches}) > 1:
            seen = ", ".join(f"{n}: {b}" for n, b in batches)
            values = [b for _, b in batches]
            # Name the input whose batch size is the odd one out (the rarest value).
            name = min(batches, key=lambda nb: values.count(nb[1]))[0]
            fail(name, shapes[INPUT_NAMES.index(name)], f"batch sizes differ ({seen})")

        for name, shape in (("context_in", c_in), ("context_out", c_out)):
            if shape.rank is not None and shape[1] == 0:
                fail(name, shape, "the context is empty (L = 0); give at least one pair")
        if c_in.rank and c_out.rank and None not in (c_in[1], c_out[1]) and c_in[1] != c_out[1]:
            fail("context_out", c_out, f"L = {c_out[1]} but context_in has L = {c_in[1]}")

        def spatial(name, shape):
            if shape.rank is None:
                return None
            return shape[1:-1] if name == "target" else shape[2:-1]

        model_spatial = tf.TensorShape(self.inputs[0].shape[1:-1])
        divisor = self.size_divisor()
        for name, shape in zip(INPUT_NAMES, shapes):
            sp = spatial(name, shape)
            if sp is None:
                continue
            for axis, (got, want) in enumerate(zip(sp, model_spatial)):
                if got is not None and want is not None and got != want:
                    fail(name, shape, f"spatial axis {axis} is {got}, the model was built "
                                      f"for {want}")
                if got is not None and got % divisor:
                    fail(name, shape, f"spatial size {got} is not divisible by {divisor} "
                                      f"(2**(stages-1))")
        t_sp = spatial("target", target)
        for name, shape in (("context_in", c_in), ("context_out", c_out)):
            sp = spatial(name, shape)
            if t_sp is None or sp is None:
                continue
            for got, want in zip(sp, t_sp):
                if got is not None and want is not None and got != want:
                    fail(name, shape, f"spatial shape {_shape_str(sp)} differs from the "
                                      f"target's {_shape_str(t_sp)}")
        in_sp, out_sp = spatial("context_in", c_in), spatial("context_out", c_out)
        if in_sp is not None and out_sp is not None:
            for got, want in zip(out_sp, in_sp):
                if got is not None and want is not None and got != want:
                    fail("context_out", c_out, f"spatial shape {_shape_str(out_sp)} differs "
                                               f"from context_in's {_shape_str(in_sp)}")
        return items

    # ---------------------------------------------------------------- calling

    def __call__(self, inputs, *args, **kwargs):
        # Normalise and check before Keras' own input-spec check, whose messages name no input.
        return super().__call__(self.validate_inputs(inputs), *args, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        """Run the graph on ``inputs`` (dict or ``(target, context_in, context_out)``).

        Returns:
            ``(B, *S, Cout)``.
        """
        return super().call(self.validate_inputs(inputs), training=training, mask=mask)

    def _validate_data(self, x):
        # Cheap entry checks for in-memory data; datasets and generators are checked per batch.
        if isinstance(x, (dict, list, tuple)):
            try:
                items = self.as_input_list(x)
            except (TypeError, ValueError):
                return  # Keras will report its own error for other layouts
            if all(hasattr(v, "shape") for v in items):
                self.validate_inputs(items)

    def predict(self, x, *args, **kwargs):
        self._validate_data(x)
        return super().predict(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._validate_data(x)
        return super().evaluate(x, *args, **kwargs)

    # ---------------------------------------------------------------- loss

    @property
    def metrics(self):
        metrics = super().metrics
        if not self._is_compiled:
            return metrics
        # Our tracker stands in for the compiled loss' own "loss" mean, in both loss paths.
        others = [m for m in metrics if m.name != "loss" and m is not self._icl_loss_tracker]
        return [self._icl_loss_tracker] + others

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        """Task-aware loss: per-sample losses from ``loss.per_sample`` when possible.

        With a dict ``x`` holding ``task_kind`` and a compiled loss that has ``per_sample``, the
        loss is ``sum_b w_b * per_b / global_batch`` (plus scaled regularisation losses);
        otherwise Keras' compiled loss is used. Either way the metric "loss" reports the mean
        over all samples seen (also correct under ``MirroredStrategy``).

        Returns:
            The scalar loss of this replica.
        """
        loss_obj = getattr(self, "loss", None)
        batch = tf.cast(tf.shape(tf.nest.flatten(y_pred)[0])[0], tf.float32)
        if isinstance(x, dict) and "task_kind" in x and hasattr(loss_obj, "per_sample"):
            per = loss_obj.per_sample(y, y_pred, x["task_kind"])
            per = tf.reshape(tf.cast(per, tf.float32), [-1])
            if sample_weight is not None:
                per = per * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
            loss = tf.nn.compute_average_loss(per)
            shown = tf.reduce_mean(per)
            if self.losses:
                reg = tf.add_n(self.losses)
                loss += tf.nn.scale_regularization_loss(reg)
                shown += reg
            self._icl_loss_tracker.update_state(shown, sample_weight=batch)
            return loss
        loss = super().compute_loss(x, y, y_pred, sample_weight)
        if loss is not None:
            # Keras divided the loss by the replica count; the metric wants the replica's mean.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            self._icl_loss_tracker.update_state(loss * replicas, sample_weight=batch)
        return loss

    # ---------------------------------------------------------------- saving and loading

    def save(self, filepath, *args, **kwargs):
        """Save the model.

        A path ending in ``.h5`` (including ``.weights.h5``) gets the weights, the class name
        and the constructor config in one HDF5 file (written to a temporary name, then renamed);
        :meth:`load` reads it back. Any other path is handed to Keras' ``Model.save``.
        """
        path = os.fspath(filepath)
        if not path.endswith(".h5"):
            return super().save(filepath, *args, **kwargs)
        import h5py

        config = self.get_config()
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".h5", dir=directory)
        os.close(fd)
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["neuroicl_class"] = type(self).__name__
                f.attrs["neuroicl_config"] = json.dumps(config)
                f.attrs["neuroicl_format"] = _FORMAT_VERSION
                group = f.create_group("weights")
                for i, (var, value) in enumerate(zip(self.weights, self.get_weights())):
                    ds = group.create_dataset(f"{i:05d}", data=value)
                    ds.attrs["name"] = var.name
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return None

    @classmethod
    def load(cls, filepath):
        """Rebuild a model saved by :meth:`save` (the right subclass) and load its weights.

        Args:
            filepath: an ``.h5`` file written by :meth:`save`, or a Keras ``.keras``/SavedModel
                path (loaded with ``tf.keras.models.load_model``).

        Returns:
            An instance of the saved class (which must be ``cls`` or a subclass).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file holds no neuroicl model, an unknown class, or weights that do
                not fit the rebuilt model.
        """
        path = os.fspath(filepath)
        if not os.path.exists(path):
            raise FileNotFoundError(f"model file not found: {path}")
        if not path.endswith(".h5"):
            model = tf.keras.models.load_model(path)
            if not isinstance(model, cls):
                raise ValueError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
            return model
        with _open_model_file(path) as (f, class_name, config):
            group = f["weights"]
            names = sorted(group.keys())
            values = [group[k][()] for k in names]
            var_names = [_to_str(group[k].attrs.get("name", k)) for k in names]
        klass = _lookup_class(class_name)
        if not issubclass(klass, cls):
            raise ValueError(f"{path} holds a {class_name}, not a {cls.__name__}")
        model = klass.from_config(config)
        if len(values) != len(model.weights):
            raise ValueError(
                f"{path} holds {len(values)} weights but the rebuilt {class_name} has "
                f"{len(model.weights)}"
            )
        for var, value, saved_name in zip(model.weights, values, var_names):
            if tuple(var.shape) != value.shape:
                raise ValueError(
                    f"{path}: weight {saved_name} has shape {value.shape}, the rebuilt model's "
                    f"{var.name} has {tuple(var.shape)}"
                )
        model.set_weights(values)
        return model


def read_header(filepath):
    """The class name and constructor config of a model file written by :meth:`ICLModel.save`,
    without building the model or reading its weights.

    Returns:
        ``(class_name, config)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable HDF5 file, or one without a neuroicl model config.
    """
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    with _open_model_file(path) as (_, class_name, config):
        return class_name, config


@contextlib.contextmanager
def _open_model_file(path):
    """Open a model file once: yields ``(h5py.File, class_name, config)``, header checked."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file ({err})") from err
    with f:
        if "neuroicl_class" not in f.attrs or "neuroicl_config" not in f.attrs \
                or "weights" not in f:
            raise ValueError(
                f"{path} holds no neuroicl model config (attributes neuroicl_class and "
                "neuroicl_config); write models with ICLModel.save('model.h5')"
            )
        yield (f, _to_str(f.attrs["neuroicl_class"]),
               json.loads(_to_str(f.attrs["neuroicl_config"])))


def _to_str(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _lookup_class(class_name):
    if class_name not in ICLModel._registry and class_name in _KNOWN_MODULES:
        import importlib

        importlib.import_module(_KNOWN_MODULES[class_name])
    if class_name not in ICLModel._registry:
        raise ValueError(
            f"unknown model class {class_name!r}; known: {sorted(ICLModel._registry)}"
        )
    return ICLModel._registry[class_name]


def _recording_init(init):
    """Wrap a subclass ``__init__`` so the outermost call records its arguments."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if self.__dict__.get("_neuroicl_config") is None:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config = {}
            for name, param in signature.parameters.items():
                if name == "self" or name not in bound.arguments:
                    continue
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    config.update(bound.arguments[name])
                elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                    if bound.arguments[name]:
                        raise TypeError(f"{type(self).__name__} takes no *args for its config")
                else:
                    config[name] = bound.arguments[name]
            object.__setattr__(self, "_neuroicl_config", _json_safe(config, type(self).__name__))
        init(self, *args, **kwargs)

    wrapper._neuroicl_records_config = True
    return wrapper
