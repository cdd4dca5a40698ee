"""The bentoml target: a real `bentoml build`, then `bentoml serve` on 127.0.0.1 and predictions."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack.deployers.bentoml import BentoMLDeployer
from modelpack.errors import DeploymentError, InvalidInputError
from tests.conftest import free_port, skip_or_fail


@pytest.fixture(scope="module")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if shutil.which("bentoml", path=str(Path(sys.executable).parent)) is None:
        skip_or_fail("BentoML is not installed: pip install 'modelpack[bentoml]'")
    home = tmp_path_factory.mktemp("bentoml")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(home / "bentoml"))
        patch.setenv("MODELPACK_HOME", str(home / "modelpack"))
        patch.setenv("BENTOML_DO_NOT_TRACK", "true")
        yield home


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, pd.DataFrame]:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    clf = LogisticRegression().fit(frame, (frame.sum(axis=1) > 0).astype(int))
    path = modelpack.save(clf, tmp_path_factory.mktemp("bento") / "iris", input_example=frame[:3])
    return path, clf, frame


@pytest.fixture(scope="module")
def built(bentoml_home: Path, iris: tuple[Path, Any, pd.DataFrame]) -> str:
    deployment = BentoMLDeployer().create("iris-bento", str(iris[0]), {})
    assert deployment.status == "ready" and deployment.model_uri == str(iris[0])
    assert deployment.details["bento"].startswith("iris-bento:")
    return deployment.details["bento"]


def _serve(tag: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "bentoml"),
            "serve",
            tag,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # bentoml serve starts workers: stop the whole group
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"bentoml serve did not become ready:\n{output[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_plan_lists_the_files_and_writes_nothing(bentoml_home: Path, iris) -> None:
    plan = BentoMLDeployer().plan("planned", str(iris[0]), {})
    root = bentoml_home / "modelpack" / "bentos" / "planned"
    assert plan.actions[:2] == [f"write {root / 'service.py'}", f"write {root / 'bentofile.yaml'}"]
    assert plan.documents[0]["python"]["requirements_txt"] == "model/requirements.txt"
    assert not root.exists()


def test_bento_source(built: str, bentoml_home: Path, iris) -> None:
    root = bentoml_home / "modelpack" / "bentos" / "iris-bento"
    bentofile = yaml.safe_load((root / "bentofile.yaml").read_text())
    assert bentofile["labels"]["modelpack-model-uri"] == str(iris[0])
    service = (root / "service.py").read_text()
    assert "modelpack.load(MODEL_DIR, trust=TRUST)" in service
    assert "TRUST = None" in service  # nothing trusted unless the deployment says so
    requirements = (root / "model" / "requirements.txt").read_text()
    assert "modelpack==" in requirements and "scikit-learn==" in requirements


def test_bentoml_serve_answers_predictions(built: str, iris) -> None:
    _, clf, frame = iris
    deployer = BentoMLDeployer()
    for url in _serve(built):
        predictions = deployer.predict("iris-bento", frame.head(5), {"url": url})
        assert predictions == clf.predict(frame.head(5)).tolist()
        records = httpx.post(
            f"{url}/predict",
            json={"dataframe_records": frame.head(2).to_dict(orient="records")},
            timeout=30,
        )
        assert records.json()["predictions"] == clf.predict(frame.head(2)).tolist()
        with pytest.raises(DeploymentError, match="answered 400: .*signature_mismatch"):
            deployer.predict("iris-bento", {"inputs": {"nope": [1]}}, {"url": url})
        got = deployer.get("iris-bento", {"url": url})
        assert got.endpoint == f"{url}/predict"


def test_list_update_delete(built: str, iris, tmp_path) -> None:
    deployer = BentoMLDeployer()
    assert "iris-bento" in [d.name for d in deployer.list({})]
    other = modelpack.save(LogisticRegression().fit(iris[2], [0, 1] * 20), tmp_path / "v2")
    updated = deployer.update("scratch", str(other), {})
    assert updated.model_uri == str(other)
    deployer.delete("scratch", {})
    with pytest.raises(DeploymentError, match="no Bento named 'scratch'"):
        deployer.get("scratch", {})


def test_bad_input(bentoml_home: Path, iris) -> None:
    deployer = BentoMLDeployer()
    with pytest.raises(
        InvalidInputError, match=r"colour.*valid: build_dir, predict_timeout, trust, url"
    ):
        deployer.plan("x", str(iris[0]), {"colour": "red"})
    with pytest.raises(DeploymentError, match="not a valid Bento name"):
        deployer.plan("Not Valid", str(iris[0]), {})
    with pytest.raises(DeploymentError, match="-C url="):
        deployer.predict("x", {"inputs": [1]}, {})
    with pytest.raises(DeploymentError, match="cannot reach the Bento"):
        deployer.predict("x", {"inputs": [1]}, {"url": f"http://127.0.0.1:{free_port()}"})


def test_passes_check_deployer(bentoml_home: Path, iris) -> None:
    from modelpack.testing import check_deployer

    # An export: it builds a Bento and serves nothing, so there is nothing to predict with.
    check_deployer(BentoMLDeployer(), iris[0], name="modelpack-check", predicts=False)
