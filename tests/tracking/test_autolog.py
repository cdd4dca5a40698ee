from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import modelpack
from modelpack import tracking


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    y = (X["a"] + X["b"] > 0).astype(int).to_numpy()
    return X, y


def test_fit_logs_params_score_time_and_model(home, data):
    X, y = data
    modelpack.autolog()
    clf = LogisticRegression(C=0.5).fit(X, y)
    [run] = modelpack.search_runs()
    assert run.status == "FINISHED" and run.name == "LogisticRegression"
    assert run.params["C"] == "0.5" and "max_iter" in run.params
    assert run.metrics["training_score"] == pytest.approx(clf.score(X, y))
    assert run.metrics["fit_time_s"] > 0
    assert run.tags["estimator_class"] == "sklearn.linear_model._logistic.LogisticRegression"
    model = modelpack.load(f"runs:/{run.id}/model")
    assert model.predict(X).tolist() == clf.predict(X).tolist()
    assert model.signature is not None
    assert [c.name for c in model.signature.inputs.columns] == ["a", "b"]


def test_fit_logs_into_the_active_run(home, data):
    X, y = data
    modelpack.autolog(log_models=False)
    with modelpack.start_run(experiment="mine") as run:
        LogisticRegression().fit(X, y)
    [only] = modelpack.search_runs()
    assert only.id == run.id and "training_score" in only.metrics
    assert tracking.list_artifacts(run.id) == {}


def test_pipeline_logs_once_for_the_outer_fit(home, data):
    X, y = data
    modelpack.autolog(log_models=False)
    Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X, y)
    [run] = modelpack.search_runs()
    assert run.name == "Pipeline" and "steps" in run.params


def test_grid_search_logs_best_and_capped_child_runs(home, data):
    X, y = data
    modelpack.autolog(max_tuning_runs=3)
    search = GridSearchCV(LogisticRegression(), {"C": [0.01, 0.1, 1.0, 10.0]}, cv=3)
    search.fit(X, y)
    runs = modelpack.search_runs()
    [parent] = [r for r in runs if r.parent_id is None]
    children = [r for r in runs if r.parent_id == parent.id]
    assert len(runs) == 4 and len(children) == 3
    assert parent.params["best_C"] == str(search.best_params_["C"])
    assert parent.metrics["best_cv_score"] == pytest.approx(search.best_score_)
    ranks = sorted(child.metrics["rank_test_score"] for child in children)
    assert ranks == sorted(search.cv_results_["rank_test_score"])[:3]
    assert all(child.status == "FINISHED" and "C" in child.params for child in children)
    assert "model/modelpack.yaml" in tracking.list_artifacts(parent.id)


def test_disable_restores_fit_and_classes_defined_later_are_patched(home, data):
    X, y = data
    original = LogisticRegression.fit
    modelpack.autolog(log_models=False)
    assert LogisticRegression.fit is not original

    class Custom(LogisticRegression):
        def fit(self, X, y, sample_weight=None):
            return super().fit(X, y, sample_weight)

    Custom().fit(X, y)
    [run] = modelpack.search_runs()
    assert run.name == "Custom"
    modelpack.autolog(disable=True)
    assert LogisticRegression.fit is original
    LogisticRegression().fit(X, y)
    assert len(modelpack.search_runs()) == 1


def test_a_failing_fit_marks_its_run_failed(home):
    modelpack.autolog(log_models=False)
    with pytest.raises(ValueError):
        LogisticRegression().fit([[1.0], [2.0]], [0, 0])  # one class only
    [run] = modelpack.search_runs()
    assert run.status == "FAILED"
