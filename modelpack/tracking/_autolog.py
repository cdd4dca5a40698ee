"""``autolog()``: every autolog integration whose library is installed, switched on or off.

The integrations (``tracking/sklearn.py``, ``tracking/xgboost.py``, ``tracking/lightgbm.py``,
``tracking/transformers.py``) are switched on when their library is imported (now, if it
already is); disabling forgets those still waiting and undoes only the integrations switched on
(the others patched nothing). Also what the gradient-boosting integrations share: one logged
training per outermost ``fit`` or ``train``, and the patches they undo.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.util
import inspect
import json
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from modelpack._import_hooks import AfterImport
from modelpack.errors import MissingDependencyError
from modelpack.tracking import fluent
from modelpack.tracking.sklearn import _head, _in_fit, _safely

T = TypeVar("T")
# Each integration, and the module whose import switches it on (Trainer's, for transformers).
# In this order: disabling undoes the boosting integrations first, then scikit-learn's, which
# may have wrapped their wrappers' fit underneath (see patch_boosting).
_TRIGGERS = {
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "sklearn": "sklearn",
    "transformers": "transformers.trainer",
}
# True inside a boosting wrapper's logged fit: its inner ``train`` only adds the metrics callback.
_in_boosting_fit: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "modelpack_in_boosting_fit", default=False
)


def autolog(
    *,
    disable: bool = False,
    log_models: bool = True,
    max_tuning_runs: int | None = 5,
    experiment: str | None = None,
) -> None:
    """Log every training of the installed libraries (scikit-learn, XGBoost, LightGBM,
    transformers' Trainer) to the active run, or to a new run when none is active.

    scikit-learn: every ``fit`` (see ``modelpack.tracking.sklearn.autolog``). XGBoost and
    LightGBM: ``train`` and the wrappers' ``fit``, with per-iteration eval metrics as steps and
    feature importances as JSON artifacts. transformers: every ``Trainer`` created gets a
    ``modelpack.tracking.transformers.ModelpackCallback``. ``autolog(disable=True)`` restores
    them all.

    Nothing is imported here: a library already imported is patched now, one imported later
    (``Trainer``: once ``transformers.trainer`` is) as soon as its import ends, as MLflow's
    post-import hooks do. A script that trains with scikit-learn pays for nothing else.
    """
    options: dict[str, Any] = {
        "log_models": log_models,
        "max_tuning_runs": max_tuning_runs,
        "experiment": experiment,
    }
    with _lock:
        _hooks.callbacks.clear()
        _hooks.remove()
        if disable:
            for library in _TRIGGERS:  # only those imported patched anything
                if f"modelpack.tracking.{library}" in sys.modules:
                    _integration(library, options, disable=True)
            return
        installed = [library for library in _TRIGGERS if _installed(library)]
        if not installed:
            raise MissingDependencyError(
                "autolog() needs scikit-learn, XGBoost, LightGBM or transformers: "
                "pip install 'modelpack[sklearn]'"
            )
        for library in installed:
            if _TRIGGERS[library] in sys.modules:
                _integration(library, options)
            else:
                _hooks.callbacks[_TRIGGERS[library]] = functools.partial(
                    _on_import, library, options
                )
        if _hooks.callbacks:
            _hooks.install()


_hooks = AfterImport({})
_lock = threading.RLock()


def _on_import(library: str, options: Mapping[str, Any], module: Any) -> None:
    with _lock:
        if _hooks.callbacks.pop(_TRIGGERS[library], None) is None:
            return  # disabled meanwhile
        if not _hooks.callbacks:
            _hooks.remove()
        _integration(library, options)


def _integration(library: str, options: Mapping[str, Any], *, disable: bool = False) -> None:
    integration = importlib.import_module(f"modelpack.tracking.{library}")
    given = dict(options)
    if library != "sklearn":
        del given["max_tuning_runs"]
    if library == "transformers":  # the Trainer's model is not logged
        del given["log_models"]
    integration.autolog(disable=disable, **given)


def _installed(library: str) -> bool:
    needs = ("transformers", "torch") if library == "transformers" else (library,)  # Trainer
    return all(importlib.util.find_spec(name) is not None for name in needs)


class Patches:
    """Attributes replaced on library objects, restored by ``undo``."""

    def __init__(self) -> None:
        self._done: list[tuple[Any, str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self._done)

    def replace(self, owner: Any, name: str, new: Any) -> None:
        self._done.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, new)

    def undo(self) -> None:
        while self._done:
            owner, name, original = self._done.pop()
            setattr(owner, name, original)


@dataclass(frozen=True)
class BoostingConfig:
    """What ``autolog()`` asked of a gradient-boosting integration."""

    log_models: bool
    experiment: str | None


def patch_boosting(
    patches: Patches,
    original_train: Callable[..., Any],
    train: Callable[..., Any],
    modules: Sequence[Any],
    base: type,
    config: Callable[[], BoostingConfig | None],
    log_importances: Callable[[Any], None],
) -> None:
    """Replace ``original_train`` by ``train`` wherever a module holds it, and every wrapper
    class's own ``fit`` (``base`` and its subclasses) by one logged training each."""
    for module in modules:
        if module.__dict__.get("train") is original_train:
            patches.replace(module, "train", train)
    for cls in subclasses(base):
        fit = cls.__dict__.get("fit")
        if not inspect.isfunction(fit) or getattr(fit, "_modelpack_boosting", False):
            continue
        # scikit-learn's autolog wraps the wrappers' fit when it was switched on first (the
        # library imports scikit-learn before it defines them): one logged training, this one.
        own = getattr(fit, "_modelpack_original", fit)
        patches.replace(cls, "fit", _boosting_fit(own, config, log_importances))


def _boosting_fit(
    original: Callable[..., Any],
    config: Callable[[], BoostingConfig | None],
    log_importances: Callable[[Any], None],
) -> Callable[..., Any]:
    """A wrapper's ``fit`` as one logged training: params, the importances of the fitted
    wrapper (``log_importances(self)``) and the model; its inner ``train`` adds the metrics."""

    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        current = config()
        if current is None or in_logged_training():
            return original(self, *args, **kwargs)
        X = args[0] if args else kwargs.get("X")

        def log(_: Any) -> None:
            log_params(self.get_params(deep=False))
            log_importances(self)
            if current.log_models:
                log_model(self, _head(X))

        return logged_training(
            type(self).__name__,
            current.experiment,
            lambda: original(self, *args, **kwargs),
            log,
            boosting_fit=True,
        )

    fit._modelpack_original = original  # type: ignore[attr-defined]
    fit._modelpack_boosting = True  # type: ignore[attr-defined]
    return fit


def subclasses(base: type) -> list[type]:
    found = [base]
    direct: list[type] = type.__subclasses__(base)
    for sub in direct:
        found.extend(c for c in subclasses(sub) if c not in found)
    return found


def logged_training(
    run_name: str,
    experiment: str | None,
    train: Callable[[], T],
    log: Callable[[T], None],
    *,
    boosting_fit: bool = False,
) -> T:
    """``train()`` in the active run (or a new one, ended with the training's outcome); then
    ``log(result)``. Trainings nested inside it (a wrapper's inner ``train``, a Pipeline's step)
    are not logged again."""
    token = _in_fit.set(True)
    boosting = _in_boosting_fit.set(boosting_fit)
    try:
        owned = None
        if fluent.active_run() is None:
            owned = _safely(
                "starting a run", lambda: fluent.start_run(experiment, run_name=run_name)
            )
        try:
            result = train()
        except BaseException as exc:
            if owned is not None:
                status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
                _safely("ending the run", lambda: owned.end(status))
            raise
        if fluent.active_run() is not None:
            log(result)
        if owned is not None:
            _safely("ending the run", lambda: owned.end("FINISHED"))
        return result
    finally:
        _in_boosting_fit.reset(boosting)
        _in_fit.reset(token)


def in_boosting_fit() -> bool:
    return _in_boosting_fit.get()


def in_logged_training() -> bool:
    return _in_fit.get()


def log_metrics_step(values: Mapping[str, float], step: int) -> None:
    if values:
        _safely("logging eval metrics", lambda: fluent.log_metrics(dict(values), step=step))


def log_importances(importances: Mapping[str, Mapping[str, float]]) -> None:
    """One ``feature_importance_<type>.json`` artifact per importance type."""

    def write() -> None:
        with tempfile.TemporaryDirectory(prefix="modelpack-importance-") as tmp:
            for kind, values in importances.items():
                path = Path(tmp) / f"feature_importance_{kind}.json"
                plain = {str(k): float(v) for k, v in values.items()}
                path.write_text(json.dumps(plain, indent=2, sort_keys=True))
                fluent.log_artifact(path)

    _safely("logging feature importances", write)


def log_params(values: Mapping[str, Any]) -> None:
    from modelpack.tracking.sklearn import _params

    _safely("logging params", lambda: fluent.log_params(_params(values)))


def log_model(model: Any, input_example: Any) -> None:
    _safely("logging the model", lambda: fluent.log_model(model, input_example=input_example))
