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
    with pytest.raises(UntrustedModelError, match="trust_pickle=True"):
        modelpack.load(path)
    with pytest.raises(UntrustedModelError, match="MODELPACK_TRUST_PICKLE"):
        modelpack.flavors.sklearn.load(path)
    np.testing.assert_array_equal(
        modelpack.load(path, trust_pickle=True).predict(X), model.predict(X)
    )
    monkeypatch.setenv("MODELPACK_TRUST_PICKLE", "1")
    assert modelpack.flavors.sklearn.load(path) is not None


def test_a_tampered_pickle_is_caught_before_it_is_unpickled(tmp_path):
    X = np.arange(20, dtype=float).reshape(10, 2)
    model = LogisticRegression().fit(X, np.arange(10) % 2)
    path = modelpack.flavors.sklearn.save(model, tmp_path / "m", serialization="pickle")
    (path / "model" / "model.pkl").write_bytes(b"cos\nsystem\n(S'false'\ntR.")
    from modelpack.errors import IntegrityError

    with pytest.raises(IntegrityError, match="model.pkl"):
        modelpack.load(path, trust_pickle=True)


def test_types_skops_does_not_know_need_trust(tmp_path):
    X = np.zeros((4, 2))
    model = MeanRegressor().fit(X, np.array([1.0, 2.0, 3.0, 4.0]))
    path = modelpack.save(model, tmp_path / "m")
    assert "MeanRegressor" in str(Descriptor.read(path).flavors["sklearn"]["untrusted_types"])
    with pytest.raises(UntrustedModelError, match="MeanRegressor"):
        modelpack.load(path)
    assert modelpack.load(path, trust_pickle=True).predict(X).tolist() == [2.5] * 4


def test_unknown_serialization_is_refused(tmp_path):
    with pytest.raises(InvalidModelError, match="unknown serialization"):
        modelpack.flavors.sklearn.save(LogisticRegression(), tmp_path / "m", serialization="x")
    assert not (tmp_path / "m").exists()
