from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack.deployers import _process
from modelpack.errors import DeploymentError
from modelpack.plugins import get_plugin

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["a", "b", "c"]
READY_S = 180.0  # cold imports on a loaded CI machine are slow


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A MODELPACK_HOME of its own; every deployment left in it is deleted afterwards."""
    home = tmp_path / "home"
    monkeypatch.setenv("MODELPACK_HOME", str(home))
    yield home
    cleanup(home)


def cleanup(home: Path) -> None:
    # Delete through the deployers, then kill whatever PID a state file still names.
    for target in ("local", "onnx"):
        deployer = get_plugin("deployer", target)
        for state_file in (home / "deployments" / target).glob("*.json"):
            with contextlib.suppress(Exception):
                deployer.delete(state_file.stem, {})
    for state_file in (home / "deployments").glob("*/*.json"):
        try:
            state = _process.read_state(state_file) or {}
        except DeploymentError:  # a test's corrupt state file
            continue
        servers = [state, state.get("pending") or {}, *state.get("retired", [])]
        for server in servers:
            if "pid" in server and _process.alive(server["pid"], server.get("started")):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server["pid"], signal.SIGKILL)
    for pid in list(_process._CHILDREN):
        _process.stop(pid, grace=2)


def frame(rows: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(size=(rows, 3)), columns=COLUMNS)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two models whose predictions differ on every row: ``a`` (a > 0) and ``b`` (a <= 0)."""
    data = frame()
    base = tmp_path_factory.mktemp("deploy-models")
    out: dict[str, Any] = {"frame": data}
    for key, labels in (("a", data["a"] > 0), ("b", data["a"] <= 0)):
        clf = LogisticRegression().fit(data, labels.astype(int))
        out[key] = modelpack.save(clf, base / key, input_example=data.head(3))
        out[f"{key}_clf"] = clf
    return out


@pytest.fixture
def file_deployer(monkeypatch: pytest.MonkeyPatch, home: Path) -> Any:
    """The third-party fixture deployer (tests/fixtures/thirdparty_deployer), imported from its
    source: it answers with plain dicts, as a deployer that imports nothing from modelpack may."""
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "fixtures" / "thirdparty_deployer"))
    import mp_thirdparty_deployer

    return mp_thirdparty_deployer.FileDeployer()


def run_cli(*args: Any, env: dict[str, str] | None = None, timeout: float = 600) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "modelpack", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def answers_across_update(
    deployer: Any, name: str, route: str, body: Any, update: Callable[[], Any]
) -> tuple[list[Any], list[str], Any]:
    """A client that follows deployment ``name`` (its endpoint read from ``get`` before each
    request) and posts ``body`` to ``route`` from before ``update()`` until five answers after
    it: its answers, what failed, and what ``update()`` returned."""
    import httpx

    answers: list[Any] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                endpoint = deployer.get(name, {}).endpoint
                assert endpoint is not None
                with httpx.Client(timeout=30) as http:
                    response = http.post(endpoint + route, json=body)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                else:
                    answers.append(response.json()["predictions"])
            except Exception as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        while not answers and thread.is_alive():
            time.sleep(0.05)
        after = update()
        seen = len(answers)
        while len(answers) < seen + 5 and thread.is_alive():
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(60)
    return answers, failures, after


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real kube-apiserver (and etcd) for every kubernetes test; each test gets its own
    namespace (``_kube.new_namespace``)."""
    from tests.deployers._kube import kube_api

    with kube_api(tmp_path_factory.mktemp("kube")) as api:
        yield api
