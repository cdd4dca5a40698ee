"""The team server's /api/v1/deployments lists the targets that keep local state, through
``modelpack.deploy``, and reports a target that fails instead of hiding it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from modelpack.plugins import get_plugin
from tests._team_server import team_server


def test_deployments_of_local_targets_and_a_failing_one(home: Path, models: dict[str, Any]) -> None:
    get_plugin("deployer", "local").create("listed", str(models["a"]), {})
    corrupt = home / "deployments" / "onnx" / "broken.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text("{not json")
    with team_server(home) as url:
        answer = httpx.get(f"{url}/api/v1/deployments", timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    [listed] = body["deployments"]
    assert (listed["name"], listed["target"]) == ("listed", "local")
    assert listed["model_uri"] == str(models["a"])
    [error] = body["errors"]
    assert error["target"] == "onnx" and error["error"]["code"] == "deployment_error"
    assert "broken.json is corrupt" in error["error"]["message"]
