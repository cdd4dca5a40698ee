"""``autolog()`` for LightGBM: ``lightgbm.train`` and the scikit-learn wrappers' ``fit``.

Logs the params, each iteration's eval metrics as steps (``<valid name>-<metric>``, through a
LightGBM callback), the feature importances (``split`` and ``gain``) as JSON artifacts and the
model through ``log_model``. A wrapper's ``fit`` calls ``train``: only the outermost call logs.
Tracking failures are logged and never fail a training.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from modelpack.tracking import _autolog
from modelpack.tracking.sklearn import _head

IMPORTANCE_TYPES = ("split", "gain")


_config: _autolog.BoostingConfig | None = None
_patches = _autolog.Patches()


def autolog(
    *, disable: bool = False, log_models: bool = True, experiment: str | None = None
) -> None:
    """Log every ``lightgbm.train`` and wrapper ``fit``; ``disable=True`` restores them."""
    global _config
    if disable:
        _config = None
        _patches.undo()
        return
    import lightgbm
    import lightgbm.engine
    import lightgbm.sklearn

    _config = _autolog.BoostingConfig(log_models, experiment)
    if _patches:
        return
    original = lightgbm.engine.train
    train = functools.wraps(original)(functools.partial(_train, original))
    _autolog.patch_boosting(
        _patches,
        original,
        train,
        (lightgbm, lightgbm.engine, lightgbm.sklearn),
        lightgbm.sklearn.LGBMModel,
        lambda: _config,
        lambda fitted: _log_importances(fitted.booster_),
    )


def _train(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    config = _config
    if config is None or (_autolog.in_logged_training() and not _autolog.in_boosting_fit()):
        return original(*args, **kwargs)
    bound = inspect.signature(original).bind(*args, **kwargs)
    bound.arguments["callbacks"] = [*(bound.arguments.get("callbacks") or []), _log_metrics]
    if _autolog.in_boosting_fit():  # the wrapper's fit logs the rest
        return original(*bound.args, **bound.kwargs)
    params = dict(bound.arguments.get("params") or {})
    params["num_boost_round"] = bound.arguments.get("num_boost_round", 100)
    data = getattr(bound.arguments.get("train_set"), "data", None)
    example = None if isinstance(data, (str, bytes)) else _head(data)  # not a file's path

    def log(booster: Any) -> None:
        _autolog.log_params(params)
        _log_importances(booster)
        if config.log_models:
            _autolog.log_model(booster, example)

    return _autolog.logged_training(
        "lightgbm.train", config.experiment, lambda: original(*bound.args, **bound.kwargs), log
    )


def _log_metrics(env: Any) -> None:
    # evaluation_result_list: (data, metric, value, higher_is_better[, stdv under lightgbm.cv])
    values = {f"{item[0]}-{item[1]}": float(item[2]) for item in env.evaluation_result_list or []}
    _autolog.log_metrics_step(values, int(env.iteration))


def _log_importances(booster: Any) -> None:
    names = booster.feature_name()
    _autolog.log_importances(
        {
            kind: dict(zip(names, booster.feature_importance(importance_type=kind), strict=True))
            for kind in IMPORTANCE_TYPES
        }
    )
