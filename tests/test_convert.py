import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import modelpack
from modelpack.convert import to_onnx
from modelpack.descriptor import Descriptor
from modelpack.errors import ConversionError, ModelExistsError, ParityError
from modelpack.flavors.onnx import OnnxPredictor
from tests.flavors.torch_models import MLP, TwoInputs

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 4))
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "modelpack", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def sklearn_model(tmp_path_factory):
    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)
    path = modelpack.save(clf, tmp_path_factory.mktemp("sk") / "clf", input_example=X[:5])
    return path, clf


@pytest.fixture(scope="module")
def frame_model(tmp_path_factory):
    frame = pd.DataFrame(
        {
            "age": RNG.normal(40, 10, 200),
            "visits": RNG.integers(0, 9, 200),
            "city": RNG.choice(["oslo", "lima", "pune"], 200),
        }
    )
    y = ((frame["age"] > 40) ^ (frame["city"] == "lima")).astype(np.int64)
    columns = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age", "visits"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    clf = make_pipeline(columns, LogisticRegression()).fit(frame, y)
    path = tmp_path_factory.mktemp("frame") / "clf"
    return modelpack.save(clf, path, input_example=frame.head(20)), clf, frame


@pytest.fixture(scope="module")
def torch_model(tmp_path_factory):
    mlp = MLP(4, 16, 3)
    example = X[:8].astype(np.float32)
    path = modelpack.save(mlp, tmp_path_factory.mktemp("torch") / "mlp", input_example=example)
    return path, mlp, to_onnx(path)


def test_sklearn_array_model_gains_an_onnx_flavor(sklearn_model):
    path, clf = sklearn_model
    out = to_onnx(path)
    assert out == path.parent / "clf-onnx"
    source, converted = Descriptor.read(path), Descriptor.read(out)
    assert converted.loader == "sklearn"
    assert set(converted.flavors) == {"sklearn", "onnx"}
    assert converted.signature == source.signature
    assert converted.model_id != source.model_id
    assert converted.parent is not None
    assert converted.parent["model_id"] == source.model_id
    assert converted.parent["uri"] == str(path)
    onnx_config = converted.flavors["onnx"]
    assert onnx_config["converted_from"] == "sklearn"
    assert onnx_config["converter"]["tool"] == "skl2onnx"
    assert onnx_config["parity"]["outputs"]["label"]["mismatched"] == 0
    assert "model/model.onnx" in converted.files and "model/model.skops" in converted.files
    assert "onnxruntime==" in (out / "requirements.txt").read_text()

    onnx_model = modelpack.load(out, flavor="onnx")
    assert isinstance(onnx_model.predictor, OnnxPredictor)
    rows = RNG.normal(size=(50, 4))
    np.testing.assert_array_equal(onnx_model.predict(rows), clf.predict(rows))
    np.testing.assert_array_equal(modelpack.load(out).predict(rows), clf.predict(rows))


def test_column_transformer_takes_one_input_per_column(frame_model):
    path, clf, frame = frame_model
    out = to_onnx(path)
    graph = modelpack.flavors.onnx.load(out)
    assert [i.name for i in graph.graph.input] == ["age", "visits", "city"]
    onnx_model = modelpack.load(out, flavor="onnx")
    rows = frame.sample(60, random_state=1)
    np.testing.assert_array_equal(onnx_model.predict(rows), clf.predict(rows))
    records = rows.head(3).to_dict(orient="records")
    np.testing.assert_array_equal(onnx_model.predict(records), clf.predict(rows.head(3)))


def test_predict_proba_and_regressor_outputs_keep_the_source_shape(tmp_path):
    proba = modelpack.flavors.sklearn.save(
        LogisticRegression().fit(X, Y),
        tmp_path / "proba",
        predict_method="predict_proba",
        input_example=X[:4],
    )
    ridge = modelpack.save(Ridge().fit(X, X[:, 0]), tmp_path / "ridge", input_example=X[:4])
    for path in (proba, ridge):
        out = to_onnx(path, tmp_path / f"{path.name}.onnx")
        expected = modelpack.load(path).predict(X[:9])
        got = modelpack.load(out, flavor="onnx").predict(X[:9])
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


def test_torch_mlp_has_a_dynamic_batch(torch_model):
    path, _, out = torch_model
    converted = Descriptor.read(out)
    assert converted.loader == "torch" and set(converted.flavors) == {"torch", "onnx"}
    assert converted.flavors["onnx"]["converter"]["tool"] == "torch.onnx"
    onnx_model = modelpack.load(out, flavor="onnx")
    native = modelpack.load(path)
    for n in (1, 37):
        rows = RNG.normal(size=(n, 4)).astype(np.float32)
        np.testing.assert_allclose(
            onnx_model.predict(rows), native.predict(rows), rtol=1e-5, atol=1e-6
        )


def test_torch_multi_input_outputs_are_named_like_the_source(tmp_path):
    example = {"a": X[:4, :3].astype(np.float32), "b": X[:4, :2].astype(np.float32)}
    path = modelpack.save(TwoInputs(), tmp_path / "two", input_example=example)
    out = to_onnx(path)
    got = modelpack.load(out, flavor="onnx").predict(example)
    expected = modelpack.load(path).predict(example)
    assert set(got) == set(expected) == {"output_0", "output_1"}
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)


def test_parity_failure_is_refused_and_leaves_nothing(tmp_path):
    # float32 input: ONNX Runtime computes in float32, scikit-learn in float64.
    ridge = Ridge().fit(X.astype(np.float32), X[:, 0] * 1000)
    path = modelpack.save(ridge, tmp_path / "ridge", input_example=X[:5].astype(np.float32))
    with pytest.raises(ParityError) as info:
        to_onnx(path, rtol=0, atol=0)
    message = str(info.value)
    assert "variable: max abs diff" in message and "max rel diff" in message
    assert "rtol=0, atol=0" in message and "\n" not in message
    assert info.value.code == "parity_failed"
    assert info.value.diffs["variable"]["max_abs"] > 0
    assert not (tmp_path / "ridge-onnx").exists()
    assert leftovers(tmp_path) == []
    to_onnx(path)  # the default tolerances accept float32 rounding


def test_refusals_without_output(tmp_path, sklearn_model):
    path, _ = sklearn_model
    with pytest.raises(ConversionError, match="-o OUT"):
        to_onnx("models:/churn/1")
    out = to_onnx(path, tmp_path / "once")
    with pytest.raises(ModelExistsError):
        to_onnx(path, out)
    with pytest.raises(ConversionError, match="already has an onnx flavor"):
        to_onnx(out, tmp_path / "twice")
    python_model = modelpack.flavors.python.save(_Doubler(), tmp_path / "py", input_example=X[:2])
    with pytest.raises(ConversionError, match="cannot convert a python model"):
        to_onnx(python_model)


class _Doubler:
    def predict(self, data):
        return np.asarray(data) * 2


def test_registry_uri_records_the_registered_version(tmp_path, monkeypatch, sklearn_model):
    from modelpack import registry

    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELPACK_STORE_URI", raising=False)
    monkeypatch.delenv("MODELPACK_ARTIFACT_URI", raising=False)
    path, _ = sklearn_model
    registry.register("churn", path)
    registry.set_alias("churn", "prod", 1)
    out = to_onnx("models:/churn@prod", tmp_path / "churn-onnx")
    parent = Descriptor.read(out).parent
    assert parent is not None
    assert parent["registered_model"] == "churn" and parent["version"] == 1
    assert parent["uri"] == "models:/churn@prod"


def test_cli_convert_exit_codes(tmp_path, sklearn_model):
    path, _ = sklearn_model
    ok = cli("convert", path, "--to", "onnx", "-o", tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(tmp_path / "ok")
    again = cli("convert", path, "-o", tmp_path / "ok")
    assert again.returncode == 2
    assert again.stderr.startswith("error [model_exists]") and again.stderr.count("\n") == 1
    missing = cli("convert", tmp_path / "nope")
    assert missing.returncode == 2 and missing.stderr.startswith("error [model_not_found]")
    bad_target = cli("convert", path, "--to", "tflite")
    assert bad_target.returncode == 2 and "tflite" in bad_target.stderr
    assert "Traceback" not in bad_target.stderr + missing.stderr + again.stderr


def test_cli_parity_refusal_exits_1(tmp_path):
    ridge = Ridge().fit(X.astype(np.float32), X[:, 0] * 1000)
    path = modelpack.save(ridge, tmp_path / "ridge", input_example=X[:5].astype(np.float32))
    refused = cli("convert", path, "--rtol", "0", "--atol", "0")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error [parity_failed]") and refused.stderr.count("\n") == 1
    assert "max abs diff" in refused.stderr
    assert not (tmp_path / "ridge-onnx").exists() and leftovers(tmp_path) == []


def test_torchscript_exporter_is_the_fallback(tmp_path, monkeypatch):
    import torch

    export = torch.onnx.export

    def dynamo_fails(*args, **kwargs):
        if kwargs.get("dynamo"):
            raise RuntimeError("dynamo cannot trace this")
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    example = X[:4].astype(np.float32)
    path = modelpack.save(MLP(4, 8, 2), tmp_path / "mlp", input_example=example)
    out = to_onnx(path)
    rows = RNG.normal(size=(11, 4)).astype(np.float32)
    np.testing.assert_allclose(
        modelpack.load(out, flavor="onnx").predict(rows),
        modelpack.load(path).predict(rows),
        rtol=1e-5,
        atol=1e-6,
    )
