"""The local target with a model set: one real many-models ``modelpack serve`` on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from modelpack import deploy
from modelpack.deploy import ModelSet
from modelpack.deployers import _process
from modelpack.deployers.local import LocalDeployer
from modelpack.errors import InvalidInputError, ModelpackError
from modelpack.payload import encode_example
from modelpack.plugins import get_plugin
from tests.deployers.conftest import READY_S, answers_across_update, run_cli


@pytest.fixture
def local() -> LocalDeployer:
    deployer: LocalDeployer = get_plugin("deployer", "local")
    return deployer


def test_a_set_serves_each_model_and_updates_with_no_failed_request(
    home: Path, local: LocalDeployer, models: dict[str, Any]
) -> None:
    rows = models["frame"].head(4)
    answer_a = models["a_clf"].predict(rows).tolist()
    answer_b = models["b_clf"].predict(rows).tolist()
    assert answer_a != answer_b
    first = ModelSet({"a": str(models["a"]), "b": str(models["b"])})
    before = deploy.create(local, "zoo", first, timeout=READY_S)
    assert before.status == "ready" and before.model_uri == first.uri
    assert {n: m["state"] for n, m in before.details["models"].items()} == {
        "a": "READY",
        "b": "READY",
    }
    assert deploy.predict(local, "zoo", rows, model="a") == answer_a
    assert deploy.predict(local, "zoo", rows, model="b") == answer_b
    with pytest.raises(InvalidInputError, match=r"serves 2 models \(a, b\): name one with --model"):
        deploy.predict(local, "zoo", rows)
    with pytest.raises(InvalidInputError, match="serves no model 'c'"):
        deploy.predict(local, "zoo", rows, model="c")

    # The new set: `a` is now the other model, `b` goes, `c` comes; a client asks `a` by name.
    second = ModelSet({"a": str(models["b"]), "c": str(models["a"])})
    answers, failures, after = answers_across_update(
        local,
        "zoo",
        "/invocations/a",
        encode_example(rows),
        lambda: deploy.update(local, "zoo", second, timeout=READY_S),
    )

    assert failures == []
    assert answers[0] == answer_a and answers[-1] == answer_b
    assert set(map(tuple, answers)) == {tuple(answer_a), tuple(answer_b)}
    assert after.status == "ready" and after.endpoint != before.endpoint
    assert after.model_uri == second.uri and sorted(after.details["models"]) == ["a", "c"]
    assert not _process.alive(before.details["pid"])
    assert deploy.predict(local, "zoo", rows, model="c") == answer_a
    deploy.delete(local, "zoo")
    assert not _process.alive(after.details["pid"])


def test_the_cli_deploys_a_repository_lazily_with_a_broken_model(
    home: Path, models: dict[str, Any], tmp_path: Path
) -> None:
    folder = tmp_path / "zoo"
    folder.mkdir()
    for key in ("a", "b"):
        shutil.copytree(models[key], folder / f"m-{key}")
    common = ["-t", "local", "--name", "repo"]
    # A model the server cannot load: that one is unavailable, the others serve.
    broken = "broken=models:/no-such-model/1"

    plan = run_cli("deploy", "plan", *common, "--repository", folder, "-m", broken)
    assert plan.returncode == 0, plan.stderr
    assert f"every model of the repository {folder}" in plan.stdout
    assert "model broken: models:/no-such-model/1" in plan.stdout
    assert f"--repository {folder}" in plan.stdout and "-m broken=models:/" in plan.stdout

    created = run_cli(
        "deploy", "create", *common, "--repository", folder, "-m", broken, "-C", "lazy=true",
        "--timeout", READY_S, "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    deployment = json.loads(created.stdout)
    assert deployment["status"] == "ready"
    assert deployment["details"]["options"]["lazy"] is True
    states = {n: m["state"] for n, m in deployment["details"]["models"].items()}
    assert states == {"m-a": "UNAVAILABLE", "m-b": "UNAVAILABLE", "broken": "UNAVAILABLE"}
    assert deployment["details"]["models"]["m-a"]["reason"] == "not loaded yet"

    rows = models["frame"].head(3)
    rows.to_csv(tmp_path / "in.csv", index=False)
    got = run_cli("deploy", "predict", *common, "-i", tmp_path / "in.csv", "--model", "m-b")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["predictions"] == models["b_clf"].predict(rows).tolist()

    failed = run_cli("deploy", "predict", *common, "-i", tmp_path / "in.csv", "--model", "broken")
    assert failed.returncode != 0 and "model_not_ready" in failed.stderr
    assert "Traceback" not in failed.stderr

    unnamed = run_cli("deploy", "predict", *common, "-i", tmp_path / "in.csv")
    assert unnamed.returncode != 0 and "name one with --model" in unnamed.stderr
    assert len(unnamed.stderr.strip().splitlines()) == 1

    shown = json.loads(run_cli("deploy", "get", *common, "--json").stdout)["details"]["models"]
    assert shown["m-b"]["state"] == "READY" and shown["m-a"]["state"] == "UNAVAILABLE"
    assert "no-such-model" in shown["broken"]["reason"]
    assert run_cli("deploy", "delete", *common).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "a=./x", "-m", "a=./y"], "the model name 'a' is given twice"),
        (["-m", "./x", "-m", "b=./y"], "give NAME=URI"),
        (["-m", "bad/name=./x", "-m", "b=./y"], "invalid model name 'bad/name'"),
        (["--filter", "name LIKE 'x%'", "-m", "./x"], "--filter and --alias apply to"),
        ([], "give the model"),
        (["-t", "onnx", "-m", "a=./x", "-m", "b=./y"], "onnx target deploys one model per"),
    ],
)
def test_cli_mistakes_exit_non_zero_in_one_line(home: Path, args: list[str], message: str) -> None:
    target = [] if "-t" in args else ["-t", "local"]
    done = run_cli("deploy", "plan", *target, "--name", "x", *args)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


def test_option_mistakes_are_refused_before_anything_starts(
    home: Path, local: LocalDeployer, models: dict[str, Any], tmp_path: Path
) -> None:
    pair = ModelSet({"a": str(models["a"]), "b": str(models["b"])})
    cases: list[tuple[str | ModelSet, dict[str, Any], str]] = [
        (str(models["a"]), {"lazy": True}, "lazy apply to several models"),
        (pair, {"workers": 2}, "runs one worker"),
        (pair, {"runtime": "onnx"}, "runtime onnx serves one model"),
        (pair, {"model": "a"}, "option model applies to predict only"),
        (pair, {"max_memory": "lots"}, "give bytes or a size"),
        (pair, {"follow_aliases": 0}, "follow_aliases must be between"),
        (pair, {"model_config": str(tmp_path / "none.yaml")}, "no such file"),
        (ModelSet(repository=str(tmp_path / "none")), {}, "no such folder"),
        (ModelSet({"a": str(tmp_path / "missing")}), {}, "no model at .*missing"),
    ]
    for model, config, message in cases:
        with pytest.raises(ModelpackError, match=message) as info:
            deploy.create(local, "refused", model, config)
        assert "\n" not in str(info.value)
    assert local.list({}) == []
    with pytest.raises(InvalidInputError, match="given twice"):
        ModelSet.parse("modelset:a=./x;a=./y")
    assert ModelSet.parse(pair.uri) == pair and ModelSet.parse(str(models["a"])) is None
    odd = ModelSet({"a": "s3://b/k;v=1%"}, repository="models:/", filter="name LIKE 'f%'")
    assert ModelSet.parse(odd.uri) == odd
