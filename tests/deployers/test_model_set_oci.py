"""A model set read from an OCI registry's namespace (``--repository oci://HOST/NAMESPACE``,
``--filter GLOB``, ``--alias TAG``): accepted by ``ModelSet``, and served by the local target's
many-models server, which reads the catalog itself (a real docker-registry on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelpack import deploy, oci
from modelpack.deploy import ModelSet
from modelpack.deployers.local import LocalDeployer
from modelpack.errors import InvalidInputError, ServerUnavailableError
from modelpack.plugins import get_plugin
from tests.deployers import test_sagemaker as sagemaker
from tests.deployers.conftest import READY_S, run_cli
from tests.oci.conftest import LocalRegistry, run_registry

# The sagemaker tests' fixtures: the moto server's environment, a session on it, the deployer.
aws, session, deployer = sagemaker.aws, sagemaker.session, sagemaker.deployer


@pytest.fixture(scope="module")
def team(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Any]
) -> Iterator[LocalRegistry]:
    """A registry without auth: team/a:v1, team/b:v1, team/c:v0 (not at v1), other/d:v1."""
    with run_registry(tmp_path_factory.mktemp("oci-team")) as registry:
        for repo, key in (("team/a:v1", "a"), ("team/b:v1", "b"), ("team/c:v0", "a")):
            oci.push(str(models[key]), registry.ref(repo))
        oci.push(str(models["a"]), registry.ref("other/d:v1"))
        yield registry


@pytest.mark.parametrize("repository", ["oci://registry.example/team", "models:/"])
def test_filter_and_alias_apply_to_a_registry_or_an_oci_namespace(repository: str) -> None:
    model_set = ModelSet(repository=repository, filter="a*", alias="v1")
    assert ModelSet.parse(model_set.uri) == model_set
    assert model_set.describe() == [
        f"every model of the repository {repository} matching 'a*' at alias 'v1'"
    ]


@pytest.mark.parametrize(("glob", "tag"), [("a*", None), (None, "v1")])
def test_filter_and_alias_are_refused_for_a_folder(glob: str | None, tag: str | None) -> None:
    with pytest.raises(InvalidInputError, match="apply to --repository models:/ or oci://"):
        ModelSet(repository="/srv/zoo", filter=glob, alias=tag)


def test_the_local_target_serves_the_namespace_through_the_server(
    home: Path, models: dict[str, Any], team: LocalRegistry
) -> None:
    local: LocalDeployer = get_plugin("deployer", "local")
    namespace = team.ref("team")
    model_set = ModelSet(repository=namespace, alias="v1")
    plan = deploy.plan(local, "team", model_set)
    [start] = [a for a in plan.actions if a.startswith("start: ")]
    assert f"--repository {namespace} --alias v1" in start  # as given: the server reads it

    created = deploy.create(local, "team", model_set, timeout=READY_S)
    assert created.status == "ready" and created.model_uri == model_set.uri
    # c has no v1, d is outside the namespace.
    assert sorted(created.details["models"]) == ["a", "b"]
    rows = models["frame"].head(4)
    assert deploy.predict(local, "team", rows, model="a") == models["a_clf"].predict(rows).tolist()
    assert deploy.predict(local, "team", rows, model="b") == models["b_clf"].predict(rows).tolist()

    narrowed = ModelSet(repository=namespace, filter="b", alias="v1")
    updated = deploy.update(local, "team", narrowed, timeout=READY_S)
    assert updated.status == "ready" and sorted(updated.details["models"]) == ["b"]
    local.delete("team", {})


def test_registry_insecure_reads_the_namespace_over_http_too(team: LocalRegistry) -> None:
    from modelpack.deployers.kubernetes import KubernetesDeployer

    # 0.0.0.0 reaches this host's registry, but is no loopback name: https unless insecure.
    port = team.host.rsplit(":", 1)[1]
    namespace = f"oci://0.0.0.0:{port}/team"
    model_set = ModelSet(repository=namespace, alias="v1")
    deployer = KubernetesDeployer()
    with pytest.raises(ServerUnavailableError, match=f"https://0.0.0.0:{port}") as info:
        deployer.plan("team", model_set.uri, {"image": "img:1"})
    assert "\n" not in info.value.message

    plan = deployer.plan("team", model_set.uri, {"image": "img:1", "registry_insecure": True})
    [pod] = [d["spec"]["template"]["spec"] for d in plan.documents if d["kind"] == "Deployment"]
    digests = {k: oci.manifest_digest(team.ref(f"team/{k}:v1")) for k in ("a", "b")}
    assert [i["command"][3:] for i in pod["initContainers"]] == [
        [f"pull-{k}", f"{namespace}/{k}:v1@{digests[k]}", f"/models/{k}", "--insecure"]
        for k in ("a", "b")
    ]


def test_sagemaker_archives_each_model_of_the_namespace_when_deployed(
    deployer: Any, team: LocalRegistry
) -> None:
    name, config = sagemaker._name(), sagemaker._config()
    model_set = ModelSet(repository=team.ref("team"), filter="[ab]", alias="v1")
    created = deploy.create(deployer, name, model_set, config, timeout=60)
    assert created.details["models"] == ["a", "b"]  # pulled here, each one archive
    assert created.model_uri == model_set.uri
    deployer.delete(name, {"delete_artifacts": "true"})


def test_the_cli_plans_a_namespace_for_kubernetes(home: Path, team: LocalRegistry) -> None:
    namespace = team.ref("team")
    done = run_cli(
        "deploy", "plan", "-t", "kubernetes", "--name", "team", "--repository", namespace,
        "--filter", "a", "--alias", "v1", "-C", "image=img:1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    digest = oci.manifest_digest(team.ref("team/a:v1"))
    # The actions as comments on stderr, the manifests on stdout.
    assert f"model a: {namespace}/a:v1@{digest}, from the repository {namespace}" in done.stderr
    assert "the server runs: modelpack serve -m a=/models/a" in done.stderr
    assert f"{namespace}/a:v1@{digest}" in done.stdout and "/b:v1" not in done.stdout

    refused = run_cli(
        "deploy", "plan", "-t", "kubernetes", "--name", "team", "--repository", namespace,
        "--alias", "v2", "-C", "image=img:1",
    )  # fmt: skip
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    # Each repository left out is logged as the server logs it; then the one-line error.
    *left_out, error = refused.stderr.strip().splitlines()
    assert left_out == [
        f"--repository {namespace}: team/{r} has no tag 'v2': left out" for r in ("a", "b", "c")
    ]
    assert error == (
        f"error [invalid_input]: --repository {namespace}: no repository has the tag 'v2': "
        "nothing to deploy from it"
    )
