"""Export an in-context model as a TensorFlow Serving SavedModel.

:func:`export_saved_model` writes ``export_base/<version>/`` (the layout TF Serving watches) with:

* signature ``serving_default``: inputs ``target`` ``(B, *S, Cin)``, ``context_in``
  ``(B, L, *S, Cin)``, ``context_out`` ``(B, L, *S, Cout)``, all float32, B and L dynamic, the
  spatial sizes S those of the model (or dynamic if the model's are); output ``output``
  ``(B, *S, Cout)`` float32, the raw network output. A Neuroverse3D mini-context size l is fixed
  at export and its chunk order is not shuffled (the output does not depend on either up to
  round-off, SPEC §3.7);
* signature ``metadata``: no inputs, output ``metadata``, a scalar string holding the metadata
  JSON (model class and config, task-type hints, input normalisation, package and TensorFlow
  versions, the signature's shapes);
* the same JSON as the asset file ``assets/neuroicl_metadata.json``, and as the function
  ``get_metadata()`` of the object ``tf.saved_model.load`` returns.

The SavedModel holds only TensorFlow ops: serving it, or loading it with
``tf.saved_model.load`` or the TF1 loader, needs neither ``neuroicl_tf`` nor tf-keras.

The version folder is written under a hidden temporary name in ``export_base`` and renamed when
complete, so TF Serving never sees a half-written version (it only loads numeric folder names).
"""

import datetime
import inspect
import json
import os
import shutil
import tempfile

import neuroicl_tf
import neuroicl_tf._compat as _compat

tf = _compat.import_tensorflow()

__all__ = ["export_saved_model", "input_specs", "read_metadata", "xla_compiled_functions",
           "METADATA_ASSET", "SERVING_SIGNATURE", "METADATA_SIGNATURE", "OUTPUT_KEY",
           "INPUT_NAMES"]

METADATA_ASSET = "neuroicl_metadata.json"
SERVING_SIGNATURE = "serving_default"
METADATA_SIGNATURE = "metadata"
OUTPUT_KEY = "output"
INPUT_NAMES = ("target", "context_in", "context_out")
FORMAT = "neuroicl_tf.saved_model/1"

# What a client needs to know to prepare inputs and read outputs, per model class.
_TASK_HINTS = {
    "0": "segmentation-like (labels in [0, 1]): threshold the raw output at 0.5",
    "1": "image-to-image (values in [0, 1]): use the raw output (clip to [0, 1] if needed)",
}
_NORMALISATION = {
    "Neuralizer": (
        "2D slices in [0, 1], 3 channels (unused channels zero); the reference uses coronal "
        "slices of MNI-aligned 1 mm volumes at 192x192, intensities rescaled with dataset "
        "percentiles"
    ),
    "Neuroverse3D": (
        "each volume, context image and context label separately: clip to its 2nd-98th "
        "percentiles, then min-max to [0, 1] (neuroicl_tf.io.normalize_intensity); "
        "segmentation labels are binary float masks; reference size 128^3"
    ),
}
_DEFAULT_NORMALISATION = "inputs in [0, 1] (neuroicl_tf.io.normalize_intensity)"


def _named_inputs(model):
    names = getattr(model, "input_names", None)
    inputs = getattr(model, "inputs", None)
    if not names or not inputs:
        raise ValueError(
            f"model must be a built functional model with inputs named {INPUT_NAMES}; "
            f"{type(model).__name__} has no named inputs"
        )
    named = dict(zip(names, inputs))
    missing = [n for n in INPUT_NAMES if n not in named]
    if missing:
        raise ValueError(f"model inputs must include {INPUT_NAMES}; got {list(names)}, "
                         f"missing {missing}")
    return named


def input_specs(model, spatial_shape=None):
    """The ``serving_default`` input signature for ``model``.

    Args:
        model: a functional ``tf.keras.Model`` with inputs ``target`` ``(B, *S, Cin)``,
            ``context_in`` ``(B, L, *S, Cin)`` and ``context_out`` ``(B, L, *S, Cout)``.
        spatial_shape: optional sizes to fix where the model's spatial sizes are dynamic; must
            agree with the model's static sizes.

    Returns:
        A dict ``name -> tf.TensorSpec`` (float32, batch and context length ``None``).

    Raises:
        ValueError: inputs missing or inconsistent, or ``spatial_shape`` not compatible.
    """
    named = _named_inputs(model)
    target = tuple(named["target"].shape)
    context_in = tuple(named["context_in"].shape)
    context_out = tuple(named["context_out"].shape)
    ndims = len(target) - 2
    if ndims not in (2, 3) or len(context_in) != ndims + 3 or len(context_out) != ndims + 3:
        raise ValueError(
            f"model inputs must be target (B, *S, Cin), context_in (B, L, *S, Cin), context_out "
            f"(B, L, *S, Cout) with 2 or 3 spatial axes; got {target}, {context_in}, "
            f"{context_out}"
        )
    spatial = list(target[1:-1])
    for other in (context_in[2:-1], context_out[2:-1]):
        spatial = [a if a is not None else b for a, b in zip(spatial, other)]
    if spatial_shape is not None:
        spatial_shape = [int(s) for s in spatial_shape]
        if len(spatial_shape) != ndims or any(
            a is not None and a != b for a, b in zip(spatial, spatial_shape)
        ):
            raise ValueError(f"spatial_shape must have {ndims} sizes matching the model's "
                             f"{tuple(spatial)}; got {tuple(spatial_shape)}")
        spatial = spatial_shape
    cin, cout = target[-1], context_out[-1]
    if cin is None or cout is None or context_in[-1] not in (None, cin):
        raise ValueError(f"model channel sizes must be static and agree; got target {target}, "
                         f"context_in {context_in}, context_out {context_out}")
    spatial = tuple(spatial)
    return {
        "target": tf.TensorSpec((None, *spatial, cin), tf.float32, name="target"),
        "context_in": tf.TensorSpec((None, None, *spatial, cin), tf.float32, name="context_in"),
        "context_out": tf.TensorSpec((None, None, *spatial, cout), tf.float32,
                                     name="context_out"),
    }


def _call_kwargs(model, mini_context):
    params = inspect.signature(model.call).parameters
    kwargs = {}
    if "mini_context" in params:
        if mini_context is not None:
            kwargs["mini_context"] = int(mini_context)
    elif mini_context is not None:
        raise ValueError(f"mini_context={mini_context} given, but {type(model).__name__}.call "
                         f"takes no mini_context (only Neuroverse3D-style models do)")
    if "shuffle" in params:
        kwargs["shuffle"] = False  # deterministic serving; the mean is order-independent
    return kwargs


def _json_safe(value, what):
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be JSON-serialisable: {err}") from err


def _spec_json(spec):
    return {"shape": [d for d in spec.shape.as_list()], "dtype": spec.dtype.name}


def build_metadata(model, specs, mini_context, kwargs, metadata=None):
    """The metadata dict stored with an export (see the module docstring)."""
    cls = type(model)
    try:
        config = _json_safe(model.get_config(), "model.get_config()")
    except NotImplementedError:
        config = None
    effective_l = kwargs.get("mini_context")
    if effective_l is None and isinstance(config, dict):
        effective_l = config.get("mini_context")
    info = {
        "format": FORMAT,
        "package": "neuroicl_tf",
        "package_version": neuroicl_tf.__version__,
        "tensorflow_version": tf.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        "registered_name": tf.keras.utils.get_registered_name(cls),
        "model_name": model.name,
        "model_config": config,
        "ndims": len(specs["target"].shape) - 2,
        "in_channels": int(specs["target"].shape[-1]),
        "out_channels": int(specs["context_out"].shape[-1]),
        "mini_context": effective_l,
        "shuffle_mini_contexts": False if "shuffle" in kwargs else None,
        "signatures": {
            SERVING_SIGNATURE: {
                "inputs": {name: _spec_json(spec) for name, spec in specs.items()},
                "outputs": {OUTPUT_KEY: {
                    "shape": [None, *specs["target"].shape.as_list()[1:-1],
                              int(specs["context_out"].shape[-1])],
                    "dtype": "float32"}},
            },
            METADATA_SIGNATURE: {"inputs": {}, "outputs": {"metadata": {"shape": [],
                                                                        "dtype": "string"}}},
        },
        "output": "raw network output, no activation",
        "task_kinds": dict(_TASK_HINTS),
        "input_normalization": _NORMALISATION.get(cls.__name__, _DEFAULT_NORMALISATION),
    }
    if metadata:
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict; got {type(metadata).__name__}")
        info.update(_json_safe(metadata, "metadata"))
    return info


class _ServingModule(tf.Module):
    """What is saved: the serving functions and the model's variables (not the Keras model)."""

    def __init__(self, model, specs, kwargs, metadata_json, asset_path):
        super().__init__(name="neuroicl_serving")
        # Tracking the variables (not the Keras object) keeps tf-keras out of the SavedModel.
        self.model_variables = list(model.variables)
        self.metadata_asset = tf.saved_model.Asset(asset_path)
        self._metadata_json = metadata_json

        @tf.function(input_signature=[specs["target"], specs["context_in"],
                                      specs["context_out"]])
        def serve(target, context_in, context_out):
            inputs = {"target": target, "context_in": context_in, "context_out": context_out}
            output = model(inputs, training=False, **kwargs)
            return {OUTPUT_KEY: tf.cast(output, tf.float32)}

        @tf.function(input_signature=[])
        def get_metadata():
            return {"metadata": tf.constant(metadata_json)}

        self.serve = serve
        self.get_metadata = get_metadata


def _next_version(export_base):
    versions = [int(n) for n in os.listdir(export_base) if n.isdigit()]
    return max(versions, default=0) + 1


def xla_compiled_functions(concrete_function):
    """Names of the functions in a traced graph that XLA must compile (``jit_compile=True``).

    TF Serving runs such functions only when started with the experimental
    ``--xla_cpu_compilation_enabled`` (and not at all on some GPU builds), so exports for it
    should have none.

    Args:
        concrete_function: a traced ``tf.function`` (e.g. the serving signature).

    Returns:
        Sorted list of function names (empty if the graph needs no XLA).
    """
    graph_def = concrete_function.graph.as_graph_def()
    names = set()
    for node in graph_def.node:
        if "_XlaMustCompile" in node.attr and node.attr["_XlaMustCompile"].b:
            names.add(node.attr["f"].func.name if "f" in node.attr else node.name)
    for fn in graph_def.library.function:
        if "_XlaMustCompile" in fn.attr and fn.attr["_XlaMustCompile"].b:
            names.add(fn.signature.name)
        for node in fn.node_def:
            if "_XlaMustCompile" in node.attr and node.attr["_XlaMustCompile"].b:
                names.add(node.attr["f"].func.name if "f" in node.attr else node.name)
    return sorted(names)


def export_saved_model(model, export_dir, mini_context=None, metadata=None, version=None,
                       overwrite=False, spatial_shape=None, allow_xla=False):
    """Write ``model`` as a TF Serving SavedModel in ``export_dir/<version>/``.

    Args:
        model: a built functional ICL model (inputs ``target``, ``context_in``,
            ``context_out``); e.g. ``Neuralizer`` or ``Neuroverse3D``.
        export_dir: the export base folder (created if missing); the model goes into a numeric
            subfolder, the layout TF Serving's ``--model_base_path`` expects.
        mini_context: Neuroverse3D mini-context size l fixed in the export (``None``: the
            model's own default). An error for models without mini-contexts.
        metadata: optional JSON-safe dict merged into (and overriding) the stored metadata.
        version: positive int; ``None`` means one more than the largest existing version (1 for
            an empty base).
        overwrite: replace an existing ``version`` instead of raising.
        spatial_shape: optional spatial sizes to fix where the model's are dynamic.
        allow_xla: accept a serving graph with XLA-compiled (``jit_compile``) functions. By
            default that is an error, because TF Serving only runs them with the experimental
            ``--xla_cpu_compilation_enabled`` flag.

    Returns:
        The path of the version folder (str).

    Raises:
        ValueError: bad arguments, the version exists and ``overwrite`` is False, or the
            serving graph needs XLA and ``allow_xla`` is False.
        TypeError: ``metadata`` is not a JSON-safe dict.
    """
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise ValueError(f"version must be a positive int; got {version!r}")
    if mini_context is not None and (isinstance(mini_context, bool)
                                     or not isinstance(mini_context, int) or mini_context < 1):
        raise ValueError(f"mini_context must be a positive int or None; got {mini_context!r}")
    export_base = os.path.abspath(os.fspath(export_dir))
    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise ValueError(f"export_dir exists and is not a folder: {export_base!r}")

    specs = input_specs(model, spatial_shape)
    kwargs = _call_kwargs(model, mini_context)
    info = build_metadata(model, specs, mini_context, kwargs, metadata)

    os.makedirs(export_base, exist_ok=True)
    if version is None:
        version = _next_version(export_base)
    final = os.path.join(export_base, str(version))
    if os.path.exists(final) and not overwrite:
        raise ValueError(f"version {version} already exists in {export_base!r}; pass "
                         f"overwrite=True (--overwrite) or another version")

    metadata_json = json.dumps(info, indent=2, sort_keys=True)
    # Hidden, non-numeric names: TF Serving ignores them while they are being written.
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
    asset_dir = tempfile.mkdtemp(prefix=".tmp-asset-", dir=export_base)
    old = None
    try:
        asset_path = os.path.join(asset_dir, METADATA_ASSET)
        with open(asset_path, "w", encoding="utf-8") as f:
            f.write(metadata_json + "\n")
        module = _ServingModule(model, specs, kwargs, metadata_json, asset_path)
        signatures = {
            SERVING_SIGNATURE: module.serve.get_concrete_function(),
            METADATA_SIGNATURE: module.get_metadata.get_concrete_function(),
        }
        xla = xla_compiled_functions(signatures[SERVING_SIGNATURE])
        if xla and not allow_xla:
            raise ValueError(
                f"the serving graph holds XLA-compiled functions {xla[:5]}, which TF Serving "
                f"only runs with --xla_cpu_compilation_enabled; build the model without "
                f"jit_compile or pass allow_xla=True"
            )
        tf.saved_model.save(module, tmp, signatures=signatures)
        if os.path.exists(final):
            old = tempfile.mkdtemp(prefix=f".old-{version}-", dir=export_base)
            os.rename(final, os.path.join(old, "replaced"))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(final):  # put the previous version back
            os.rename(os.path.join(old, "replaced"), final)
        raise
    finally:
        shutil.rmtree(asset_dir, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_metadata(version_dir):
    """Read the metadata JSON of an export without loading the model.

    Args:
        version_dir: an export's version folder (``export_base/<version>``).

    Returns:
        The metadata dict.
    """
    path = os.path.join(os.fspath(version_dir), "assets", METADATA_ASSET)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {METADATA_ASSET} in {version_dir!r}: not a neuroicl export")
    with open(path, encoding="utf-8") as f:
        return json.load(f)
