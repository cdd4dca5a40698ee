"""The LightGBM flavor: scikit-learn wrappers and native Boosters, saved as LightGBM's text model.

``model.txt`` is ``Booster.save_model``'s format: trees, objective, feature names and the pandas
categories. Loading runs nothing from the files, so no trust is needed.

``load`` always returns a ``lightgbm.Booster``: an ``LGBMClassifier`` and its kin cannot be
rebuilt without pickle (their fitted state lives in Python attributes LightGBM does not save).
The predictor reproduces the wrapper's answers from the Booster and the config: class labels,
``predict_proba``'s two columns for a binary model, ``raw_score``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack.errors import InvalidModelError
from modelpack.flavors import _boosting
from modelpack.model import load_native, save_with
from modelpack.plugins import SPECIFIC, LoadOptions
from modelpack.trust import TrustArg

if TYPE_CHECKING:
    from modelpack.convert import OnnxExport
    from modelpack.signature import Signature

FILE = "model.txt"
WRAPPERS = ("LGBMClassifier", "LGBMRegressor", "LGBMRanker")


class LightGBMPredictor:
    def __init__(self, booster: Any, config: Mapping[str, Any]) -> None:
        self.native = booster
        self._method = str(config.get("predict_method", "predict"))
        self._classifier = config.get("wrapper") == "LGBMClassifier"
        self._classes = np.asarray(config.get("classes") or [])
        self._categories: Mapping[str, Sequence[Any]] = config.get("categories") or {}
        self._names: Sequence[str] | None = config.get("feature_names")

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        data = _boosting.as_frame(data, self._categories, self._names)
        if self._method == "predict_raw":
            return self.native.predict(data, raw_score=True)
        result = self.native.predict(data)
        if not self._classifier:
            return result
        # As LGBMClassifier.predict_proba and predict answer from the same Booster call.
        proba = result if result.ndim > 1 else np.vstack((1.0 - result, result)).transpose()
        if self._method == "predict_proba":
            return proba
        return self._classes[np.argmax(proba, axis=1)]


class LightGBMFlavor:
    name = "lightgbm"
    priority = SPECIFIC  # an LGBMClassifier is also a scikit-learn estimator

    def accepts(self, obj: Any) -> bool:
        return _boosting.class_of(obj, "lightgbm", (*WRAPPERS, "Booster")) is not None

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        return ["lightgbm", "numpy", "scipy"]

    def save(self, obj: Any, path: Path, *, predict_method: str = "predict") -> dict[str, Any]:
        """``predict_method``: ``predict``, ``predict_proba`` (classifiers) or ``predict_raw``
        (untransformed scores, ``raw_score=True``)."""
        import lightgbm

        wrapper = _boosting.class_of(obj, "lightgbm", WRAPPERS)
        classifier = wrapper == "LGBMClassifier"
        allowed = _boosting.PREDICT_METHODS if classifier else ("predict", "predict_raw")
        _boosting.check_method(predict_method, allowed, wrapper or "Booster")
        booster = obj.booster_ if wrapper else obj
        objective = obj.objective_ if wrapper else booster.params.get("objective")
        if callable(objective):
            raise InvalidModelError(
                "a custom objective function cannot be saved without pickle; predict_raw "
                "answers from the trees alone: save model.booster_ instead"
            )
        names = [str(n) for n in booster.feature_name()]
        config: dict[str, Any] = {
            "file": FILE,
            "format": "text",
            "wrapper": wrapper,
            "predict_method": predict_method,
            "objective": None if objective is None else str(objective),
            "feature_names": names,
            "best_iteration": _best_iteration(booster),
            "lightgbm_version": lightgbm.__version__,
        }
        if classifier:
            config["classes"] = _boosting.plain_labels(obj.classes_)
            config["n_classes"] = int(obj.n_classes_)
        # num_iteration=None saves up to the best iteration when early-stopped, as predict uses.
        booster.save_model(str(path / FILE))
        # The file names the categorical columns (a booster in memory may only say "auto").
        config["categories"] = _categories(lightgbm.Booster(model_file=str(path / FILE)), names)
        return config

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        """A ``lightgbm.Booster``, also for a saved wrapper (see the module docstring)."""
        import lightgbm

        return lightgbm.Booster(model_file=str(path / str(config.get("file", FILE))))

    def predictor(
        self, path: Path, config: Mapping[str, Any], options: LoadOptions
    ) -> LightGBMPredictor:
        return LightGBMPredictor(self.load(path, config, options), config)

    def wrap(self, obj: Any, config: Mapping[str, Any]) -> LightGBMPredictor:
        return LightGBMPredictor(obj.booster_ if config.get("wrapper") else obj, config)

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

        booster = native.booster_ if hasattr(native, "booster_") else native
        proba = None
        if config.get("classes") is not None:
            as_proba = {**config, "predict_method": "predict_proba"}
            proba = LightGBMPredictor(booster, as_proba).predict
        return _boosting_onnx.export("lightgbm", booster, config, signature, opset, proba)


def _categories(booster: Any, names: list[str]) -> dict[str, list[Any]]:
    # pandas_categorical lists the categories of the frame's category columns, in column order;
    # those columns are the ones named in categorical_feature when the counts agree.
    found = getattr(booster, "pandas_categorical", None) or []
    indices = booster.params.get("categorical_feature") or []
    if isinstance(indices, (int, str)):
        indices = [indices]
    columns = [names[int(i)] if str(i).isdigit() else str(i) for i in indices]
    if not found or len(columns) != len(found):
        return {}
    return {col: _boosting.plain_categories(cats) for col, cats in zip(columns, found, strict=True)}


def _best_iteration(booster: Any) -> int | None:
    value = getattr(booster, "best_iteration", 0)
    return int(value) if value and value > 0 else None


_FLAVOR = LightGBMFlavor()


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
    """Save a LightGBM wrapper (``LGBMClassifier``...) or ``Booster`` as a text model."""
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
    """The ``lightgbm.Booster`` saved at ``path`` (a wrapper comes back as its Booster)."""
    return load_native("lightgbm", path, trust=trust)
