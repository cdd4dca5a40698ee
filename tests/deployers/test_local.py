"""The local target: real ``modelpack serve`` processes on 127.0.0.1, real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelpack import deploy
from modelpack.deploy import Deployment, wait_until
from modelpack.deployers import _process
from modelpack.deployers.local import LocalDeployer
from modelpack.errors import DeploymentError, InvalidInputError, ModelNotFoundError
from modelpack.payload import encode_example
from modelpack.plugins import get_plugin
from tests.deployers.conftest import READY_S, answers_across_update


def ready(deployer: LocalDeployer, name: str) -> Deployment:
    return wait_until(lambda: deployer.get(name, {}), timeout=READY_S, interval=0.2)


def invocations(endpoint: str, data: Any) -> Any:
    response = httpx.post(endpoint + "/invocations", json=encode_example(data), timeout=60)
    response.raise_for_status()
    return response.json()["predictions"]


@pytest.fixture
def local() -> LocalDeployer:
    deployer: LocalDeployer = get_plugin("deployer", "local")
    return deployer


def test_local_is_registered_as_an_entry_point() -> None:
    assert isinstance(get_plugin("deployer", "local"), LocalDeployer)


def test_create_get_predict_delete(
    home: Path, local: LocalDeployer, models: dict[str, Any]
) -> None:
    rows = models["frame"].head(5)
    created = local.create("iris", str(models["a"]), {"max_batch_size": 8})
    assert created.status in ("creating", "ready")
    deployment = ready(local, "iris")
    assert deployment.endpoint == f"http://127.0.0.1:{deployment.details['port']}"
    assert deployment.model_uri == str(models["a"])
    expected = models["a_clf"].predict(rows).tolist()
    assert invocations(deployment.endpoint, rows) == expected
    assert local.predict("iris", rows, {}) == expected

    state_file = home / "deployments" / "local" / "iris.json"
    state = _process.read_state(state_file)
    assert state is not None
    assert {"pid", "port", "model_uri", "log_file", "created_at"} <= set(state)
    assert state["options"]["max_batch_size"] == 8
    assert [d.name for d in local.list({})] == ["iris"]

    local.delete("iris", {})
    assert not _process.alive(state["pid"], state["started"])
    assert not state_file.exists() and not Path(state["log_file"]).exists()
    assert local.list({}) == []
    with pytest.raises(DeploymentError, match="no local deployment named 'iris'"):
        local.get("iris", {})


def test_plan_touches_nothing(home: Path, local: LocalDeployer, models: dict[str, Any]) -> None:
    plan = local.plan("iris", str(models["a"]), {"port": 8123})
    text = "\n".join(plan.actions)
    assert f"serve the model at {models['a'].resolve()}" in text
    assert "--port 8123" in text and "iris.json" in text
    assert plan.documents == []
    assert not (home / "deployments").exists()
    assert _process._CHILDREN == {}


def test_update_swaps_the_model_with_no_failed_request(
    home: Path, local: LocalDeployer, models: dict[str, Any]
) -> None:
    rows = models["frame"].head(4)
    old_answer = models["a_clf"].predict(rows).tolist()
    new_answer = models["b_clf"].predict(rows).tolist()
    assert old_answer != new_answer
    local.create("swap", str(models["a"]), {})
    before = ready(local, "swap")

    answers, failures, after = answers_across_update(
        local,
        "swap",
        "/invocations",
        encode_example(rows),
        lambda: deploy.update(local, "swap", str(models["b"]), timeout=READY_S),
    )

    assert failures == []
    assert answers[0] == old_answer and answers[-1] == new_answer
    assert set(map(tuple, answers)) == {tuple(old_answer), tuple(new_answer)}
    assert after.status == "ready" and after.endpoint != before.endpoint
    assert after.details["created_at"] == before.details["created_at"]
    assert after.details["updated_at"] is not None
    assert not _process.alive(before.details["pid"])
    assert local.get("swap", {}).model_uri == str(models["b"])


def test_update_starts_the_new_server_and_returns(
    home: Path, local: LocalDeployer, models: dict[str, Any]
) -> None:
    local.create("bg", str(models["a"]), {})
    before = ready(local, "bg")
    started = local.update("bg", str(models["b"]), {})
    # Nothing waited: the old server still serves, the new one is pending.
    assert started.status == "updating" and started.endpoint == before.endpoint
    assert started.model_uri == str(models["a"])
    pending = started.details["updating_to"]
    assert pending["model_uri"] == str(models["b"]) and pending["port"] != before.details["port"]
    # A second update replaces the pending server (it is stopped, never switched to).
    again = local.update("bg", str(models["b"]), {"max_batch_size": 4})
    assert again.details["updating_to"]["pid"] != pending["pid"]
    assert not _process.alive(pending["pid"])
    after = ready(local, "bg")  # the get that sees the new server answer switches to it
    assert after.endpoint != before.endpoint and after.model_uri == str(models["b"])
    assert after.details["options"]["max_batch_size"] == 4
    assert not _process.alive(before.details["pid"])
    state = _process.read_state(home / "deployments" / "local" / "bg.json")
    assert state is not None and not {"pending", "retired"} & set(state)


def test_failed_update_keeps_the_old_version_serving(
    home: Path, local: LocalDeployer, models: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    rows = models["frame"].head(3)
    broken = Path(shutil.copytree(models["b"], tmp_path / "broken"))
    (broken / "model" / "model.skops").write_bytes(b"not the model")  # fails the manifest
    local.create("keep", str(models["a"]), {})
    before = ready(local, "keep")
    with pytest.raises(DeploymentError, match="failed: .*the old one keeps serving") as info:
        deploy.update(local, "keep", str(broken), timeout=READY_S)
    assert "integrity" in info.value.message.lower() and "\n" not in info.value.message
    now = local.get("keep", {})
    # `failed` until the next change, like a rollout past its deadline; the old one answers.
    assert now.status == "failed" and now.endpoint == before.endpoint
    assert now.model_uri == str(models["a"]) and str(broken) in now.details["reason"]
    assert local.predict("keep", rows, {}) == models["a_clf"].predict(rows).tolist()
    assert list((home / "deployments" / "local" / "logs").iterdir()) == [
        Path(before.details["log_file"])
    ]
    fixed = deploy.update(local, "keep", str(models["b"]), timeout=READY_S)
    assert fixed.status == "ready" and "reason" not in fixed.details


def test_a_create_that_never_becomes_ready_is_removed(
    home: Path, local: LocalDeployer, models: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    broken = Path(shutil.copytree(models["a"], tmp_path / "broken"))
    (broken / "model" / "model.skops").write_bytes(b"changed")
    with pytest.raises(DeploymentError, match="failed: .*; removed what was created"):
        deploy.create(local, "never", str(broken), timeout=READY_S)
    assert local.list({}) == []
    assert not (home / "deployments" / "local" / "never.json").exists()


def test_an_existing_name_is_refused(
    home: Path, local: LocalDeployer, models: dict[str, Any]
) -> None:
    local.create("twice", str(models["a"]), {})
    with pytest.raises(DeploymentError, match="exists .*deploy update"):
        local.create("twice", str(models["b"]), {})
    assert local.get("twice", {}).model_uri == str(models["a"])


def test_list_notices_a_dead_process(
    home: Path, local: LocalDeployer, models: dict[str, Any]
) -> None:
    local.create("gone", str(models["a"]), {})
    pid = ready(local, "gone").details["pid"]
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _process.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    [listed] = local.list({})
    assert listed.status == "dead" and "exited" in listed.details["reason"]
    local.delete("gone", {})  # a dead deployment still deletes cleanly
    assert local.list({}) == []


def test_a_model_that_does_not_resolve_leaves_nothing(home: Path, local: LocalDeployer) -> None:
    with pytest.raises(ModelNotFoundError, match="no model at"):
        local.create("nothing", str(home / "missing"), {})
    assert not (home / "deployments" / "local" / "nothing.json").exists()
    assert _process._CHILDREN == {}


def test_a_port_in_use_is_one_clear_error(
    home: Path, local: LocalDeployer, models: dict[str, Any]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DeploymentError, match=f"port {port} on 127.0.0.1 is in use"):
            local.create("busy", str(models["a"]), {"port": port})
    assert not (home / "deployments" / "local" / "busy.json").exists()
    assert _process._CHILDREN == {}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"colour": "red"},
            r"unknown option\(s\) for target 'local': colour \(valid: atol, device, .*host",
        ),
        ({"port": "http"}, "option port must be a number"),
        ({"workers": 0}, "option workers must be between 1"),
        ({"runtime": "tensorrt"}, "runtime must be native or onnx"),
        ({"device": "auto"}, "device auto needs runtime onnx"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"ready_timeout": 5}, r"unknown option\(s\) for target 'local': ready_timeout"),
    ],
)
def test_bad_options_are_refused_up_front(
    home: Path, local: LocalDeployer, models: dict[str, Any], config: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        local.create("opts", str(models["a"]), config)
    assert not (home / "deployments").exists()


def test_a_bad_name_is_refused(home: Path, local: LocalDeployer, models: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="invalid deployment name"):
        local.create("../escape", str(models["a"]), {})


def test_a_model_that_needs_trust_deploys_only_with_it(
    home: Path, local: LocalDeployer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    import modelpack
    import modelpack.flavors.python
    from tests.models import Doubler

    monkeypatch.delenv("MODELPACK_TRUST")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # tests.models
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    path = modelpack.flavors.python.save(Doubler(), tmp_path / "doubler", input_example=frame)
    plan = local.plan("doubler", str(path), {"trust": "tests.models.Doubler"})
    assert "--trust-type tests.models.Doubler" in "\n".join(plan.actions)
    local.create("refused", str(path), {})  # the server refuses the model, naming it
    try:
        with pytest.raises(DeploymentError, match=r"untrusted_model.*tests\.models\.Doubler"):
            ready(local, "refused")
    finally:
        local.delete("refused", {})
    local.create("doubler", str(path), {"trust": "tests.models.Doubler"})
    try:
        deployment = ready(local, "doubler")
        assert deployment.status == "ready"
        assert invocations(str(deployment.endpoint), frame) == [2.0, 4.0]
    finally:
        local.delete("doubler", {})
