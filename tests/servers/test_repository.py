"""The many-models server's repository: settings checked before start, load parameters refused,
unloading under a request in flight, registry versions by stage, the SageMaker container."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from modelpack import registry
from modelpack.cli.serve_commands import parse_size
from modelpack.errors import InvalidInputError
from modelpack.servers.http import HttpServer
from tests.servers import _multi_models
from tests.servers.conftest import cli_server, free_port, running, save_python, split_body
from tests.tracking.conftest import home  # noqa: F401 - a registry of its own per test

TRUST = ["tests.servers._models.Slow", "tests.servers._multi_models.Constant"]


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("500MB", 500 * 10**6), ("2GB", 2 * 10**9), ("1.5GiB", 3 * 2**29)],
)
def test_memory_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["2XB", "-1GB", "0", "GB"])
def test_a_bad_memory_size_is_a_one_line_error(text: str) -> None:
    with pytest.raises(InvalidInputError, match="--max-memory"):
        parse_size(text)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"iris": {"max_batch": 4}}, "unknown setting.*max_batch"),
        ({"iris": {"max_batch_size": "8"}}, "must be a number"),
        ({"iris": 4}, "mapping of settings"),
        ({"nobody": {"max_batch_size": 4}}, "'nobody', which no -m or repository serves"),
        ({"bad/name": {"uri": "x"}}, "invalid model name"),
    ],
)
def test_model_config_mistakes_are_refused_before_start(
    iris: tuple[Path, Any, Any], config: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        HttpServer().app_for_models({"iris": str(iris[0])}, model_config=config)


def test_a_model_declared_in_the_model_config(iris: tuple[Path, Any, Any]) -> None:
    config = {"solo": {"uri": str(iris[0]), "max_batch_size": 4}}
    with running(HttpServer().app_for_models({}, model_config=config)) as url:
        frame = iris[2].head(2)
        got = httpx.post(url + "/invocations", json=split_body(frame))
        assert got.json()["predictions"] == iris[1].predict(frame).tolist()


def test_load_parameters_that_replace_files_are_refused(iris: tuple[Path, Any, Any]) -> None:
    with running(HttpServer().app_for_models({"iris": str(iris[0])})) as url:
        body = {"parameters": {"config": "{}", "file:1/model.onnx": "AAAA"}}
        refused = httpx.post(url + "/v2/repository/models/iris/load", json=body)
        assert refused.status_code == 400
        assert "config, file:1/model.onnx" in refused.json()["error"]
        assert httpx.post(url + "/v2/repository/models/iris/load", content=b"[").status_code == 400
        for bad in ({"ready": "yes"}, {"ready": 1}, [True]):
            index = httpx.post(url + "/v2/repository/index", json=bad)
            assert index.status_code == 400 and index.json()["code"] == "invalid_input"
        ready = httpx.post(url + "/v2/repository/index", json={"ready": True}).json()
        assert [r["name"] for r in ready] == ["iris"]


def test_unloading_lets_the_request_in_flight_finish(slow_path: Path) -> None:
    app = HttpServer().app_for_models({"slow": str(slow_path)}, trust=TRUST)
    with running(app) as url:
        answers: list[tuple[httpx.Response, float]] = []

        def slow_request() -> None:
            body = split_body(pd.DataFrame({"x": [1.0]}))
            answers.append((httpx.post(url + "/invocations/slow", json=body), time.monotonic()))

        request = threading.Thread(target=slow_request)
        request.start()
        for _ in range(100):  # until the predict is under way
            if 'place="thread"} 1.0' in httpx.get(url + "/metrics").text:
                break
            time.sleep(0.02)
        unloaded = httpx.post(url + "/v2/repository/models/slow/unload", timeout=30)
        unloaded_at = time.monotonic()
        request.join()
        assert unloaded.status_code == 200
        [(answer, answered_at)] = answers
        assert answer.status_code == 200 and answer.json() == {"predictions": [1.0]}
        assert answered_at <= unloaded_at  # the unload waited for it
        rows = httpx.post(url + "/v2/repository/index").json()
        assert rows == [
            {"name": "slow", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}
        ]


@pytest.mark.usefixtures("home")
def test_registry_versions_by_stage_and_number(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0]})
    for value in (1, 2, 3):
        model = _multi_models.Constant(value)
        registry.register("m", save_python(tmp_path / str(value), model, frame, value=value))
    registry.transition("m", 2, "Production")
    models = {"prod": "models:/m/stage/Production", "three": "models:/m/3"}
    with running(HttpServer().app_for_models(models, trust=TRUST)) as url:
        rows = {r["name"]: r["version"] for r in httpx.post(url + "/v2/repository/index").json()}
        assert rows == {"prod": "2", "three": "3"}
        got = httpx.post(url + "/invocations/prod", json=split_body(frame)).json()
        assert got == {"predictions": [2.0]}


def test_the_sagemaker_multi_model_container(iris: tuple[Path, Any, Any]) -> None:
    port = free_port()
    env = {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_BIND_TO_PORT": str(port)}
    with cli_server("serve", env=env, port=port) as (_, url, _logs):
        assert httpx.get(url + "/models").json() == {"models": []}
        load = {"model_name": "iris-1", "url": str(iris[0])}
        assert httpx.post(url + "/models", json=load, timeout=60).status_code == 200
        frame = iris[2].head(3)
        got = httpx.post(url + "/models/iris-1/invoke", json=split_body(frame))
        assert got.json()["predictions"] == iris[1].predict(frame).tolist()
        assert httpx.delete(url + "/models/iris-1").status_code == 200
        assert httpx.get(url + "/models/iris-1").status_code == 404


def test_an_unloaded_models_memory_goes_back_to_the_system(tmp_path: Path) -> None:
    # Nothing keeps an unloaded model alive (the repository, the metrics, a batcher, the
    # collector's frozen generation): its weights leave the process's RSS, cycle after cycle.
    import sys

    import torch

    import modelpack

    if not sys.platform.startswith("linux"):
        pytest.skip("RSS is read from /proc")

    def rss_mb() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096 / 2**20

    layers = [torch.nn.Linear(2048, 2048) for _ in range(5)]  # 16 MB of weights each
    path = modelpack.save(torch.nn.Sequential(*layers), tmp_path / "big")
    del layers
    with running(HttpServer().app_for_models({"big": str(path)}, lazy=True)) as url:
        body = {"inputs": [[0.0] * 2048]}
        drops = []
        for _ in range(3):
            assert httpx.post(url + "/v2/repository/models/big/load").status_code == 200
            assert httpx.post(url + "/invocations/big", json=body).status_code == 200
            loaded = rss_mb()
            assert httpx.post(url + "/v2/repository/models/big/unload").status_code == 200
            drops.append(loaded - rss_mb())
    assert min(drops) > 40, drops  # of the model's 80 MB
