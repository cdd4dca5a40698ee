"""XGBoost and LightGBM to ONNX (onnxmltools): what both flavors' ``export_onnx`` runs.

The graph answers like the flavor's predictor: ``predict`` keeps the classifier's labels (a
Booster's own answer: the probability of class 1, or the class probabilities),
``predict_proba`` the ``(n, k)`` probabilities (no ZipMap), ``predict_raw`` the untransformed
margins (the tree ensemble's ``post_transform`` set to ``NONE``). Features reach the trees as
one float32 matrix, as XGBoost computes; a column signature becomes one ``(n, 1)`` input per
column, cast and concatenated in front. Categorical splits have no ONNX form in onnxmltools
and are refused. See docs/flavors/xgboost.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack._onnx_graph import concat_columns, fresh_name, keep_outputs
from modelpack.errors import ConversionError, MissingDependencyError
from modelpack.flavors._onnx_export import first_line, quiet
from modelpack.signature import Signature

if TYPE_CHECKING:
    import onnx

    from modelpack.convert import OnnxExport

# Objectives whose prediction is the raw margin itself: there predict_raw is predict.
_IDENTITY = {
    "xgboost": (
        "reg:squarederror",
        "reg:squaredlogerror",
        "reg:pseudohubererror",
        "reg:absoluteerror",
        "reg:quantileerror",
        "reg:linear",
    ),
    "lightgbm": ("regression", "regression_l1", "huber", "fair", "quantile", "mape"),
}
_ENSEMBLES = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")


def export(
    library: str,
    native: Any,
    config: Mapping[str, Any],
    signature: Signature,
    opset: int | None,
    probabilities: Callable[[Any], Any] | None,
) -> OnnxExport:
    """The graph of ``native``'s saved ``predict_method``; ``probabilities`` (a classifier's
    ``predict_proba`` as the flavor computes it) tells the rows where its labels tie."""
    from modelpack.convert import OnnxExport

    try:
        import onnxmltools
    except ImportError as exc:
        raise MissingDependencyError(
            f"converting a {library} model needs onnxmltools: pip install 'modelpack[onnxmltools]'"
        ) from exc
    what = f"{type(native).__name__} ({library})"
    method = str(config.get("predict_method", "predict"))
    categories = config.get("categories") or {}
    if categories:
        raise ConversionError(
            f"cannot convert {what} to ONNX: onnxmltools has no categorical splits "
            f"(categorical columns: {', '.join(sorted(categories))})"
        )
    inputs = _input_types(signature, what)
    taken = {name for name, _ in inputs}
    matrix = fresh_name("features", taken)
    width = _width(signature, config, what)
    model = _convert(library, native, matrix, width, opset, what)
    _choose_outputs(model, library, config, method, what)
    concat_columns(model, matrix, inputs, [name for name, _ in inputs])
    model.producer_name, model.producer_version = "onnxmltools", onnxmltools.__version__
    labels = method == "predict" and config.get("classes") is not None
    return OnnxExport(model, ties=_label_ties(probabilities) if labels else None)


def _convert(
    library: str, native: Any, matrix: str, width: int, opset: int | None, what: str
) -> onnx.ModelProto:
    from onnxmltools.convert.common.data_types import FloatTensorType

    types = [(matrix, FloatTensorType([None, width]))]
    try:
        with quiet():
            import onnxmltools

            if library == "xgboost":
                return onnxmltools.convert_xgboost(
                    _unnamed(native), initial_types=types, target_opset=opset
                )
            return onnxmltools.convert_lightgbm(
                native, initial_types=types, target_opset=opset, zipmap=False
            )
    except Exception as exc:
        raise ConversionError(f"onnxmltools cannot convert {what}: {first_line(exc)}") from exc


def _unnamed(native: Any) -> Any:
    """A copy whose features are unnamed: onnxmltools reads XGBoost's trees only as f0, f1...
    (the features are positional in the graph's matrix either way)."""
    import copy

    wrapped = hasattr(native, "get_booster")
    booster = (native.get_booster() if wrapped else native).copy()
    booster.feature_names = None
    booster.feature_types = None
    if not wrapped:
        return booster
    clone = copy.copy(native)
    clone._Booster = booster
    return clone


def _choose_outputs(
    model: onnx.ModelProto, library: str, config: Mapping[str, Any], method: str, what: str
) -> None:
    outputs = [o.name for o in model.graph.output]
    objective = str(config.get("objective") or "")
    if "probabilities" not in outputs:  # a regressor (or ranker): one "variable"
        if method == "predict_raw" and objective not in _IDENTITY[library]:
            raise ConversionError(
                f"cannot convert {what}'s raw scores to ONNX: onnxmltools transforms the "
                f"{objective or 'unknown'} objective's margins; save with predict_method='predict'"
            )
        keep_outputs(model, [outputs[0]])
        _as_double(model, outputs[0], library)
        return
    classes = config.get("classes")
    binary = _columns(model) == 2
    if method == "predict_raw":
        _post_transform(model, "NONE")
        _keep_column(model, "probabilities", 1) if binary else keep_outputs(
            model, ["probabilities"]
        )
    elif classes is not None and method == "predict":
        keep_outputs(model, ["label"])
        _relabel(model, classes, what)
        _batch_shape(model, "label")
    elif classes is not None or not binary:  # predict_proba, or a multiclass Booster
        if objective == "multi:softmax":  # a Booster answering class indices, as floats
            keep_outputs(model, ["label"])
            _cast(model, "label", _elem("float32"))
            _batch_shape(model, "label")
            return
        keep_outputs(model, ["probabilities"])
    else:  # a binary Booster answers the probability of class 1
        _keep_column(model, "probabilities", 1)
    if "probabilities" in {o.name for o in model.graph.output}:
        _as_double(model, "probabilities", library)


def _input_types(signature: Signature, what: str) -> list[tuple[str, onnx.TypeProto]]:
    from onnx import helper

    if signature.inputs.is_tensor:
        if len(signature.inputs.tensors) != 1:
            raise ConversionError(f"{what} takes one input tensor")
        spec = signature.inputs.tensors[0]
        shape = [None, *(d if d > 0 else None for d in spec.shape[1:])]
        return [(spec.name or "input", helper.make_tensor_type_proto(_elem(spec.dtype), shape))]
    types = []
    for column in signature.inputs.columns:
        if column.dtype in ("string", "object", "str"):
            raise ConversionError(
                f"cannot convert {what} to ONNX: column {column.name!r} holds strings"
            )
        types.append((column.name, helper.make_tensor_type_proto(_elem(column.dtype), [None, 1])))
    return types


def _width(signature: Signature, config: Mapping[str, Any], what: str) -> int:
    names: Sequence[str] | None = config.get("feature_names")
    if not signature.inputs.is_tensor:
        columns = [c.name for c in signature.inputs.columns]
        if names is not None and list(names) != columns:
            raise ConversionError(
                f"cannot convert {what} to ONNX: the signature's columns {columns} are not the "
                f"features it was trained on, in order ({list(names)})"
            )
        return len(columns)
    shape = signature.inputs.tensors[0].shape
    if len(shape) != 2 or shape[1] <= 0:
        raise ConversionError(f"{what} takes an (n, features) matrix, not shape {shape}")
    return int(shape[1])


def _elem(dtype: str) -> int:
    from onnx import helper

    try:
        return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    except TypeError as exc:
        raise ConversionError(f"inputs of type {dtype} have no ONNX equivalent") from exc


def _ensemble(model: onnx.ModelProto) -> Any:
    return next(n for n in model.graph.node if n.op_type in _ENSEMBLES)


def _columns(model: onnx.ModelProto) -> int:
    dims = next(o for o in model.graph.output if o.name == "probabilities").type.tensor_type
    return int(dims.shape.dim[1].dim_value) if len(dims.shape.dim) == 2 else 0


def _post_transform(model: onnx.ModelProto, value: str) -> None:
    for attribute in _ensemble(model).attribute:
        if attribute.name == "post_transform":
            attribute.s = value.encode()


def _relabel(model: onnx.ModelProto, classes: Sequence[Any], what: str) -> None:
    """The saved class labels in place of the Booster's indices (LightGBM loads a Booster)."""
    from onnx import TensorProto, helper

    node = _ensemble(model)
    found = next((a for a in node.attribute if a.name == "classlabels_int64s"), None)
    if found is None or list(found.ints) == list(classes):
        return
    if list(found.ints) != list(range(len(classes))):
        raise ConversionError(f"cannot convert {what}: its graph's classes are not its labels")
    if all(isinstance(c, int) for c in classes):
        del found.ints[:]
        found.ints.extend(int(c) for c in classes)
        return
    inner = fresh_name("label_index", _names(model))
    _rename_output(model, "label", inner)
    encoder = helper.make_node(
        "LabelEncoder",
        [inner],
        ["label"],
        domain="ai.onnx.ml",
        keys_int64s=list(range(len(classes))),
        values_strings=[str(c) for c in classes],
    )
    model.graph.node.append(encoder)
    for opset in model.opset_import:
        if opset.domain == "ai.onnx.ml":  # LabelEncoder's keys/values attributes: version 2
            opset.version = max(opset.version, 2)
    for output in model.graph.output:
        if output.name == "label":
            output.type.tensor_type.elem_type = TensorProto.STRING


def _keep_column(model: onnx.ModelProto, name: str, column: int) -> None:
    """Output ``name``'s column ``column`` as an ``(n,)`` vector."""
    from onnx import helper, numpy_helper

    keep_outputs(model, [name])
    inner = fresh_name(f"{name}_matrix", _names(model))
    _rename_output(model, name, inner)
    index = numpy_helper.from_array(np.array(column, dtype=np.int64), f"{inner}_column")
    model.graph.initializer.append(index)
    model.graph.node.append(helper.make_node("Gather", [inner, index.name], [name], axis=1))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    del dims[1:]


def _cast(model: onnx.ModelProto, name: str, elem: int) -> None:
    from onnx import helper

    inner = fresh_name(f"{name}_uncast", _names(model))
    _rename_output(model, name, inner)
    model.graph.node.append(helper.make_node("Cast", [inner], [name], to=elem))
    for output in model.graph.output:
        if output.name == name:
            output.type.tensor_type.elem_type = elem


def _as_double(model: onnx.ModelProto, name: str, library: str) -> None:
    if library == "lightgbm":  # LightGBM answers float64 (computed in float32 here)
        _cast(model, name, _elem("float64"))


def _batch_shape(model: onnx.ModelProto, name: str) -> None:
    # Converters declare labels as (1,): ORT warns on every run where the batch is longer.
    for output in model.graph.output:
        if output.name == name:
            dims = output.type.tensor_type.shape.dim
            del dims[:]
            dims.add().dim_param = "N"


def _rename_output(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        for i, value in enumerate(node.output):
            if value == old:
                node.output[i] = new
        for i, value in enumerate(node.input):
            if value == old:
                node.input[i] = new


def _names(model: onnx.ModelProto) -> set[str]:
    graph = model.graph
    found = {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
    for node in graph.node:
        found.update(node.input)
        found.update(node.output)
    return found


def _label_ties(probabilities: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """The rows whose two likeliest classes tie within the float32 rounding the trees sum in."""
    if probabilities is None:
        return None

    def ties(data: Any) -> Any:
        proba = np.asarray(probabilities(data), dtype=np.float64)
        if proba.ndim != 2 or proba.shape[1] < 2:
            return None
        top = np.sort(proba, axis=1)
        return np.asarray(top[:, -1] - top[:, -2] <= 4 * np.finfo(np.float32).eps)

    return ties
