import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

import modelpack
from modelpack.descriptor import Descriptor
from modelpack.errors import InvalidModelError, SignatureError, UntrustedModelError
from tests.flavors.sklearn_models import MeanRegressor
from tests.models import iris_like


@pytest.fixture(scope="module")
def pipeline():
    frame, target = iris_like()
    columns = ColumnTransformer(
        [
            ("num", StandardScaler(), ["length", "width", "count"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
        ]
    )
    return make_pipeline(columns, LogisticRegression()).fit(frame, target), frame


def test_column_transformer_over_mixed_frames_round_trips(tmp_path, pipeline):
    model, frame = pipeline
    path = modelpack.save(model, tmp_path / "m", input_example=frame.head(3))
    descriptor = Descriptor.read(path)
    assert descriptor.loader == "sklearn"
    assert descriptor.flavors["sklearn"]["serialization"] == "skops"
    assert (path / "model" / "model.skops").is_file()
    assert not list(path.rglob("*.pkl"))
    loaded = modelpack.load(path)
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    assert descriptor.signature is not None
    columns = [c["name"] for c in descriptor.signature["inputs"]["columns"]]
    assert columns == ["length", "width", "count", "colour"]
    reqs = (path / "requirements.txt").read_text()
    assert "scikit-learn==" in reqs and "skops==" in reqs


def test_records_in_any_column_order_predict_the_same(tmp_path, pipeline):
    model, frame = pipeline
    loaded = modelpack.load(modelpack.save(model, tmp_path / "m", input_example=frame.head(2)))
    records = frame.head(4)[["colour", "count", "width", "length"]].to_dict(orient="records")
    np.testing.assert_array_equal(loaded.predict(records), model.predict(frame.head(4)))
    with pytest.raises(SignatureError, match="'colour'"):
        loaded.predict(frame.head(2).drop(columns="colour"))


def test_explicit_flavor_api_returns_the_estimator(tmp_path, pipeline):
    model, frame = pipeline
    path = modelpack.flavors.sklearn.save(model, tmp_path / "m", predict_method="predict_proba")
    native = modelpack.flavors.sklearn.load(path)
    assert type(native) is type(model)
    np.testing.assert_allclose(modelpack.load(path).predict(frame), model.predict_proba(frame))


def test_numpy_fitted_estimators_take_arrays_without_warnings(tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    loaded = modelpack.load(modelpack.save(forest, tmp_path / "m", input_example=X[:2]))
    np.testing.assert_array_equal(loaded.predict(X), forest.predict(X))
    assert loaded.signature is not None
    assert loaded.signature.inputs.tensors[0].shape == (-1, 3)


def test_pickle_only_on_request_and_loads_only_with_trust(tmp_path, monkeypatch):
    X = np.arange(20, dtype=float).reshape(10, 2)
    model = make_pipeline(FunctionTransformer(lambda a: a * 2), LogisticRegression())
    model.fit(X, np.arange(10) % 2)
    path = modelpack.flavors.sklearn.save(model, tmp_path / "m", serialization="pickle")
    assert Descriptor.read(path).trust == {
        "executes_code": True,
        "needs": [{"kind": "pickle", "name": "model/model.pkl"}],
    }
    with pytest.raises(UntrustedModelError, match=r"pickle model/model\.pkl.*trust=True"):
        modelpack.load(path)
    with pytest.raises(UntrustedModelError, match="MODELPACK_TRUST=1"):
        modelpack.flavors.sklearn.load(path)
    with pytest.raises(UntrustedModelError):  # names cover types, never a pickle
        modelpack.load(path, trust=["model/model.pkl"])
    np.testing.assert_array_equal(modelpack.load(path, trust=True).predict(X), model.predict(X))
    monkeypatch.setenv("MODELPACK_TRUST", "1")
    assert modelpack.flavors.sklearn.load(path) is not None
    monkeypatch.delenv("MODELPACK_TRUST")
    # The deprecated spellings keep working, with a warning for the keyword.
    monkeypatch.setenv("MODELPACK_TRUST_PICKLE", "1")
    assert modelpack.flavors.sklearn.load(path) is not None
    monkeypatch.delenv("MODELPACK_TRUST_PICKLE")
    with pytest.warns(DeprecationWarning, match="trust_pickle"):
        assert modelpack.flavors.sklearn.load(path, trust_pickle=True) is not None


def test_a_tampered_pickle_is_caught_before_it_is_unpickled(tmp_path):
    X = np.arange(20, dtype=float).reshape(10, 2)
    model = LogisticRegression().fit(X, np.arange(10) % 2)
    path = modelpack.flavors.sklearn.save(model, tmp_path / "m", serialization="pickle")
    (path / "model" / "model.pkl").write_bytes(b"cos\nsystem\n(S'false'\ntR.")
    from modelpack.errors import IntegrityError

    with pytest.raises(IntegrityError, match="model.pkl"):
        modelpack.load(path, trust=True)


def test_types_skops_does_not_know_need_trust(tmp_path, monkeypatch):
    monkeypatch.delenv("MODELPACK_TRUST")
    X = np.zeros((4, 2))
    model = MeanRegressor().fit(X, np.array([1.0, 2.0, 3.0, 4.0]))
    path = modelpack.save(model, tmp_path / "m")
    name = "tests.flavors.sklearn_models.MeanRegressor"
    assert Descriptor.read(path).trust == {
        "executes_code": True,
        "needs": [{"kind": "type", "name": name}],
    }
    with pytest.raises(UntrustedModelError, match=rf"type {name}.*--trust-type {name}"):
        modelpack.load(path)
    assert modelpack.load(path, trust=[name]).predict(X).tolist() == [2.5] * 4


def test_everyday_models_with_internal_types_load_without_trust(tmp_path, monkeypatch):
    # A forest holds sklearn.tree._tree.Tree, HistGradientBoosting with categorical features a
    # functools.partial of check_array: on the reviewed list, so no opt-in is needed.
    from sklearn.ensemble import HistGradientBoostingClassifier

    monkeypatch.delenv("MODELPACK_TRUST")
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 4, 80), rng.normal(size=80)])
    y = (X[:, 0] > 1).astype(int)
    hgb = HistGradientBoostingClassifier(categorical_features=[0], max_iter=5).fit(X, y)
    path = modelpack.save(hgb, tmp_path / "hgb", input_example=X[:3])
    assert Descriptor.read(path).trust == {"executes_code": False, "needs": []}
    np.testing.assert_array_equal(modelpack.load(path).predict(X), hgb.predict(X))


def test_what_skops_cannot_save_is_refused_with_the_fix(tmp_path):
    from sklearn.cluster import Birch

    birch = Birch(n_clusters=2).fit(np.random.default_rng(0).normal(size=(20, 2)))
    with pytest.raises(InvalidModelError, match="serialization='pickle'"):
        modelpack.save(birch, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_unknown_serialization_is_refused(tmp_path):
    with pytest.raises(InvalidModelError, match="unknown serialization"):
        modelpack.flavors.sklearn.save(LogisticRegression(), tmp_path / "m", serialization="x")
    assert not (tmp_path / "m").exists()


def _numeric_frame(n: int = 80, seed: int = 2):
    frame, target = iris_like(n, seed)
    return frame.drop(columns="colour"), target


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogisticRegression(),
        lambda: make_pipeline(StandardScaler(), LogisticRegression()),
        lambda: RandomForestClassifier(n_estimators=8, random_state=0),
    ],
    ids=["logreg", "scaler-logreg", "forest"],
)
@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_named_numeric_frames_skip_the_per_call_name_check_and_answer_the_same(
    tmp_path, make, method
):
    frame, target = _numeric_frame()
    model = make().fit(frame, target)
    path = modelpack.flavors.sklearn.save(
        model, tmp_path / "m", input_example=frame.head(2), predict_method=method
    )
    loaded = modelpack.load(path)
    for rows in (frame.head(1), frame.head(3), frame):  # mixed int/float columns
        np.testing.assert_array_equal(loaded.predict(rows), getattr(model, method)(rows))
    predictor = loaded.predictor.inner
    assert isinstance(predictor, modelpack.flavors.sklearn.SklearnPredictor)
    assert predictor._verified, "the fast path was not taken"
    # The estimator handed back to the user still checks names.
    assert list(predictor.native.feature_names_in_) == list(frame.columns)
    with pytest.raises(ValueError, match="feature names"):
        predictor.native.predict(frame.rename(columns={"width": "w"}))


def test_columns_read_by_name_keep_the_named_path(tmp_path, pipeline):
    model, frame = pipeline
    loaded = modelpack.load(modelpack.save(model, tmp_path / "m", input_example=frame.head(2)))
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    assert isinstance(loaded.predictor.inner, modelpack.flavors.sklearn.SklearnPredictor)
    assert loaded.predictor.inner._unnamed is None


def test_user_code_and_pandas_output_keep_the_named_path(tmp_path):
    frame, target = _numeric_frame()
    by_name = make_pipeline(
        FunctionTransformer(lambda df: df[["length", "width"]] * 2), LogisticRegression()
    ).fit(frame, target)
    pandas_out = make_pipeline(StandardScaler(), LogisticRegression())
    pandas_out.set_output(transform="pandas")
    pandas_out.fit(frame, target)
    for model in (by_name, pandas_out):
        predictor = modelpack.flavors.sklearn.SklearnPredictor(model)
        assert predictor._unnamed is None
        np.testing.assert_array_equal(predictor.predict(frame), model.predict(frame))


def test_a_fast_path_that_answers_differently_is_dropped_for_good():
    frame, target = _numeric_frame()
    model = LogisticRegression().fit(frame, target)
    predictor = modelpack.flavors.sklearn.SklearnPredictor(model)
    calls = []

    def wrong(values):
        calls.append(len(values))
        return np.zeros(len(values), dtype=int) + 7

    predictor._unnamed = wrong
    np.testing.assert_array_equal(predictor.predict(frame), model.predict(frame))
    np.testing.assert_array_equal(predictor.predict(frame), model.predict(frame))
    assert calls == [len(frame)] and predictor._unnamed is None


def test_frames_the_fast_path_cannot_take_go_the_named_way():
    frame, target = _numeric_frame()
    model = LogisticRegression().fit(frame, target)
    predictor = modelpack.flavors.sklearn.SklearnPredictor(model)
    nullable = frame.astype({"count": "Int64"})
    np.testing.assert_array_equal(predictor.predict(nullable), model.predict(nullable))
    assert not predictor._verified
    with pytest.raises(ValueError, match="feature names"):
        predictor.predict(frame[["width", "length", "count"]])
