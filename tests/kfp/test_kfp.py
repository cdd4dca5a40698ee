"""Kubeflow Pipelines components: compiled by kfp, run by kfp.local, their commands run here."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack.cli import main
from tests.oci.conftest import run_registry

SCRIPT = Path(__file__).with_name("_pipeline.py")
IMAGE = "registry.example/models/clf:1"
MODELPACK = Path(sys.executable).with_name("modelpack")


def _in_kfp_venv(python: Path, *args: str | Path, cwd: Path) -> dict[str, Any]:
    # Outside the checkout (cwd), so the venv's own modelpack is the one imported.
    proc = subprocess.run(
        [str(python), str(SCRIPT), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LogisticRegression]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(50, 2)), columns=["a", "b"])
    clf = LogisticRegression().fit(frame, (frame["a"] + frame["b"] > 0).astype(int))
    path = tmp_path_factory.mktemp("kfp-model") / "clf"
    modelpack.save(clf, path, input_example=frame.head(3))
    return path, clf


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(25, 2)), columns=["a", "b"])
    frame.insert(0, "id", [f"row-{i}" for i in range(len(frame))])
    path = tmp_path_factory.mktemp("kfp-data") / "rows.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _expected(clf: LogisticRegression, frame: pd.DataFrame) -> list[int]:
    return [int(v) for v in clf.predict(frame[["a", "b"]])]


def _predictions(path: Path) -> list[int]:
    # One prediction column next to the passthrough: whatever the flavor names it.
    out = pd.read_csv(path)
    [column] = [c for c in out.columns if c != "id"]
    return [int(v) for v in out[column]]


@pytest.fixture(scope="module")
def oci_model(
    model: tuple[Path, LogisticRegression], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The model pushed to a real OCI registry on 127.0.0.1 (plain HTTP: a loopback host)."""
    from modelpack import oci

    with run_registry(tmp_path_factory.mktemp("kfp-registry")) as registry:
        ref = registry.ref("models/clf:1")
        oci.push(str(model[0]), ref)
        yield ref


def test_lightweight_steps_run_in_kfp_local(
    kfp_python: Path,
    model: tuple[Path, LogisticRegression],
    oci_model: str,
    data: tuple[Path, pd.DataFrame],
    tmp_path: Path,
) -> None:
    _, clf = model
    csv, frame = data
    # The steps resolve the oci:// URI themselves, as they would in a cluster.
    name = "kfp-light"
    try:
        result = _in_kfp_venv(
            kfp_python, "run", tmp_path / "root", oci_model, csv, name, cwd=tmp_path
        )
    finally:
        subprocess.run(
            [str(MODELPACK), "deploy", "delete", "-t", "local", "--name", name],
            capture_output=True,
            check=False,
        )
    predictions = Path(result["path"])
    assert predictions.is_relative_to(tmp_path / "root")
    assert pd.read_csv(predictions)["id"].tolist() == frame["id"].tolist()
    assert _predictions(predictions) == _expected(clf, frame)
    # KFP keeps artifact metadata as a protobuf Struct: its numbers come back as floats.
    assert result["metadata"] == {
        "model_uri": oci_model,
        "format": "csv",
        "rows": 25,
        "scored_rows": 25,
        "failed_rows": 0,
    }
    deployment = result["deployed"]
    assert (deployment["name"], deployment["target"]) == (name, "local")
    assert (deployment["model_uri"], deployment["status"]) == (oci_model, "ready")
    assert deployment["endpoint"].startswith("http://127.0.0.1:")


@pytest.fixture(scope="module")
def compiled(kfp_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("kfp-compiled")
    return _in_kfp_venv(kfp_python, "compile", out, IMAGE, cwd=out)


def test_pipeline_of_both_forms_compiles_to_valid_ir(compiled: dict[str, Any]) -> None:
    assert compiled["pipeline"] == compiled["loaded"] == "score-and-deploy"
    assert compiled["inputs"] == ["data_uri", "model_uri", "name"]
    assert compiled["tasks"] == [
        "importer",
        "modelpack-batch",
        "modelpack-batch-2",
        "modelpack-deploy",
        "modelpack-deploy-2",
    ]
    executors = compiled["executors"]
    assert executors["exec-modelpack-batch"]["image"] == IMAGE
    assert executors["exec-modelpack-batch"]["command"] == ["modelpack", "batch"]
    assert executors["exec-modelpack-deploy"]["image"] == IMAGE
    # The lightweight steps install modelpack with pip, then run the function kfp copied in.
    light = executors["exec-modelpack-deploy-2"]
    assert light["image"] == "python:3.11-slim"
    assert "'modelpack[kubernetes]'" in light["command"][2]
    assert "def modelpack_deploy(" in light["command"][-1]
    batch_light = executors["exec-modelpack-batch-2"]["command"]
    assert f"'modelpack=={modelpack.__version__}'" in batch_light[2]
    assert "from modelpack.batch import score" in batch_light[-1]


# -- the container components' commands, run here as KFP's launcher would run them -----------

_PLACEHOLDER = re.compile(
    r"\{\{\$\.(inputs|outputs)\.(parameters|artifacts)\['(\w+)'\](\.\w+)?\}\}"
)


def _resolve(args: list[str], values: dict[str, Any]) -> list[str]:
    """The container's arguments with KFP's placeholders filled in (IfPresent included)."""

    def fill(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(3)]), text)

    resolved: list[str] = []
    for arg in args:
        if arg.startswith('{"IfPresent"'):
            branch = json.loads(arg)["IfPresent"]
            if branch["InputName"] in values:
                resolved += [fill(a) for a in branch["Then"]]
        else:
            resolved.append(fill(arg))
    return resolved


def test_container_batch_command_scores(
    compiled: dict[str, Any],
    model: tuple[Path, LogisticRegression],
    data: tuple[Path, pd.DataFrame],
    tmp_path: Path,
) -> None:
    path, clf = model
    csv, frame = data
    container = compiled["executors"]["exec-modelpack-batch"]
    out = tmp_path / "predictions"  # an artifact path: no suffix, so the formats are given
    args = _resolve(
        container["args"],
        {
            "model_uri": path,
            "input_data": csv,
            "predictions": out,
            "input_format": "csv",
            "output_format": "csv",
            "batch_size": 10,
            "workers": 1,
            "on_error": "fail",
            "passthrough": "id",
        },
    )
    assert "--columns" not in args  # IfPresent: absent when the input is not given
    proc = subprocess.run(
        [str(MODELPACK), *container["command"][1:], *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert _predictions(out) == _expected(clf, frame)


def test_container_deploy_command_applies_then_updates(
    compiled: dict[str, Any], model: tuple[Path, LogisticRegression], tmp_path: Path
) -> None:
    path, _ = model
    container = compiled["executors"]["exec-modelpack-deploy"]
    home = tmp_path / "home"
    env = {
        **os.environ,
        "MODELPACK_HOME": str(home),
        "PATH": f"{MODELPACK.parent}:{os.environ['PATH']}",
    }
    out = tmp_path / "outputs" / "deployment"
    name = "kfp-step"

    def run(options: dict[str, Any] | None) -> dict[str, Any]:
        values: dict[str, Any] = {
            "deployment": out,
            "action": "apply",
            "target": "local",
            "name": name,
            "model_uri": path,
            "timeout": 60.0,
        }
        if options is not None:
            values["options"] = json.dumps(options)
        command = container["command"]
        proc = subprocess.run(
            [*command, *_resolve(container["args"], values)],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        written: dict[str, Any] = json.loads(out.read_text())
        return written

    try:
        first = run({"workers": 1})
        assert (first["name"], first["target"], first["status"]) == (name, "local", "ready")
        second = run(None)  # apply again: the deployment exists, so an update (no options)
        assert second["status"] == "ready"
        assert second["endpoint"] != first["endpoint"]
    finally:
        subprocess.run(
            [str(MODELPACK), "deploy", "delete", "-t", "local", "--name", name],
            env=env,
            capture_output=True,
            check=False,
        )


def test_container_deploy_command_refuses_an_unknown_action(
    compiled: dict[str, Any], tmp_path: Path
) -> None:
    container = compiled["executors"]["exec-modelpack-deploy"]
    out = tmp_path / "deployment"
    values = {"deployment": out, "action": "remove", "target": "local", "name": "x"}
    args = _resolve(container["args"], {**values, "model_uri": "m", "timeout": 1.0})
    proc = subprocess.run(
        [*container["command"], *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error [invalid_input]: unknown action 'remove'; choose create, update or apply"
    )
    assert not out.exists()


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_writes_components_that_load(kfp_python: Path, tmp_path: Path) -> None:
    for step, flags in (
        ("batch", ["--image", IMAGE]),
        ("deploy", ["--python", "--package", "modelpack[kubernetes]==0.1.0"]),
    ):
        cli = [str(kfp_python), "-m", "modelpack", "kfp", "component", step]
        target = str(tmp_path / f"{step}.yaml")
        proc = subprocess.run(
            [*cli, "-o", target, *flags], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert (proc.returncode, proc.stdout.strip()) == (0, target), proc.stderr
    written = _in_kfp_venv(
        kfp_python, "load", tmp_path / "batch.yaml", tmp_path / "deploy.yaml", cwd=tmp_path
    )
    batch, deploy = written["batch.yaml"], written["deploy.yaml"]
    assert batch["name"] == "modelpack-batch"
    assert batch["container"]["image"] == IMAGE
    assert batch["outputs"] == ["predictions"]
    assert {"model_uri", "input_data", "columns"} <= set(batch["inputs"])
    assert deploy["name"] == "modelpack-deploy"
    assert deploy["inputs"] == ["action", "model_uri", "name", "options", "target", "timeout"]
    assert deploy["outputs"] == ["deployment"]
    assert "'modelpack[kubernetes]==0.1.0'" in deploy["container"]["command"][2]


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    code = exit_info.value.code
    return code if isinstance(code, int) else 1, capsys.readouterr().err.strip()


def test_cli_without_kfp_says_how_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if importlib.util.find_spec("kfp") is not None:
        pytest.skip("kfp is installed in this venv")
    out = tmp_path / "c.yaml"
    code, err = _cli(["kfp", "component", "batch", "--image", IMAGE, "-o", str(out)], capsys)
    assert (code, err) == (
        2,
        "error [missing_dependency]: Kubeflow Pipelines components need the kfp SDK: "
        "pip install 'kfp>=2.17,<3'",
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "give --image IMAGE"),
        (["--image", IMAGE, "--python"], "not both"),
        (["--image", IMAGE, "--package", "x"], "--package applies to --python"),
    ],
)
def test_cli_refuses_mixed_or_missing_forms(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.yaml"
    code, err = _cli(["kfp", "component", "batch", "-o", str(out), *flags], capsys)
    assert code == 2
    assert err.startswith("error [invalid_input]: ") and message in err
    assert not out.exists()
