"""One server, many models: names, readiness, a broken model, lazy loads, the memory budget,
per-model batching and metrics, following an alias, SageMaker's multi-model contract, the CLI."""

from __future__ import annotations

import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from modelpack import registry
from modelpack.servers.http import HttpServer
from tests.servers import _multi_models
from tests.servers.conftest import cli_server, running, save_python, split_body
from tests.tracking.conftest import home  # noqa: F401 - a registry of its own per test

X = pd.DataFrame({"x": [1.0, 2.0]})
# This file's model classes, trusted by name (the suite's MODELPACK_TRUST lists its own).
TRUST = [f"tests.servers._multi_models.{c}" for c in ("CountedLoad", "Constant")]


def xbody(*values: float) -> dict[str, Any]:
    return split_body(pd.DataFrame({"x": list(values)}))


def serve_many(models: dict[str, Any], **options: Any) -> Any:
    options.setdefault("trust", TRUST)
    app = HttpServer().app_for_models({k: str(v) for k, v in models.items()}, **options)
    return running(app)


def index(url: str) -> dict[str, dict[str, str]]:
    rows = httpx.post(url + "/v2/repository/index").json()
    return {r["name"]: r for r in rows}


def metric_lines(url: str, name: str) -> list[str]:
    return [line for line in httpx.get(url + "/metrics").text.splitlines() if line.startswith(name)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, iris: tuple[Path, Any, Any]) -> Path:
    """A repository folder: two models, a folder that is no model, a broken model."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(iris[0], root / "iris")
    save_python(root / "double", _multi_models.CountedLoad(), X)
    broken = shutil.copytree(iris[0], root / "broken")
    with next((broken / "model").iterdir()).open("ab") as weights:
        weights.write(b"corrupt")  # the manifest's sha256 no longer matches
    (root / "notes").mkdir()
    return root


@pytest.fixture(scope="module")
def double_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_python(tmp_path_factory.mktemp("m") / "double", _multi_models.CountedLoad(), X)


def test_several_models_each_by_name_with_per_model_metrics_and_batching(
    iris: tuple[Path, Any, Any], double_path: Path
) -> None:
    path, clf, frame = iris
    config = {"double": {"max_batch_size": 8, "max_latency_ms": 1}}
    with serve_many({"iris": path, "double": double_path}, model_config=config) as url:
        got = httpx.post(url + "/invocations/iris", json=split_body(frame.head(3)))
        assert got.json()["predictions"] == clf.predict(frame.head(3)).tolist()
        assert httpx.post(url + "/invocations/double", json=xbody(1, 2)).json() == {
            "predictions": [2.0, 4.0]
        }
        v2 = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [3.0]}]}
        answer = httpx.post(url + "/v2/models/double/versions/1/infer", json=v2).json()
        assert answer["model_name"] == "double" and answer["outputs"][0]["data"] == [6.0]
        wrong = httpx.post(url + "/v2/models/double/versions/7/infer", json=v2)
        assert wrong.status_code == 404 and "version 1" in wrong.json()["error"]
        # Plain /invocations cannot guess which one: a 400 that names them.
        plain = httpx.post(url + "/invocations", json=xbody(1))
        assert plain.status_code == 400
        assert "double, iris" in plain.json()["error"]["message"]
        unknown = httpx.post(url + "/invocations/nope", json=xbody(1))
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        assert httpx.get(url + "/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
        assert httpx.get(url + "/v2/health/ready").status_code == 200
        assert "model_repository" in httpx.get(url + "/v2").json()["extensions"]
        # The per-model batching setting holds for that model alone.
        places = metric_lines(url, "modelpack_predict_requests_total{")
        assert 'modelpack_predict_requests_total{model="double",place="batcher"} 2.0' in places
        assert 'modelpack_predict_requests_total{model="iris",place="batcher"} 0.0' in places
        text = httpx.get(url + "/metrics").text
        assert re.search(
            r'modelpack_requests_total\{model="iris",route="/invocations/\{name\}",status="200"\}',
            text,
        )
        assert 'route="/invocations/{name}",status="404"' in text  # the typo: no model label
        assert 'model="nope"' not in text
        assert 'modelpack_batch_size_count{model="double"}' in text
        assert 'modelpack_model_ready{model="iris"} 1.0' in text
        assert re.search(r'modelpack_model_load_seconds\{model="double"\} [0-9.e-]+', text)


def test_one_model_by_name_still_answers_plain_invocations(double_path: Path) -> None:
    with serve_many({"double": double_path}) as url:
        assert httpx.post(url + "/invocations", json=xbody(5)).json() == {"predictions": [10.0]}
        assert httpx.get(url + "/metadata").json()["name"] == "double"


def test_a_broken_model_is_unavailable_with_its_error_and_the_others_serve(folder: Path) -> None:
    with serve_many({}, repository=str(folder)) as url:
        rows = index(url)
        assert set(rows) == {"iris", "double", "broken"}  # "notes" is no model
        assert rows["broken"]["state"] == "UNAVAILABLE"
        assert "the manifest says" in rows["broken"]["reason"]
        assert rows["double"] == {"name": "double", "version": "1", "state": "READY", "reason": ""}
        answer = httpx.post(url + "/invocations/broken", json=xbody(1))
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "model_not_ready"
        assert "the manifest says" in answer.json()["error"]["message"]
        assert httpx.get(url + "/v2/models/broken/ready").status_code == 503
        assert httpx.post(url + "/invocations/double", json=xbody(1)).status_code == 200
        assert httpx.get(url + "/ping").status_code == 200
        assert 'modelpack_model_ready{model="broken"} 0.0' in httpx.get(url + "/metrics").text


def test_the_repository_through_tritonclient(folder: Path, tmp_path: Path) -> None:
    import numpy as np
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    root = tmp_path / "repo"
    shutil.copytree(folder, root, ignore=shutil.ignore_patterns("broken"))
    with serve_many({}, repository=str(root)) as url:
        client = triton.InferenceServerClient(url.removeprefix("http://"))
        names = {r["name"]: r["state"] for r in client.get_model_repository_index()}
        assert names == {"iris": "READY", "double": "READY"}
        client.unload_model("double")
        assert not client.is_model_ready("double")
        assert client.is_model_ready("iris")
        index_rows = {r["name"]: r for r in client.get_model_repository_index()}
        assert index_rows["double"]["state"] == "UNAVAILABLE"
        tensor = triton.InferInput("x", [2], "FP64")
        tensor.set_data_from_numpy(np.array([1.0, 4.0]))
        with pytest.raises(InferenceServerException, match="unloaded"):
            client.infer("double", [tensor])
        client.load_model("double")
        assert client.is_model_ready("double")
        result = client.infer("double", [tensor])
        np.testing.assert_array_equal(result.as_numpy("predict"), [2.0, 8.0])
        # A model folder added since the start loads by name, as in Triton.
        shutil.copytree(root / "iris", root / "iris2")
        client.load_model("iris2")
        assert client.is_model_ready("iris2")
        with pytest.raises(InferenceServerException, match="no model named 'ghost'"):
            client.load_model("ghost")


def test_lazy_loads_once_however_many_first_requests_arrive(tmp_path: Path) -> None:
    path = save_python(
        tmp_path / "slowload", _multi_models.CountedLoad(load_delay=1.0), X, load_delay=1.0
    )
    _multi_models.CountedLoad.loads.clear()
    with serve_many({"slowload": path}, lazy=True) as url:
        assert index(url)["slowload"]["state"] == "UNAVAILABLE"  # ready server, nothing loaded
        assert _multi_models.CountedLoad.loads == []
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda i: httpx.post(url + "/invocations/slowload", json=xbody(i), timeout=30),
                    range(8),
                )
            )
        assert [a.status_code for a in answers] == [200] * 8
        assert [a.json()["predictions"] for a in answers] == [[2.0 * i] for i in range(8)]
        assert len(_multi_models.CountedLoad.loads) == 1
        assert index(url)["slowload"]["state"] == "READY"


def test_least_recently_used_models_are_unloaded_under_the_memory_budget(
    tmp_path: Path, iris: tuple[Path, Any, Any]
) -> None:
    paths = {n: shutil.copytree(iris[0], tmp_path / n) for n in ("a", "b", "c")}
    size = sum(f.stat().st_size for f in paths["a"].rglob("*") if f.is_file())
    frame = iris[2].head(2)
    with serve_many(paths, lazy=True, max_memory=int(size * 2.5)) as url:
        for name in ("a", "b"):
            assert httpx.post(url + f"/invocations/{name}", json=split_body(frame)).is_success
        assert {n: r["state"] for n, r in index(url).items()} == {
            "a": "READY",
            "b": "READY",
            "c": "UNAVAILABLE",
        }
        assert httpx.post(url + "/invocations/c", json=split_body(frame)).is_success
        rows = index(url)
        assert rows["a"]["state"] == "UNAVAILABLE" and "least recently used" in rows["a"]["reason"]
        assert rows["b"]["state"] == rows["c"]["state"] == "READY"
        # Asked again, the unloaded one loads again: now b is the least recently used.
        assert httpx.post(url + "/invocations/a", json=split_body(frame)).is_success
        assert {n: r["state"] for n, r in index(url).items()} == {
            "a": "READY",
            "b": "UNAVAILABLE",
            "c": "READY",
        }
    with serve_many({"a": paths["a"]}, max_memory=size - 1) as url:
        too_big = httpx.post(url + "/invocations/a", json=split_body(frame))
        assert too_big.status_code == 503
        assert "more than the whole --max-memory budget" in too_big.json()["error"]["message"]
        assert "--max-memory" in index(url)["a"]["reason"]


def test_a_load_waits_for_a_busy_model_to_finish_before_the_budget_says_no(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelpack.servers.http._repository import ModelRepository
    from tests.servers import _models

    example = pd.DataFrame({"x": [1.0]})
    paths = {
        n: save_python(tmp_path / n, _models.Slow(delay=0.8), example, delay=0.8) for n in "ab"
    }
    size = sum(f.stat().st_size for f in paths["a"].rglob("*") if f.is_file())
    trust = ["tests.servers._models.Slow"]
    body = split_body(pd.DataFrame({"x": [1.0]}))
    for wait_s, want in ((5.0, 200), (0.2, 503)):
        monkeypatch.setattr(ModelRepository, "ROOM_WAIT_S", wait_s)
        with serve_many(paths, lazy=True, max_memory=int(size * 1.5), trust=trust) as url:
            with ThreadPoolExecutor(1) as pool:
                busy = pool.submit(httpx.post, url + "/invocations/a", json=body, timeout=30)
                while index(url)["a"]["state"] != "READY":  # a loaded and now predicting
                    time.sleep(0.02)
                # b fits only once a is unloaded, and a is answering for ~0.8 s more.
                other = httpx.post(url + "/invocations/b", json=body, timeout=30)
                assert busy.result().status_code == 200
            assert other.status_code == want, other.text
            if want == 200:  # waited for a's answer, then took its place
                assert other.json() == {"predictions": [1.0]}
                rows = index(url)
                assert rows["a"]["state"] == "UNAVAILABLE" and rows["b"]["state"] == "READY"
            else:  # a was still busy when the wait ran out: the budget's 503, a kept
                assert other.json()["error"]["code"] == "memory_budget"
                assert other.headers["retry-after"] == "1"
                assert index(url)["a"]["state"] == "READY"


def constant(tmp_path: Path, value: float) -> Path:
    model = _multi_models.Constant(value)
    return save_python(tmp_path / f"const{value:g}", model, X, value=value)


@pytest.mark.usefixtures("home")
def test_a_registry_repository_serves_each_models_alias(tmp_path: Path) -> None:
    one, two = constant(tmp_path, 1), constant(tmp_path, 2)
    for name in ("fraud", "churn", "other"):
        registry.register(name, one)
        registry.register(name, two)
    registry.set_alias("fraud", "champion", 1)
    registry.set_alias("churn", "champion", 2)
    source = {"repository": "models:/", "repository_alias": "champion"}
    with serve_many({}, **source, repository_filter="name != 'other'") as url:
        rows = index(url)
        assert {n: r["version"] for n, r in rows.items()} == {"fraud": "1", "churn": "2"}
        assert httpx.post(url + "/invocations/fraud", json=xbody(0)).json()["predictions"] == [1]
        assert httpx.post(url + "/invocations/churn", json=xbody(0)).json()["predictions"] == [2]
        assert httpx.post(
            url + "/v2/models/churn/versions/2/infer",
            json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0.0]}]},
        ).is_success
    with serve_many({}, repository="models:/") as url:  # no alias: each one's latest
        assert {r["version"] for r in index(url).values()} == {"2"}


@pytest.mark.usefixtures("home")
def test_following_an_alias_switches_versions_under_load_without_a_failure(
    tmp_path: Path,
) -> None:
    registry.register("scorer", constant(tmp_path, 1))
    registry.register("scorer", constant(tmp_path, 2))
    registry.set_alias("scorer", "champion", 1)
    stop = threading.Event()
    answers: list[tuple[float, int, Any]] = []

    def hammer(url: str) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                sent = time.monotonic()
                got = client.post(url + "/invocations/scorer", json=xbody(0))
                value = got.json()["predictions"][0] if got.status_code == 200 else got.text
                answers.append((sent, got.status_code, value))

    with serve_many({"scorer": "models:/scorer@champion"}, follow_aliases=0.1) as url:
        threads = [threading.Thread(target=hammer, args=(url,)) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        registry.set_alias("scorer", "champion", 2)
        deadline = time.monotonic() + 20
        while index(url)["scorer"]["version"] != "2" and time.monotonic() < deadline:
            time.sleep(0.05)
        switched = time.monotonic()
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
    failures = [a for a in answers if a[1] != 200]
    assert failures == []
    assert {a[2] for a in answers} == {1.0, 2.0}
    assert all(a[2] == 2.0 for a in answers if a[0] > switched)  # sent after the switch


def test_the_sagemaker_multi_model_contract(iris: tuple[Path, Any, Any], double_path: Path) -> None:
    frame = iris[2].head(2)
    size = sum(f.stat().st_size for f in iris[0].rglob("*") if f.is_file())
    app = HttpServer().app_for_models({}, sagemaker=True, max_memory=size * 3, trust=TRUST)
    with running(app) as url:
        assert httpx.get(url + "/models").json() == {"models": []}
        load = {"model_name": "iris", "url": str(iris[0])}
        assert httpx.post(url + "/models", json=load).status_code == 200
        again = httpx.post(url + "/models", json=load)
        assert again.status_code == 409
        assert httpx.get(url + "/models").json() == {
            "models": [{"modelName": "iris", "modelUrl": str(iris[0])}]
        }
        assert httpx.get(url + "/models/iris").json()["modelName"] == "iris"
        invoke = httpx.post(
            url + "/models/iris/invoke",
            json=split_body(frame),
            headers={"X-Amzn-SageMaker-Target-Model": "iris.tar.gz"},
        )
        assert invoke.json()["predictions"] == iris[1].predict(frame).tolist()
        second = {"model_name": "double", "url": str(double_path)}
        assert httpx.post(url + "/models", json=second).status_code == 200
        assert [m["modelName"] for m in httpx.get(url + "/models").json()["models"]] == [
            "double",
            "iris",
        ]
        # Pages, as SageMaker asks for them: the token is given back until the last page.
        first = httpx.get(url + "/models", params={"limit": 1}).json()
        assert [m["modelName"] for m in first["models"]] == ["double"]
        token = first["nextPageToken"]
        rest = httpx.get(url + "/models", params={"limit": 1, "next_page_token": token}).json()
        assert rest == {"models": [{"modelName": "iris", "modelUrl": str(iris[0])}]}
        for bad in ("0", "x", "1001"):
            refused = httpx.get(url + "/models", params={"limit": bad})
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "invalid_input"
        assert httpx.delete(url + "/models/double").status_code == 200
        missing = httpx.post(url + "/models", json={"model_name": "gone", "url": "/nowhere"})
        assert missing.status_code == 404
        assert httpx.get(url + "/models/gone").status_code == 404
        assert httpx.delete(url + "/models/iris").status_code == 200
        assert httpx.get(url + "/models/iris").status_code == 404
        assert httpx.post(url + "/models/iris/invoke", json=split_body(frame)).status_code == 404
        assert httpx.get(url + "/models").json() == {"models": []}
    tight = HttpServer().app_for_models({}, sagemaker=True, max_memory=size // 2)
    with running(tight) as url:
        full = httpx.post(url + "/models", json={"model_name": "iris", "url": str(iris[0])})
        assert full.status_code == 507
        assert httpx.get(url + "/models").json() == {"models": []}


def test_the_cli_serves_several_models(iris: tuple[Path, Any, Any], double_path: Path) -> None:
    import subprocess
    import sys

    from tests.servers.conftest import ROOT, free_port

    bad = subprocess.run(
        [sys.executable, "-m", "modelpack", "serve", "-m", "iris", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "give NAME=URI" in bad.stderr
    assert "Traceback" not in bad.stderr
    port = free_port()
    args = ["-m", f"iris={iris[0]}", "-m", f"double={double_path}", "--port", str(port)]
    args += ["--trust-type", TRUST[0]]
    with cli_server(*args, "--max-memory", "1GB", port=port) as (_, url, _logs):
        assert httpx.post(url + "/invocations/double", json=xbody(4)).json() == {
            "predictions": [8.0]
        }
        assert {r["name"] for r in httpx.post(url + "/v2/repository/index").json()} == {
            "iris",
            "double",
        }


def test_a_cli_many_models_server_owns_its_process(
    iris: tuple[Path, Any, Any], tmp_path: Path
) -> None:
    # Like the one-model server: torch's threads leave a core to the event loop (the cap is
    # process-wide, so it holds for every torch model served).
    import os

    import torch

    import modelpack
    from tests.servers.conftest import free_port

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    example = torch.ones(2, 4)
    mlp_path = modelpack.save(mlp, tmp_path / "mlp", input_example=example)
    port = free_port()
    args = ["-m", f"iris={iris[0]}", "-m", f"mlp={mlp_path}", "--port", str(port)]
    with cli_server(*args, port=port, drop_env=("OMP_NUM_THREADS",)) as (_, url, logs):
        got = httpx.post(url + "/invocations/mlp", json={"inputs": example.tolist()})
        assert got.status_code == 200, got.text
        want = mlp(example).detach().flatten().tolist()
        assert [row[0] for row in got.json()["predictions"]] == pytest.approx(want, rel=1e-6)
    cores = len(os.sched_getaffinity(0))
    capped = f"torch uses {cores - 1} intra-op thread(s)" in logs["output"]
    assert capped == (cores > 1), logs["output"]
