"""The sagemaker target: control plane against a moto server, container contract with the real
server (``modelpack serve serve`` on what SageMaker would unpack into /opt/ml/model)."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack import deploy
from modelpack.deployers.sagemaker import SageMakerDeployer
from modelpack.errors import DeploymentError, InvalidInputError
from modelpack.testing import check_deployer
from tests.conftest import free_port, skip_or_fail
from tests.servers.conftest import cli_server

ROLE = "arn:aws:iam::123456789012:role/modelpack-test"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelpack:test"
ACCOUNT = "123456789012"


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    return moto_endpoint


def _strip_empty_moto_fields(parsed: dict[str, Any], **_: Any) -> None:
    # TEST ONLY: moto answers empty VpcConfig/DataCaptureConfig objects that real SageMaker
    # omits, and sagemaker-core's validation rejects them.
    for key in ("VpcConfig", "DataCaptureConfig"):
        if parsed.get(key) == {}:
            del parsed[key]


def _emulate_update_endpoint(params: dict[str, Any], **_: Any) -> Any:
    # TEST ONLY: moto has no UpdateEndpoint. Real SageMaker switches the endpoint to the new
    # config in place; here the endpoint is re-created on it (same name and tags), which is
    # what the deployer can observe through DescribeEndpoint afterwards.
    import boto3
    import orjson

    plain = boto3.client("sagemaker")
    request = orjson.loads(params["body"])
    name = request["EndpointName"]
    arn = plain.describe_endpoint(EndpointName=name)["EndpointArn"]
    tags = plain.list_tags(ResourceArn=arn)["Tags"]
    plain.delete_endpoint(EndpointName=name)
    plain.create_endpoint(
        EndpointName=name, EndpointConfigName=request["EndpointConfigName"], Tags=tags
    )
    return SimpleNamespace(status_code=200, headers={}), {"EndpointArn": arn}


def _emulate_rolled_back_update(params: dict[str, Any], **_: Any) -> Any:
    # TEST ONLY: what SageMaker leaves when the new config's instances never pass their health
    # check: it rolls back, and the endpoint is InService on its previous config.
    import boto3
    import orjson

    name = orjson.loads(params["body"])["EndpointName"]
    arn = boto3.client("sagemaker").describe_endpoint(EndpointName=name)["EndpointArn"]
    return SimpleNamespace(status_code=200, headers={}), {"EndpointArn": arn}


def _session(update: Any) -> Any:
    import boto3

    boto = boto3.Session(region_name="us-east-1")
    boto.events.register("after-call.sagemaker", _strip_empty_moto_fields)
    boto.events.register("before-call.sagemaker.UpdateEndpoint", update)
    return boto


@pytest.fixture
def session(aws: str) -> Any:
    return _session(_emulate_update_endpoint)


@pytest.fixture
def deployer(session: Any) -> SageMakerDeployer:
    return SageMakerDeployer(session=session)


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    clf = LogisticRegression().fit(frame, (frame.sum(axis=1) > 0).astype(int))
    path = tmp_path_factory.mktemp("sagemaker") / "iris"
    modelpack.save(clf, path, input_example=frame.head(3))
    return path, clf, frame


def _name() -> str:
    return f"ep-{uuid.uuid4().hex[:8]}"


def _config(**extra: Any) -> dict[str, Any]:
    return {"image": IMAGE, "role": ROLE, "bucket": f"b-{uuid.uuid4().hex[:8]}", **extra}


def _list_all(session: Any, method: str, key: str) -> list[dict[str, Any]]:
    # Every page: the moto server lives for the whole session and its lists grow past one page.
    client, items, token = session.client("sagemaker"), [], None
    while True:
        page = getattr(client, method)(MaxResults=100, **({"NextToken": token} if token else {}))
        items.extend(page[key])
        token = page.get("NextToken")
        if not token:
            return items


def _model_names(session: Any, name: str) -> list[str]:
    # Filtered here: moto's NameContains is not reliable.
    models = _list_all(session, "list_models", "Models")
    return sorted(m["ModelName"] for m in models if m["ModelName"].startswith(f"{name}-"))


def _queue_result(endpoint: str, body: Any) -> None:
    import orjson

    httpx.post(
        f"{endpoint}/moto-api/static/sagemaker/endpoint-results",
        json={
            "account_id": ACCOUNT,
            "region": "us-east-1",
            "results": [{"Body": orjson.dumps(body).decode(), "ContentType": "application/json"}],
        },
    ).raise_for_status()


def test_plan_shows_calls_and_touches_nothing(deployer, session, iris) -> None:
    name, config = _name(), _config()
    plan = deployer.plan(name, str(iris[0]), config)
    text = "\n".join(plan.actions)
    assert plan.image == IMAGE
    assert "s3.put_object s3://" in text and "/model.tar.gz" in text
    for call in ("create_model", "create_endpoint_config", "create_endpoint"):
        assert f"sagemaker.{call} " in text
    assert [next(iter(d)) for d in plan.documents] == [
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
    ]
    container = plan.documents[0]["CreateModel"]["PrimaryContainer"]
    assert container["Image"] == IMAGE and container["ModelDataUrl"].endswith("model.tar.gz")
    assert _model_names(session, name) == []
    buckets = [b["Name"] for b in session.client("s3").list_buckets()["Buckets"]]
    assert config["bucket"] not in buckets


def test_create_predict_get_list_delete(deployer, session, aws, iris) -> None:
    name, config = _name(), _config()
    started = deployer.create(name, str(iris[0]), config)
    assert started.status in ("creating", "ready")  # nothing waited in the deployer
    created = deploy.wait_until(lambda: deployer.get(name, {}), timeout=60)
    assert created.status == "ready" and created.model_uri == str(iris[0])
    assert str(created.endpoint).endswith(f"/endpoints/{name}/invocations")
    [variant] = created.details["variants"]
    assert variant["image"] == IMAGE and variant["weight"] == 1.0

    bucket, key = variant["model_data"].removeprefix("s3://").split("/", 1)
    archive = session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert "modelpack.yaml" in tar.getnames()

    assert deployer.get(name, {}).to_dict()["status"] == "ready"
    assert name in [d.name for d in deployer.list({})]

    _queue_result(aws, {"predictions": [1, 0, 1]})
    assert deployer.predict(name, iris[2].head(3), {}) == [1, 0, 1]

    deployer.delete(name, {"delete_artifacts": "true"})
    with pytest.raises(DeploymentError, match="no SageMaker endpoint named"):
        deployer.get(name, {})
    assert _model_names(session, name) == []
    assert session.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_canary_then_replace(deployer, session, iris, tmp_path) -> None:
    name, config = _name(), _config()
    first = deployer.create(name, str(iris[0]), config)
    second_path = modelpack.save(LogisticRegression().fit(iris[2], [0, 1] * 20), tmp_path / "v2")
    canary = deployer.update(
        name, str(second_path), {**config, "strategy": "canary", "canary_weight": 0.25}
    )
    weights = {v["variant"]: (v["weight"], v["model_uri"]) for v in canary.details["variants"]}
    assert weights == {"primary": (0.75, str(iris[0])), "canary": (0.25, str(second_path))}
    assert canary.model_uri == str(iris[0])  # the primary still takes most traffic

    plan = deployer.plan(name, str(second_path), config)
    assert any(a.startswith(f"sagemaker.update_endpoint {name} (replace)") for a in plan.actions)

    replaced = deployer.update(name, str(second_path), config)
    [variant] = replaced.details["variants"]
    assert variant["model_uri"] == str(second_path) and replaced.model_uri == str(second_path)
    assert _model_names(session, name) == [variant["model"]]  # the retired models are gone
    configs = _list_all(session, "list_endpoint_configs", "EndpointConfigs")
    names = [c["EndpointConfigName"] for c in configs]
    assert [c for c in names if c.startswith(f"{name}-")] == [replaced.details["endpoint_config"]]
    assert first.details["endpoint_config"] != replaced.details["endpoint_config"]
    deployer.delete(name, {})


def test_batch_transform(deployer, session, iris) -> None:
    name, config = _name(), _config()
    deployer.create(name, str(iris[0]), config)
    job = deployer.predict(
        name,
        None,
        {
            "batch_input": f"s3://{config['bucket']}/in/",
            "batch_output": f"s3://{config['bucket']}/out/",
        },
    )
    assert job["status"] in ("Completed", "InProgress")
    described = session.client("sagemaker").describe_transform_job(
        TransformJobName=job["transform_job"]
    )
    assert described["ModelName"] == job["model"]
    assert described["TransformOutput"]["S3OutputPath"] == job["output"]
    deployer.delete(name, {})


def test_failed_create_cleans_up(deployer, session, iris) -> None:
    name, config = _name(), _config(instance_type="ml.bogus")
    with pytest.raises(DeploymentError) as info:
        deployer.create(name, str(iris[0]), config)
    message = str(info.value)
    assert "\n" not in message
    assert "create endpoint config" in message and "ml.bogus" in message
    assert _model_names(session, name) == []  # the model made before the failure is deleted
    assert session.client("s3").list_objects_v2(Bucket=config["bucket"]).get("KeyCount") == 0


def test_create_refuses_an_existing_endpoint(deployer, iris) -> None:
    name, config = _name(), _config()
    deployer.create(name, str(iris[0]), config)
    with pytest.raises(DeploymentError, match="exists: use `modelpack deploy update`"):
        deployer.create(name, str(iris[0]), config)
    deployer.delete(name, {})


def test_bad_options(deployer, iris) -> None:
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\).*colour.*valid: .*bucket"):
        deployer.plan("x", str(iris[0]), {"colour": "red"})
    with pytest.raises(InvalidInputError, match="strategy='blue'"):
        deployer.plan("x", str(iris[0]), _config(strategy="blue"))
    with pytest.raises(DeploymentError, match="-C role="):
        deployer.plan("x", str(iris[0]), {"image": IMAGE})
    with pytest.raises(DeploymentError, match="-C image=URI"):
        deployer.plan("x", str(iris[0]), {"role": ROLE})
    with pytest.raises(DeploymentError, match="not a valid SageMaker endpoint name"):
        deployer.plan("no_underscores", str(iris[0]), _config())
    with pytest.raises(DeploymentError, match="needs a live endpoint"):
        deployer.create("x", str(iris[0]), _config(strategy="canary"))


def test_unreachable_api_is_one_line(monkeypatch, iris) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(DeploymentError) as info:
        SageMakerDeployer().get("anything", {"region": "eu-west-1"})
    assert "\n" not in str(info.value)
    assert "Could not connect to the endpoint URL" in str(info.value)


def test_container_contract_on_the_uploaded_archive(deployer, session, iris, tmp_path) -> None:
    """What SageMaker does with the Model: unpack model.tar.gz into /opt/ml/model, run `serve`."""
    name, config = _name(), _config()
    created = deployer.create(name, str(iris[0]), config)
    bucket, key = created.details["variants"][0]["model_data"].removeprefix("s3://").split("/", 1)
    archive = session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    model_dir = tmp_path / "opt-ml-model"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(model_dir, filter="data")
    port = free_port()
    env = {"MODELPACK_SAGEMAKER_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port)}
    _, clf, frame = iris
    with cli_server("serve", env=env, port=port) as (_, url, _):
        body = {
            "dataframe_split": {
                "columns": list(frame.columns),
                "data": frame.head(5).values.tolist(),
            }
        }
        answer = httpx.post(f"{url}/invocations", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == clf.predict(frame.head(5)).tolist()
        csv = httpx.post(
            f"{url}/invocations",
            content=frame.head(2).to_csv(index=False),
            headers={"content-type": "text/csv"},
            timeout=30,
        )
        assert csv.json()["predictions"] == clf.predict(frame.head(2)).tolist()
    deployer.delete(name, {})


# -- the image push: a local registry (Debian's docker-registry) stands in for ECR's ----------


@pytest.fixture
def local_registry(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("docker-registry")
    if exe is None or shutil.which("podman") is None:
        skip_or_fail("the push test needs podman and docker-registry (apt-get install both)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [str(exe), "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _tiny_image(tmp_path: Path) -> str:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hello").write_text("modelpack\n", encoding="utf-8")
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(rootfs, arcname=".")
    tag = f"localhost/modelpack-push-test:{uuid.uuid4().hex[:8]}"
    subprocess.run(["podman", "import", str(tarball), tag], check=True, capture_output=True)
    return tag


def test_create_pushes_the_local_image(deployer, session, iris, local_registry, tmp_path) -> None:
    local = _tiny_image(tmp_path)
    name = _name()
    config = _config(local_image=local, registry=local_registry, tls_verify=False, engine="podman")
    del config["image"]
    try:
        created = deployer.create(name, str(iris[0]), config)
    finally:
        subprocess.run(["podman", "rmi", "-f", local], check=False, capture_output=True)
    image = created.details["variants"][0]["image"]
    assert image.startswith(f"{local_registry}/modelpack:{name}-")
    tags = httpx.get(f"http://{local_registry}/v2/modelpack/tags/list", timeout=10).json()
    assert image.rsplit(":", 1)[1] in tags["tags"]
    ecr = session.client("ecr")
    assert ecr.describe_repositories(repositoryNames=["modelpack"])["repositories"]
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    assert base64.b64decode(token).startswith(b"AWS:")
    deployer.delete(name, {})


def test_trust_travels_in_the_containers_environment_only_when_given(deployer, iris) -> None:
    def environment(**extra: str) -> dict[str, str]:
        plan = deployer.plan(_name(), str(iris[0]), _config(**extra))
        return dict(plan.documents[0]["CreateModel"]["PrimaryContainer"]["Environment"])

    assert "MODELPACK_TRUST" not in environment()
    assert environment(trust="true")["MODELPACK_TRUST"] == "1"
    assert environment(trust="pkg.A,pkg.B")["MODELPACK_TRUST"] == "pkg.A,pkg.B"


def test_an_update_sagemaker_rolls_back_is_reported_and_cleaned_up(
    deployer, session, aws, iris, tmp_path
) -> None:
    name, config = _name(), _config()
    created = deploy.create(deployer, name, str(iris[0]), config)
    [old] = created.details["variants"]
    second = modelpack.save(LogisticRegression().fit(iris[2], [0, 1] * 20), tmp_path / "v2")
    rolled_back = SageMakerDeployer(session=_session(_emulate_rolled_back_update))
    with pytest.raises(DeploymentError, match="did not take; SageMaker keeps the endpoint on"):
        deploy.update(rolled_back, name, str(second), config, timeout=60)
    now = deployer.get(name, {})
    assert now.status == "failed" and "keeps serving" in now.details["reason"]
    assert now.model_uri == str(iris[0])
    assert now.details["endpoint_config"] == created.details["endpoint_config"]
    assert _model_names(session, name) == [old["model"]]  # the new model went unused: deleted
    replaced = deploy.update(deployer, name, str(second), config, timeout=60)
    assert replaced.status == "ready" and replaced.model_uri == str(second)
    assert "reason" not in replaced.details
    deploy.delete(deployer, name)


def test_passes_check_deployer(deployer, iris) -> None:
    # The emulator runs no container: predictions are the one thing it cannot check.
    check_deployer(deployer, iris[0], _config(), name=_name(), predicts=False, timeout=60)
