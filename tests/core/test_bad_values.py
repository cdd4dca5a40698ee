"""Values a model meets in real traffic: sparse outputs, NaN/Inf, missing values, no rows.

Real scikit-learn objects, saved and loaded through modelpack; the server checks go through a
real uvicorn (tests.servers.conftest.serve).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
import tritonclient.http as triton
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, StandardScaler

import modelpack
from modelpack.errors import InvalidInputError, InvalidModelError, SignatureError
from modelpack.payload import decode, dumps, encode_example, to_jsonable
from modelpack.signature import ColSpec, Schema, Signature, TensorSpec, infer_schema
from tests.servers.conftest import serve


def _invocations(url, body=None, **kwargs):
    return httpx.post(url + "/invocations", json=body, timeout=30, **kwargs)


def _error(response, status=422, code="signature_mismatch"):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, response.text
    return error["message"]


# -- 1. sparse outputs -----------------------------------------------------------------------


def _sparse_cases():
    cats = pd.DataFrame({"color": ["red", "green", "blue", "red"], "size": ["s", "m", "l", "m"]})
    nums = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "y": [5.0, 3.0, 1.0, 0.0, 2.0, 4.0]})
    counts = np.array([[3, 0, 1], [2, 0, 0], [3, 0, 0], [4, 0, 0], [3, 2, 0]], dtype=np.int64)
    return {
        "onehot": (OneHotEncoder().fit(cats), cats),
        "kbins": (
            KBinsDiscretizer(n_bins=3, encode="onehot", strategy="uniform").fit(nums),
            nums,
        ),
        "tfidf": (TfidfTransformer().fit(counts), counts),
    }


@pytest.mark.parametrize("case", ["onehot", "kbins", "tfidf"])
def test_sparse_outputs_have_a_tensor_signature_and_encode_densely(tmp_path, case):
    estimator, example = _sparse_cases()[case]
    expected = estimator.transform(example)
    assert hasattr(expected, "nnz")  # the transformer's output really is a scipy.sparse matrix
    # no predict_method: a transformer without predict saves with transform (item 4)
    path = modelpack.save(estimator, tmp_path / case, input_example=example)
    model = modelpack.load(path)
    assert model.signature is not None and model.signature.outputs is not None
    outputs = model.signature.outputs
    assert outputs.tensors == (TensorSpec(str(expected.dtype), (-1, expected.shape[1])),)
    got = model.predict(example)
    dense = expected.toarray().tolist()
    assert to_jsonable(got) == dense
    assert orjson.loads(dumps({"predictions": got})) == {"predictions": dense}
    assert to_jsonable({"out": got}) == {"out": dense}


def test_a_sparse_input_example_is_stored_densely_and_stays_sparse_in_process(tmp_path):
    from scipy import sparse

    counts = sparse.csr_matrix(np.array([[3, 0, 1], [2, 0, 0], [4, 1, 0]], dtype=np.float64))
    tfidf = TfidfTransformer().fit(counts)
    path = modelpack.save(tfidf, tmp_path / "m", input_example=counts)
    sig = modelpack.load(path).signature
    assert sig is not None
    assert sig.inputs.tensors == (TensorSpec("float64", (-1, 3)),)
    np.testing.assert_array_equal(modelpack.load(path).input_example(), counts.toarray())
    assert sig.enforce(counts) is counts
    with pytest.raises(SignatureError, match="shape"):
        sig.enforce(sparse.csr_matrix(np.zeros((2, 4))))


def test_cli_predict_writes_sparse_predictions_densely(tmp_path):
    estimator, example = _sparse_cases()["onehot"]
    path = modelpack.save(estimator, tmp_path / "m", input_example=example)
    (tmp_path / "in.json").write_bytes(orjson.dumps(encode_example(example)))
    out = subprocess.run(
        [sys.executable, "-m", "modelpack", "predict", "-m", str(path), "-i", "in.json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "predictions": estimator.transform(example).toarray().tolist()
    }


def test_sparse_detection_imports_no_scipy():
    code = (
        "import sys, modelpack, modelpack.payload, modelpack.signature as s\n"
        "assert not s.is_sparse([[1.0]]) and not s.is_sparse(s.np.zeros(2))\n"
        "print('scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_server_answers_sparse_predictions_as_dense_json(tmp_path):
    estimator, example = _sparse_cases()["onehot"]
    path = modelpack.save(estimator, tmp_path / "m", input_example=example)
    with serve(path) as url:
        response = _invocations(url, encode_example(example.head(2)))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "predictions": estimator.transform(example.head(2)).toarray().tolist()
        }


# -- 2. NaN and Infinity in input examples ---------------------------------------------------


def _hgb(columns=("a", "b")):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, len(columns))), columns=list(columns))
    frame.iloc[::7, -1] = np.nan
    target = rng.normal(size=40)
    return HistGradientBoostingRegressor(max_iter=5).fit(frame, target), frame


def test_nan_and_inf_in_a_frame_example_round_trip(tmp_path):
    hgb, _ = _hgb(("a", "b", "c"))
    example = pd.DataFrame(
        {"a": [1.0, 2.0, 3.0], "b": [np.nan, np.inf, -np.inf], "c": [np.nan, np.nan, np.nan]}
    )
    path = modelpack.save(hgb, tmp_path / "m", input_example=example)
    stored = orjson.loads((path / "input_example.json").read_bytes())
    assert stored["non_finite"] == ["b", "c"]
    model = modelpack.load(path)
    pd.testing.assert_frame_equal(model.input_example(), example)
    np.testing.assert_allclose(model.predict(model.input_example()), hgb.predict(example))


def test_nan_in_a_tensor_example_round_trips_and_the_model_serves(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.normal(size=(30, 2))
    train[::5, 0] = np.nan
    hgb = HistGradientBoostingRegressor(max_iter=5).fit(train, rng.normal(size=30))
    example = np.array([[np.nan, 1.0], [np.inf, -np.inf], [0.5, 0.25]], dtype=np.float32)
    path = modelpack.save(hgb, tmp_path / "m", input_example=example)
    model = modelpack.load(path)
    np.testing.assert_array_equal(model.input_example(), example)
    with serve(path) as url:  # warm-up reads the example: the model becomes ready
        body = {"inputs": [[0.5, 1.0]]}
        response = _invocations(url, body)
        assert response.status_code == 200, response.text


def test_records_and_named_tensors_keep_non_finite_values():
    records = [{"a": 1.0, "t": "NaN"}, {"a": float("nan"), "t": "x"}, {"a": -np.inf, "t": None}]
    body = orjson.loads(orjson.dumps(encode_example(records)))
    assert body["non_finite"] == ["a"]
    frame, _ = decode(body)
    assert frame["t"].tolist()[:2] == ["NaN", "x"]  # text stays text
    assert np.isnan(frame["a"][1]) and frame["a"][2] == -np.inf
    tensors = {"x": np.array([np.nan, 1.0]), "n": np.array([1, 2])}
    decoded, _ = decode(orjson.loads(orjson.dumps(encode_example(tensors))))
    np.testing.assert_array_equal(decoded["x"], tensors["x"])
    np.testing.assert_array_equal(decoded["n"], tensors["n"])


def test_finite_examples_and_requests_are_unchanged():
    frame = pd.DataFrame({"a": [1.0, 2.0], "s": ["NaN", "x"]})
    assert encode_example(frame) == {
        "dataframe_split": {"columns": ["a", "s"], "data": [[1.0, "NaN"], [2.0, "x"]]}
    }
    # without the marker, a string stays a string (and a float column refuses it)
    sig = Signature(inputs=Schema(columns=(ColSpec("a", "float64"),)))
    data, _ = decode({"dataframe_split": {"columns": ["a"], "data": [["NaN"]]}})
    with pytest.raises(SignatureError, match="'a'"):
        sig.enforce(data)
    with pytest.raises(InvalidInputError, match="non_finite"):
        decode({"inputs": [1.0], "non_finite": "yes"})


# -- 3. missing values, decided per signature ------------------------------------------------


def test_inference_records_allow_missing_from_the_example():
    example = pd.DataFrame(
        {"a": [1.0, 2.0], "b": [1.0, None], "i": [1, 2], "s": ["x", "y"], "f": [True, False]}
    )
    specs = {c.name: c for c in infer_schema(example).columns}
    assert specs["a"].allow_missing is False and specs["b"].allow_missing is True
    assert specs["i"].allow_missing is False and specs["f"].allow_missing is False
    assert specs["s"].allow_missing is True  # a missing text is often valid: left to the model
    assert specs["a"].to_dict()["allow_missing"] is False


def test_signatures_saved_before_the_flag_allow_missing_values():
    old = {"type": "columns", "columns": [{"name": "a", "type": "float64", "required": True}]}
    sig = Signature(inputs=Schema.from_dict(old))
    assert sig.inputs.columns[0].allow_missing is True
    out = sig.enforce({"a": [1.0, None]})
    assert np.isnan(out["a"][1])
    everything_missing = sig.enforce(pd.DataFrame({"a": [None, None]}))  # was "got empty"
    assert everything_missing["a"].dtype == np.float64
    roundtrip = Signature.from_dict(Signature.from_dict({"inputs": old}).to_dict())
    assert roundtrip.inputs.columns[0].allow_missing is True


@pytest.mark.parametrize(
    "data",
    [
        pd.DataFrame({"a": [1.0, 2.0, np.nan], "b": [1.0, 2.0, 3.0]}),
        {"a": [1.0, 2.0, None], "b": [1.0, 2.0, 3.0]},
        [{"a": 1.0, "b": 1.0}, {"a": 2.0, "b": 2.0}, {"a": None, "b": 3.0}],
        pd.DataFrame({"a": pd.array([1.0, 2.0, None], dtype="Float64"), "b": [1.0, 2.0, 3.0]}),
        np.array([[1.0, 1.0], [2.0, 2.0], [np.nan, 3.0]]),
    ],
)
def test_a_column_that_allows_no_missing_value_refuses_one_naming_column_and_row(data):
    sig = Signature(
        inputs=Schema(
            columns=(ColSpec("a", "float64", allow_missing=False), ColSpec("b", "float64"))
        )
    )
    with pytest.raises(
        SignatureError, match=r"column 'a': missing or infinite value at row 2"
    ) as info:
        sig.enforce(data)
    assert info.value.field == "a"
    assert info.value.got != "missing"  # batch scoring reads "missing" as a missing column


def test_integer_columns_with_missing_values_read_as_floats_when_allowed():
    allowed = Signature(inputs=Schema(columns=(ColSpec("n", "int64"),)))
    csv = "n,m\n1,1\n,2\n3,3\n"
    out = allowed.enforce(pd.read_csv(io.StringIO(csv))[["n"]])
    assert out["n"].dtype == np.float64 and np.isnan(out["n"][1])
    with pytest.raises(SignatureError, match="only integer"):
        allowed.enforce({"n": [1.5, None]})
    refused = Signature(inputs=Schema(columns=(ColSpec("n", "int64", allow_missing=False),)))
    with pytest.raises(SignatureError, match="'n': missing or infinite value at row 1"):
        refused.enforce(pd.read_csv(io.StringIO(csv))[["n"]])


def test_no_rows_is_a_signature_error():
    cols = Signature(inputs=Schema(columns=(ColSpec("a", "float64"),)))
    tensors = Signature(inputs=Schema(tensors=(TensorSpec("float32", (-1, 2)),)))
    for sig, data in [
        (cols, pd.DataFrame({"a": []})),
        (cols, []),
        (cols, np.zeros((0, 1))),
        (tensors, np.zeros((0, 2))),
    ]:
        with pytest.raises(SignatureError, match="no rows"):
            sig.enforce(data)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A HistGradientBoosting model: 'a' had no NaN in its example, 'b' had one."""
    hgb, frame = _hgb(("a", "b"))
    example = frame.head(8)
    assert not example["a"].isna().any() and example["b"].isna().any()
    path = modelpack.save(hgb, tmp_path_factory.mktemp("bad") / "hgb", input_example=example)
    with serve(path) as url:
        yield url, hgb


def _parquet(frame):
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def test_missing_values_are_refused_the_same_in_every_format(served):
    url, _ = served
    frame = pd.DataFrame({"a": [1.0, np.nan], "b": [1.0, 2.0]})
    requests: list[dict[str, Any]] = [
        {"json": {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 1.0], [None, 2.0]]}}},
        {"json": {"dataframe_records": [{"a": 1.0, "b": 1.0}, {"a": None, "b": 2.0}]}},
        {"content": b"a,b\n1.0,1.0\n,2.0\n", "headers": {"content-type": "text/csv"}},
        {"content": _parquet(frame), "headers": {"content-type": "application/x-parquet"}},
    ]
    for kwargs in requests:
        message = _error(httpx.post(url + "/invocations", timeout=30, **kwargs))
        assert "'a'" in message and "row 1" in message, (kwargs, message)
    # the tensor formats take no null at all, whatever the signature (unchanged): a 400
    tensors = _invocations(url, {"inputs": {"a": [1.0, None], "b": [1.0, 2.0]}})
    assert "inputs.a" in _error(tensors, 400, "invalid_input")
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    tensor = triton.InferInput("input-0", [2, 2], "FP64")
    tensor.set_data_from_numpy(frame.to_numpy(), binary_data=True)
    with pytest.raises(
        triton.InferenceServerException, match="'a': missing or infinite value at row 1"
    ):
        client.infer("model", [tensor])
    v2 = httpx.post(
        url + "/v2/models/model/infer",
        timeout=30,
        json={
            "inputs": [
                {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
                {"name": "b", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
            ]
        },
    )
    assert v2.status_code == 200, v2.text


def test_missing_values_reach_the_model_where_the_example_had_them(served):
    url, hgb = served
    rows = pd.DataFrame({"a": [1.0, 0.5], "b": [np.nan, 2.0]})
    expected = hgb.predict(rows).tolist()
    bodies: list[dict[str, Any]] = [
        {"json": {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, None], [0.5, 2.0]]}}},
        {"content": b"a,b\n1.0,\n0.5,2.0\n", "headers": {"content-type": "text/csv"}},
        {"content": _parquet(rows), "headers": {"content-type": "application/x-parquet"}},
    ]
    for kwargs in bodies:
        response = httpx.post(url + "/invocations", timeout=30, **kwargs)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["predictions"], expected)
    only_nulls = {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, None]]}}
    assert _invocations(url, only_nulls).status_code == 200


def test_no_rows_answers_422(served):
    url, _ = served
    empty: list[dict[str, Any]] = [
        {"json": {"dataframe_split": {"columns": ["a", "b"], "data": []}}},
        {"json": {"dataframe_records": []}},
        {"content": b"a,b\n", "headers": {"content-type": "text/csv"}},
    ]
    for kwargs in empty:
        assert "no rows" in _error(httpx.post(url + "/invocations", timeout=30, **kwargs))


# -- 4. transformers save with transform -----------------------------------------------------


def test_a_transformer_saves_with_transform_by_default(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 5.0]})
    scaler = StandardScaler().fit(frame)
    path = modelpack.save(scaler, tmp_path / "scaler", input_example=frame)
    model = modelpack.load(path)
    assert model.descriptor.flavors["sklearn"]["predict_method"] == "transform"
    np.testing.assert_allclose(model.predict(frame), scaler.transform(frame))
    # an estimator with predict keeps predict; an explicit choice is kept as it is
    reg = LinearRegression().fit(frame, [1.0, 2.0, 3.0])
    saved = modelpack.save(reg, tmp_path / "reg", input_example=frame)
    assert modelpack.load(saved).descriptor.flavors["sklearn"]["predict_method"] == "predict"
    clf = LogisticRegression().fit(frame, [0, 1, 1])
    proba = modelpack.save(clf, tmp_path / "clf", predict_method="predict_proba")
    assert modelpack.load(proba).descriptor.flavors["sklearn"]["predict_method"] == "predict_proba"


def test_an_explicit_missing_method_names_the_option(tmp_path):
    scaler = StandardScaler().fit(np.ones((3, 2)))
    with pytest.raises(InvalidModelError, match="predict_method= one of 'transform'"):
        modelpack.save(scaler, tmp_path / "m", predict_method="predict")


def test_an_infinity_is_refused_where_the_example_had_only_finite_numbers(tmp_path):
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import modelpack
    from modelpack.errors import SignatureError

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    clf = LogisticRegression().fit(frame, [0, 0, 1, 1])
    model = modelpack.load(modelpack.save(clf, tmp_path / "m", input_example=frame.head(2)))
    bad = frame.head(3).copy()
    bad.loc[1, "b"] = float("inf")
    with pytest.raises(SignatureError, match="'b': missing or infinite value at row 1"):
        model.predict(bad)
