import io
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.servers import _models
from tests.servers.conftest import COLUMNS, save_python, serve, split_body


def post(url, body=None, **kwargs):
    return httpx.post(url + "/invocations", json=body, timeout=30, **kwargs)


def test_health_version_metadata_openapi(iris, iris_url):
    path, _, _ = iris
    ping = httpx.get(iris_url + "/ping")
    assert ping.status_code == 200 and ping.content == b""
    assert httpx.get(iris_url + "/health").json() == {"status": "ready"}
    assert httpx.get(iris_url + "/version").json()["modelpack"]
    meta = httpx.get(iris_url + "/metadata").json()
    assert meta["model_id"] == modelpack_descriptor_id(path)
    assert meta["flavors"] == ["sklearn"] and meta["name"] == "iris"
    assert [c["name"] for c in meta["signature"]["inputs"]["columns"]] == COLUMNS
    doc = httpx.get(iris_url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    split = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]
    columns = split["schema"]["properties"]["dataframe_split"]["properties"]["columns"]
    assert columns["items"]["enum"] == COLUMNS
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["parameters"][0]["in"] == "path" and infer["parameters"][0]["name"] == "name"
    v2_error = infer["responses"]["400"]["content"]["application/json"]["schema"]
    assert v2_error["properties"]["error"] == {"type": "string"}  # as infer's errors really are


def modelpack_descriptor_id(path):
    from modelpack.descriptor import Descriptor

    return Descriptor.read(path).model_id


def test_every_mlflow_format_gives_the_same_predictions(iris, iris_url):
    _, clf, frame = iris
    rows = frame.head(5)
    expected = clf.predict(rows).tolist()
    bodies = [
        split_body(rows),
        {"dataframe_records": rows.to_dict(orient="records")},
        {"instances": rows.to_dict(orient="records")},
        {"inputs": rows.to_dict(orient="list")},
        {"dataframe_split": {"columns": COLUMNS, "data": rows.values.tolist()}, "params": {}},
    ]
    for body in bodies:
        response = post(iris_url, body)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": expected}
    csv = post(iris_url, content=rows.to_csv(index=False), headers={"content-type": "text/csv"})
    assert csv.json() == {"predictions": expected}
    buffer = io.BytesIO()
    rows.to_parquet(buffer)
    for kind in ("application/vnd.apache.parquet", "application/x-parquet"):
        parquet = post(iris_url, content=buffer.getvalue(), headers={"content-type": kind})
        assert parquet.json() == {"predictions": expected}, parquet.text


def test_integer_cells_take_the_fast_path_and_extra_columns_are_dropped(iris, iris_url):
    _, clf, _ = iris
    rows = [[1, 2, 3, 4], [0, 0, 0, -9]]
    body = {"dataframe_split": {"columns": COLUMNS, "data": rows}}
    expected = clf.predict(pd.DataFrame(rows, columns=COLUMNS, dtype=float))
    assert post(iris_url, body).json() == {"predictions": expected.tolist()}
    records = [dict(zip(COLUMNS, [1.0, 2.0, 3.0, 4.0], strict=True)) | {"extra": "x"}]
    assert post(iris_url, {"dataframe_records": records}).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "words"),
    [
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "invalid_input",
            "JSON",
        ),
        ({"json": {"dataframe_split": {}, "inputs": []}}, 400, "invalid_input", "exactly one"),
        ({"json": {"nothing": 1}}, 400, "invalid_input", "nothing"),
        (
            {"content": b"a,b", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
            "text/plain",
        ),
        (
            {"json": {"dataframe_records": [{"sepal_length": 1.0}]}},
            422,
            "signature_mismatch",
            "sepal_width",
        ),
        (
            {"json": {"dataframe_split": {"columns": COLUMNS, "data": [["a", 1, 2, 3]]}}},
            422,
            "signature_mismatch",
            "sepal_length",
        ),
        (
            {"content": b"\x00\x01", "headers": {"content-type": "application/x-parquet"}},
            400,
            "invalid_input",
            "Parquet",
        ),
    ],
)
def test_bad_requests_answer_json_errors(iris_url, kwargs, status, code, words):
    response = httpx.post(iris_url + "/invocations", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"]
    assert "Traceback" not in response.text


def test_unknown_route_and_method_answer_json(iris_url):
    missing = httpx.get(iris_url + "/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(iris_url + "/invocations")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_body_size_limit_is_413(iris):
    with serve(iris[0], max_body_bytes=1000) as url:
        body = {"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0, 3.0, 4.0]] * 200}}
        response = post(url, body)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"

        def chunks():  # no Content-Length: the limit holds on the stream too
            yield b'{"inputs": ['
            for _ in range(100):
                yield b"[1.0, 2.0, 3.0, 4.0],"
            yield b"[1.0, 2.0, 3.0, 4.0]]}"

        streamed = httpx.post(url + "/invocations", content=chunks(), timeout=30)
        assert streamed.status_code == 413


def test_slow_predict_is_504_and_the_server_stays_up(slow_path):
    with serve(slow_path, timeout_s=0.3) as url:
        response = post(url, {"dataframe_records": [{"x": 1.0}]})
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "request_timeout"
        assert httpx.get(url + "/ping").status_code == 200


def test_params_reach_a_model_that_takes_them(slow_path):
    with serve(slow_path) as url:
        response = post(url, {"dataframe_records": [{"x": 1.0}], "params": {"shift": 2}})
        assert response.json() == {"predictions": [3.0]}
        assert post(url, {"dataframe_records": [{"x": 1.0}]}).json() == {"predictions": [1.0]}
        # The v2 protocol's request parameters are the model's too, less the protocol's own.
        v2 = {
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}],
            "parameters": {"shift": 2, "binary_data_output": False},
        }
        answer = httpx.post(f"{url}/v2/models/model/infer", json=v2, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3.0]


def test_a_model_failure_is_500_without_traceback(echo_path):
    with serve(echo_path) as url:
        response = post(url, {"dataframe_records": [{"id": 1, "x": -1.0}]})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "prediction_failed" and "negative x" in error["message"]
        assert "Traceback" not in response.text
        assert post(url, {"dataframe_records": [{"id": 3, "x": 1.0}]}).json() == {
            "predictions": [30]
        }


def test_not_ready_until_loaded(tmp_path):
    from tests.servers import _models
    from tests.servers.conftest import save_python

    example = pd.DataFrame({"x": [1.0]})
    path = save_python(tmp_path / "m", _models.Slow(), example, delay=0.0, load_delay=2.0)
    with serve(path, ready=False) as url:
        assert httpx.get(url + "/ping").status_code == 503
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.headers["retry-after"]
        assert health.json()["error"]["code"] == "model_not_ready"
        assert httpx.get(url + "/v2/health/live").status_code == 200
        assert httpx.get(url + "/v2/health/ready").status_code == 503
        from tests.servers.conftest import wait_ready

        wait_ready(url)
        assert httpx.get(url + "/v2/health/ready").status_code == 200


def test_metrics_count_requests_batches_and_load_time(iris_url, iris):
    _, _, frame = iris
    for _ in range(3):
        post(iris_url, split_body(frame.head(3)))
    post(iris_url, {"bad": 1})
    text = httpx.get(iris_url + "/metrics").text
    assert 'modelpack_requests_total{route="/invocations",status="200"}' in text
    assert 'modelpack_requests_total{route="/invocations",status="400"}' in text
    assert (
        'modelpack_request_duration_seconds_bucket{le="0.005",route="/invocations",status="200"}'
        in text
    )
    assert "modelpack_batch_size_bucket" in text
    # A quick model, warmed at start-up: its small requests predict on the event loop.
    placed = {
        line.split('"')[1]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("modelpack_predict_requests_total{")
    }
    assert placed["event_loop"] >= 3 and placed["thread"] == 0 and placed["batcher"] == 0
    load = [line for line in text.splitlines() if line.startswith("modelpack_model_load_seconds ")]
    assert float(load[0].split()[1]) > 0


def test_the_plugin_builds_an_app_for_a_loaded_predictor(iris):
    import modelpack
    from modelpack import plugins
    from tests.servers.conftest import running

    model = modelpack.load(iris[0])
    app = plugins.get_plugin("server", "http").app(model.predictor, model.signature)
    with running(app) as url:
        response = post(url, split_body(iris[2].head(2)))
        assert response.json() == {"predictions": iris[1].predict(iris[2].head(2)).tolist()}
        np.testing.assert_equal(httpx.get(url + "/metadata").json()["name"], "model")


def test_a_server_that_owns_its_process_freezes_the_start_up_heap(iris):
    import gc

    path, clf, frame = iris
    assert gc.get_freeze_count() == 0
    try:
        with serve(path, freeze_heap=True) as url:
            # Loaded and warmed before ready: what start-up left is out of the collector's reach.
            assert gc.get_freeze_count() > 10_000
            response = post(url, split_body(frame.head(2)))
            assert response.json() == {"predictions": clf.predict(frame.head(2)).tolist()}
    finally:
        gc.unfreeze()
    with serve(path) as url:  # embedded in someone else's process: their heap is left alone
        assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("fixed", [True, False], ids=["nodelay-protocol", "uvicorn-default"])
def test_connections_on_a_shared_worker_socket_get_tcp_nodelay(fixed):
    import socket
    import threading
    import time

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from modelpack.servers.http._protocol import NoDelayHttpProtocol

    seen: list[int] = []
    base = NoDelayHttpProtocol if fixed else HttpToolsProtocol

    class Recording(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport):
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    # Made the way uvicorn makes the socket it shares between --workers: protocol number 0.
    listener = socket.socket(family=socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    config = uvicorn.Config(app, loop="asyncio", http=Recording, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "ok"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
    assert seen and all(bool(v) == fixed for v in seen), seen


def test_a_500_leaves_the_keep_alive_connection_usable(tmp_path, monkeypatch):
    import socket

    from tests.conftest import TEST_MODEL_CLASSES

    monkeypatch.setenv("MODELPACK_TRUST", ",".join([*TEST_MODEL_CLASSES, _UNENCODABLE]))
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    path = save_python(tmp_path / "m", _models.Unencodable(), frame)
    bad = b'{"dataframe_split": {"columns": ["x"], "data": [[-1.0]]}}'
    with serve(path) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            reader = conn.makefile("rb")

            def exchange(request: bytes) -> tuple[int, bytes]:
                conn.sendall(request)
                status = int(reader.readline().split()[1])
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    assert name.lower() != "connection" or "close" not in value.lower()
                return status, reader.read(length)

            post = (
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(bad)}\r\n\r\n".encode()
                + bad
            )
            status, body = exchange(post)
            assert status == 500 and b"internal_error" in body
            for _ in range(2):  # the same socket answers again: nothing was dropped
                status, body = exchange(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                assert status == 200
            reader.close()


_UNENCODABLE = "tests.servers._models.Unencodable"


def test_a_repeated_column_is_a_client_error(iris_url):
    body = {"dataframe_split": {"columns": [*COLUMNS[:3], COLUMNS[0]], "data": [[1.0] * 4]}}
    answer = httpx.post(f"{iris_url}/invocations", json=body, timeout=30)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_input" and "appear more than once" in error["message"]


def test_big_bodies_decoded_at_once_stay_within_the_budget(tmp_path, monkeypatch):
    # Four 2 MB tables at once against a 3 MB decoding budget: the first is decoded, the others
    # wait for nothing — they get 503 with Retry-After while it is, and go through after.
    import threading

    from tests.conftest import TEST_MODEL_CLASSES

    monkeypatch.setenv("MODELPACK_TRUST", ",".join(TEST_MODEL_CLASSES))
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    path = save_python(tmp_path / "m", _models.Slow(delay=0.0), frame)
    rows = [[float(i)] for i in range(120_000)]  # ~2 MB of JSON
    body = {"dataframe_split": {"columns": ["x"], "data": rows}}
    answers: list[httpx.Response] = []
    with serve(path, max_decode_bytes=3 * 1024 * 1024) as url:
        start = threading.Barrier(4)

        def send() -> None:
            start.wait()
            answers.append(httpx.post(f"{url}/invocations", json=body, timeout=60))

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        statuses = sorted(a.status_code for a in answers)
        assert statuses[0] == 200 and set(statuses) <= {200, 503}
        for answer in answers:
            if answer.status_code == 503:
                assert answer.headers["retry-after"] == "1"
                assert answer.json()["error"]["code"] == "overloaded"
        # Alone, a body of the same size is decoded: the budget never refuses the only one.
        alone = httpx.post(f"{url}/invocations", json=body, timeout=60)
        assert alone.status_code == 200 and len(alone.json()["predictions"]) == len(rows)


def test_the_decoding_budget_lets_one_body_through_and_refuses_past_it():
    from modelpack.errors import ServiceUnavailableError
    from modelpack.servers.http._app import ModelServer
    from modelpack.servers.http._served import ServeOptions

    never_loaded: Any = None  # the budget needs no model
    server = ModelServer(never_loaded, ServeOptions(max_decode_bytes=3_000_000))
    with server._decode_budget(5_000_000):  # alone: through, even over the budget
        with pytest.raises(ServiceUnavailableError) as refused, server._decode_budget(1):
            pass
        assert refused.value.retry_after == 1 and refused.value.code == "overloaded"
    with server._decode_budget(2_000_000), server._decode_budget(1_000_000):  # within: both
        assert server.decoding == 3_000_000
    assert server.decoding == 0


@pytest.mark.parametrize("meta", [b"{not json", b'{"columns": 5}', b'{"index_columns": ["zz"]}'])
def test_parquet_with_malformed_pandas_metadata_is_a_client_error(iris_url, iris, meta):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, _, frame = iris
    table = pa.Table.from_pandas(frame.head(2)).replace_schema_metadata({b"pandas": meta})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    answer = httpx.post(
        f"{iris_url}/invocations",
        content=buf.getvalue(),
        headers={"content-type": "application/vnd.apache.parquet"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_input"
