import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelpack


def run(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "modelpack", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1, 0, 1, 0]})
    clf = LogisticRegression().fit(frame, [0, 0, 1, 1])
    path = tmp_path_factory.mktemp("cli") / "m"
    return modelpack.save(clf, path, input_example=frame.head(2)), clf, frame


def test_inspect_prints_a_summary_and_json(model_path):
    path, _, _ = model_path
    out = run("inspect", path)
    assert out.returncode == 0, out.stderr
    assert "sklearn" in out.stdout and "float64" in out.stdout
    data = json.loads(run("inspect", path, "--json").stdout)
    assert data["loader"] == "sklearn" and "model/model.skops" in data["files"]


def test_verify_exits_0_then_1_after_tampering(tmp_path, model_path):
    _, clf, frame = model_path
    copy = modelpack.save(clf, tmp_path / "m", input_example=frame.head(2))
    assert run("verify", copy).returncode == 0
    (copy / "requirements.txt").write_text("evil\n")
    out = run("verify", copy)
    assert out.returncode == 1
    assert "integrity_error" in out.stderr and "requirements.txt" in out.stderr


def test_predict_json_and_csv(tmp_path, model_path):
    path, clf, frame = model_path
    rows = [[0.0, 1], [3.0, 0]]
    body = {"dataframe_split": {"columns": ["a", "b"], "data": rows}}
    (tmp_path / "in.json").write_text(json.dumps(body))
    out = run("predict", "-m", path, "-i", tmp_path / "in.json")
    assert out.returncode == 0, out.stderr
    expected = clf.predict(pd.DataFrame(rows, columns=["a", "b"]))
    assert json.loads(out.stdout) == {"predictions": expected.tolist()}

    frame.to_csv(tmp_path / "in.csv", index=False)
    out = run("predict", "-m", path, "-i", tmp_path / "in.csv", "-o", tmp_path / "out.csv")
    assert out.returncode == 0, out.stderr
    got = pd.read_csv(tmp_path / "out.csv")["prediction"].to_numpy()
    np.testing.assert_array_equal(got, clf.predict(frame))

    records = json.dumps(frame.to_dict(orient="records"))
    out = run("predict", "-m", path, "-i", "-", stdin=records)
    assert json.loads(out.stdout)["predictions"] == clf.predict(frame).tolist()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["inspect", "/nonexistent/model"], "model_not_found"),
        (["verify", "/nonexistent/model"], "model_not_found"),
        (["predict", "-m", "{model}", "-i", "{bad_json}"], "invalid_input"),
        (["predict", "-m", "{model}", "-i", "{wrong_columns}"], "signature_mismatch"),
        (["predict", "-m", "{model}", "-i", "/nonexistent.json"], "invalid_input"),
    ],
)
def test_user_mistakes_are_one_line_with_a_code(tmp_path, model_path, args, code):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "cols.json").write_text(json.dumps([{"zzz": 1}]))
    fill = {
        "model": model_path[0],
        "bad_json": tmp_path / "bad.json",
        "wrong_columns": tmp_path / "cols.json",
    }
    out = run(*[a.format(**fill) for a in args])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error [{code}]:"), out.stderr
    assert "Traceback" not in out.stderr


def test_plugins_lists_the_builtin_flavors():
    out = run("plugins", "--json")
    assert out.returncode == 0, out.stderr
    names = {(p["kind"], p["name"], p["distribution"]) for p in json.loads(out.stdout)}
    for flavor in ("sklearn", "torch", "onnx", "python"):
        assert ("flavor", flavor, "modelpack") in names


def test_an_s3_model_without_credentials_is_one_line(tmp_path, monkeypatch):
    # botocore's own errors (no credentials, no endpoint) are not ClientErrors: they were a
    # traceback.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "home"))
    out = run("inspect", "s3://bucket/date=2024/model")
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "error [artifact_error]: cannot read s3://bucket/date=2024/model: "
        "Unable to locate credentials"
    ]
