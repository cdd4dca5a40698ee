import contextlib
import signal
import subprocess
import sys
import threading
import time

import httpx
import pandas as pd

from tests.servers.conftest import ROOT, cli_server, free_port, split_body


def test_serve_answers_and_stops(iris):
    path, clf, frame = iris
    port = free_port()
    with cli_server(str(path), "--port", str(port), port=port) as (proc, url, logs):
        response = httpx.post(url + "/invocations", json=split_body(frame.head(3)))
        assert response.json() == {"predictions": clf.predict(frame.head(3)).tolist()}
    # uvicorn re-raises the SIGTERM it handled once shut down, so the status says SIGTERM.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Finished server process" in logs["output"]
    # uvicorn's "startup complete" comes before the model is loaded: readiness has its own line.
    assert "model 'model' ready in " in logs["output"]


def test_sigterm_lets_an_in_flight_request_finish(slow_path):
    port = free_port()
    with cli_server(str(slow_path), "--port", str(port), port=port) as (proc, url, _logs):
        result = {}

        def call():
            body = {"dataframe_records": [{"x": 2.0}]}
            result["response"] = httpx.post(url + "/invocations", json=body, timeout=30)

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(0.5)  # the request is in the model (1.5 s predict)
        proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert result["response"].status_code == 200
        assert result["response"].json() == {"predictions": [2.0]}
        assert proc.wait(30) in (0, -signal.SIGTERM)


def test_sagemaker_contract(iris):
    path, clf, frame = iris
    port = free_port()
    env = {"MODELPACK_SAGEMAKER_MODEL_DIR": str(path), "SAGEMAKER_BIND_TO_PORT": str(port)}
    with cli_server("serve", env=env, port=port) as (_proc, url, logs):
        ping = httpx.get(url + "/ping")
        assert ping.status_code == 200 and ping.content == b""
        body = frame.head(2).to_csv(index=False)
        response = httpx.post(
            url + "/invocations", content=body, headers={"content-type": "text/csv"}
        )
        assert response.json() == {"predictions": clf.predict(frame.head(2)).tolist()}
    assert f"0.0.0.0:{port}" in logs["output"]


def test_a_bad_uri_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "modelpack", "serve", str(tmp_path / "missing")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error [") and "Traceback" not in proc.stderr
    assert len(pd.Series(proc.stderr.strip().splitlines())) == 1


def test_after_sigterm_an_idle_keep_alive_connection_is_answered_then_closed(iris):
    import socket

    path, _, _ = iris
    port = free_port()
    with cli_server(str(path), "--port", str(port), "--drain", "5", port=port) as (proc, _, _):
        conn = socket.create_connection(("127.0.0.1", port), timeout=30)
        reader = conn.makefile("rb")

        def ping() -> tuple[int, dict[str, str]]:
            conn.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            status = int(reader.readline().split()[1])
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip().lower()
            reader.read(int(headers.get("content-length", "0")))
            return status, headers

        assert ping()[0] == 200  # the connection is open and idle now
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        status, headers = ping()  # sent on the idle connection after SIGTERM: answered
        assert status == 503 and headers.get("connection") == "close"  # not ready, go away
        assert reader.read() == b""  # then closed by the server, cleanly
        reader.close()
        conn.close()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            raise AssertionError("the server still accepts new connections while draining")
        assert proc.wait(30) in (0, -signal.SIGTERM)
