"""``modelpack deploy ...`` end to end, as a user runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelpack import deploy
from modelpack.cli import deploy_commands
from modelpack.deploy import Plan
from modelpack.deployers import _process
from tests.deployers.conftest import READY_S, run_cli


def test_create_get_predict_list_update_delete(
    home: Path, models: dict[str, Any], tmp_path: Path
) -> None:
    rows = models["frame"].head(4)
    common = ["-t", "local", "--name", "cli"]

    plan = run_cli("deploy", "plan", *common, "-m", models["a"])
    assert plan.returncode == 0, plan.stderr
    assert "start: modelpack serve" in plan.stdout and "cli.json" in plan.stdout
    assert not (home / "deployments" / "local" / "cli.json").exists()

    # ready_timeout, from config files written for the previous release: --timeout's value now.
    (tmp_path / "options.yaml").write_text(
        f"max_batch_size: 4\nworkers: 1\nready_timeout: {READY_S}\n"
    )
    created = run_cli(
        "deploy", "create", *common, "-m", models["a"], "--config", tmp_path / "options.yaml",
        "-C", "max_latency_ms=2", "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "creating cli on local" in created.stderr and "ready" in created.stderr
    assert "warning: the ready_timeout option is deprecated" in created.stderr
    assert json.loads(created.stdout)["status"] == "ready"

    got = run_cli("deploy", "get", *common, "--json")
    assert got.returncode == 0, got.stderr
    deployment = json.loads(got.stdout)
    assert {"name", "target", "model_uri", "status", "endpoint"} <= set(deployment)
    assert (deployment["name"], deployment["target"], deployment["status"]) == (
        "cli",
        "local",
        "ready",
    )
    assert deployment["details"]["options"]["max_batch_size"] == 4
    assert deployment["details"]["options"]["max_latency_ms"] == 2

    expected = {"predictions": models["a_clf"].predict(rows).tolist()}
    rows.to_csv(tmp_path / "in.csv", index=False)
    body = {"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}
    (tmp_path / "in.json").write_text(json.dumps(body))
    for file in ("in.csv", "in.json"):
        predicted = run_cli("deploy", "predict", *common, "-i", tmp_path / file)
        assert predicted.returncode == 0, predicted.stderr
        assert json.loads(predicted.stdout) == expected

    listed = run_cli("deploy", "list", "-t", "local", "--json")
    assert [d["name"] for d in json.loads(listed.stdout)] == ["cli"]

    updated = run_cli("deploy", "update", *common, "-m", models["b"], "--json")
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["model_uri"] == str(models["b"])
    predicted = run_cli("deploy", "predict", *common, "-i", tmp_path / "in.csv")
    assert json.loads(predicted.stdout) == {"predictions": models["b_clf"].predict(rows).tolist()}

    deleted = run_cli("deploy", "delete", *common)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(run_cli("deploy", "list", "-t", "local", "--json").stdout) == []


def test_a_create_that_never_becomes_ready_cleans_up(
    home: Path, models: dict[str, Any], tmp_path: Path
) -> None:
    broken = Path(shutil.copytree(models["a"], tmp_path / "broken"))
    (broken / "model" / "model.skops").write_bytes(b"changed")  # the server refuses to load it
    out = run_cli("deploy", "create", "-t", "local", "--name", "bad", "-m", broken)
    assert out.returncode == 2
    [line] = [x for x in out.stderr.splitlines() if x.startswith("error")]
    assert "failed" in line and "removed what was created" in line
    assert not list((home / "deployments" / "local").glob("*.json"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-t", "nope"], "no deployer named 'nope' is installed (installed: "),
        (["-t", "local", "-C", "colour=red"], "unknown option(s) for target 'local': colour"),
        (["-t", "local", "-C", "port"], "-C takes key=value"),
        (["-t", "local", "-m", "/no/such/model"], "no model at /no/such/model"),
        # NAME=URI with a bad name is a model of a set refused for its name, not one URI
        (["-t", "local", "-m", "bad/name=oci://127.0.0.1:9/m:1"], "invalid model name 'bad/name'"),
    ],
)
def test_user_mistakes_are_one_line(
    home: Path, models: dict[str, Any], args: list[str], message: str
) -> None:
    if "-m" not in args:
        args = [*args, "-m", str(models["a"])]
    out = run_cli("deploy", "create", "--name", "x", *args)
    assert out.returncode == 2
    [line] = [x for x in out.stderr.splitlines() if x.startswith("error [")]
    assert message in line and "Traceback" not in out.stderr
    if "nope" in args:
        assert "local" in out.stderr and "onnx" in out.stderr
    assert not (home / "deployments" / "local" / "x.json").exists()


def test_a_port_in_use_through_the_cli(home: Path, models: dict[str, Any]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_cli(
            "deploy",
            "create",
            "-t",
            "local",
            "--name",
            "p",
            "-m",
            models["a"],
            "-C",
            f"port={port}",
        )
    assert out.returncode == 2
    assert f"error [deployment_error]: port {port} on 127.0.0.1 is in use" in out.stderr
    assert _process.read_state(home / "deployments" / "local" / "p.json") is None


def test_plan_documents_print_as_multi_document_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    documents = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m"}},
    ]
    plan = Plan("kubernetes", "m", "models:/m/1", actions=["apply Deployment m"], image="m:1")
    plan.documents = documents
    deploy_commands._print_plan(plan, as_json=False)
    out, err = capsys.readouterr()
    assert list(yaml.safe_load_all(out)) == documents
    assert out.startswith("---\n")
    assert "# image: m:1" in err and "# - apply Deployment m" in err


def test_plan_json_and_mappings_from_third_parties(
    file_deployer: Any, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = deploy.plan(file_deployer, "n", "u")  # the fixture answers a plain dict
    deploy_commands._print_plan(plan, as_json=True)
    assert json.loads(capsys.readouterr().out) == {
        "target": "fixture",
        "name": "n",
        "model_uri": "u",
        "actions": [f"write {home / 'fixture-deployments' / 'n.json'}"],
        "documents": [],
        "image": None,
    }


def test_option_values_are_read_as_yaml() -> None:
    parsed = deploy_commands._parse_pairs(["port=8080", "host=0.0.0.0", "gpu=true", "tag=v1:x"])
    assert parsed == {"port": 8080, "host": "0.0.0.0", "gpu": True, "tag": "v1:x"}
