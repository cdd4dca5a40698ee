from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack import registry, tracking
from modelpack.errors import UnsafePathError


def test_log_artifact_file_and_directory(store_uri, tmp_path):
    report = tmp_path / "report.txt"
    report.write_text("ok")
    folder = tmp_path / "plots"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"png")
    (folder / "sub" / "b.png").write_bytes(b"png2")
    with modelpack.start_run(experiment="e") as run:
        assert modelpack.log_artifact(report) == f"runs:/{run.id}/report.txt"
        assert modelpack.log_artifact(report, "docs/v1") == f"runs:/{run.id}/docs/v1/report.txt"
        modelpack.log_artifact(folder)
    files = tracking.list_artifacts(run.id)
    assert sorted(files) == [
        "docs/v1/report.txt",
        "plots/a.png",
        "plots/sub/b.png",
        "report.txt",
    ]
    assert files["report.txt"][1] == 2 and len(files["report.txt"][0]) == 64


@pytest.mark.parametrize("bad", ["../escape", "a/../../b", "/etc", "C:/x"])
def test_unsafe_artifact_paths_are_refused(store_uri, tmp_path, bad):
    report = tmp_path / "r.txt"
    report.write_text("x")
    with modelpack.start_run(experiment="e") as run:
        with pytest.raises(UnsafePathError) as info:
            modelpack.log_artifact(report, bad)
        assert info.value.code == "unsafe_path"
        with pytest.raises(UnsafePathError):
            modelpack.log_model(object(), bad)
    assert tracking.list_artifacts(run.id) == {}


def test_log_model_loads_from_runs_uri_and_registers(store_uri):
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    y = np.array([0, 0, 1, 1])
    clf = LogisticRegression().fit(X, y)
    with modelpack.start_run(experiment="e") as run:
        uri = modelpack.log_model(clf, "model", input_example=X.head(2))
        modelpack.log_model(clf, "model", input_example=X.head(3))  # replaces, no stale files
    assert uri == f"runs:/{run.id}/model"
    assert "model/modelpack.yaml" in tracking.list_artifacts(run.id)
    loaded = modelpack.load(uri)
    assert loaded.predict(X).tolist() == clf.predict(X).tolist()
    version = registry.register("clf", uri)
    assert (version.version, version.run_id, version.source) == (1, run.id, uri)
    again = modelpack.load("models:/clf/1")
    assert again.predict(X).tolist() == clf.predict(X).tolist()
