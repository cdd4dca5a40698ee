"""scikit-learn to ONNX (skl2onnx): what ``SklearnFlavor.export_onnx`` runs.

The graph answers like the flavor's predictor: classifiers convert with ``zipmap=False`` and keep
only the output the saved ``predict_method`` returns; a column signature becomes one ``(n, 1)``
input per column (routed by name, or concatenated in front into the matrix the estimator was
fitted on). See docs/onnx.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack._onnx_graph import concat_columns, fresh_name, keep_outputs
from modelpack.errors import ConversionError, MissingDependencyError
from modelpack.flavors._onnx_export import first_line, quiet
from modelpack.signature import ColSpec, Signature

if TYPE_CHECKING:
    import onnx

    from modelpack.convert import OnnxExport


def export(
    estimator: Any, signature: Signature, predict_method: str, opset: int | None
) -> OnnxExport:
    """The graph of ``estimator``'s ``predict_method``, and the rows where its labels tie."""
    from modelpack.convert import OnnxExport

    try:
        import skl2onnx
    except ImportError as exc:
        raise MissingDependencyError(
            "converting a scikit-learn model needs skl2onnx: pip install 'modelpack[onnx]'"
        ) from exc
    model = sklearn_to_onnx(estimator, signature, predict_method, opset)
    model.producer_name, model.producer_version = "skl2onnx", skl2onnx.__version__
    return OnnxExport(model, ties=label_ties(estimator, predict_method))


def label_ties(estimator: Any, predict_method: str) -> Callable[[Any], Any] | None:
    """For a classifier's labels: the rows whose two likeliest classes tie exactly."""
    if predict_method != "predict" or not hasattr(estimator, "predict_proba"):
        return None

    def ties(data: Any) -> Any:
        if not hasattr(estimator, "feature_names_in_") and hasattr(data, "to_numpy"):
            data = data.to_numpy()  # fitted on an array: give it one, as the predictor does
        try:
            proba = np.asarray(estimator.predict_proba(data), dtype=np.float64)
        except Exception:
            return None  # no probabilities for this model after all: compare labels as they are
        if proba.ndim != 2 or proba.shape[1] < 2:
            return None
        top = np.sort(proba, axis=1)
        return np.asarray(top[:, -1] - top[:, -2] <= 1e-12)

    return ties


_SKLEARN_OUTPUTS = {"predict": "label", "predict_proba": "probabilities"}


def sklearn_to_onnx(
    estimator: Any, signature: Signature, predict_method: str, opset: int | None
) -> onnx.ModelProto:
    from sklearn.base import is_classifier

    classifier = is_classifier(estimator)
    if predict_method not in ("predict", "predict_proba", "transform"):
        raise ConversionError(f"cannot convert predict_method={predict_method!r} to ONNX")
    options = {"zipmap": False} if classifier else None
    if signature.inputs.is_tensor:
        model = _skl2onnx(
            estimator, lambda double: _tensor_types(signature, double), options, opset
        )
    else:
        model = _columns_to_onnx(estimator, signature.inputs.columns, options, opset)
    if classifier and predict_method in _SKLEARN_OUTPUTS:
        keep_outputs(model, [_SKLEARN_OUTPUTS[predict_method]])
    return model


def _skl2onnx(
    estimator: Any,
    initial_types: Callable[[bool], list[tuple[str, Any]]],
    options: dict[str, Any] | None,
    opset: int | None,
    doubles: tuple[bool, ...] = (True, False),
) -> onnx.ModelProto:
    from modelpack.flavors._onnxruntime import plain_session

    errors = []
    # float64 first: the same arithmetic as scikit-learn; float32 where a converter has no double.
    # A classifier without probabilities (LinearSVC) takes no zipmap option: then none at all.
    tries = [(options, d) for d in doubles] + ([(None, d) for d in doubles] if options else [])
    for options, double in tries:
        try:
            with quiet():
                from skl2onnx import to_onnx

                model = to_onnx(
                    estimator,
                    initial_types=initial_types(double),
                    options=options,
                    target_opset=opset,
                )
                # Some converters write double graphs ONNX Runtime refuses (tree ensembles whose
                # ai.onnx.ml opset has no double): those take the float32 way too.
                plain_session(model.SerializeToString())
                return model
        except ConversionError:
            raise
        except Exception as exc:
            errors.append(first_line(exc))
    raise ConversionError(
        f"skl2onnx cannot convert {type(estimator).__name__}: {errors[-1]}", errors=errors
    )


def _tensor_types(signature: Signature, double: bool) -> list[tuple[str, Any]]:
    if len(signature.inputs.tensors) != 1:
        raise ConversionError("a scikit-learn model takes one input tensor")
    spec = signature.inputs.tensors[0]
    shape = [None, *(d if d > 0 else None for d in spec.shape[1:])]
    return [(spec.name or "X", _skl_type(spec.dtype, shape, double, spec.name or "X"))]


def _columns_to_onnx(
    estimator: Any, columns: Sequence[ColSpec], options: dict[str, Any] | None, opset: int | None
) -> onnx.ModelProto:
    # Either way the graph takes one (n, 1) input per column. skl2onnx routes them by name into
    # a ColumnTransformer (or encoder), but other estimators want the one (n, k) matrix they were
    # fitted on: those convert from a matrix, built by a Concat in front. The first step decides,
    # as inside skl2onnx's ColumnTransformer parser; the other way is tried when that fails, so
    # what converted per column before (a search over a pipeline, a custom converter) still does.
    def per_column() -> onnx.ModelProto:
        return _skl2onnx(
            estimator,
            lambda double: [
                (c.name, _skl_type(c.dtype, [None, 1], double, c.name)) for c in columns
            ],
            options,
            opset,
        )

    def matrix() -> onnx.ModelProto:
        return _matrix_to_onnx(estimator, columns, options, opset)

    ways = (per_column, matrix) if _takes_columns(estimator) else (matrix, per_column)
    failures = []
    for way in ways:
        try:
            return way()
        except ConversionError as exc:
            failures.append(exc)
    raise failures[0]


def _first_step(estimator: Any) -> Any:
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        steps = [s for _, s in estimator.steps if s is not None and s != "passthrough"]
        return _first_step(steps[0]) if steps else estimator
    return estimator


def _takes_columns(estimator: Any) -> bool:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    # skl2onnx's `do_not_merge_columns`: the estimators it gives several inputs as they are.
    return isinstance(_first_step(estimator), (ColumnTransformer, OneHotEncoder, OrdinalEncoder))


def _matrix_to_onnx(
    estimator: Any, columns: Sequence[ColSpec], options: dict[str, Any] | None, opset: int | None
) -> onnx.ModelProto:
    from skl2onnx.common.data_types import StringTensorType

    specs = {c.name: c for c in columns}
    order = _fitted_order(estimator, list(specs))
    column_types = [(c.name, _skl_type(c.dtype, [None, 1], True, c.name)) for c in columns]
    for name, t in column_types:
        if name in order and isinstance(t, StringTensorType):
            raise ConversionError(
                f"column {name!r} holds strings, but {type(_first_step(estimator)).__name__} "
                "takes one numeric matrix: encode it in the model (a ColumnTransformer with a "
                "OneHotEncoder) to convert it"
            )
    # The matrix scikit-learn computes on: the frame's values, float32 only where numpy makes
    # them float32 (float32 columns, with small ints at most); ints and bools become float64.
    values = np.result_type(*(np.dtype(specs[n].dtype) for n in order))
    wide = values.kind != "f" or values.itemsize >= 8
    name = fresh_name("features", set(specs))
    model = _skl2onnx(
        estimator,
        lambda double: [(name, _skl_type("float64", [None, len(order)], double, name))],
        options,
        opset,
        doubles=(True, False) if wide else (False,),
    )
    concat_columns(model, name, [(n, t.to_onnx_type()) for n, t in column_types], order)
    return model


def _fitted_order(estimator: Any, names: list[str]) -> list[str]:
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None:
        count = getattr(estimator, "n_features_in_", len(names))
        if count != len(names):
            raise ConversionError(
                f"{type(estimator).__name__} was fitted on {count} features, the signature has "
                f"{len(names)} columns"
            )
        return names
    order = [str(f) for f in fitted]
    missing = [f for f in order if f not in names]
    if missing:
        raise ConversionError(
            f"{type(estimator).__name__} was fitted on columns the signature lacks: {missing}"
        )
    return order


def _skl_type(dtype: str, shape: list[int | None], double: bool, name: str) -> Any:
    from skl2onnx.common import data_types as t

    if dtype.startswith("float"):
        return (
            t.DoubleTensorType(shape) if double and dtype == "float64" else t.FloatTensorType(shape)
        )
    if dtype.startswith(("int", "uint")):
        return t.Int64TensorType(shape)
    if dtype in ("string", "object", "str"):
        return t.StringTensorType(shape)
    if dtype == "bool":
        return t.BooleanTensorType(shape)
    raise ConversionError(f"input {name!r} of type {dtype} has no ONNX equivalent in skl2onnx")
