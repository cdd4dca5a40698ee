"""The sagemaker target's multi-model endpoints (a model set): the control plane against the moto
server, and the container side with the real server driven as SageMaker drives it (an archive
from the emulator's S3 unpacked into a folder, then POST /models, invoke, list, unload)."""

from __future__ import annotations

import io
import shutil
import tarfile
from typing import Any

import httpx
import pytest

from modelpack import deploy
from modelpack.deploy import ModelSet
from modelpack.deployers.local import LocalDeployer
from modelpack.errors import InvalidInputError
from tests.conftest import free_port
from tests.deployers import test_sagemaker as single
from tests.deployers.test_sagemaker import _config, _model_names, _name, _queue_result
from tests.servers.conftest import cli_server, split_body

# The single-model tests' fixtures: the moto server's environment, a session on it, the deployer.
aws, session, deployer = single.aws, single.session, single.deployer


def _objects(session: Any, bucket: str, prefix: str = "") -> list[str]:
    listed = session.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def _archive(session: Any, bucket: str, key: str) -> bytes:
    return bytes(session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def _two(models: dict[str, Any]) -> ModelSet:
    return ModelSet({"a": str(models["a"]), "b": str(models["b"])})


def test_plan_is_a_multi_model_endpoint_on_one_prefix(deployer, session, models) -> None:
    name, config = _name(), _config()
    plan = deploy.plan(deployer, name, _two(models), config)
    container = plan.documents[0]["CreateModel"]["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    prefix = container["ModelDataUrl"]
    assert prefix.startswith(f"s3://{config['bucket']}/modelpack/{name}/") and prefix.endswith("/")
    assert container["Environment"]["SAGEMAKER_MULTI_MODEL"] == "true"
    assert container["Environment"]["MODELPACK_MODEL_URI"] == _two(models).uri
    uploads = [a for a in plan.actions if a.startswith("s3.put_object")]
    assert [u.split()[1] for u in uploads] == [f"{prefix}a.tar.gz", f"{prefix}b.tar.gz"]
    assert plan.model_uri == _two(models).uri
    assert _model_names(session, name) == []  # a plan makes nothing
    buckets = [b["Name"] for b in session.client("s3").list_buckets()["Buckets"]]
    assert config["bucket"] not in buckets
    # One set, one prefix: the same models give the same prefix, another set another one.
    again = deploy.plan(deployer, name, _two(models), config)
    assert again.documents[0]["CreateModel"]["PrimaryContainer"]["ModelDataUrl"] == prefix
    other = deploy.plan(deployer, name, ModelSet({"a": str(models["a"])}), config)
    assert other.documents[0]["CreateModel"]["PrimaryContainer"]["ModelDataUrl"] != prefix


def test_create_predict_update_delete(deployer, session, aws, models) -> None:
    name, config = _name(), _config()
    created = deploy.create(deployer, name, _two(models), config, timeout=60)
    assert created.status == "ready" and created.model_uri == _two(models).uri
    assert created.details["models"] == ["a", "b"]
    [variant] = created.details["variants"]
    assert variant["mode"] == "MultiModel"
    bucket, prefix = variant["model_data"].removeprefix("s3://").split("/", 1)
    assert _objects(session, bucket, prefix) == [f"{prefix}a.tar.gz", f"{prefix}b.tar.gz"]
    with tarfile.open(fileobj=io.BytesIO(_archive(session, bucket, f"{prefix}b.tar.gz"))) as tar:
        assert "modelpack.yaml" in tar.getnames()
        descriptor = tar.extractfile("modelpack.yaml")
        assert descriptor is not None
        assert descriptor.read() == (models["b"] / "modelpack.yaml").read_bytes()

    # predict names the model: SageMaker's TargetModel is its archive under the prefix.
    sent: list[dict[str, Any]] = []
    session.events.register(
        "before-send.sagemaker-runtime.InvokeEndpoint",
        lambda request, **_: sent.append(dict(request.headers)),
    )
    _queue_result(aws, {"predictions": [1, 0]})
    assert deploy.predict(deployer, name, models["frame"].head(2), model="b") == [1, 0]
    assert sent[-1]["X-Amzn-SageMaker-Target-Model"] == b"b.tar.gz"
    with pytest.raises(InvalidInputError, match="invalid model name"):
        deploy.predict(deployer, name, models["frame"].head(2), model="../a")
    with pytest.raises(InvalidInputError, match="multi-model endpoint: a Batch Transform"):
        deployer.predict(
            name, None, {"batch_input": f"s3://{bucket}/in/", "batch_output": f"s3://{bucket}/o/"}
        )

    # Another set: a new prefix and Model; the old Model goes once the endpoint is InService.
    changed = ModelSet({"a": str(models["a"]), "c": str(models["b"])})
    updated = deploy.update(deployer, name, changed, config, timeout=60)
    assert updated.status == "ready" and updated.details["models"] == ["a", "c"]
    [new] = updated.details["variants"]
    assert new["model_data"] != variant["model_data"]
    assert _model_names(session, name) == [new["model"]]

    deployer.delete(name, {"delete_artifacts": "true"})
    assert _model_names(session, name) == []
    # The serving set's archives are deleted; the first set's stay, as a replaced model.tar.gz
    # does (content-addressed: deploying that set again uploads nothing).
    left = [f"{prefix}a.tar.gz", f"{prefix}b.tar.gz"]
    assert _objects(session, bucket, f"modelpack/{name}/") == left


def test_a_repository_folder_is_read_when_deployed(deployer, session, models, tmp_path) -> None:
    folder = tmp_path / "zoo"
    folder.mkdir()
    for model in ("a", "b"):
        shutil.copytree(models[model], folder / f"m-{model}")
    (folder / "not-a-model").mkdir()
    name, config = _name(), _config()
    created = deploy.create(deployer, name, ModelSet(repository=str(folder)), config, timeout=60)
    assert created.details["models"] == ["m-a", "m-b"]
    assert created.model_uri == f"modelset:@repository={folder}"
    deployer.delete(name, {"delete_artifacts": "true"})
    assert _objects(session, config["bucket"]) == []


def test_model_set_mistakes_are_one_line(deployer, models, tmp_path) -> None:
    config = _config()
    with pytest.raises(InvalidInputError, match="invalid model name 'no/slash'"):
        ModelSet({"no/slash": str(models["a"])})
    with pytest.raises(InvalidInputError, match="holds no model"):
        deploy.plan(deployer, _name(), ModelSet(repository=str(tmp_path)), config)
    with pytest.raises(InvalidInputError, match="over the 1024 SageMaker keeps"):
        many = {f"model-{i:03d}": str(models["a"]) for i in range(40)}
        deploy.plan(deployer, _name(), ModelSet(many), config)
    with pytest.raises(InvalidInputError, match="deploys one model per deployment"):
        deploy.plan(LocalDeployer("onnx", runtime="onnx"), "x", _two(models), {})
    with pytest.raises(InvalidInputError, match="serves one model per deployment"):
        deploy.predict(LocalDeployer("onnx", runtime="onnx"), "x", [[1.0]], model="a")


def test_the_container_answers_sagemakers_multi_model_contract(
    deployer, session, models, tmp_path
) -> None:
    """What SageMaker does on an instance of the endpoint: download TargetModel's archive from
    the prefix, unpack it into /opt/ml/models/{model_name}/model, POST /models, invoke..."""
    name, config = _name(), _config()
    created = deploy.create(deployer, name, _two(models), config, timeout=60)
    bucket, prefix = (
        created.details["variants"][0]["model_data"].removeprefix("s3://").split("/", 1)
    )
    opaque = "5f0c1e2d3b4a69788796a5b4c3d2e1f0"  # SageMaker's model_name is not the TargetModel
    url = tmp_path / "models" / opaque / "model"
    with tarfile.open(fileobj=io.BytesIO(_archive(session, bucket, f"{prefix}b.tar.gz"))) as tar:
        tar.extractall(url, filter="data")
    port = free_port()
    env = {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_BIND_TO_PORT": str(port)}
    rows = models["frame"].head(5)
    expected = models["b_clf"].predict(rows).tolist()
    header = {"X-Amzn-SageMaker-Target-Model": "b.tar.gz"}
    with cli_server("serve", env=env, port=port) as (_, base, _logs), httpx.Client() as http:
        assert http.get(f"{base}/models").json() == {"models": []}
        body = {"model_name": opaque, "url": str(url)}
        loaded = http.post(f"{base}/models", json=body, timeout=60)
        assert loaded.status_code == 200, loaded.text
        assert http.post(f"{base}/models", json=body, timeout=60).status_code == 409
        row = {"modelName": opaque, "modelUrl": str(url)}
        assert http.get(f"{base}/models").json() == {"models": [row]}
        assert http.get(f"{base}/models/{opaque}").json() == row
        invoked = http.post(
            f"{base}/models/{opaque}/invoke", json=split_body(rows), headers=header, timeout=30
        )
        assert invoked.status_code == 200, invoked.text
        assert invoked.json()["predictions"] == expected
        missing = http.post(
            f"{base}/models",
            json={"model_name": "gone", "url": str(tmp_path / "nothing")},
            timeout=30,
        )
        assert missing.status_code >= 400 and "gone" not in http.get(f"{base}/models").text
        assert http.delete(f"{base}/models/{opaque}").status_code == 200
        assert http.get(f"{base}/models/{opaque}").status_code == 404
        after = http.post(f"{base}/models/{opaque}/invoke", json=split_body(rows), headers=header)
        assert after.status_code == 404
        assert http.get(f"{base}/models").json() == {"models": []}
    deployer.delete(name, {"delete_artifacts": "true"})


def test_a_canary_of_a_set_then_the_set_alone(deployer, session, models) -> None:
    name, config = _name(), _config()
    deploy.create(deployer, name, str(models["a"]), config, timeout=60)
    canary = deploy.update(
        deployer, name, _two(models), {**config, "strategy": "canary"}, timeout=60
    )
    modes = {v["variant"]: (v["mode"], v["model_uri"]) for v in canary.details["variants"]}
    assert modes == {
        "primary": ("SingleModel", str(models["a"])),
        "canary": ("MultiModel", _two(models).uri),
    }
    assert "models" not in canary.details  # the primary (most traffic) is the single model
    replaced = deploy.update(deployer, name, _two(models), config, timeout=60)
    [variant] = replaced.details["variants"]
    assert variant["mode"] == "MultiModel" and replaced.details["models"] == ["a", "b"]
    assert _model_names(session, name) == [variant["model"]]
    deployer.delete(name, {"delete_artifacts": "true"})
