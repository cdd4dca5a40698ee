"""``autolog()`` for scikit-learn: ``fit`` logs params, training score, fit time and the model.

Every ``fit`` defined by a ``BaseEstimator`` subclass is wrapped: classes already imported when
``autolog()`` is called, and classes defined later (through ``__init_subclass__``). Only the
outermost ``fit`` logs, so a Pipeline's steps or a search's candidate fits create no runs.
Tracking failures are logged and never fail a ``fit``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelpack.errors import MissingDependencyError
from modelpack.tracking import fluent

log = logging.getLogger("modelpack.tracking")
PARAM_CHARS = 1000


@dataclass(frozen=True)
class _Config:
    log_models: bool
    max_tuning_runs: int | None
    experiment: str | None


_config: _Config | None = None
_patched: list[tuple[type, Callable[..., Any]]] = []
_no_subclass_hook = object()
_saved_subclass_hook: Any = _no_subclass_hook
_in_fit: contextvars.ContextVar[bool] = contextvars.ContextVar("modelpack_in_fit", default=False)


def autolog(
    *,
    disable: bool = False,
    log_models: bool = True,
    max_tuning_runs: int | None = 5,
    experiment: str | None = None,
) -> None:
    """Log every scikit-learn ``fit`` to the active run (or to a new run when none is active).

    Search estimators (GridSearchCV, RandomizedSearchCV) also log the best params and score,
    and one child run per candidate, best first, up to ``max_tuning_runs``.
    ``autolog(disable=True)`` restores the original methods.
    """
    global _config
    if disable:
        _config = None
        _unpatch()
        return
    try:
        from sklearn.base import BaseEstimator
    except ImportError as exc:
        raise MissingDependencyError(
            "autolog() needs scikit-learn: pip install 'modelpack[sklearn]'"
        ) from exc
    _config = _Config(log_models, max_tuning_runs, experiment)
    if _saved_subclass_hook is _no_subclass_hook:
        _install_subclass_hook(BaseEstimator)
        _wrap_tree(BaseEstimator)


def _install_subclass_hook(base: type) -> None:
    global _saved_subclass_hook
    _saved_subclass_hook = saved = base.__dict__.get("__init_subclass__")

    def hook(cls: type, /, **kwargs: Any) -> None:
        # What would have run without us: base's own hook, else the next one along the MRO.
        mro = cls.__mro__
        for klass in mro[mro.index(base) + 1 :] if saved is None else ():
            found = klass.__dict__.get("__init_subclass__")
            if found is not None and not getattr(found, "_modelpack_hook", False):
                found.__get__(None, cls)(**kwargs)
                break
        if saved is not None:
            saved.__get__(None, cls)(**kwargs)
        _wrap(cls)

    installed: Any = classmethod(hook)
    installed._modelpack_hook = True
    setattr(base, "__init_subclass__", installed)  # noqa: B010


def _wrap_tree(cls: type) -> None:
    _wrap(cls)
    subclasses: list[type] = type.__subclasses__(cls)
    for sub in subclasses:
        _wrap_tree(sub)


def _wrap(cls: type) -> None:
    original = cls.__dict__.get("fit")
    if not inspect.isfunction(original) or hasattr(original, "_modelpack_original"):
        return

    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _autologged_fit(original, self, args, kwargs)

    fit._modelpack_original = original  # type: ignore[attr-defined]
    cls.fit = fit  # type: ignore[attr-defined]
    _patched.append((cls, original))


def _unpatch() -> None:
    global _saved_subclass_hook
    while _patched:
        cls, original = _patched.pop()
        cls.fit = original  # type: ignore[attr-defined]
    if _saved_subclass_hook is _no_subclass_hook:
        return
    from sklearn.base import BaseEstimator

    if _saved_subclass_hook is None:
        del BaseEstimator.__init_subclass__
    else:
        setattr(BaseEstimator, "__init_subclass__", _saved_subclass_hook)  # noqa: B010
    _saved_subclass_hook = _no_subclass_hook


def _autologged_fit(
    original: Callable[..., Any], estimator: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    config = _config
    if config is None or _in_fit.get():
        return original(estimator, *args, **kwargs)
    token = _in_fit.set(True)
    try:
        owned = None
        if fluent.active_run() is None:
            owned = _safely(
                "starting a run",
                lambda: fluent.start_run(config.experiment, run_name=type(estimator).__name__),
            )
        started = time.perf_counter()
        try:
            result = original(estimator, *args, **kwargs)
        except BaseException as exc:
            if owned is not None:
                status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
                _safely("ending the run", lambda: owned.end(status))
            raise
        if fluent.active_run() is not None:
            _log_fit(config, estimator, args, kwargs, time.perf_counter() - started)
        if owned is not None:
            _safely("ending the run", lambda: owned.end("FINISHED"))
        return result
    finally:
        _in_fit.reset(token)


def _log_fit(
    config: _Config,
    estimator: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    elapsed: float,
) -> None:
    X = args[0] if args else kwargs.get("X")
    y = args[1] if len(args) > 1 else kwargs.get("y")
    kind = type(estimator)
    _safely("logging params", lambda: fluent.log_params(_params(estimator.get_params(deep=False))))
    _safely(
        "tagging", lambda: fluent.set_tag("estimator_class", f"{kind.__module__}.{kind.__name__}")
    )
    _safely("logging the fit time", lambda: fluent.log_metric("fit_time_s", elapsed))
    if y is not None and callable(getattr(estimator, "score", None)):
        _safely("scoring", lambda: fluent.log_metric("training_score", estimator.score(X, y)))
    if hasattr(estimator, "cv_results_"):
        _safely("logging the search", lambda: _log_search(config, estimator))
    if config.log_models:
        _safely("logging the model", lambda: fluent.log_model(estimator, input_example=_head(X)))


def _log_search(config: _Config, search: Any) -> None:
    if hasattr(search, "best_params_"):
        fluent.log_params(_params({f"best_{k}": v for k, v in search.best_params_.items()}))
    if hasattr(search, "best_score_"):
        fluent.log_metric("best_cv_score", search.best_score_)
    results = search.cv_results_
    rank_key = _rank_key(search, results)
    count = len(results["params"])
    order = sorted(range(count), key=lambda i: (int(results[rank_key][i]) if rank_key else 0, i))
    if config.max_tuning_runs is not None:
        order = order[: config.max_tuning_runs]
    prefixes = ("mean_test_", "std_test_", "rank_test_", "mean_fit_time", "mean_score_time")
    for index in order:
        with fluent.start_run(run_name=f"candidate-{index}", nested=True):
            fluent.log_params(_params(results["params"][index]))
            fluent.set_tag("candidate_index", index)
            for key, values in results.items():
                if key.startswith(prefixes):
                    fluent.log_metric(key, float(values[index]))


def _rank_key(search: Any, results: Mapping[str, Any]) -> str | None:
    refit = getattr(search, "refit", None)
    for key in ("rank_test_score", f"rank_test_{refit}" if isinstance(refit, str) else ""):
        if key in results:
            return key
    return next((k for k in results if k.startswith("rank_test_")), None)


def _params(values: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(value)[:PARAM_CHARS] for key, value in values.items()}


def _head(X: Any) -> Any:
    if X is None:
        return None
    if hasattr(X, "iloc"):
        return X.iloc[:5]
    try:
        return X[:5]
    except Exception:
        return None


def _safely(what: str, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except Exception as exc:
        log.warning("autolog: %s failed (%s: %s); the fit goes on", what, type(exc).__name__, exc)
        return None
