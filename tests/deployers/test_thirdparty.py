"""A third-party deployer, installed from its own distribution, driven through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_thirdparty_deployer_through_the_cli(thirdparty_venv: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MODELPACK_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("VIRTUAL_ENV", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(thirdparty_venv), "-m", "modelpack", *args],
            cwd=tmp_path,  # not the checkout: its modelpack/ must not shadow the wheel
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    saved = subprocess.run(
        [
            str(thirdparty_venv),
            "-c",
            "import numpy, modelpack; from mp_thirdparty_flavor import ConstantModel;"
            "modelpack.save(ConstantModel(7.0), 'm', input_example=numpy.zeros((2, 2)))",
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    assert saved.returncode == 0
    (tmp_path / "in.json").write_text(json.dumps({"inputs": [[0, 0], [1, 1], [2, 2]]}))
    target = ["-t", "fixture", "--name", "third"]

    plugins = cli("plugins", "--json")
    found = {(p["kind"], p["name"]): p for p in json.loads(plugins.stdout)}
    assert found[("deployer", "fixture")]["distribution"] == "mp-thirdparty-deployer"
    assert found[("deployer", "local")]["distribution"] == "modelpack"

    plan = cli("deploy", "plan", *target, "-m", "m")
    assert plan.returncode == 0, plan.stderr
    assert "third.json" in plan.stdout

    created = cli("deploy", "create", *target, "-m", "m", "-C", "greeting=hello", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["status"] == "ready"

    got = json.loads(cli("deploy", "get", *target, "--json").stdout)
    assert got["endpoint"] == "fixture://third" and got["details"] == {"greeting": "hello"}

    predicted = cli("deploy", "predict", *target, "-i", "in.json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout) == {"predictions": [7.0, 7.0, 7.0]}

    listed = json.loads(cli("deploy", "list", "-t", "fixture", "--json").stdout)
    assert [d["name"] for d in listed] == ["third"]

    refused = cli("deploy", "update", *target, "-m", "m", "-C", "colour=red")
    assert refused.returncode == 2
    assert "unknown option(s) for target 'fixture': colour (valid: greeting)" in refused.stderr

    assert cli("deploy", "delete", *target).returncode == 0
    assert json.loads(cli("deploy", "list", "-t", "fixture", "--json").stdout) == []
