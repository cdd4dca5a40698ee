"""The kubernetes target with several models in one server (issue 17).

Rendered manifests are validated against Kubernetes' schemas; a model set is created, updated
and deleted on a real kube-apiserver (no kubelet: a stand-in controller writes the rollout
status), and what the stored pod would run is run here as a kubelet would (volumes under a
temporary folder): its init containers pull an oci:// model from a real registry and fetch a
registered one, then its `modelpack serve ...` answers for each model and on its probe path.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import numpy as np
import pandas as pd
import pytest
from kubernetes import client, config
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack import deploy, oci, registry
from modelpack.cli import main
from modelpack.deploy import ModelSet
from modelpack.deployers.kubernetes import KubernetesDeployer
from modelpack.deployers.kubernetes import _render as render
from modelpack.errors import InvalidInputError
from tests.conftest import free_port
from tests.deployers._kube import FakeController, KubeApi, core_api, new_namespace, stop
from tests.oci.conftest import LocalRegistry, run_registry

BIN = Path(sys.executable).parent  # `modelpack`, `python` and `sh` of the pod's commands
OCI = "oci://registry.example/models/iris:3"


def _documents(model_set: ModelSet, **options: Any) -> list[dict[str, Any]]:
    plan = deploy.plan(KubernetesDeployer(), "zoo", model_set, {"image": "img:1", **options})
    return plan.documents


def _pod_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


# -- rendering -------------------------------------------------------------------------------


def test_each_model_gets_its_init_container_and_the_server_serves_them_by_name(
    tmp_path: Path,
) -> None:
    settings = tmp_path / "models.yaml"
    settings.write_text("iris:\n  max_batch_size: 8\n")
    model_set = ModelSet(
        {"iris": OCI, "Churn_v2": "models:/churn/4", "x.y": "s3://bucket/x"},
        repository="models:/",
        filter="name LIKE 'fraud%'",
        alias="champion",
    )
    docs = _documents(
        model_set, lazy=True, max_memory="2GB", model_config=str(settings), registry_secret="rc"
    )
    assert [d["kind"] for d in docs] == [
        "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"
    ]  # fmt: skip
    assert docs[0]["metadata"]["name"] == "zoo-model-config"
    assert docs[0]["data"] == {"models.yaml": "iris:\n  max_batch_size: 8\n"}
    pod = _pod_of(docs)
    [server] = pod["containers"]
    assert server["args"] == [
        "serve",
        "-m", "iris=/models/iris",
        "-m", "Churn_v2=/models/Churn_v2",
        "-m", "x.y=/models/x.y",
        "--repository", "models:/",
        "--filter", "name LIKE 'fraud%'",
        "--alias", "champion",
        "--max-memory", "2GB",
        "--model-config", "/etc/modelpack/models.yaml",
        "--lazy",
    ]  # fmt: skip
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    pull, fetch_churn, fetch_xy = pod["initContainers"]
    assert pull["name"] == "pull-iris" and pull["command"][3:] == ["pull-iris", OCI, "/models/iris"]
    assert {"name": "DOCKER_CONFIG", "value": render.REGISTRY_AUTH_DIR} in pull["env"]
    assert fetch_churn["name"] == "fetch-churn-v2"
    assert fetch_churn["command"][3:] == ["models:/churn/4", "/models/Churn_v2"]
    assert fetch_xy["name"] == "fetch-x-y" and fetch_xy["command"][3:] == [
        "s3://bucket/x",
        "/models/x.y",
    ]
    assert [v["name"] for v in pod["volumes"]] == ["models", "registry-auth", "model-config"]
    assert pod["volumes"][2]["configMap"] == {"name": "zoo-model-config"}
    # The credentials stay with the pull; the server sees the models and its settings.
    assert [m["name"] for m in server["volumeMounts"]] == ["models", "model-config"]
    assert [m["name"] for m in fetch_churn["volumeMounts"]] == ["models"]


def test_a_followed_alias_is_loaded_by_the_server_and_a_repository_needs_no_volume() -> None:
    model_set = ModelSet({"churn": "models:/churn@champion"}, repository="models:/")
    pod = _pod_of(_documents(model_set, follow_aliases=30))
    [server] = pod["containers"]
    assert server["args"] == [
        "serve", "-m", "churn=models:/churn@champion", "--repository", "models:/",
        "--follow-aliases", "30",
    ]  # fmt: skip
    assert "initContainers" not in pod and "volumes" not in pod
    assert "volumeMounts" not in server


def test_init_container_names_stay_unique_dns_labels() -> None:
    names = {"a_b": OCI, "A.B": OCI, "a-b": OCI, "m" * 100: OCI}
    pod = _pod_of(_documents(ModelSet(names)))
    got = [c["name"] for c in pod["initContainers"]]
    assert got == ["pull-a-b", "pull-a-b-2", "pull-a-b-3", ("pull-" + "m" * 100)[:63]]


def test_a_new_model_config_rolls_the_pods(tmp_path: Path) -> None:
    first, second = tmp_path / "1.yaml", tmp_path / "2.yaml"
    first.write_text("iris: {max_batch_size: 8}\n")
    second.write_text("iris: {max_batch_size: 16}\n")
    digests = [
        _documents(ModelSet({"iris": OCI}), model_config=str(f))[1]["spec"]["template"]["metadata"][
            "annotations"
        ][render.MODEL_CONFIG_ANNOTATION]
        for f in (first, second)
    ]
    assert len(set(digests)) == 2


@pytest.mark.parametrize("version", ["1.25", kubernetes_validate.latest_version()])
def test_model_set_manifests_validate(version: str, tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("iris: {max_batch_size: 8}\n")
    model_set = ModelSet({"iris": OCI, "churn": "models:/churn/1"}, repository="models:/")
    docs = _documents(
        model_set,
        model_config=str(tmp_path / "m.yaml"),
        registry_secret="team.regcred",
        registry_insecure=True,
        lazy=True,
    )
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("modelset:bad/name=oci://r/m:1", {}, "invalid model name 'bad/name'"),
        ("modelset:iris=/tmp/iris", {}, "'/tmp/iris' is not a URI the pod can reach"),
        ("modelset:@repository=/tmp/zoo", {}, "a folder on this machine"),
        (f"modelset:iris={OCI}", {"kserve": True}, "kserve=true serves one model"),
        (f"modelset:iris={OCI}", {"model_source": "image"}, "are fetched into the pod"),
        (f"modelset:iris={OCI}", {"workers": 2}, "runs one worker"),
        ("modelset:c=models:/c/1", {"registry_secret": "rc"}, "apply to an oci:// model"),
        (f"modelset:iris={OCI}", {"max_memory": "lots"}, "option max_memory: --max-memory"),
        (f"modelset:iris={OCI}", {"follow_aliases": 0}, "give seconds between 0.1"),
        (f"modelset:iris={OCI}", {"model_config": "/nonexistent.yaml"}, "No such file"),
        (f"modelset:iris={OCI}", {"model": "iris"}, "option model applies to predict only"),
        (OCI, {"lazy": True}, r"option\(s\) lazy apply to several models"),
    ],
)
def test_a_set_the_pod_cannot_serve_is_refused_in_one_line(
    model: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        KubernetesDeployer().plan("zoo", model, {"image": "img:1", **options})
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("iris: {max_batch_size: many}\n", "max_batch_size must be a number"),
        ("iris: {colour: red}\n", "unknown setting"),
        ("extra: {uri: /tmp/extra}\n", "not a URI the pod can reach"),
        ("[1, 2\n", "is not valid YAML"),
    ],
)
def test_model_config_is_checked_as_the_server_reads_it(
    text: str, message: str, tmp_path: Path
) -> None:
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        _documents(ModelSet({"iris": OCI}), model_config=str(tmp_path / "m.yaml"))


# -- a real kube-apiserver, a real registry, the pod's commands run here -----------------------


@pytest.fixture
def options(kube: KubeApi) -> dict[str, Any]:
    namespace = new_namespace(kube, "modelpack-many")
    return {"kubeconfig": str(kube.kubeconfig), "namespace": namespace, "image": "img:1"}


@pytest.fixture(scope="module")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with run_registry(tmp_path_factory.mktemp("oci-registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(size=(40, 2)), columns=["a", "b"])


def _classifier(frame: pd.DataFrame, column: str, path: Path) -> LogisticRegression:
    clf = LogisticRegression().fit(frame, (frame[column] > 0).astype(int))
    modelpack.save(clf, path, input_example=frame.head(3))
    return clf


@pytest.fixture(scope="module")
def models(
    oci_registry: LocalRegistry, frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """``iris`` pushed to the OCI registry, ``churn`` and ``fraud`` registered here."""
    root = tmp_path_factory.mktemp("models")
    iris = _classifier(frame, "a", root / "iris")
    ref = oci_registry.ref("models/iris:1")
    oci.push(str(root / "iris"), ref)
    churn = _classifier(frame, "b", root / "churn")
    registry.register("churn", root / "churn")
    fraud = _classifier(-frame, "a", root / "fraud")
    registry.register("fraud-detector", root / "fraud")
    return {"iris_ref": ref, "iris": iris, "churn": churn, "fraud": fraud}


def _api(kube: KubeApi) -> Any:
    return config.new_client_from_config(str(kube.kubeconfig))


def _stored(kube: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    """The Deployment as the API server stored it (defaults filled in), as plain JSON."""
    api = _api(kube)
    live = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    stored: dict[str, Any] = api.sanitize_for_serialization(live)
    return stored


class Kubelet:
    """What a kubelet does with the stored pod spec, here: volumes as folders under ``root``
    (a ConfigMap's keys written as files), each container's command run with its mounts and
    environment."""

    def __init__(self, kube: KubeApi, namespace: str, pod: dict[str, Any], root: Path) -> None:
        self.pod, self.root = pod, root
        for volume in pod.get("volumes", []):
            folder = root / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                name = volume["configMap"]["name"]
                data = core_api(kube).read_namespaced_config_map(name, namespace).data
                for key, text in data.items():
                    (folder / key).write_text(text)

    def _remap(self, container: dict[str, Any]) -> Callable[[str], str]:
        mounts = {m["mountPath"]: self.root / m["name"] for m in container.get("volumeMounts", [])}

        def remap(text: str) -> str:
            """A path under a mount (alone, or the URI of ``-m NAME=PATH``) as mounted here."""
            head, sep, path = text.rpartition("=") if text.count("=") == 1 else ("", "", text)
            for mount_path, local in mounts.items():
                if path == mount_path or path.startswith(mount_path + "/"):
                    return head + sep + str(local) + path[len(mount_path) :]
            return text

        return remap

    def _env(self, container: dict[str, Any], remap: Callable[[str], str]) -> dict[str, str]:
        env = {e["name"]: remap(e["value"]) for e in container.get("env", [])}
        return {"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(self.root), **env}

    def run_init_containers(self) -> None:
        for init in self.pod["initContainers"]:
            remap = self._remap(init)
            done = subprocess.run(
                [remap(part) for part in init["command"]],
                env=self._env(init, remap),
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            assert done.returncode == 0, f"{init['name']}: {done.stderr}"

    @contextlib.contextmanager
    def server(self, port: int) -> Iterator[str]:
        """The server container's entrypoint (`modelpack`) with its stored args; SageMaker's
        port variable moves it off the container's 8080."""
        [server] = self.pod["containers"]
        remap = self._remap(server)
        env = {**self._env(server, remap), "SAGEMAKER_BIND_TO_PORT": str(port)}
        log = (self.root / "server.log").open("w")
        proc = subprocess.Popen(
            [str(BIN / "modelpack"), *(remap(a) for a in server["args"])],
            env=env,
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)
            log.close()


def _wait_for(url: str, log: Path, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(url, timeout=2)
            if answer.status_code == 200:
                return answer
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered 200:\n{log.read_text()[-3000:]}")


def test_create_serve_update_and_delete_a_model_set(
    kube: KubeApi,
    options: dict[str, Any],
    models: dict[str, Any],
    frame: pd.DataFrame,
    tmp_path: Path,
) -> None:
    ns = options["namespace"]
    settings = tmp_path / "models.yaml"
    settings.write_text("churn:\n  max_batch_size: 4\n  max_latency_ms: 1\n")
    model_set = ModelSet(
        {"iris": models["iris_ref"], "churn": "models:/churn/1"},
        repository="models:/",
        filter="name LIKE 'fraud%'",
    )
    home = os.environ["MODELPACK_HOME"]  # the registry the pod reaches (MODELPACK_STORE_URI)
    given = {
        **options,
        "env": f"MODELPACK_HOME={home}",
        "max_memory": "1GiB",
        "model_config": str(settings),
        "max_replicas": 0,
    }
    deployer = KubernetesDeployer()
    with FakeController(kube.kubeconfig, ns):
        created = deploy.create(deployer, "zoo", model_set, given, timeout=30)
        assert created.status == "ready" and created.model_uri == model_set.uri

        stored = _stored(kube, ns, "zoo")
        assert stored["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
        pod = stored["spec"]["template"]["spec"]
        [server] = pod["containers"]
        assert server["args"] == [
            "serve",
            "-m", "iris=/models/iris",
            "-m", "churn=/models/churn",
            "--repository", "models:/",
            "--filter", "name LIKE 'fraud%'",
            "--max-memory", "1GiB",
            "--model-config", "/etc/modelpack/models.yaml",
        ]  # fmt: skip
        assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert server["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert [c["name"] for c in pod["initContainers"]] == ["pull-iris", "fetch-churn"]
        assert {v["name"] for v in pod["volumes"]} == {"models", "model-config"}
        config_map = core_api(kube).read_namespaced_config_map("zoo-model-config", ns)
        assert config_map.data == {"models.yaml": settings.read_text()}

        # What the pod would do: pull and fetch into the shared volume, then serve them all.
        kubelet = Kubelet(kube, ns, pod, tmp_path / "pod")
        kubelet.run_init_containers()
        port = free_port()
        with kubelet.server(port) as url:
            probe = server["readinessProbe"]["httpGet"]["path"]
            _wait_for(url + probe, tmp_path / "pod" / "server.log")
            for name, key in (("iris", "iris"), ("churn", "churn"), ("fraud-detector", "fraud")):
                answer = httpx.post(
                    f"{url}/invocations/{name}",
                    json={"dataframe_split": frame.to_dict(orient="split")},
                    timeout=30,
                )
                assert answer.status_code == 200, answer.text
                expected = models[key].predict(frame).tolist()
                assert answer.json()["predictions"] == expected, name
                assert httpx.get(f"{url}/v2/models/{name}/ready").status_code == 200
            metrics = httpx.get(f"{url}/metrics").text
            assert 'modelpack_model_ready{model="iris"} 1' in metrics
            assert 'modelpack_model_ready{model="churn"} 1' in metrics
            index = httpx.post(f"{url}/v2/repository/index", json={}).json()
            assert {row["name"] for row in index} == {"iris", "churn", "fraud-detector"}

        # An update to another set rolls the pods (options kept); a ConfigMap not given any
        # more is removed.
        smaller = ModelSet({"iris": models["iris_ref"]}, repository="models:/")
        updated = deploy.update(
            deployer, "zoo", smaller, {**options, "lazy": True, "model_config": ""}, timeout=30
        )
        assert updated.status == "ready" and updated.model_uri == smaller.uri
        stored = _stored(kube, ns, "zoo")
        assert stored["metadata"]["generation"] == 2
        pod = stored["spec"]["template"]["spec"]
        assert pod["containers"][0]["args"] == [
            "serve", "-m", "iris=/models/iris", "--repository", "models:/",
            "--max-memory", "1GiB", "--lazy",
        ]  # fmt: skip
        assert [c["name"] for c in pod["initContainers"]] == ["pull-iris"]
        assert [v["name"] for v in pod["volumes"]] == ["models"]
        assert not core_api(kube).list_namespaced_config_map(ns).items

        # Back to one model: the many-models options are left behind.
        one = deploy.update(deployer, "zoo", models["iris_ref"], options, timeout=30)
        assert one.status == "ready"
        server = _stored(kube, ns, "zoo")["spec"]["template"]["spec"]["containers"][0]
        assert server["args"] == ["serve"]

        # And a set again, with a ConfigMap; delete removes it with the rest.
        deploy.update(deployer, "zoo", model_set, {**options, "model_config": str(settings)})
        assert core_api(kube).read_namespaced_config_map("zoo-model-config", ns).data
    deployer.delete("zoo", options)
    assert not core_api(kube).list_namespaced_config_map(ns).items
    assert not client.AppsV1Api(_api(kube)).list_namespaced_deployment(ns).items


def test_a_bad_model_name_is_refused_before_anything_is_applied(
    kube: KubeApi, options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["deploy", "create", "-t", "kubernetes", "--name", "zoo", "--no-wait",
              "-m", f"iris={OCI}", "-m", "bad/name=models:/x/1",
              *(f"-C{k}={v}" for k, v in options.items())])  # fmt: skip
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error [invalid_input]: invalid model name 'bad/name'")
    ns = options["namespace"]
    assert not client.AppsV1Api(_api(kube)).list_namespaced_deployment(ns).items
    assert not core_api(kube).list_namespaced_service(ns).items


def test_plan_lists_the_models_and_the_servers_command(
    options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["deploy", "plan", "-t", "kubernetes", "--name", "zoo",
              "-m", f"iris={OCI}", "-m", "churn=models:/churn@champion", "--repository",
              "models:/", "--alias", "champion", "-C", "follow_aliases=30",
              *(f"-C{k}={v}" for k, v in options.items())])  # fmt: skip
    assert exit_info.value.code == 0
    printed = capsys.readouterr()
    out = printed.out + printed.err
    assert f"model iris: {OCI}, pulled by an init container into /models/iris" in out
    assert "model churn: models:/churn@champion, loaded by the server, following its alias" in out
    assert "models of the repository models:/: read by the server" in out
    assert (
        "the server runs: modelpack serve -m iris=/models/iris -m churn=models:/churn@champion "
        "--repository models:/ --alias champion --follow-aliases 30"
    ) in out


def test_predict_names_the_model_of_a_set(options: dict[str, Any]) -> None:
    deployer = KubernetesDeployer()
    model_set = ModelSet({"iris": OCI, "churn": "models:/churn/1"})
    deployer.create("zoo", model_set.uri, options)
    try:
        with pytest.raises(InvalidInputError, match=r"serves several models \(iris, churn\)"):
            deploy.predict(deployer, "zoo", [[1.0, 2.0]], options)
        with pytest.raises(InvalidInputError, match="serves no model 'wine'"):
            deploy.predict(deployer, "zoo", [[1.0, 2.0]], options, model="wine")
    finally:
        deployer.delete("zoo", options)
