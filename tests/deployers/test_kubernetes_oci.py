"""The kubernetes target with an oci:// model: an init container pulls it with `modelpack pull`.

Rendered manifests are validated against Kubernetes' schemas; created ones are read back from a
real kube-apiserver, and what the init container would run is run here (paths remapped to a
temporary folder, as a kubelet mounts volumes) against a real OCI registry with auth.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import numpy as np
import pandas as pd
import pytest
from kubernetes import client, config
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack import deploy, oci
from modelpack._image_requirements import build_wheel, source_checkout
from modelpack.cli import main
from modelpack.deploy import ModelSet
from modelpack.deployers.kubernetes import KubernetesDeployer
from modelpack.deployers.kubernetes import _render as render
from modelpack.deployers.kubernetes._options import Settings
from modelpack.errors import InvalidInputError
from modelpack.image import ImageOptions, write_context
from tests.deployers._kube import FakeController, KubeApi, core_api, new_namespace
from tests.oci.conftest import PASSWORD, USER, LocalRegistry, run_registry

REF = "oci://registry.example/models/iris:3"
BIN = Path(sys.executable).parent  # `modelpack` and `sh` of the init container's command


def _settings(**options: Any) -> Settings:
    return Settings.from_config({"image": "img:1", **options})


def _pod(ref: str = REF, **options: Any) -> dict[str, Any]:
    doc = render.deployment("iris", "ml", ref, _settings(**options), "img:1")
    pod: dict[str, Any] = doc["spec"]["template"]["spec"]
    return pod


# -- rendering -------------------------------------------------------------------------------


def test_an_oci_model_is_pulled_into_a_shared_volume_by_the_image_itself() -> None:
    pod = _pod(env="MODELPACK_HOME=/tmp/mp")
    [init] = pod["initContainers"]
    [server] = pod["containers"]
    assert init["name"] == "pull-model" and init["image"] == server["image"] == "img:1"
    assert init["command"][:2] == ["sh", "-c"]
    assert init["command"][3:] == ["pull-model", REF, "/models/iris"]
    assert (
        init["volumeMounts"]
        == server["volumeMounts"]
        == [{"name": "models", "mountPath": "/models"}]
    )
    assert pod["volumes"] == [{"name": "models", "emptyDir": {}}]
    assert {"name": "MODELPACK_SAGEMAKER_MODEL_DIR", "value": "/models/iris"} in server["env"]
    assert init["env"] == [{"name": "MODELPACK_HOME", "value": "/tmp/mp"}]
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert init["securityContext"]["runAsNonRoot"] is True


def test_registry_secret_becomes_the_pulls_docker_config() -> None:
    pod = _pod(registry_secret="regcred", registry_insecure=True)
    [init] = pod["initContainers"]
    assert init["command"][-1] == "--insecure"
    assert {"name": "DOCKER_CONFIG", "value": render.REGISTRY_AUTH_DIR} in init["env"]
    assert {
        "name": "registry-auth",
        "mountPath": render.REGISTRY_AUTH_DIR,
        "readOnly": True,
    } in init["volumeMounts"]
    assert pod["volumes"][1] == {
        "name": "registry-auth",
        "secret": {
            "secretName": "regcred",
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
        },
    }
    # The server never sees the credentials.
    [server] = pod["containers"]
    assert all(m["name"] != "registry-auth" for m in server["volumeMounts"])


def test_a_baked_oci_model_needs_no_pull() -> None:
    pod = _pod(model_source="image")
    assert "initContainers" not in pod and "volumes" not in pod


@pytest.mark.parametrize("version", ["1.25", kubernetes_validate.latest_version()])
def test_oci_manifests_validate(version: str) -> None:
    s = _settings(registry_secret="team.regcred", registry_insecure=True)
    for doc in render.documents("iris", "ml", REF, s, "img:1", "autoscaling/v2"):
        kubernetes_validate.validate(doc, version, strict=True)


def test_kserve_pulls_with_the_init_container_or_hands_kserve_the_storage_uri() -> None:
    [ours] = render.documents("iris", "ml", REF, _settings(kserve=True), "img:1", "")
    predictor = ours["spec"]["predictor"]
    assert [c["name"] for c in predictor["initContainers"]] == ["pull-model"]
    assert predictor["containers"][0]["name"] == "kserve-container"

    s = _settings(kserve=True, model_source="kserve")
    [theirs] = render.documents("iris", "ml", REF, s, "img:1", "")
    predictor = theirs["spec"]["predictor"]
    [container] = predictor["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["STORAGE_URI"] == REF  # a custom predictor's storageUri
    assert env["MODELPACK_SAGEMAKER_MODEL_DIR"] == "/mnt/models"
    assert "initContainers" not in predictor and "volumes" not in predictor
    # The predictor's pod spec is a core PodSpec: it validates as one.
    pod = {k: v for k, v in predictor.items() if k not in ("minReplicas", "maxReplicas")}
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod},
        kubernetes_validate.latest_version(),
        strict=True,
    )


@pytest.mark.parametrize(
    ("uri", "options", "message"),
    [
        (REF, {"model_source": "kserve"}, "model_source=kserve needs kserve=true"),
        ("models:/iris/3", {"kserve": True, "model_source": "kserve"}, "KServe's storage reads"),
        ("models:/iris/3", {"registry_secret": "regcred"}, "apply to an oci:// model"),
        (REF, {"model_source": "image", "registry_insecure": True}, "apply to an oci:// model"),
        (REF, {"registry_secret": "Reg_Cred"}, "is not a Secret name"),
        ("/tmp/model", {"model_source": "fetch"}, "s3:// or oci:// URI the pod can reach"),
    ],
)
def test_oci_options_are_checked_before_anything_is_sent(
    uri: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        KubernetesDeployer().plan("iris", uri, {"image": "img:1", **options})


# -- a real kube-apiserver, a real registry --------------------------------------------------


@pytest.fixture
def options(kube: KubeApi) -> dict[str, Any]:
    namespace = new_namespace(kube, "modelpack-oci")
    return {"kubeconfig": str(kube.kubeconfig), "namespace": namespace, "image": "img:1"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    import bcrypt

    root = tmp_path_factory.mktemp("oci-registry")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    (root / "htpasswd").write_text(f"{USER}:{hashed}\n", encoding="utf-8")
    with run_registry(root, htpasswd=root / "htpasswd") as reg:
        yield reg


@pytest.fixture(scope="module")
def pushed(
    registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(30, 2)), columns=["a", "b"])
    clf = LogisticRegression().fit(frame, (frame["a"] > 0).astype(int))
    path = tmp_path_factory.mktemp("oci-model") / "clf"
    modelpack.save(clf, path, input_example=frame.head(3))
    ref = registry.ref("models/clf:1")
    oci.push(str(path), ref, username=USER, password=PASSWORD)
    return ref, clf, frame


def _stored_pod(kube: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    """The pod template as the API server stored it (defaults filled in), as plain JSON."""
    api = config.new_client_from_config(str(kube.kubeconfig))
    live = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    pod: dict[str, Any] = api.sanitize_for_serialization(live.spec.template.spec)
    return pod


def _registry_secret(kube: KubeApi, namespace: str, registry: LocalRegistry) -> None:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    docker_config = json.dumps({"auths": {registry.host: {"auth": auth}}})
    core_api(kube).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "regcred"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(docker_config.encode()).decode()},
        },
    )


def _run_init(
    kube: KubeApi, namespace: str, pod: dict[str, Any], root: Path
) -> subprocess.CompletedProcess[str]:
    """Run the init container's command as a kubelet would: volumes mounted (here under
    ``root``), the Secret's items written as files, the container's environment set."""
    [init] = pod["initContainers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: root / m["name"] for m in init["volumeMounts"]}
    for m in init["volumeMounts"]:
        secret = volumes[m["name"]].get("secret")
        mounts[m["mountPath"]].mkdir(parents=True, exist_ok=True)
        if secret:
            data = core_api(kube).read_namespaced_secret(secret["secretName"], namespace).data
            for item in secret["items"]:
                text = base64.b64decode(data[item["key"]])
                (mounts[m["mountPath"]] / item["path"]).write_bytes(text)

    def remap(text: str) -> str:  # a path under a mount; anything else as it is
        for mount_path, local in mounts.items():
            if text == mount_path or text.startswith(mount_path + "/"):
                return str(local) + text[len(mount_path) :]
        return text

    env = {e["name"]: remap(e["value"]) for e in init.get("env", [])}
    return subprocess.run(
        [remap(part) for part in init["command"]],
        env={"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(root), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_create_and_update_from_oci_on_a_real_apiserver(
    kube: KubeApi,
    options: dict[str, Any],
    registry: LocalRegistry,
    pushed: tuple[str, LogisticRegression, pd.DataFrame],
    tmp_path: Path,
) -> None:
    ref, clf, frame = pushed
    ns = options["namespace"]
    _registry_secret(kube, ns, registry)
    deployer = KubernetesDeployer()
    given = {**options, "registry_secret": "regcred"}
    with FakeController(kube.kubeconfig, ns):
        created = deploy.create(deployer, "clf", ref, given, timeout=30)
        assert created.status == "ready" and created.model_uri == ref

        pod = _stored_pod(kube, ns, "clf")
        [init] = pod["initContainers"]
        assert init["command"][3:] == ["pull-model", ref, "/models/clf"]
        assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert {v["name"] for v in pod["volumes"]} == {"models", "registry-auth"}
        assert pod["volumes"][1]["secret"]["secretName"] == "regcred"
        [server] = pod["containers"]
        assert {"name": "MODELPACK_SAGEMAKER_MODEL_DIR", "value": "/models/clf"} in server["env"]

        # What the pod would do: pull with the Secret's credentials into the shared volume...
        pulled = _run_init(kube, ns, pod, tmp_path / "pod")
        assert pulled.returncode == 0, pulled.stderr
        model_dir = tmp_path / "pod" / "models" / "clf"
        loaded = modelpack.load(str(model_dir))
        assert loaded.predict(frame).tolist() == clf.predict(frame).tolist()
        # ...and, run again over the same volume (a recreated pod sandbox), keep that model.
        again = _run_init(kube, ns, pod, tmp_path / "pod")
        assert again.returncode == 0 and "was pulled before" in again.stdout

        # An update to another tag rolls the pods with the new reference (options kept).
        newer = registry.ref("models/clf:2")
        oci.push(str(model_dir), newer, username=USER, password=PASSWORD)
        updated = deploy.update(deployer, "clf", newer, options, timeout=30)
        assert updated.status == "ready" and updated.model_uri == newer
        pod = _stored_pod(kube, ns, "clf")
        assert pod["initContainers"][0]["command"][4] == newer
        assert pod["volumes"][1]["secret"]["secretName"] == "regcred"
    deployer.delete("clf", options)


def test_a_failing_pull_is_the_reason_get_reports(
    kube: KubeApi,
    options: dict[str, Any],
    pushed: tuple[str, LogisticRegression, pd.DataFrame],
    tmp_path: Path,
) -> None:
    ref, _, _ = pushed
    ns = options["namespace"]
    deployer = KubernetesDeployer()
    deployer.create("clf", ref, options)  # no Secret: the registry will refuse the pull
    pod = _stored_pod(kube, ns, "clf")
    failed = _run_init(kube, ns, pod, tmp_path / "pod")
    assert failed.returncode != 0
    # The kubelet's part: a pod of the Deployment whose init container keeps failing, its
    # stderr the termination message (FallbackToLogsOnError).
    core = core_api(kube)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
    labels = render.labels("clf")
    spec = {**pod, "automountServiceAccountToken": False}  # no token controller runs here
    core.create_namespaced_pod(ns, {"metadata": {"name": "clf-1", "labels": labels}, "spec": spec})
    init_status = {
        "name": "pull-model",
        "image": "img:1",
        "imageID": "",
        "ready": False,
        "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        "lastState": {"terminated": {"exitCode": failed.returncode, "message": failed.stderr}},
    }
    core.patch_namespaced_pod_status(
        "clf-1", ns, {"status": {"phase": "Pending", "initContainerStatuses": [init_status]}}
    )
    reason = deployer.get("clf", options).details["reason"]
    assert "pull-model waiting (CrashLoopBackOff" in reason
    last_line = failed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error [")
    assert f"pull-model exited {failed.returncode}: {last_line}" in reason
    deployer.delete("clf", options)


# -- build-image from an oci:// reference -----------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = source_checkout()
    assert source is not None, "the tests run from a checkout"
    return build_wheel(source, tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def docker_config(registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This host's credentials for the registry, where `docker login` would put them."""
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    folder = tmp_path / "docker"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))


@pytest.mark.usefixtures("docker_config")
def test_build_image_bakes_an_oci_model_pulled_on_the_host(
    pushed: tuple[str, LogisticRegression, pd.DataFrame], wheel: Path, tmp_path: Path
) -> None:
    ref, clf, frame = pushed
    context = write_context(ref, tmp_path / "ctx", ImageOptions(modelpack_wheel=wheel))
    baked = modelpack.load(str(context / "model"))
    assert baked.predict(frame).tolist() == clf.predict(frame).tolist()
    digest = oci.pull(ref, tmp_path / "again").digest
    dockerfile = (context / "Dockerfile").read_text()
    assert f"dev.modelpack.model-uri={json.dumps(ref)}" in dockerfile
    assert f"dev.modelpack.model-digest={json.dumps(digest)}" in dockerfile
    assert "COPY model/ /opt/ml/model/" in dockerfile
    assert "scikit-learn" in (context / "requirements.txt").read_text()


@pytest.mark.usefixtures("docker_config")
def test_build_image_can_leave_an_oci_model_to_the_container(
    pushed: tuple[str, LogisticRegression, pd.DataFrame], wheel: Path, tmp_path: Path
) -> None:
    ref, _, _ = pushed
    options = ImageOptions(modelpack_wheel=wheel, fetch_model=True)
    context = write_context(ref, tmp_path / "ctx", options)
    dockerfile = (context / "Dockerfile").read_text()
    assert f"ENV MODELPACK_SAGEMAKER_MODEL_DIR={json.dumps(ref)}" in dockerfile
    assert "model-digest" not in dockerfile and not (context / "model").exists()


def test_build_image_refuses_insecure_without_an_oci_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["build-image", "models:/iris/1", "-t", "m:1", "--insecure", "--context-only",
              str(tmp_path / "ctx")])  # fmt: skip
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error [invalid_input]: --insecure applies to an oci:// model baked into the image"
    )


def test_build_image_reports_a_refused_pull_in_one_line(
    pushed: tuple[str, LogisticRegression, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref, _, _ = pushed
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody"))  # no credentials
    with pytest.raises(SystemExit) as exit_info:
        main(["build-image", ref, "-t", "m:1", "--context-only", str(tmp_path / "ctx")])
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error [unauthenticated]: ")
    assert not (tmp_path / "ctx" / "model").exists()


# -- a model set read from an OCI namespace -------------------------------------------------


@pytest.fixture(scope="module")
def team(
    registry: LocalRegistry,
    pushed: tuple[str, LogisticRegression, pd.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """team/a:v1 and team/b:v1 (two models), team/c:v0 (not at v1), outside/d:v1."""
    _, _, frame = pushed
    base = tmp_path_factory.mktemp("team")
    found: dict[str, Any] = {"frame": frame}
    for key, labels in (("a", frame["a"] > 0), ("b", frame["a"] <= 0)):
        clf = LogisticRegression().fit(frame, labels.astype(int))
        modelpack.save(clf, base / key, input_example=frame.head(3))
        found[key], found[f"{key}_clf"] = base / key, clf
    for repo, key in (
        ("team/a:v1", "a"),
        ("team/b:v1", "b"),
        ("team/c:v0", "a"),
        ("outside/d:v1", "a"),
    ):
        oci.push(str(found[key]), registry.ref(repo), username=USER, password=PASSWORD)
    return found


def _pinned(registry: LocalRegistry, repo: str) -> str:
    """``oci://HOST/REPO:TAG@DIGEST`` of what the tag names now."""
    return f"{registry.ref(repo)}@{oci.manifest_digest(registry.ref(repo))}"


def _pulls(pod: dict[str, Any]) -> dict[str, str]:
    """Init container name -> the reference it pulls."""
    return {i["name"]: i["command"][4] for i in pod["initContainers"]}


@pytest.mark.usefixtures("docker_config")
def test_a_namespace_is_pinned_by_digest_and_read_again_by_update(
    kube: KubeApi,
    options: dict[str, Any],
    registry: LocalRegistry,
    team: dict[str, Any],
    tmp_path: Path,
) -> None:
    ns = options["namespace"]
    _registry_secret(kube, ns, registry)
    deployer = KubernetesDeployer()
    namespace = registry.ref("team")
    model_set = ModelSet(repository=namespace, alias="v1")
    given = {**options, "registry_secret": "regcred"}
    pinned = {key: _pinned(registry, f"team/{key}:v1") for key in ("a", "b")}

    plan = deploy.plan(deployer, "team", model_set, given)
    for key in ("a", "b"):
        assert (
            f"model {key}: {pinned[key]}, from the repository {namespace}, its tag pinned now by "
            f"digest; pulled by an init container into /models/{key}"
        ) in plan.actions
    assert "the server runs: modelpack serve -m a=/models/a -m b=/models/b" in plan.actions

    with FakeController(kube.kubeconfig, ns):
        created = deploy.create(deployer, "team", model_set, given, timeout=30)
        assert created.status == "ready" and created.model_uri == model_set.uri
        pod = _stored_pod(kube, ns, "team")
        assert _pulls(pod) == {"pull-a": pinned["a"], "pull-b": pinned["b"]}
        [server] = pod["containers"]
        assert server["args"] == ["serve", "-m", "a=/models/a", "-m", "b=/models/b"]
        assert {v["name"] for v in pod["volumes"]} == {"models", "registry-auth"}
        api = config.new_client_from_config(str(kube.kubeconfig))
        live = api.sanitize_for_serialization(
            client.AppsV1Api(api).read_namespaced_deployment("team", ns)
        )
        assert live["metadata"]["annotations"][render.MODEL_URI_ANNOTATION] == model_set.uri

        # What pull-a does in the pod (the Secret's credentials), and the model it leaves.
        one = {**pod, "initContainers": pod["initContainers"][:1]}
        pulled = _run_init(kube, ns, one, tmp_path / "pod")
        assert pulled.returncode == 0, pulled.stderr
        frame = team["frame"]
        loaded = modelpack.load(str(tmp_path / "pod" / "models" / "a"))
        assert loaded.predict(frame).tolist() == team["a_clf"].predict(frame).tolist()

        # The tag v1 of team/a moves to another model, and team/e:v1 comes: update reads the
        # namespace again (options kept), the pods roll onto the new digest and the new model.
        oci.push(str(team["b"]), registry.ref("team/a:v1"))
        oci.push(str(team["a"]), registry.ref("team/e:v1"))
        moved = oci.manifest_digest(registry.ref("team/a:v1"))
        assert not pinned["a"].endswith(moved)
        updated = deploy.update(deployer, "team", model_set, options, timeout=30)
        assert updated.status == "ready" and updated.model_uri == model_set.uri
        pod = _stored_pod(kube, ns, "team")
        assert _pulls(pod) == {
            "pull-a": f"{registry.ref('team/a:v1')}@{moved}",
            "pull-b": pinned["b"],
            "pull-e": _pinned(registry, "team/e:v1"),
        }
        assert pod["volumes"][1]["secret"]["secretName"] == "regcred"
    deployer.delete("team", options)


@pytest.mark.usefixtures("docker_config", "team")
def test_a_namespace_filter_a_clash_and_an_empty_namespace(
    options: dict[str, Any], registry: LocalRegistry
) -> None:
    deployer = KubernetesDeployer()
    namespace = registry.ref("team")
    narrowed = deployer.plan(
        "team", ModelSet(repository=namespace, filter="b*", alias="v1").uri, options
    )
    [pod] = [d["spec"]["template"]["spec"] for d in narrowed.documents if d["kind"] == "Deployment"]
    assert list(_pulls(pod)) == ["pull-b"]
    assert pod["containers"][0]["args"] == ["serve", "-m", "b=/models/b"]

    # -m models come first; the namespace's models follow, pinned.
    mixed = ModelSet(
        {"clf": registry.ref("models/clf:1")}, repository=namespace, filter="b", alias="v1"
    )
    [pod] = [
        d["spec"]["template"]["spec"]
        for d in deployer.plan("team", mixed.uri, options).documents
        if d["kind"] == "Deployment"
    ]
    assert list(_pulls(pod)) == ["pull-clf", "pull-b"]

    cases = [
        (ModelSet({"b": registry.ref("models/clf:1")}, repository=namespace, alias="v1"),
         f"the model name 'b' is both in -m and in the repository {namespace}"),
        (ModelSet(repository=namespace, alias="v9"),
         f"--repository {namespace}: no repository has the tag 'v9': nothing to deploy from it"),
        (ModelSet(repository=namespace, filter="z*"),
         f"--repository {namespace}: no repository matching 'z*' has the tag 'latest'"),
    ]  # fmt: skip
    for model_set, message in cases:
        with pytest.raises(InvalidInputError) as info:
            deployer.plan("team", model_set.uri, options)
        assert info.value.message.startswith(message) and "\n" not in info.value.message
