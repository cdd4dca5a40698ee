import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import modelpack
from modelpack.convert import to_onnx
from modelpack.descriptor import Descriptor
from modelpack.errors import ConversionError, ModelExistsError, ParityError
from modelpack.flavors._sklearn_onnx import sklearn_to_onnx
from modelpack.flavors.onnx import OnnxFlavor, OnnxRuntimePredictor
from modelpack.signature import ColSpec, Schema, Signature
from tests.flavors.torch_models import MLP, TwoInputs

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 4))
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)

FLOATS = pd.DataFrame(np.random.default_rng(1).normal(size=(200, 3)), columns=["a", "b", "c"])
LABELS = (FLOATS["a"] + FLOATS["b"] > 0).astype(np.int64)


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "modelpack", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def graph_inputs(path):
    graph = modelpack.flavors.onnx.load(path).graph
    return {
        i.name: (i.type.tensor_type.elem_type, i.type.tensor_type.shape.dim[1].dim_value)
        for i in graph.input
    }


def onnx_type(dtype):
    import onnx

    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


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
    assert isinstance(onnx_model.predictor.inner, OnnxRuntimePredictor)
    rows = RNG.normal(size=(50, 4))
    np.testing.assert_array_equal(onnx_model.predict(rows), clf.predict(rows))
    np.testing.assert_array_equal(modelpack.load(out).predict(rows), clf.predict(rows))


def test_column_transformer_takes_one_input_per_column(frame_model):
    path, clf, frame = frame_model
    out = to_onnx(path)
    graph = modelpack.flavors.onnx.load(out)
    assert [i.name for i in graph.graph.input] == ["age", "visits", "city"]
    assert graph_inputs(out) == {  # strings too: routed by name into the ColumnTransformer
        "age": (onnx_type("float64"), 1),
        "visits": (onnx_type("int64"), 1),
        "city": (onnx_type("object"), 1),
    }
    onnx_model = modelpack.load(out, flavor="onnx")
    rows = frame.sample(60, random_state=1)
    np.testing.assert_array_equal(onnx_model.predict(rows), clf.predict(rows))
    records = rows.head(3).to_dict(orient="records")
    np.testing.assert_array_equal(onnx_model.predict(records), clf.predict(rows.head(3)))


def test_one_hot_encoder_first_takes_one_input_per_column(tmp_path):
    frame = pd.DataFrame(
        {"city": RNG.choice(["oslo", "lima"], 60), "tier": RNG.choice(["a", "b"], 60)}
    )
    y = ((frame["city"] == "lima") ^ (frame["tier"] == "a")).astype(np.int64)
    clf = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(frame, y)
    out = to_onnx(modelpack.save(clf, tmp_path / "ohe", input_example=frame.head(10)))
    assert list(graph_inputs(out)) == ["city", "tier"]
    np.testing.assert_array_equal(
        modelpack.load(out, flavor="onnx").predict(frame), clf.predict(frame)
    )


@pytest.mark.parametrize(
    "estimator",
    [
        LogisticRegression(),
        RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0),
        make_pipeline(StandardScaler(), LogisticRegression()),
    ],
    ids=["logistic", "forest", "scaled-pipeline"],
)
def test_plain_estimator_on_a_frame_concatenates_its_columns(tmp_path, estimator):
    target = (
        FLOATS["a"] * 3 + FLOATS["c"] if isinstance(estimator, RandomForestRegressor) else LABELS
    )
    model = estimator.fit(FLOATS, target)
    out = to_onnx(modelpack.save(model, tmp_path / "m", input_example=FLOATS.head(5)))
    assert graph_inputs(out) == dict.fromkeys(["a", "b", "c"], (onnx_type("float64"), 1))
    rows = FLOATS.sample(70, random_state=2)
    got = modelpack.load(out, flavor="onnx").predict(rows)
    if isinstance(estimator, RandomForestRegressor):  # trees compare in float32, as in sklearn
        np.testing.assert_allclose(got, model.predict(rows), rtol=1e-6)
    else:
        np.testing.assert_array_equal(got, model.predict(rows))
    records = rows.head(3).to_dict(orient="records")
    np.testing.assert_allclose(
        modelpack.load(out, flavor="onnx").predict(records), got[:3], rtol=1e-6
    )


def test_mixed_int_and_float_columns_keep_their_types_and_float64_arithmetic(tmp_path):
    frame = FLOATS.assign(
        visits=RNG.integers(0, 9, 200), small=RNG.integers(0, 3, 200).astype("int32")
    )
    clf = LogisticRegression().fit(frame, (frame["a"] + frame["visits"] / 4 > 1).astype(np.int64))
    path = modelpack.flavors.sklearn.save(
        clf, tmp_path / "mixed", predict_method="predict_proba", input_example=frame.head(8)
    )
    out = to_onnx(path)
    assert graph_inputs(out) == {
        **dict.fromkeys(["a", "b", "c"], (onnx_type("float64"), 1)),
        "visits": (onnx_type("int64"), 1),
        "small": (onnx_type("int64"), 1),
    }
    got = modelpack.load(out, flavor="onnx").predict(frame)
    np.testing.assert_allclose(got, clf.predict_proba(frame), rtol=1e-12, atol=1e-12)  # double


def test_float32_columns_make_a_float32_matrix(tmp_path):
    frame = FLOATS.astype(np.float32)
    clf = LogisticRegression().fit(frame, LABELS)
    out = to_onnx(modelpack.save(clf, tmp_path / "f32", input_example=frame.head(5)))
    assert graph_inputs(out) == dict.fromkeys(["a", "b", "c"], (onnx_type("float32"), 1))
    np.testing.assert_array_equal(
        modelpack.load(out, flavor="onnx").predict(frame), clf.predict(frame)
    )


def test_columns_concatenate_in_fitted_order_whatever_their_names():
    # Named like the converted graph's own values ("coef", "intercept"), in another order.
    frame = FLOATS.set_axis(["intercept", "coef", "b"], axis=1)
    clf = LogisticRegression().fit(frame, LABELS)
    columns = tuple(ColSpec(name, "float64") for name in ("b", "coef", "intercept"))
    proto = sklearn_to_onnx(clf, Signature(inputs=Schema(columns=columns)), "predict", None)
    assert [i.name for i in proto.graph.input] == ["b", "coef", "intercept"]
    predictor = OnnxFlavor().wrap(proto, {})
    np.testing.assert_array_equal(
        predictor.predict(frame[["b", "coef", "intercept"]]), clf.predict(frame)
    )


def test_a_column_named_like_a_graph_output_is_refused():
    frame = FLOATS.set_axis(["label", "b", "c"], axis=1)
    clf = LogisticRegression().fit(frame, LABELS)
    columns = tuple(ColSpec(name, "float64") for name in frame.columns)
    with pytest.raises(ConversionError, match="column 'label' has the name of an output"):
        sklearn_to_onnx(clf, Signature(inputs=Schema(columns=columns)), "predict", None)


def test_string_columns_of_a_plain_estimator_are_refused(tmp_path):
    frame = pd.DataFrame(
        {"a": RNG.normal(size=80), "city": pd.Categorical(RNG.choice(["x", "y"], 80))}
    )
    hgb = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=3)
    hgb.fit(frame, (frame["a"] > 0).astype(np.int64))
    path = modelpack.save(hgb, tmp_path / "hgb", input_example=frame.head(5))
    with pytest.raises(
        ConversionError, match="column 'city' holds strings.*ColumnTransformer"
    ) as info:
        to_onnx(path, trust=True)
    assert info.value.code == "conversion_failed" and "\n" not in str(info.value)
    assert not (tmp_path / "hgb-onnx").exists() and leftovers(tmp_path) == []


def test_a_search_over_a_column_transformer_falls_back_to_per_column_inputs(tmp_path, frame_model):
    from sklearn.model_selection import GridSearchCV

    _, clf, frame = frame_model
    grid = {"logisticregression__C": [1.0]}
    search = GridSearchCV(clf, grid, cv=2).fit(frame, clf.predict(frame))
    path = modelpack.save(search, tmp_path / "search", input_example=frame.head(20))
    out = to_onnx(path, trust=True)  # the matrix way refuses the string column first
    assert list(graph_inputs(out)) == ["age", "visits", "city"]
    np.testing.assert_array_equal(
        modelpack.load(out, flavor="onnx").predict(frame), search.predict(frame)
    )


def test_a_forest_on_float64_arrays_takes_float32_where_double_graphs_do_not_run(tmp_path):
    # skl2onnx writes a double tree ensemble that ONNX Runtime refuses; sklearn's trees compare
    # in float32 anyway.
    forest = RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0).fit(X, X[:, 0])
    out = to_onnx(modelpack.save(forest, tmp_path / "forest", input_example=X[:5]))
    assert graph_inputs(out) == {"X": (onnx_type("float32"), 4)}
    np.testing.assert_allclose(
        modelpack.load(out, flavor="onnx").predict(X), forest.predict(X), rtol=1e-5, atol=1e-6
    )


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
    with pytest.raises(
        ConversionError, match=r"cannot convert a python model.*\(convertible: .*sklearn, torch"
    ):
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


def test_a_classifier_without_probabilities_converts(tmp_path):
    # skl2onnx takes no zipmap option for LinearSVC: it was refused for every classifier.
    from sklearn.svm import LinearSVC

    X = np.random.default_rng(0).normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    svc = LinearSVC().fit(X, y)
    out = to_onnx(modelpack.save(svc, tmp_path / "svc", input_example=X[:3]))
    np.testing.assert_array_equal(modelpack.load(out, flavor="onnx").predict(X), svc.predict(X))


@pytest.mark.parametrize("kind", ["qda", "one_vs_one", "pls"])
def test_converted_answers_keep_the_source_shape(tmp_path, kind):
    # These graphs answer (1, n) or (n, 1) where scikit-learn answers (n,): the conversion
    # reshapes them, and the gate compares shapes exactly (it used to reshape and pass).
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.multiclass import OneVsOneClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    model = {
        "qda": lambda: QuadraticDiscriminantAnalysis().fit(X, (X[:, 0] > 0).astype(int)),
        "one_vs_one": lambda: OneVsOneClassifier(LogisticRegression()).fit(
            X, rng.integers(0, 3, 60)
        ),
        "pls": lambda: PLSRegression(1).fit(X, X[:, 0]),
    }[kind]()
    out = to_onnx(modelpack.save(model, tmp_path / kind, input_example=X[:5]))
    got = modelpack.load(out, flavor="onnx").predict(X)
    expected = model.predict(X)
    assert np.asarray(got).shape == np.asarray(expected).shape == (60,)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5)


def test_a_different_shape_is_a_parity_failure_that_says_so():
    from modelpack import _parity

    found = _parity.compare(np.zeros(4), np.zeros((4, 1)), 1e-4, 1e-5)
    assert found["mismatched"] == 4 and "(4, 1)" in found["shape"]
    found = _parity.compare(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.5, 3.0]), 1e-4, 1e-5)
    assert found["mismatched"] == 1 and found["worst"].startswith("row 1:")


def test_the_gate_checks_a_thousand_rows_and_lets_exact_ties_go_either_way(tmp_path):
    # Two trees tie (0.5/0.5) on many rows: scikit-learn and ONNX Runtime break a tie
    # differently, both right; anything else must match on all 1,000 generated rows.
    from modelpack.descriptor import Descriptor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, X[:, 0] > 0)
    out = to_onnx(modelpack.save(forest, tmp_path / "f", input_example=X[:5]))
    parity = Descriptor.read(out).flavors["onnx"]["parity"]
    label = next(iter(parity["outputs"].values()))
    assert label["values"] >= 1000 and label["mismatched"] == 0


def test_a_label_that_differs_only_on_an_exact_tie_is_not_a_mismatch():
    from modelpack import _parity

    source, converted = np.array([0, 1, 0, 1]), np.array([0, 1, 1, 0])
    ties = np.array([False, False, True, False])
    found = _parity.compare(source, converted, 1e-4, 1e-5, ties)
    assert found["ties"] == 1 and found["mismatched"] == 1  # row 3 is no tie: still wrong
