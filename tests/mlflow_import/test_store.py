"""A real MLflow store (SQLite, and an ``mlflow server`` on 127.0.0.1) imported end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelpack
from modelpack import registry
from modelpack.errors import ModelNotFoundError, UntrustedModelError
from modelpack.mlflow_import import import_mlflow, import_registry
from modelpack.mlflow_import.registry import MARKER
from tests.conftest import free_port
from tests.mlflow_import.conftest import run_side

Store = dict[str, Any]


def _c_of(path: Path) -> float:
    return float(modelpack.load(path).unwrap().C)


def test_models_uris_and_runs_uris(mlflow_store: Store, tmp_path: Path) -> None:
    uri, runs = mlflow_store["uri"], mlflow_store["runs"]
    champion = import_mlflow("models:/iris@champion", tmp_path / "a", tracking_uri=uri)
    assert _c_of(champion) == 1.0  # the alias points at version 2, logged with C=1.0
    assert _c_of(import_mlflow("models:/iris/3", tmp_path / "b", tracking_uri=uri)) == 10.0
    # MLflow 3: runs:/RUN/model is the run's logged model (models/m-<id>), not a run artifact.
    first = runs[0]
    run_model = import_mlflow(f"runs:/{first['run_id']}/model", tmp_path / "c", tracking_uri=uri)
    assert _c_of(run_model) == first["C"]
    by_id = import_mlflow(f"models:/{first['model_id']}", tmp_path / "d", tracking_uri=uri)
    assert _c_of(by_id) == first["C"]
    meta = modelpack.load(champion).metadata["mlflow"]
    assert (meta["registered_model"], meta["version"]) == ("iris", 2)
    assert meta["run_id"] == runs[1]["run_id"]


def test_missing_things_are_model_not_found(mlflow_store: Store, tmp_path: Path) -> None:
    uri = mlflow_store["uri"]
    for src in ("models:/iris@nope", "models:/iris/9", "models:/absent/1", "runs:/0123/model"):
        with pytest.raises(ModelNotFoundError):
            import_mlflow(src, tmp_path / "x", tracking_uri=uri)
    with pytest.raises(ModelNotFoundError, match="no version or alias|no such version"):
        import_mlflow("models:/gaps/1", tmp_path / "x", tracking_uri=uri)  # deleted in MLflow


def test_registry_import_end_to_end_and_idempotent(mlflow_store: Store, fresh_home: Path) -> None:
    uri = mlflow_store["uri"]
    report = import_registry(uri)
    assert report.imported == ["gaps/2", "gaps/3", "iris/1", "iris/2", "iris/3"]
    assert report.skipped == []
    iris = registry.get_model("iris")
    assert (iris.description, iris.tags) == ("Iris classifier", {"team": "ml"})
    assert iris.aliases == {"champion": 2, "previous": 1}
    v2 = registry.get_version("iris", 2)
    assert v2.description == "C=1.0, the best"
    assert v2.tags["validated"] == "true"
    assert v2.run_id == mlflow_store["runs"][1]["run_id"]
    assert v2.tags[MARKER] == f"{uri}#iris/2"
    assert v2.source == f"{uri}#iris/2"  # the MLflow version, not the temporary folder
    assert float(modelpack.load("models:/iris@champion").unwrap().C) == 1.0
    # MLflow's deleted version 1 of "gaps" leaves the same hole: the numbers are kept.
    with pytest.raises(ModelNotFoundError):
        registry.get_version("gaps", 1)
    assert registry.get_model("gaps").aliases == {"latest-good": 3}

    again = import_registry(uri)
    assert again.imported == [] and again.skipped == []
    assert again.updated == ["gaps/2", "gaps/3", "iris/1", "iris/2", "iris/3"]
    assert registry.latest_version("iris").version == 3


def test_registry_import_reports_what_did_not_come_over(
    mlflow_store: Store, fresh_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPACK_TRUST", "0")
    # A modelpack version 1 of "iris" that did not come from MLflow is never overwritten.
    first = import_mlflow(f"runs:/{mlflow_store['runs'][2]['run_id']}/model", tmp_path / "m",
                          tracking_uri=mlflow_store["uri"])  # fmt: skip
    registry.register("iris", first)
    report = import_registry(mlflow_store["uri"], ["iris", "absent"])
    skipped = dict(report.skipped)
    assert "no registered model 'absent'" in skipped["absent"]
    assert "not imported from this MLflow one" in skipped["iris/1"]
    assert "iris@previous" in skipped  # its version did not come over
    assert report.imported == ["iris/2", "iris/3"]
    assert registry.get_version("iris", 1).tags.get(MARKER) is None


def test_cli_registry_import(mlflow_store: Store, fresh_home: Path) -> None:
    from tests.mlflow_import.test_models import _cli

    proc = _cli("import", "mlflow-registry", "--tracking-uri", mlflow_store["uri"],
                "--name", "gaps", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["imported"] == ["gaps/2", "gaps/3"]
    bad = _cli("import", "mlflow-registry", "--tracking-uri", "sqlite:////nonexistent/x.db")
    assert bad.returncode != 0 and bad.stderr.startswith("error [store_error]: ")


# -- a real MLflow server, artifacts proxied (mlflow-artifacts:/) ---------------------------


@pytest.fixture(scope="module")
def mlflow_server(
    mlflow_python: Path, mlflow_store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A server on a copy of the store's database (migrated already: it starts faster)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copy2(Path(str(mlflow_store["root"])) / "mlflow.db", root / "mlflow.db")
    port = free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 (closed after the server stops)
    proc = subprocess.Popen(
        [
            str(mlflow_python),
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={"PATH": str(mlflow_python.parent) + ":/usr/bin:/bin", "HOME": str(root)},
        cwd=root,  # anything it writes relative to its working directory stays in root
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
    if proc.poll() is not None:
        pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def test_rest_server_with_proxied_artifacts(
    mlflow_server: str, mlflow_python: Path, fresh_home: Path, tmp_path: Path
) -> None:
    out = run_side(
        mlflow_python, mlflow_server, script=Path(__file__).with_name("mlflow_remote.py")
    )
    logged = json.loads(out.strip().splitlines()[-1])
    with pytest.raises(UntrustedModelError):  # logged with cloudpickle
        import_mlflow("models:/remote@prod", tmp_path / "m", tracking_uri=mlflow_server)
    path = import_mlflow(
        "models:/remote@prod", tmp_path / "m", tracking_uri=mlflow_server, trust=True
    )
    model = modelpack.load(path)  # re-saved with skops: no trust
    got = np.asarray(model.predict(model.input_example()))
    np.testing.assert_array_equal(got, np.asarray(logged["expected"]))
    run_path = import_mlflow(
        f"runs:/{logged['run_id']}/model", tmp_path / "r", tracking_uri=mlflow_server, trust=True
    )
    assert modelpack.load(run_path).descriptor.loader == "sklearn"
    report = import_registry(mlflow_server, ["remote", "iris"], trust=True)
    assert report.imported == ["iris/1", "iris/2", "iris/3", "remote/1"]
    assert report.aliases == ["iris@champion -> 2", "iris@previous -> 1", "remote@prod -> 1"]
    assert registry.get_model("remote").description == "logged through the server"
    assert registry.get_version("iris", 2).tags["validated"] == "true"
    # The store's own versions keep file: artifact locations, read over REST as well.
    assert float(modelpack.load("models:/iris@champion").unwrap().C) == 1.0
