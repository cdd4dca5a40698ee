"""``autolog()`` for XGBoost: ``xgboost.train`` and the scikit-learn wrappers' ``fit``.

Logs the params, each iteration's eval metrics as steps (``<eval name>-<metric>``, through a
``xgboost.callback.TrainingCallback``), the feature importances (``weight`` and ``gain``) as
JSON artifacts and the model through ``log_model``. A wrapper's ``fit`` calls ``train``: only
the outermost call logs. Tracking failures are logged and never fail a training.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from modelpack.tracking import _autolog
from modelpack.tracking.sklearn import _safely

IMPORTANCE_TYPES = ("weight", "gain")


_config: _autolog.BoostingConfig | None = None
_patches = _autolog.Patches()


def autolog(
    *, disable: bool = False, log_models: bool = True, experiment: str | None = None
) -> None:
    """Log every ``xgboost.train`` and wrapper ``fit``; ``disable=True`` restores them."""
    global _config
    if disable:
        _config = None
        _patches.undo()
        return
    import xgboost
    import xgboost.sklearn
    import xgboost.training

    _config = _autolog.BoostingConfig(log_models, experiment)
    if _patches:
        return
    original = xgboost.training.train
    train = functools.wraps(original)(functools.partial(_train, original))
    _autolog.patch_boosting(
        _patches,
        original,
        train,
        (xgboost, xgboost.training, xgboost.sklearn),
        xgboost.sklearn.XGBModel,
        lambda: _config,
        lambda fitted: _log_importances(fitted.get_booster()),
    )


def _with_metrics(original: Callable[..., Any], args: Any, kwargs: Any) -> inspect.BoundArguments:
    bound = inspect.signature(original).bind(*args, **kwargs)
    bound.arguments["callbacks"] = [*(bound.arguments.get("callbacks") or []), _callback()]
    return bound


def _train(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    config = _config
    if config is None or (_autolog.in_logged_training() and not _autolog.in_boosting_fit()):
        return original(*args, **kwargs)
    bound = _with_metrics(original, args, kwargs)
    if _autolog.in_boosting_fit():  # the wrapper's fit logs the rest
        return original(*bound.args, **bound.kwargs)
    params = dict(bound.arguments.get("params") or {})
    params["num_boost_round"] = bound.arguments.get("num_boost_round", 10)
    if bound.arguments.get("early_stopping_rounds") is not None:
        params["early_stopping_rounds"] = bound.arguments["early_stopping_rounds"]
    example = _safely("reading an input example", lambda: _head_of(bound.args[1]))

    def log(booster: Any) -> None:
        _autolog.log_params(params)
        _log_importances(booster)
        if config.log_models:
            _autolog.log_model(booster, example)

    return _autolog.logged_training(
        "xgboost.train", config.experiment, lambda: original(*bound.args, **bound.kwargs), log
    )


def _callback() -> Any:
    import xgboost

    class MetricsToRun(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            values = {
                f"{data}-{metric}": float(_last(history))
                for data, metrics in evals_log.items()
                for metric, history in metrics.items()
            }
            _autolog.log_metrics_step(values, epoch)
            return False

    return MetricsToRun()


def _last(history: Any) -> Any:
    value = history[-1]
    return value[0] if isinstance(value, tuple) else value  # xgboost.cv: (mean, std)


def _log_importances(booster: Any) -> None:
    _autolog.log_importances({t: booster.get_score(importance_type=t) for t in IMPORTANCE_TYPES})


def _head_of(matrix: Any) -> Any:
    """The first rows of a DMatrix as the frame (or array) it was built from; missing values
    (absent from its sparse form) come back as NaN. None for categorical features."""
    import numpy as np

    types = matrix.feature_types or []
    if "c" in types:
        return None
    sparse = matrix.get_data()[:5].tocoo()
    dense = np.full(sparse.shape, np.nan)
    dense[sparse.row, sparse.col] = sparse.data
    names = matrix.feature_names
    if names is None:
        return dense
    import pandas as pd

    return pd.DataFrame(dense, columns=list(names))
