import json

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton

from tests.servers import _models
from tests.servers.conftest import COLUMNS, save_python, serve


@pytest.fixture(scope="module")
def client(iris_url):
    return triton.InferenceServerClient(iris_url.removeprefix("http://"))


def test_health_and_metadata_through_tritonclient(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.get_server_metadata()["name"] == "modelpack"
    meta = client.get_model_metadata("iris")
    assert [i["name"] for i in meta["inputs"]] == COLUMNS
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}


@pytest.mark.parametrize("binary", [True, False])
def test_infer_with_one_table_input(client, iris, binary):
    _, clf, frame = iris
    rows = frame.head(4).to_numpy()
    tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    result = client.infer(
        "iris", [tensor], outputs=[triton.InferRequestedOutput("predict", binary_data=binary)]
    )
    np.testing.assert_array_equal(result.as_numpy("predict"), clf.predict(frame.head(4)))


def test_infer_with_one_input_per_column(client, iris):
    _, clf, frame = iris
    inputs = []
    for name in COLUMNS:
        tensor = triton.InferInput(name, [3], "FP64")
        tensor.set_data_from_numpy(frame[name].head(3).to_numpy())
        inputs.append(tensor)
    result = client.infer("iris", inputs)
    np.testing.assert_array_equal(result.as_numpy("predict"), clf.predict(frame.head(3)))


def test_errors_reach_the_client(client, iris_url):
    tensor = triton.InferInput("sepal_length", [2], "FP64")
    tensor.set_data_from_numpy(np.array([1.0, 2.0]))
    with pytest.raises(triton.InferenceServerException, match="sepal_width"):
        client.infer("iris", [tensor])
    with pytest.raises(triton.InferenceServerException, match="no model named"):
        client.get_model_metadata("other")
    bad = httpx.post(iris_url + "/v2/models/iris/infer", json={"inputs": []})
    # v2 errors take the protocol's shape: the message is a string, the code beside it.
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_input"
    assert "inputs" in bad.json()["error"]


def test_bytes_tensors_in_and_out(tmp_path):
    example = pd.DataFrame({"text": ["ab", "cde"]})
    path = save_python(tmp_path / "words", _models.Words(), example)
    with serve(path, name="words") as url:
        client = triton.InferenceServerClient(url.removeprefix("http://"))
        for binary in (True, False):
            tensor = triton.InferInput("text", [3], "BYTES")
            tensor.set_data_from_numpy(
                np.array(["a", "bb", "héllo"], dtype=object), binary_data=binary
            )
            outputs = [
                triton.InferRequestedOutput(n, binary_data=binary) for n in ("length", "upper")
            ]
            result = client.infer("words", [tensor], outputs=outputs)
            assert result.as_numpy("length").tolist() == [1, 2, 5]
            upper = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("upper")]
            assert upper == ["A", "BB", "HÉLLO"]
        plain = httpx.post(
            url + "/v2/models/words/infer",
            json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["xyz"]}]},
        ).json()
        assert plain["outputs"][0] == {
            "name": "length",
            "datatype": "INT64",
            "shape": [1],
            "data": [3],
        }


def test_outputs_advertised_in_the_metadata_are_the_ones_infer_answers(client, iris):
    # A Triton client builds its request from the metadata: asking for the advertised output
    # must work, and the answer must carry that name.
    _, clf, frame = iris
    meta = client.get_model_metadata("iris")
    [output] = meta["outputs"]
    rows = frame.head(3).to_numpy()
    tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    result = client.infer("iris", [tensor], outputs=[triton.InferRequestedOutput(output["name"])])
    np.testing.assert_array_equal(result.as_numpy(output["name"]), clf.predict(frame.head(3)))


_TWO_COLUMNS = [
    {"name": "sepal_length", "shape": [1], "datatype": "FP64", "data": [5.0]},
]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": [{**_TWO_COLUMNS[0], "datatype": "INT8", "data": [1000]}]}, "INT8"),
        ({"inputs": [{**_TWO_COLUMNS[0], "datatype": "UINT8", "data": [-1]}]}, "UINT8"),
        ({"inputs": [{**_TWO_COLUMNS[0], "datatype": "INT64", "data": [2**63]}]}, "INT64"),
        ({"parameters": [1], "inputs": _TWO_COLUMNS}, "'parameters'"),
        ({"inputs": [{**_TWO_COLUMNS[0], "parameters": "x"}]}, "'parameters'"),
        (
            {"inputs": [{**_TWO_COLUMNS[0], "parameters": {"binary_data_size": "x"}}]},
            "binary_data_size",
        ),
        ({"outputs": "predict", "inputs": _TWO_COLUMNS}, "'outputs'"),
        ({"outputs": {"name": "predict"}, "inputs": _TWO_COLUMNS}, "'outputs'"),
        ({"outputs": [1, 2], "inputs": _TWO_COLUMNS}, "'outputs'"),
        ({"inputs": [_TWO_COLUMNS[0], _TWO_COLUMNS[0]]}, "more than once"),
    ],
)
def test_malformed_v2_requests_are_client_errors_on_a_connection_that_stays_usable(
    iris_url, body, field
):
    with httpx.Client(base_url=iris_url, timeout=30) as http:
        answer = http.post("/v2/models/iris/infer", content=json.dumps(body))
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "invalid_input" and field in answer.json()["error"]
        assert http.get("/v2/health/ready").status_code == 200  # same connection, still good
