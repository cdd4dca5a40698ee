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
