"""``modelpack.autolog()`` logs real XGBoost and LightGBM trainings: params, one metric step per
iteration, feature importances and a model that answers as the trained one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")

import modelpack  # noqa: E402
from modelpack import tracking  # noqa: E402
from modelpack.tracking._store import Run  # noqa: E402

ROUNDS = 8


def _data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    labels = (frame["a"] + frame["b"] > 0).to_numpy(dtype=int)
    target = (2 * frame["a"] - frame["b"]).to_numpy()
    return frame, labels, target


FRAME, LABELS, TARGET = _data()
TRAIN, VALID = slice(0, 150), slice(150, 200)


def _only_run() -> Run:
    tracking.flush()
    [run] = modelpack.search_runs()
    return run


def _steps(run: Run, key: str) -> list[int]:
    return [m.step for m in tracking.get_metric_history(run.id, key)]


def _importance(run: Run, kind: str, tmp: Path) -> dict[str, float]:
    from modelpack.artifacts import default_store

    sha256, _ = tracking.list_artifacts(run.id)[f"feature_importance_{kind}.json"]
    default_store().get_file(sha256, tmp / f"{kind}.json")
    return dict(json.loads((tmp / f"{kind}.json").read_text()))


def _loaded(run: Run) -> Any:
    return modelpack.load(f"runs:/{run.id}/model")


def test_xgboost_wrapper_fit_logs_once(home: Path) -> None:
    modelpack.autolog()
    model = xgboost.XGBClassifier(n_estimators=ROUNDS, max_depth=2)
    model.fit(FRAME[TRAIN], LABELS[TRAIN], eval_set=[(FRAME[VALID], LABELS[VALID])], verbose=False)
    run = _only_run()  # one run: the inner xgboost.train is not logged again
    assert run.status == "FINISHED" and run.name == "XGBClassifier"
    assert run.params["n_estimators"] == str(ROUNDS) and run.params["max_depth"] == "2"
    assert _steps(run, "validation_0-logloss") == list(range(ROUNDS))
    history = tracking.get_metric_history(run.id, "validation_0-logloss")
    expected = model.evals_result()["validation_0"]["logloss"]
    assert [m.value for m in history] == pytest.approx(expected)
    files = tracking.list_artifacts(run.id)
    assert {"feature_importance_weight.json", "feature_importance_gain.json"} <= set(files)
    assert "model/modelpack.yaml" in files
    loaded = _loaded(run)
    assert loaded.descriptor.loader == "xgboost"
    assert np.array_equal(loaded.predict(FRAME), model.predict(FRAME))


def test_xgboost_train_logs_params_metrics_importance_and_booster(home: Path) -> None:
    modelpack.autolog()
    train = xgboost.DMatrix(FRAME[TRAIN], label=TARGET[TRAIN])
    valid = xgboost.DMatrix(FRAME[VALID], label=TARGET[VALID])
    booster = xgboost.train({"max_depth": 3, "eta": 0.3}, train, ROUNDS, evals=[(valid, "valid")])
    run = _only_run()
    assert run.name == "xgboost.train"
    assert run.params["max_depth"] == "3" and run.params["num_boost_round"] == str(ROUNDS)
    assert _steps(run, "valid-rmse") == list(range(ROUNDS))
    gain = _importance(run, "gain", home)
    assert set(gain) == {"a", "b"} and gain == pytest.approx(
        booster.get_score(importance_type="gain")
    )
    loaded = _loaded(run)
    assert loaded.signature is not None
    assert [c.name for c in loaded.signature.inputs.columns] == ["a", "b"]
    expected = booster.predict(xgboost.DMatrix(FRAME))
    assert np.array_equal(loaded.predict(FRAME), expected)


def test_lightgbm_wrapper_fit_logs_once(home: Path) -> None:
    modelpack.autolog()
    model = lightgbm.LGBMRegressor(n_estimators=ROUNDS, num_leaves=7, verbose=-1)
    model.fit(FRAME[TRAIN], TARGET[TRAIN], eval_X=(FRAME[VALID],), eval_y=(TARGET[VALID],))
    run = _only_run()
    assert run.status == "FINISHED" and run.name == "LGBMRegressor"
    assert run.params["num_leaves"] == "7" and run.params["n_estimators"] == str(ROUNDS)
    assert _steps(run, "valid_0-l2") == list(range(ROUNDS))
    expected = model.evals_result_["valid_0"]["l2"]
    history = tracking.get_metric_history(run.id, "valid_0-l2")
    assert [m.value for m in history] == pytest.approx(expected)
    split = _importance(run, "split", home)
    assert split == dict(
        zip(["a", "b"], model.booster_.feature_importance("split").tolist(), strict=True)
    )
    loaded = _loaded(run)
    assert loaded.descriptor.loader == "lightgbm"
    assert np.array_equal(loaded.predict(FRAME), model.predict(FRAME))


def test_lightgbm_train_logs_into_the_active_run(home: Path) -> None:
    modelpack.autolog()
    train = lightgbm.Dataset(FRAME[TRAIN], LABELS[TRAIN])
    valid = lightgbm.Dataset(FRAME[VALID], LABELS[VALID], reference=train)
    params = {"objective": "binary", "num_leaves": 5, "verbose": -1}
    with modelpack.start_run() as active:
        booster = lightgbm.train(params, train, ROUNDS, valid_sets=[valid], valid_names=["v"])
    run = _only_run()
    assert run.id == active.id
    assert run.params["objective"] == "binary" and run.params["num_boost_round"] == str(ROUNDS)
    assert _steps(run, "v-binary_logloss") == list(range(ROUNDS))
    assert set(_importance(run, "gain", home)) == {"a", "b"}
    assert np.array_equal(_loaded(run).predict(FRAME), booster.predict(FRAME))


@pytest.mark.parametrize(
    "train",
    [
        lambda: xgboost.XGBRegressor(n_estimators=3).fit(FRAME, TARGET),
        lambda: xgboost.train({}, xgboost.DMatrix(FRAME, label=TARGET), 3),
        lambda: lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(FRAME, LABELS),
        lambda: lightgbm.train({"verbose": -1}, lightgbm.Dataset(FRAME, TARGET), 3),
    ],
    ids=["xgb-fit", "xgb-train", "lgb-fit", "lgb-train"],
)
def test_autolog_off_logs_nothing(home: Path, train: Callable[[], Any]) -> None:
    modelpack.autolog()
    modelpack.autolog(disable=True)
    assert xgboost.train is xgboost.training.train
    train()
    assert modelpack.search_runs() == []


def test_log_models_false_keeps_the_metrics(home: Path) -> None:
    modelpack.autolog(log_models=False)
    train = lightgbm.Dataset(FRAME, TARGET)
    lightgbm.train({"verbose": -1}, train, ROUNDS, valid_sets=[train], valid_names=["t"])
    run = _only_run()
    assert _steps(run, "t-l2") == list(range(ROUNDS))
    assert "model/modelpack.yaml" not in tracking.list_artifacts(run.id)
