"""MLflow ``PythonModel``s, loaded and run without MLflow.

``python_model.pkl`` is a cloudpickle of a subclass of ``mlflow.pyfunc.PythonModel``: unpickling
it needs that base class, which :class:`PythonModel` here stands in for (the unpickler maps that
one name; any other ``mlflow`` name is refused). :class:`MlflowPythonModel` wraps the instance so
the python flavor can run it: it builds MLflow's ``context`` (``artifacts``, ``model_config``)
and calls ``predict(context, model_input, params)`` as MLflow does.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelpack.errors import InvalidModelError, MissingDependencyError


class PythonModel:
    """Stands in for ``mlflow.pyfunc.PythonModel``: the base of the models MLflow pickled."""

    def load_context(self, context: Any) -> None:
        return None


class TypeHints:
    """Stands in for ``mlflow.models.signature._TypeHints``, which a PythonModel caches: data."""

    input: Any = None
    output: Any = None


# The only MLflow names a pickled PythonModel may refer to: its base class and cached data.
_STAND_INS: dict[tuple[str, str], type] = {
    ("mlflow.pyfunc.model", "PythonModel"): PythonModel,
    ("mlflow.pyfunc", "PythonModel"): PythonModel,
    ("mlflow.models.signature", "_TypeHints"): TypeHints,
}


class PythonModelContext:
    """What MLflow hands ``load_context`` and ``predict``: artifact paths and the model config."""

    def __init__(self, artifacts: Mapping[str, str], model_config: Mapping[str, Any]) -> None:
        self.artifacts = dict(artifacts)
        self.model_config = dict(model_config)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _STAND_INS:
            return _STAND_INS[module, name]
        if module == "mlflow" or module.startswith("mlflow."):
            raise MissingDependencyError(
                f"the MLflow python model refers to {module}.{name}, which only MLflow provides; "
                "import it where mlflow is installed, or rewrite the model without it"
            )
        return super().find_class(module, name)


def unpickle(file: Path) -> Any:
    """The pickled ``PythonModel`` (the caller has checked that trust allows the pickle)."""
    with open(file, "rb") as fh:
        try:
            return _Unpickler(fh).load()
        except (AttributeError, ImportError, pickle.UnpicklingError) as exc:
            if isinstance(exc, MissingDependencyError):
                raise
            raise InvalidModelError(
                f"{file.name}: cannot unpickle the MLflow model ({exc})"
            ) from exc


class MlflowPythonModel:
    """An MLflow ``PythonModel`` as a modelpack python model (``predict(data, params)``)."""

    def __init__(self, model: Any, model_config: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.model_config = dict(model_config or {})
        self.context = PythonModelContext({}, self.model_config)

    def load_context(self, artifacts: Mapping[str, str]) -> None:
        self.context = PythonModelContext(artifacts, self.model_config)
        self.model.load_context(self.context)

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        # MLflow wraps a subclass's predict for its type-hint validation: call the model's own.
        predict = getattr(self.model.predict, "__wrapped__", None)
        predict = self.model.predict if predict is None else predict.__get__(self.model)
        names = list(inspect.signature(predict).parameters)
        args = (self.context, data) if names[:1] == ["context"] else (data,)
        if "params" in names:
            return predict(*args, params=dict(params) if params else None)
        return predict(*args)
