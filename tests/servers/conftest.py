from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack.flavors import python as python_flavor
from modelpack.servers.http import HttpServer
from tests.servers import _models

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    url: str,
    timeout: float = 120.0,
    path: str = "/ping",
    process: subprocess.Popen[str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:  # it will never be ready
            output = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"the server exited {process.returncode}:\n{output[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} was not ready in {timeout}s")


@contextlib.contextmanager
def running(app: Any, *, ready: bool = True) -> Iterator[str]:
    """A real uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        if ready:
            wait_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def serve(
    path: Path, *, ready: bool = True, **options: Any
) -> contextlib.AbstractContextManager[str]:
    return running(HttpServer().app_for_uri(str(path), **options), ready=ready)


@contextlib.contextmanager
def cli_server(
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    drop_env: tuple[str, ...] = (),
) -> Iterator[tuple[subprocess.Popen[str], str, dict[str, str]]]:
    """``modelpack serve ...`` in a subprocess; yields it, its URL once /ping is 200, and a dict
    that holds its ``output`` once it has stopped. Fails at once if the process exits first."""
    port = port or free_port()
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in drop_env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelpack", "serve", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    logs: dict[str, str] = {}
    try:
        wait_ready(url, process=proc)
        yield proc, url, logs
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            logs["output"] = proc.stdout.read()
            proc.stdout.close()


def split_body(frame: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}


@pytest.fixture(scope="session")
def iris(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 4)), columns=COLUMNS)
    clf = LogisticRegression().fit(frame, (frame.sum(axis=1) > 0).astype(int))
    path = tmp_path_factory.mktemp("serve") / "iris"
    modelpack.save(clf, path, input_example=frame.head(3))
    return path, clf, frame


@pytest.fixture(scope="session")
def iris_url(iris: tuple[Path, Any, Any]) -> Iterator[str]:
    with serve(iris[0], name="iris") as url:
        yield url


def save_python(path: Path, model: Any, example: pd.DataFrame, **init_args: Any) -> Path:
    return python_flavor.save(model, path, init_args=init_args, input_example=example)


@pytest.fixture(scope="session")
def echo_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    example = pd.DataFrame({"id": [1, 2], "x": [0.5, 1.5]})
    return save_python(tmp_path_factory.mktemp("serve") / "echo", _models.RowEcho(), example)


@pytest.fixture(scope="session")
def slow_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    example = pd.DataFrame({"x": [1.0]})
    model = _models.Slow(delay=1.5)
    return save_python(tmp_path_factory.mktemp("serve") / "slow", model, example, delay=1.5)
