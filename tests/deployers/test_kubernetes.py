"""The kubernetes target: rendered manifests, options, and a real kube-apiserver with etcd."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from kubernetes import client, config

from modelpack import deploy
from modelpack.deployers.kubernetes import KubernetesDeployer
from modelpack.deployers.kubernetes import _render as render
from modelpack.deployers.kubernetes._options import Settings
from modelpack.errors import DeploymentError, InvalidInputError
from modelpack.plugins import get_plugin
from modelpack.testing import check_deployer
from tests.conftest import free_port
from tests.deployers._kube import NEVER_READY, TOKEN, FakeController, KubeApi, new_namespace

MODEL_URI = "models:/iris/3"


def _settings(**config: Any) -> Settings:
    return Settings.from_config({"image": "registry.local/iris:1", **config})


# -- rendering (no server) -------------------------------------------------------------------


def test_deployment_probes_resources_gpu_and_placement() -> None:
    s = _settings(gpu=1, node_selector="pool=gpu,zone=a", scheduler_name="volcano", cpu="2")
    deployment = render.deployment("iris", "ml", MODEL_URI, s, "registry.local/iris:1")
    pod = deployment["spec"]["template"]["spec"]
    [server] = pod["containers"]
    assert server["args"] == ["serve"]
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert server["resources"]["requests"] == {"cpu": "2", "memory": "1Gi"}
    assert pod["nodeSelector"] == {"pool": "gpu", "zone": "a"}
    assert pod["schedulerName"] == "volcano"
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_fetch_mode_adds_an_init_container_sharing_the_model_volume() -> None:
    s = _settings(model_source="fetch", env={"MODELPACK_ARTIFACT_URI": "s3://bucket/artifacts"})
    pod = render.deployment("iris", "ml", MODEL_URI, s, "img:1")["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["command"][-2:] == [MODEL_URI, "/opt/ml/model"]
    assert {"name": "MODELPACK_ARTIFACT_URI", "value": "s3://bucket/artifacts"} in init["env"]
    assert pod["containers"][0]["volumeMounts"] == init["volumeMounts"]
    assert pod["volumes"] == [{"name": "model", "emptyDir": {}}]


@pytest.mark.parametrize("version", ["1.25", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("source", ["image", "fetch"])
def test_manifests_validate(version: str, source: str) -> None:
    s = _settings(gpu=1, node_selector="pool=gpu", scheduler_name="volcano", model_source=source)
    docs = render.documents("iris", "ml", MODEL_URI, s, "img:1", "autoscaling/v2")
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    if version == "1.25":  # the last version that still has v2beta2
        hpa = render.autoscaler("iris", "ml", MODEL_URI, s, "autoscaling/v2beta2")
        kubernetes_validate.validate(hpa, version, strict=True)


def test_kserve_renders_an_inference_service() -> None:
    [isvc] = render.documents("iris", "ml", MODEL_URI, _settings(kserve=True), "img:1", "")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    [container] = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_options_are_checked_up_front() -> None:
    deployer = KubernetesDeployer()
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\).*colour.*valid: .*image"):
        deployer.plan("iris", MODEL_URI, {"colour": "red"})
    with pytest.raises(InvalidInputError, match="not a Kubernetes quantity"):
        deployer.plan("iris", MODEL_URI, {"cpu": "lots"})
    with pytest.raises(InvalidInputError, match="not a valid Kubernetes name"):
        deployer.plan("Iris_1", MODEL_URI, {})
    with pytest.raises(InvalidInputError, match="model_source=fetch needs a models:/"):
        deployer.plan("iris", "/tmp/model", {"model_source": "fetch"})
    with pytest.raises(InvalidInputError, match="option image is required"):
        deployer.create("iris", MODEL_URI, {})


def test_registered_as_a_plugin() -> None:
    assert isinstance(get_plugin("deployer", "kubernetes"), KubernetesDeployer)


def test_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    options = {"kubeconfig": str(kubeconfig), "image": "img:1"}
    with pytest.raises(
        DeploymentError, match=f"cannot reach the Kubernetes API server at .*{port}"
    ):
        KubernetesDeployer().create("iris", MODEL_URI, options)


# -- against a real kube-apiserver -----------------------------------------------------------


@pytest.fixture
def namespace(kube: KubeApi) -> str:
    return new_namespace(kube, "modelpack-test")


@pytest.fixture
def options(kube: KubeApi, namespace: str) -> dict[str, Any]:
    return {"kubeconfig": str(kube.kubeconfig), "namespace": namespace}


def _apps(kube: KubeApi) -> Any:
    return client.AppsV1Api(config.new_client_from_config(str(kube.kubeconfig)))


def test_plan_discovers_the_hpa_version_and_touches_nothing(
    kube: KubeApi, options: dict[str, Any]
) -> None:
    plan = KubernetesDeployer().plan("iris", MODEL_URI, {**options, "image": "img:1"})
    hpa = plan.documents[-1]
    assert hpa["apiVersion"] == "autoscaling/v2beta2"  # 1.20 serves no autoscaling/v2
    assert any("field manager modelpack" in a for a in plan.actions)
    assert _apps(kube).list_namespaced_deployment(options["namespace"]).items == []


def test_create_update_a_failed_rollout_and_delete(kube: KubeApi, options: dict[str, Any]) -> None:
    deployer = KubernetesDeployer()
    ns = options["namespace"]
    with FakeController(kube.kubeconfig, ns):
        created = deployer.create("iris", MODEL_URI, {**options, "image": "img:1"})
        assert created.status in ("creating", "ready")  # applied; nothing waited
        ready = deploy.wait_until(lambda: deployer.get("iris", options), timeout=30)
        assert ready.status == "ready"
        got = deployer.get("iris", options).to_dict()
        assert {k: got[k] for k in ("name", "target", "model_uri", "status")} == {
            "name": "iris",
            "target": "kubernetes",
            "model_uri": MODEL_URI,
            "status": "ready",
        }
        assert got["endpoint"] == f"http://iris.{ns}.svc:80"
        assert [d.name for d in deployer.list(options)] == ["iris"]

        apps = _apps(kube)
        live = apps.read_namespaced_deployment("iris", ns)
        assert any(m.manager == "modelpack" for m in live.metadata.managed_fields)
        [hpa] = _raw(kube, f"/apis/autoscaling/v2beta2/namespaces/{ns}/horizontalpodautoscalers")
        assert hpa["spec"]["maxReplicas"] == 3

        with pytest.raises(
            DeploymentError, match="exists in namespace .*use `modelpack deploy update"
        ):
            deployer.create("iris", MODEL_URI, {**options, "image": "img:1"})

        # A rolling change: the new image, options kept from create.
        update = {**options, "image": "img:2"}
        updated = deploy.update(deployer, "iris", "models:/iris/4", update, timeout=30)
        assert updated.status == "ready" and updated.model_uri == "models:/iris/4"
        assert _image(apps, ns) == "img:2"

        # A rollout that never becomes ready: the error has the conditions. Nothing is undone:
        # maxUnavailable 0 keeps the old pods serving while the new ones never get ready.
        broken = {**options, "image": f"img:{NEVER_READY}"}
        with pytest.raises(DeploymentError) as info:
            deploy.update(deployer, "iris", "models:/iris/5", broken, timeout=3)
        message = info.value.message
        assert "was not ready after 3 s (status updating" in message
        assert "MinimumReplicasUnavailable" in message and "no pods" in message
        assert "the update was left in progress" in message
        stuck = deployer.get("iris", options)
        assert stuck.status == "updating" and stuck.details["available_replicas"] == 1

        # The next update replaces the stuck rollout.
        fixed = deploy.update(deployer, "iris", "models:/iris/4", update, timeout=30)
        assert fixed.status == "ready" and _image(apps, ns) == "img:2"

    deployer.delete("iris", options)
    assert apps.list_namespaced_deployment(ns).items == []
    assert _raw(kube, f"/api/v1/namespaces/{ns}/services") == []
    assert _raw(kube, f"/apis/autoscaling/v2beta2/namespaces/{ns}/horizontalpodautoscalers") == []
    with pytest.raises(DeploymentError, match="no kubernetes deployment named 'iris'"):
        deployer.delete("iris", options)


def _raw(kube: KubeApi, path: str) -> list[Any]:
    # The client has no class for autoscaling/v2beta2 any more; 1.20 serves only that.
    answer = httpx.get(
        kube.url + path,
        verify=ssl.create_default_context(cafile=str(kube.ca)),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    answer.raise_for_status()
    return list(answer.json()["items"])


def _image(apps: Any, ns: str) -> str:
    live = apps.read_namespaced_deployment("iris", ns)
    return str(live.spec.template.spec.containers[0].image)


def test_refused_manifest_shows_the_server_message_and_leaves_nothing(
    kube: KubeApi, options: dict[str, Any]
) -> None:
    bad = {**options, "image": "img:1", "memory": "2Gi", "memory_limit": "1Gi"}
    with pytest.raises(DeploymentError) as info:
        KubernetesDeployer().create("iris", MODEL_URI, bad)
    assert "refused the Deployment 'iris'" in info.value.message
    assert "must be less than or equal to memory limit" in info.value.message
    assert _apps(kube).list_namespaced_deployment(options["namespace"]).items == []


def test_kserve_without_kserve_installed_is_a_clear_error(options: dict[str, Any]) -> None:
    with pytest.raises(
        DeploymentError, match=r"does not serve InferenceService .*KServe installed"
    ):
        KubernetesDeployer().create("iris", MODEL_URI, {**options, "image": "i:1", "kserve": True})


def test_cli_plan_prints_multi_document_yaml(
    options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from modelpack.cli import main

    args = ["deploy", "plan", "-t", "kubernetes", "--name", "iris", "-m", MODEL_URI]
    for key, value in {**options, "image": "img:1"}.items():
        args += ["-C", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]


def test_trust_reaches_the_containers_args_only_when_given() -> None:
    for given, args in (
        ({}, ["serve"]),
        ({"trust": "true"}, ["serve", "--trust"]),
        ({"trust": "pkg.A,pkg.B"}, ["serve", "--trust-type", "pkg.A", "--trust-type", "pkg.B"]),
    ):
        deployment = render.deployment("iris", "ml", MODEL_URI, _settings(**given), "img:1")
        [server] = deployment["spec"]["template"]["spec"]["containers"]
        assert server["args"] == args


def test_passes_check_deployer(kube: KubeApi, options: dict[str, Any]) -> None:
    # No kubelet runs pods here: predictions are the one thing it cannot check.
    with FakeController(kube.kubeconfig, options["namespace"]):
        check_deployer("kubernetes", MODEL_URI, {**options, "image": "img:1"}, predicts=False)
