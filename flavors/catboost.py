"""The CatBoost flavor: CatBoostClassifier/Regressor/Ranker and native CatBoost models, as CBM.

``model.cbm`` is CatBoost's own binary format (``save_model(format="cbm")``): trees, loss,
feature names, which features are categorical and their hashed values, and a classifier's class
labels. Loading rebuilds the recorded class from a fixed list (``cls()`` + ``load_model``) and
runs nothing from the files, so no trust is needed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack.errors import (
    ConversionError,
    InvalidModelError,
    MissingDependencyError,
    SignatureError,
)
from modelpack.flavors import _boosting
from modelpack.model import load_native, save_with
from modelpack.plugins import SPECIFIC, LoadOptions
from modelpack.signature import ColSpec, Signature
from modelpack.trust import TrustArg

if TYPE_CHECKING:
    import onnx

    from modelpack.convert import OnnxExport

FILE = "model.cbm"
# The classes CatBoost itself rebuilds with ``cls()`` + ``load_model``.
CLASSES = ("CatBoostClassifier", "CatBoostRegressor", "CatBoostRanker", "CatBoost")
_RAW = "RawFormulaVal"


class CatBoostPredictor:
    def __init__(self, native: Any, config: Mapping[str, Any]) -> None:
        self.native = native
        self._method = str(config.get("predict_method", "predict"))
        self._names: Sequence[str] = config.get("feature_names") or ()
        self._categorical: Sequence[str] = config.get("cat_features") or ()

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        data = self._in_training_order(data)
        if self._method == "predict_raw":
            return self.native.predict(data, prediction_type=_RAW)
        return getattr(self.native, self._method)(data)

    def _in_training_order(self, data: Any) -> Any:
        columns = getattr(data, "columns", None)
        if columns is None or isinstance(data, Mapping):
            return data
        # CatBoost reads a frame's columns by position, not by name.
        if self._names and list(columns) != list(self._names) and set(self._names) <= set(columns):
            data = data[list(self._names)]
        for name in self._categorical:
            if name in data.columns:
                _no_missing_category(name, data[name])
        return data


def _no_missing_category(name: str, column: Any) -> None:
    mask = column.isna().to_numpy(dtype=bool)
    if mask.any():
        raise SignatureError(
            f"column {name!r}: missing value at row {int(np.argmax(mask))}; it is a categorical "
            "feature and CatBoost takes no missing category: send a string (e.g. 'missing')",
            field=name,
            expected="a category",
            got="missing value",
        )


class CatBoostFlavor:
    name = "catboost"
    priority = SPECIFIC  # a CatBoostClassifier is also a scikit-learn estimator

    def accepts(self, obj: Any) -> bool:
        return _boosting.class_of(obj, "catboost", CLASSES) is not None

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        return ["catboost", "numpy", "pandas"]

    def save(self, obj: Any, path: Path, *, predict_method: str = "predict") -> dict[str, Any]:
        """``predict_method``: ``predict``, ``predict_proba`` (classifiers) or ``predict_raw``
        (untransformed values, ``prediction_type="RawFormulaVal"``)."""
        import catboost

        model_class = _boosting.class_of(obj, "catboost", CLASSES)
        if model_class is None:
            raise InvalidModelError(
                f"the catboost flavor saves {', '.join(CLASSES)}, not {type(obj).__name__}"
            )
        if not obj.is_fitted():
            raise InvalidModelError(f"the {model_class} is not fitted: call fit before saving")
        classifier = model_class == "CatBoostClassifier"
        allowed = _boosting.PREDICT_METHODS if classifier else ("predict", "predict_raw")
        _boosting.check_method(predict_method, allowed, model_class)
        names = [str(n) for n in obj.feature_names_ or ()]
        indices = [int(i) for i in obj.get_cat_feature_indices()]
        config: dict[str, Any] = {
            "file": FILE,
            "format": "cbm",
            "model_class": model_class,
            "predict_method": predict_method,
            "loss_function": _loss_function(obj),
            "feature_names": names,
            "cat_features": [names[i] for i in indices if i < len(names)],
            "cat_feature_indices": indices,
            "catboost_version": catboost.__version__,
        }
        if classifier:
            config["classes"] = _boosting.plain_labels(obj.classes_)
        obj.save_model(str(path / FILE), format="cbm")
        return config

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        """The object that was saved: the same class (``CatBoostClassifier()`` +
        ``load_model``) or a native ``catboost.CatBoost``."""
        import catboost

        model_class = config.get("model_class")
        if model_class not in CLASSES:
            raise InvalidModelError(
                f"unknown CatBoost model class {model_class!r} (known: {', '.join(CLASSES)})"
            )
        model = getattr(catboost, str(model_class))()
        model.load_model(str(path / str(config.get("file", FILE))), format="cbm")
        return model

    def predictor(
        self, path: Path, config: Mapping[str, Any], options: LoadOptions
    ) -> CatBoostPredictor:
        return CatBoostPredictor(self.load(path, config, options), config)

    def wrap(self, obj: Any, config: Mapping[str, Any]) -> CatBoostPredictor:
        return CatBoostPredictor(obj, config)

    def export_onnx(
        self, native: Any, config: Mapping[str, Any], signature: Signature, example: Any
    ) -> OnnxExport:
        """CatBoost's own ONNX export (``save_model(format="onnx")``), numeric features only;
        the graph takes the signature's inputs and answers the saved ``predict_method``."""
        from modelpack.convert import OnnxExport

        if config.get("cat_features"):
            raise ConversionError(
                "CatBoost exports ONNX for numeric features only; this model has categorical "
                f"features {list(config['cat_features'])}"
            )
        import catboost

        model = _catboost_onnx(native)
        method = str(config.get("predict_method", "predict"))
        predictor = CatBoostPredictor(native, config)
        _onnx_outputs(model, str(config.get("model_class")), method, predictor.predict(example))
        _onnx_inputs(model, signature, list(config.get("feature_names") or ()))
        model.producer_name, model.producer_version = "catboost", catboost.__version__
        ties = None
        if method == "predict" and config.get("model_class") == "CatBoostClassifier":
            ties = _label_ties(
                CatBoostPredictor(native, {**config, "predict_method": "predict_proba"})
            )
        return OnnxExport(model, ties=ties)


def _loss_function(obj: Any) -> str | None:
    value = obj.get_all_params().get("loss_function")
    return value if isinstance(value, str) else None


def _catboost_onnx(native: Any) -> onnx.ModelProto:
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError(
            "converting a CatBoost model needs onnx: pip install 'modelpack[onnx]'"
        ) from exc

    with tempfile.TemporaryDirectory(prefix="modelpack-catboost-") as tmp:
        file = Path(tmp) / "model.onnx"
        native.save_model(str(file), format="onnx")
        return onnx.load(str(file))


def _onnx_outputs(model: onnx.ModelProto, model_class: str, method: str, answer: Any) -> None:
    """Keep the one output ``method`` answers, as the predictor gives it: probabilities as a
    float64 matrix (not a ZipMap), labels in the predictor's shape, values as float64."""
    from onnx import TensorProto

    graph = model.graph
    produced = {o.name: o for o in graph.output}
    if "predictions" in produced and method in ("predict", "predict_raw"):
        # CatBoost declares its values (n,) and answers (n, 1): declared as answered.
        _only_output(model, "predictions", "predictions", TensorProto.DOUBLE, width=1)
        return
    if "label" not in produced or model_class != "CatBoostClassifier" or method == "predict_raw":
        kinds = "labels and probabilities" if "label" in produced else "values"
        raise ConversionError(
            f"CatBoost's ONNX graph for this {model_class} gives {kinds}, not what "
            f"predict_method={method!r} answers"
        )
    zipmap = next((n for n in graph.node if n.op_type == "ZipMap"), None)
    if zipmap is not None:
        graph.node.remove(zipmap)
    if method == "predict_proba":
        source = zipmap.input[0] if zipmap is not None else "probabilities"
        _only_output(model, source, "probabilities", TensorProto.DOUBLE, width=None)
    elif np.ndim(answer) == 2:  # a multiclass CatBoostClassifier answers (n, 1) labels
        elem = produced["label"].type.tensor_type.elem_type
        _only_output(model, "label", "label", elem, width=1, reshape=True)
    else:
        graph.output.remove(produced["probabilities"])


def _only_output(
    model: onnx.ModelProto,
    source: str,
    name: str,
    elem: int,
    *,
    width: int | None,
    reshape: bool = False,
) -> None:
    """Make ``name``, declared ``(n, width)`` of ``elem``, the graph's one output: ``source``
    cast to ``elem`` (or reshaped to ``(n, 1)``)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    if source == name:
        source = f"{name}__catboost"
        _rename_value(graph, name, source)
    if reshape:
        shape = numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), f"{name}__shape")
        graph.initializer.append(shape)
        graph.node.append(helper.make_node("Reshape", [source, shape.name], [name]))
    else:
        graph.node.append(helper.make_node("Cast", [source], [name], to=elem))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(name, elem, ["N", width]))
    _default_opset(model)


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for value in graph.input:
        value.name = new if value.name == old else value.name


def _default_opset(model: onnx.ModelProto) -> None:
    from onnx import helper

    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("", 13))
    # CatBoost writes IR version 3, where every initializer must also be a graph input; the
    # nodes added here (and the core's reshapes) hold constants as plain initializers (IR 4+).
    model.ir_version = max(model.ir_version, 7)


def _onnx_inputs(model: onnx.ModelProto, signature: Signature, names: list[str]) -> None:
    """Replace CatBoost's one float32 ``features`` input by the signature's inputs."""
    from onnx import helper

    from modelpack._onnx_graph import concat_columns, fresh_name

    graph = model.graph
    if signature.inputs.is_tensor:
        spec = signature.inputs.tensors[0]
        width = spec.shape[1] if len(spec.shape) == 2 and spec.shape[1] > 0 else None
        source = helper.make_tensor_value_info(
            spec.name or "features", _elem(spec.dtype, spec.name or "features"), ["N", width]
        )
        columns: list[tuple[str, onnx.TypeProto]] = [(source.name, source.type)]
        order = [source.name]
    else:
        specs = {c.name: c for c in signature.inputs.columns}
        missing = [n for n in names if n not in specs]
        if missing:
            raise ConversionError(f"the model was fitted on columns the signature lacks: {missing}")
        columns = [(c.name, _column_type(c)) for c in signature.inputs.columns]
        order = names
    matrix = fresh_name("features", {c for c, _ in columns})
    _rename_value(graph, "features", matrix)
    _default_opset(model)
    concat_columns(model, matrix, columns, order)


def _column_type(spec: ColSpec) -> onnx.TypeProto:
    from onnx import helper

    return helper.make_tensor_type_proto(_elem(spec.dtype, spec.name), ["N", 1])


def _elem(dtype: str, name: str) -> int:
    from onnx import helper

    kind = np.dtype(dtype).kind if dtype not in ("string", "str", "object") else "O"
    if kind not in "biuf":
        raise ConversionError(
            f"input {name!r} holds {dtype}: CatBoost's ONNX graph takes numbers only"
        )
    return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def _label_ties(proba: CatBoostPredictor) -> Callable[[Any], Any]:
    def ties(data: Any) -> Any:
        top = np.sort(np.asarray(proba.predict(data), dtype=np.float64), axis=1)
        return top[:, -1] - top[:, -2] <= 1e-12

    return ties


_FLAVOR = CatBoostFlavor()


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    predict_method: str = "predict",
    signature: Any = None,
    input_example: Any = None,
    metadata: Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a ``CatBoostClassifier``, ``CatBoostRegressor``, ``CatBoostRanker`` or ``CatBoost``
    model as CBM."""
    return save_with(
        _FLAVOR,
        model,
        path,
        signature=signature,
        input_example=input_example,
        metadata=metadata,
        requirements=requirements,
        overwrite=overwrite,
        predict_method=predict_method,
    )


def load(path: str | os.PathLike[str], *, trust: TrustArg = None) -> Any:
    """The CatBoost model saved at ``path``, of the class that was saved."""
    return load_native("catboost", path, trust=trust)
