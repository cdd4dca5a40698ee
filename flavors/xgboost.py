"""The XGBoost flavor: scikit-learn wrappers and native Boosters, saved as UBJSON.

``model.ubj`` is XGBoost's own format (``save_model``): trees, objective, feature names and
types, the categories of categorical features and, for a wrapper, its scikit-learn attributes
(classes, best iteration). Loading runs nothing from the files, so no trust is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack.errors import InvalidModelError
from modelpack.flavors import _boosting
from modelpack.model import load_native, save_with
from modelpack.plugins import SPECIFIC, LoadOptions
from modelpack.trust import TrustArg

if TYPE_CHECKING:
    from modelpack.convert import OnnxExport
    from modelpack.signature import Signature

FILE = "model.ubj"
# Wrappers XGBoost itself rebuilds with ``cls()`` + ``load_model`` (its documented path).
WRAPPERS = ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor")
_CLASSIFIERS = ("XGBClassifier", "XGBRFClassifier")


class XGBoostPredictor:
    def __init__(self, native: Any, config: Mapping[str, Any]) -> None:
        self.native = native
        self._method = str(config.get("predict_method", "predict"))
        self._wrapper = config.get("wrapper")
        self._categories: Mapping[str, Sequence[Any]] = config.get("categories") or {}
        self._names: Sequence[str] | None = config.get("feature_names")

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        data = _boosting.as_frame(data, self._categories, self._names)
        raw = self._method == "predict_raw"
        if self._wrapper is None:
            import xgboost

            matrix = xgboost.DMatrix(data, enable_categorical=True)
            return self.native.predict(matrix, output_margin=raw)
        if raw:
            return self.native.predict(data, output_margin=True)
        return getattr(self.native, self._method)(data)


class XGBoostFlavor:
    name = "xgboost"
    priority = SPECIFIC  # an XGBClassifier is also a scikit-learn estimator

    def accepts(self, obj: Any) -> bool:
        return _boosting.class_of(obj, "xgboost", (*WRAPPERS, "Booster")) is not None

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        reqs = [_boosting.installed_distribution("xgboost", "xgboost-cpu"), "numpy", "scipy"]
        if config.get("wrapper"):
            reqs.append("scikit-learn")
        return reqs

    def save(self, obj: Any, path: Path, *, predict_method: str = "predict") -> dict[str, Any]:
        """``predict_method``: ``predict``, ``predict_proba`` (classifiers) or ``predict_raw``
        (untransformed margins, ``output_margin=True``)."""
        import xgboost

        wrapper = _boosting.class_of(obj, "xgboost", WRAPPERS)
        classifier = wrapper in _CLASSIFIERS
        allowed = _boosting.PREDICT_METHODS if classifier else ("predict", "predict_raw")
        _boosting.check_method(predict_method, allowed, wrapper or "Booster")
        booster = obj.get_booster() if wrapper else obj
        config: dict[str, Any] = {
            "file": FILE,
            "format": "ubj",
            "wrapper": wrapper,
            "predict_method": predict_method,
            "objective": _objective(obj, booster, wrapper),
            "feature_names": _plain_list(booster.feature_names),
            "feature_types": _plain_list(booster.feature_types),
            "categories": _categories(booster),
            "best_iteration": _best_iteration(obj),
            "xgboost_version": xgboost.__version__,
        }
        if classifier:
            config["classes"] = _boosting.plain_labels(obj.classes_)
            config["n_classes"] = int(obj.n_classes_)
        obj.save_model(str(path / FILE))  # a wrapper's adds its scikit-learn attributes
        return config

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        """The object that was saved: the same wrapper class (``XGBClassifier()`` +
        ``load_model``) or an ``xgboost.Booster``."""
        import xgboost

        file = str(path / str(config.get("file", FILE)))
        wrapper = config.get("wrapper")
        if wrapper is None:
            return xgboost.Booster(model_file=file)
        if wrapper not in WRAPPERS:
            raise InvalidModelError(
                f"unknown XGBoost wrapper {wrapper!r} (known: {', '.join(WRAPPERS)})"
            )
        model = getattr(xgboost, str(wrapper))()
        model.load_model(file)
        return model

    def predictor(
        self, path: Path, config: Mapping[str, Any], options: LoadOptions
    ) -> XGBoostPredictor:
        return XGBoostPredictor(self.load(path, config, options), config)

    def wrap(self, obj: Any, config: Mapping[str, Any]) -> XGBoostPredictor:
        return XGBoostPredictor(obj, config)

    def export_onnx(
        self,
        native: Any,
        config: Mapping[str, Any],
        signature: Signature,
        example: Any,
        *,
        opset: int | None = None,
    ) -> OnnxExport:
        """onnxmltools' graph of the saved ``predict_method`` (``flavors/_boosting_onnx.py``)."""
        from modelpack.flavors import _boosting_onnx

        proba = None
        if config.get("classes") is not None:
            proba = XGBoostPredictor(native, {**config, "predict_method": "predict_proba"}).predict
        return _boosting_onnx.export("xgboost", native, config, signature, opset, proba)


def _plain_list(values: Any) -> list[str] | None:
    return None if values is None else [str(v) for v in values]


def _objective(obj: Any, booster: Any, wrapper: str | None) -> str | None:
    objective = getattr(obj, "objective", None) if wrapper else None
    if callable(objective):
        raise InvalidModelError(
            "a custom objective function cannot be saved without pickle; predict_raw answers "
            "from the trees alone: save model.get_booster() instead"
        )
    if isinstance(objective, str):
        return objective
    import json

    learner = json.loads(booster.save_config()).get("learner", {})
    name = learner.get("objective", {}).get("name")
    return str(name) if name else None


def _categories(booster: Any) -> dict[str, list[Any]]:
    types = booster.feature_types or []
    if "c" not in types:
        return {}
    # XGBoost >= 3.1 keeps the training categories in the model itself.
    found = booster.get_categories(export_to_arrow=True).to_arrow()
    return {
        str(name): _boosting.plain_categories(values.to_pylist())
        for name, values in found
        if values is not None
    }


def _best_iteration(obj: Any) -> int | None:
    try:
        value = obj.best_iteration
    except AttributeError:  # not early-stopped
        return None
    return None if value is None else int(value)


_FLAVOR = XGBoostFlavor()


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
    """Save an XGBoost wrapper (``XGBClassifier``...) or ``Booster`` as UBJSON."""
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
    """The wrapper or ``Booster`` saved at ``path``."""
    return load_native("xgboost", path, trust=trust)
