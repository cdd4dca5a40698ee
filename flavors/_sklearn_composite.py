"""A scikit-learn Pipeline whose last step another flavor saves natively, stored in two parts.

An XGBoost, LightGBM or CatBoost model at the end of a Pipeline would reach skops as a type it
does not trust (loading it would need blanket trust). The sklearn flavor splits such a pipeline
instead: the preceding steps, ``Pipeline(steps[:-1])``, go to a skops file (ordinary,
default-trusted scikit-learn types), and the last step is saved by its own flavor (looked up in
``modelpack.plugins``: the installed flavor that accepts it and outranks sklearn) into
``model/final/``. The sklearn config records ``final: {flavor, name, config}``.

Loading skops-loads the head, then loads the last step with its flavor; the trust policy sees
what both parts need. The predictor runs the head's ``transform`` and then the final flavor's
predictor on the result. The native object is the Pipeline rebuilt from both parts when the final
flavor's native object is a scikit-learn estimator (an ``XGBClassifier``, a
``CatBoostClassifier``), else a :class:`PipelineParts` (LightGBM loads a ``Booster``, which a
Pipeline cannot end with).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpack import plugins
from modelpack.errors import InvalidModelError, PluginError
from modelpack.model import trust_needs
from modelpack.plugins import Flavor, LoadOptions, Predictor, Wraps
from modelpack.trust import Need

HEAD_FILE = "head.skops"
FINAL_DIR = "final"
OWN = "sklearn"
PASSTHROUGH = ("passthrough", "passthrough")  # the head of a one-step Pipeline


@dataclass(frozen=True)
class PipelineParts:
    """A split pipeline whose last step is not a scikit-learn estimator once loaded.

    ``head``: the preceding steps as a fitted ``Pipeline``; ``name``: the last step's name;
    ``final``: what its flavor loads (a ``lightgbm.Booster``). ``final.predict(head.transform(X))``
    answers as the booster does (a classifier's booster gives probabilities).
    """

    head: Any
    name: str
    final: Any


def final_flavor(obj: Any, own_priority: int) -> Flavor | None:
    """The flavor that saves the last step of the Pipeline ``obj``, when one outranks sklearn."""
    from sklearn.pipeline import Pipeline

    if not isinstance(obj, Pipeline) or not obj.steps:
        return None
    name, step = obj.steps[-1]
    found = _outranking(step, own_priority)
    if found is None and isinstance(step, Pipeline):
        inner = _innermost(step, own_priority)
        if inner is not None:
            raise InvalidModelError(
                f"the last step {name!r} is a Pipeline ending in a {type(inner[1]).__name__} "
                f"({inner[0].name} flavor): flatten it, Pipeline(outer.steps[:-1] + "
                "inner.steps), to save it without trust, or save that model separately"
            )
    return found


def _outranking(step: Any, own_priority: int) -> Flavor | None:
    found = []
    for name in plugins.names("flavor"):
        if name == OWN:
            continue
        try:
            flavor = plugins.flavor(name)
        except PluginError:  # a broken plugin must not stop sklearn from saving
            continue
        if plugins.priority(flavor) > own_priority and flavor.accepts(step):
            found.append(flavor)
    found.sort(key=lambda f: (-plugins.priority(f), f.name))
    return found[0] if found else None


def _innermost(pipeline: Any, own_priority: int) -> tuple[Flavor, Any] | None:
    from sklearn.pipeline import Pipeline

    step = pipeline.steps[-1][1] if pipeline.steps else None
    flavor = _outranking(step, own_priority)
    if flavor is not None:
        return flavor, step
    return _innermost(step, own_priority) if isinstance(step, Pipeline) else None


def head(pipeline: Any) -> Any:
    """The fitted steps before the last, as a Pipeline (a pass-through one when there are none)."""
    from sklearn.pipeline import Pipeline

    # Only the steps: memory and verbose matter to fit alone (a joblib Memory is no skops type).
    return Pipeline(list(pipeline.steps[:-1]) or [PASSTHROUGH])


def save_final(pipeline: Any, flavor: Flavor, path: Path, predict_method: str) -> dict[str, Any]:
    name, step = pipeline.steps[-1]
    options = {"predict_method": predict_method}
    if "predict_method" not in inspect.signature(flavor.save).parameters:
        if predict_method != "predict":
            raise InvalidModelError(
                f"the {flavor.name} flavor has no predict_method option for the last step "
                f"{name!r}; save the Pipeline with predict_method='predict'"
            )
        options = {}
    (path / FINAL_DIR).mkdir()
    config = flavor.save(step, path / FINAL_DIR, **options)
    return {"flavor": flavor.name, "name": str(name), "config": config}


def _flavor(final: Mapping[str, Any]) -> Flavor:
    name = str(final.get("flavor"))
    if name == OWN:  # save never writes it; a forged config must not recurse
        raise InvalidModelError("the final step of a split sklearn Pipeline cannot be sklearn")
    return plugins.flavor(name)


def _config(final: Mapping[str, Any]) -> Mapping[str, Any]:
    config = final.get("config")
    if not isinstance(config, Mapping):
        raise InvalidModelError("the sklearn flavor's final step has no config mapping")
    return config


def requirements(final: Mapping[str, Any]) -> list[str]:
    return list(_flavor(final).requirements(_config(final)))


def needs(path: Path, final: Mapping[str, Any]) -> list[Need]:
    """What loading the last step needs, its file paths named under ``model/final/``."""
    found = trust_needs(_flavor(final), path / FINAL_DIR, _config(final))
    prefix = f"model/{FINAL_DIR}/"
    return [
        Need(n.kind, prefix + n.name.removeprefix("model/")) if n.name.startswith("model/") else n
        for n in found
    ]


def final_predictor(path: Path, final: Mapping[str, Any], options: LoadOptions) -> Predictor:
    return _flavor(final).predictor(path / FINAL_DIR, _config(final), options)


def load_final(path: Path, final: Mapping[str, Any], options: LoadOptions) -> Any:
    return _flavor(final).load(path / FINAL_DIR, _config(final), options)


def wrap_final(pipeline: Any, final: Mapping[str, Any]) -> Predictor:
    flavor, step = _flavor(final), pipeline.steps[-1][1]
    if isinstance(flavor, Wraps):
        return flavor.wrap(step, _config(final))
    return _MethodPredictor(step, str(_config(final).get("predict_method", "predict")))


def rebuild(head_pipeline: Any, final: Mapping[str, Any], native: Any) -> Any:
    """The user's Pipeline again, or :class:`PipelineParts` when ``native`` cannot end one."""
    from sklearn.pipeline import Pipeline

    name = str(final.get("name", "final"))
    if not all(callable(getattr(native, m, None)) for m in ("fit", "predict", "get_params")):
        return PipelineParts(head_pipeline, name, native)
    steps = [s for s in head_pipeline.steps if tuple(s) != PASSTHROUGH]
    return Pipeline([*steps, (name, native)])


def passes_through(head_pipeline: Any) -> bool:
    return all(tuple(s) == PASSTHROUGH for s in head_pipeline.steps)


class Identity:
    native = None

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        return data


class _MethodPredictor:
    def __init__(self, native: Any, method: str) -> None:
        self.native = native
        self._method = getattr(native, method)

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        return self._method(data)


class SplitPipelinePredictor:
    """The head's ``transform``, then the final flavor's predictor on what it returns."""

    def __init__(self, head: Predictor, final: Predictor, native: Any) -> None:
        self.native = native
        self._head = head
        self._final = final
        self._params = plugins.takes_params(final)

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        features = self._head.predict(data)
        if params and self._params:
            return self._final.predict(features, params)
        return self._final.predict(features)
