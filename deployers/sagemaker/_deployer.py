"""Amazon SageMaker: image in ECR, ``model.tar.gz`` in S3, Model + EndpointConfig + Endpoint.

Resources are made with sagemaker-core's resource layer on an explicit boto3 session, so
``AWS_ENDPOINT_URL`` (an emulator) is honoured everywhere. ``create``/``update`` start the change
and return; ``get`` reports the endpoint's status and, once it is InService, deletes the config
and models an update left unused (``_apply.settle``). A failed update is SageMaker's to undo: it
rolls the endpoint back to its previous config, which keeps serving, and ``get`` reports
``failed`` until the next update. See docs/deploy/sagemaker.md.

A model set (``modelpack.deploy.ModelSet``) makes a multi-model endpoint: one archive per model,
``NAME.tar.gz`` under one S3 prefix per set (content-addressed: a changed set is a new prefix and
a new Model, so SageMaker's cache of a model by its name cannot serve a stale one), the Model's
container in ``Mode: MultiModel`` on that prefix, and ``predict`` with the ``model`` option sends
``TargetModel=NAME.tar.gz``. The container answers SageMaker's multi-model contract (/models).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from modelpack import trust
from modelpack.deploy import Deployment, ModelSet, Plan
from modelpack.deployers.sagemaker import _apply
from modelpack.deployers.sagemaker import _aws as aws
from modelpack.deployers.sagemaker._apply import MANAGED_TAG
from modelpack.deployers.sagemaker._options import OPTIONS, Settings
from modelpack.errors import DeploymentError, InvalidInputError

MODEL_URI_ENV = "MODELPACK_MODEL_URI"
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"  # what the server reads to answer /models
ARCHIVE = ".tar.gz"  # a set's model NAME is the object NAME.tar.gz (its TargetModel)
_ENV_VALUE_MAX = 1024  # SageMaker's limit on one container environment value
_STATUS = {
    "InService": "ready",
    "Creating": "creating",
    "Updating": "updating",
    "SystemUpdating": "updating",
    "RollingBack": "updating",
    "Deleting": "deleting",
    "OutOfService": "failed",
    "Failed": "failed",
}


def _pascal(value: Any) -> Any:
    """Request bodies as the AWS API spells them (``model_data_url`` -> ``ModelDataUrl``)."""
    if isinstance(value, dict):
        return {
            "".join(p.capitalize() for p in k.split("_")): v if k == "environment" else _pascal(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_pascal(v) for v in value]
    return value


def _body(data: Any) -> bytes:
    """A request body from bytes, text, a JSON body in a modelpack format, or model input."""
    from modelpack import payload

    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, Mapping) and any(k in payload.FORMATS for k in data):
        return payload.dumps(dict(data))
    return payload.dumps(payload.encode_example(data))


def _get(value: Any, default: Any = None) -> Any:
    # sagemaker-core marks absent fields with an Unassigned() instance.
    return default if value is None or type(value).__name__ == "Unassigned" else value


@dataclass
class _Steps:
    """What a create/update will do, computed without side effects (also the plan)."""

    name: str
    model_uri: str
    image: str
    push_from: str | None
    bucket: str
    archives: dict[str, Path]  # S3 key -> the model folder archived there
    model: dict[str, Any]
    endpoint_config: dict[str, Any]
    current: dict[str, Any] | None
    retired: list[str] = field(default_factory=list)


class SageMakerDeployer:
    """``-t sagemaker``: see OPTIONS for the ``-C`` keys."""

    name = "sagemaker"
    options: Mapping[str, str] = OPTIONS
    model_sets = True  # a set is a multi-model endpoint

    def __init__(self, session: Any = None) -> None:
        self._session = session

    # -- Deployer protocol -------------------------------------------------------------------

    def plan(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Plan:
        settings = Settings.parse(config)
        steps = self._steps(name, model_uri, settings, self._boto(settings))
        return self._render(steps, settings)

    def create(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment:
        settings = Settings.parse(config)
        if settings.strategy == "canary":
            raise DeploymentError("strategy=canary needs a live endpoint: use it with update")
        session = self._boto(settings)
        steps = self._steps(name, model_uri, settings, session)
        if steps.current is not None:
            raise DeploymentError(
                f"SageMaker endpoint {name!r} exists: use `modelpack deploy update` to change it"
            )
        return _apply.apply(self, steps, settings, session)

    def update(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment:
        settings = Settings.parse(config)
        session = self._boto(settings)
        steps = self._steps(name, model_uri, settings, session)
        if steps.current is None:
            raise DeploymentError(f"no SageMaker endpoint named {name!r}: create it first")
        return _apply.apply(self, steps, settings, session)

    def delete(self, name: str, config: Mapping[str, Any]) -> None:
        from sagemaker.core.resources import Endpoint, EndpointConfig, Model

        settings = Settings.parse(config)
        session = self._boto(settings)
        current = self._current(name, session)
        if current is None:
            raise DeploymentError(f"no SageMaker endpoint named {name!r}")
        left = _apply.retired(current, session)  # by an update not settled yet
        kw = {"session": session, "region": session.region_name}
        with aws.aws_errors(f"delete endpoint {name}"):
            Endpoint.get(endpoint_name=name, **kw).delete()
        with aws.aws_errors(f"delete endpoint config {current['config']}"):
            EndpointConfig.get(endpoint_config_name=current["config"], **kw).delete()
        for variant in current["variants"]:
            with aws.aws_errors(f"delete model {variant['model']}"):
                Model.get(model_name=variant["model"], **kw).delete()
            data = variant.get("model_data")
            if settings.delete_artifacts and data:
                _delete_artifacts(data, session)
        _apply.delete_all([r for r in left if r not in _apply.in_use(current)], session)

    def get(self, name: str, config: Mapping[str, Any]) -> Deployment:
        settings = Settings.parse(config)
        return self.status(name, self._boto(settings))

    def list(self, config: Mapping[str, Any]) -> list[Deployment]:
        from sagemaker.core.resources import Endpoint

        settings = Settings.parse(config)
        session = self._boto(settings)
        client = session.client("sagemaker")
        found = []
        with aws.aws_errors("list SageMaker endpoints"):
            for endpoint in Endpoint.get_all(session=session, region=session.region_name):
                tags = client.list_tags(ResourceArn=endpoint.endpoint_arn).get("Tags", [])
                if any(t["Key"] == MANAGED_TAG for t in tags):
                    found.append(endpoint.endpoint_name)
        return [self.get(n, config) for n in sorted(found)]

    def predict(self, name: str, data: Any, config: Mapping[str, Any]) -> Any:
        settings = Settings.parse(config)
        if settings.batch_input or settings.batch_output:
            return self.batch_transform(name, settings)
        session = self._boto(settings)
        runtime = session.client("sagemaker-runtime")
        target = {}
        if settings.model is not None:  # a model of a multi-model endpoint
            from modelpack._names import check_model_name

            target["TargetModel"] = check_model_name(settings.model) + ARCHIVE
        with aws.aws_errors(f"invoke endpoint {name}"):
            answer = runtime.invoke_endpoint(
                EndpointName=name,
                Body=_body(data),
                ContentType=settings.content_type or "application/json",
                Accept="application/json",
                **target,
            )
            raw = answer["Body"].read()
        try:
            result = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw.decode(errors="replace")
        # The modelpack server answers {"predictions": ...}; other containers may not.
        if isinstance(result, dict) and set(result) == {"predictions"}:
            return result["predictions"]
        return result

    # -- Batch Transform ---------------------------------------------------------------------

    def batch_transform(self, name: str, settings: Settings) -> dict[str, Any]:
        """Score ``batch_input`` with the endpoint's primary model into ``batch_output``."""
        from sagemaker.core.resources import TransformJob
        from sagemaker.core.shapes import (
            TransformDataSource,
            TransformInput,
            TransformOutput,
            TransformResources,
            TransformS3DataSource,
        )

        if not (settings.batch_input and settings.batch_output):
            raise DeploymentError("a Batch Transform needs both -C batch_input= and batch_output=")
        aws.split_s3(settings.batch_input), aws.split_s3(settings.batch_output)
        session = self._boto(settings)
        current = self._current(name, session)
        if current is None:
            raise DeploymentError(f"no SageMaker endpoint named {name!r}")
        primary = max(current["variants"], key=lambda v: v["weight"])
        if primary["mode"] == "MultiModel":
            raise InvalidInputError(
                f"endpoint {name!r} is a multi-model endpoint: a Batch Transform job scores "
                "one model (deploy that model on an endpoint of its own)"
            )
        job = f"{name[:40]}-{time.strftime('%Y%m%d%H%M%S')}"
        source = TransformS3DataSource(s3_data_type="S3Prefix", s3_uri=settings.batch_input)
        with aws.aws_errors(f"create Batch Transform job {job}"):
            created = TransformJob.create(
                transform_job_name=job,
                model_name=primary["model"],
                transform_input=TransformInput(
                    data_source=TransformDataSource(s3_data_source=source),
                    content_type=settings.content_type or "text/csv",
                    split_type="None",
                ),
                transform_output=TransformOutput(
                    s3_output_path=settings.batch_output, accept="application/json"
                ),
                transform_resources=TransformResources(
                    instance_type=settings.instance_type,
                    instance_count=settings.instance_count,
                ),
                session=session,
                region=session.region_name,
            )
        status = _get(created.transform_job_status, "InProgress")
        deadline = time.monotonic() + settings.batch_timeout
        while settings.wait and status == "InProgress" and time.monotonic() < deadline:
            time.sleep(5)
            with aws.aws_errors(f"describe Batch Transform job {job}"):
                created.refresh()
            status = _get(created.transform_job_status, "InProgress")
        if status in ("Failed", "Stopped"):
            reason = _get(created.failure_reason, "no reason given")
            raise DeploymentError(f"Batch Transform job {job} {status.lower()}: {reason}")
        return {
            "transform_job": job,
            "status": status,
            "model": primary["model"],
            "input": settings.batch_input,
            "output": settings.batch_output,
        }

    # -- internals ---------------------------------------------------------------------------

    def _boto(self, settings: Settings) -> Any:
        return self._session or aws.boto3_session(settings.region)

    def _current(self, name: str, session: Any) -> dict[str, Any] | None:
        from sagemaker.core.resources import Endpoint, EndpointConfig, Model

        kw = {"session": session, "region": session.region_name}
        try:
            with aws.aws_errors(f"describe endpoint {name}"):
                endpoint = Endpoint.get(endpoint_name=name, **kw)
        except DeploymentError as exc:
            if aws.is_not_found(exc):
                return None
            raise
        config_name = endpoint.endpoint_config_name
        with aws.aws_errors(f"describe endpoint config {config_name}"):
            config = EndpointConfig.get(endpoint_config_name=config_name, **kw)
        variants = []
        for variant in config.production_variants:
            with aws.aws_errors(f"describe model {variant.model_name}"):
                model = Model.get(model_name=variant.model_name, **kw)
            container = _get(model.primary_container)
            env = _get(container.environment, {}) if container else {}
            variants.append(
                {
                    "variant": variant.variant_name,
                    "model": variant.model_name,
                    "model_uri": env.get(MODEL_URI_ENV),
                    "model_data": _get(container.model_data_url) if container else None,
                    "mode": _get(container.mode, "SingleModel") if container else None,
                    "image": _get(container.image) if container else None,
                    "weight": float(_get(variant.initial_variant_weight, 1.0)),
                    "instance_type": _get(variant.instance_type),
                    "instance_count": _get(variant.initial_instance_count, 1),
                }
            )
        return {
            "status": endpoint.endpoint_status,
            "reason": _get(endpoint.failure_reason),
            "arn": endpoint.endpoint_arn,
            "config": config_name,
            "variants": variants,
        }

    def _deployment(
        self, name: str, current: dict[str, Any], session: Any, failed_update: str | None
    ) -> Deployment:
        primary = max(current["variants"], key=lambda v: v["weight"])
        url = f"https://runtime.sagemaker.{session.region_name}.amazonaws.com"
        reason = failed_update or current["reason"]
        models = {}
        if primary["mode"] == "MultiModel" and primary["model_data"]:
            models = {"models": _archived_models(primary["model_data"], session)}
        return Deployment(
            name=name,
            target=self.name,
            model_uri=primary["model_uri"] or "",
            status="failed"
            if failed_update
            else _STATUS.get(current["status"], current["status"].lower()),
            endpoint=f"{url}/endpoints/{name}/invocations",
            details={
                "endpoint_status": current["status"],
                "endpoint_arn": current["arn"],
                "endpoint_config": current["config"],
                "variants": current["variants"],
                **models,
                **({"reason": reason} if reason else {}),
            },
        )

    def _steps(self, name: str, model_uri: str, settings: Settings, session: Any) -> _Steps:
        from modelpack.uris import resolve

        aws.check_name(name)
        model_set = ModelSet.parse(model_uri)
        if model_set is None:
            model_dir = resolve(model_uri)
            digest = aws.model_digest(model_dir)
        else:
            folders = _set_folders(model_set)
            digest = _set_digest(folders)
            if len(model_uri) > _ENV_VALUE_MAX:
                raise InvalidInputError(
                    f"the model set's URI is {len(model_uri)} characters, over the "
                    f"{_ENV_VALUE_MAX} SageMaker keeps in the container's environment: serve a "
                    "folder of the models with --repository DIR"
                )
        # Unique per call: two updates with one model in one second must not share a name
        # (the second would delete the config it had just made as the "old" one).
        stamp = f"{digest[:8]}-{time.strftime('%y%m%d%H%M%S')}{secrets.token_hex(2)}"
        resource = f"{name[:36]}-{stamp}"
        if settings.image:
            image, push_from = settings.image, None
        elif settings.local_image:
            registry = aws.ecr_registry(session, settings.registry)
            image = f"{registry}/{settings.repository}:{name}-{digest[:12]}"
            push_from = settings.local_image
        else:
            raise DeploymentError(
                "the sagemaker target needs an image: -C image=URI (already in ECR) or "
                "-C local_image=TAG (built by `modelpack build-image`, pushed to ECR)"
            )
        if not settings.role:
            raise DeploymentError(
                "SageMaker runs the model with an IAM role: "
                "pass -C role=arn:aws:iam::ACCOUNT:role/NAME"
            )
        bucket = settings.bucket or aws.default_bucket(session)
        folder = f"{(settings.prefix or f'modelpack/{name}').strip('/')}/{digest[:16]}"
        environment = {MODEL_URI_ENV: str(model_uri), **_trust_env(settings.trust)}
        if model_set is None:
            archives = {f"{folder}/model.tar.gz": model_dir}
            container = {"image": image, "model_data_url": f"s3://{bucket}/{folder}/model.tar.gz"}
        else:
            archives = {f"{folder}/{n}{ARCHIVE}": path for n, path in folders.items()}
            container = {
                "image": image,
                "mode": "MultiModel",
                "model_data_url": f"s3://{bucket}/{folder}/",
            }
            environment[MULTI_MODEL_ENV] = "true"
        model = {
            "model_name": resource,
            "primary_container": {**container, "environment": environment},
            "execution_role_arn": settings.role,
        }
        current = self._current(name, session)
        new_variant = {
            "variant_name": "primary",
            "model_name": resource,
            "initial_instance_count": settings.instance_count,
            "instance_type": settings.instance_type,
            "initial_variant_weight": 1.0,
        }
        variants = [new_variant]
        if current is not None and settings.strategy == "canary":
            old = max(current["variants"], key=lambda v: v["weight"])
            variants = [
                {
                    "variant_name": "primary",
                    "model_name": old["model"],
                    "initial_instance_count": old["instance_count"],
                    "instance_type": old["instance_type"],
                    "initial_variant_weight": round(1 - settings.canary_weight, 6),
                },
                {
                    **new_variant,
                    "variant_name": "canary",
                    "initial_variant_weight": settings.canary_weight,
                },
            ]
        kept = {v["model_name"] for v in variants}
        retired = []
        if current is not None:
            retired = [current["config"]] + [
                v["model"] for v in current["variants"] if v["model"] not in kept
            ]
        return _Steps(
            name=name,
            model_uri=str(model_uri),
            image=image,
            push_from=push_from,
            bucket=bucket,
            archives=archives,
            model=model,
            endpoint_config={"endpoint_config_name": resource, "production_variants": variants},
            current=current,
            retired=retired,
        )

    def _render(self, steps: _Steps, settings: Settings) -> Plan:
        actions = []
        if steps.push_from:
            repo = steps.image.split("/", 1)[1].rsplit(":", 1)[0]
            actions += [
                f"ecr.create_repository {repo} (if missing)",
                "ecr.get_authorization_token",
                f"push image {steps.push_from} -> {steps.image}",
            ]
        for key, folder in steps.archives.items():
            actions.append(f"s3.put_object s3://{steps.bucket}/{key} (of {folder}, if missing)")
        actions.append(f"sagemaker.create_model {steps.model['model_name']}")
        config_name = steps.endpoint_config["endpoint_config_name"]
        weights = ", ".join(
            f"{v['variant_name']}={v['model_name']}@{v['initial_variant_weight']:g}"
            for v in steps.endpoint_config["production_variants"]
        )
        actions.append(f"sagemaker.create_endpoint_config {config_name} ({weights})")
        endpoint = {"endpoint_name": steps.name, "endpoint_config_name": config_name}
        if steps.current is None:
            actions.append(f"sagemaker.create_endpoint {steps.name}")
            endpoint["tags"] = [{"key": MANAGED_TAG, "value": "true"}]
            call = "CreateEndpoint"
        else:
            actions.append(f"sagemaker.update_endpoint {steps.name} ({settings.strategy})")
            call = "UpdateEndpoint"
        actions.append(f"`get` reports {steps.name} until it is InService")
        actions += [f"`get` deletes {r} once InService without it" for r in steps.retired]
        return Plan(
            target=self.name,
            name=steps.name,
            model_uri=steps.model_uri,
            actions=actions,
            documents=[
                {"CreateModel": _pascal(steps.model)},
                {"CreateEndpointConfig": _pascal(steps.endpoint_config)},
                {call: _pascal(endpoint)},
            ],
            image=steps.image,
        )

    def status(self, name: str, session: Any) -> Deployment:
        current = self._current(name, session)
        if current is None:
            raise DeploymentError(f"no SageMaker endpoint named {name!r}")
        failed_update = None
        if current["status"] == "InService":
            failed_update = _apply.settle(current, session)
        return self._deployment(name, current, session, failed_update)


def _set_folders(model_set: ModelSet) -> dict[str, Path]:
    """Name -> local folder of every model of a set (a repository read now: an endpoint's
    models are archives, fixed when it is made)."""
    from modelpack.servers.http._sources import Repository, combine
    from modelpack.uris import resolve

    repository = (
        Repository(model_set.repository, model_set.filter, model_set.alias)
        if model_set.repository
        else None
    )
    uris = combine(repository, model_set.models)  # -m names: ModelSet checked them
    if not uris:
        raise InvalidInputError(f"the repository {model_set.repository} holds no model")
    return {name: resolve(uri) for name, uri in sorted(uris.items())}


def _set_digest(folders: Mapping[str, Path]) -> str:
    lines = "".join(f"{name} {aws.model_digest(path)}\n" for name, path in folders.items())
    return hashlib.sha256(lines.encode()).hexdigest()


def _delete_artifacts(data: str, session: Any) -> None:
    """The model.tar.gz, or every archive under a multi-model endpoint's prefix."""
    bucket, key = aws.split_s3(data)
    s3 = session.client("s3")
    keys = (
        [key]
        if not key.endswith("/")
        else [f"{key}{n}{ARCHIVE}" for n in _archived_models(data, session)]
    )
    for each in keys:
        with aws.aws_errors(f"delete s3://{bucket}/{each}"):
            s3.delete_object(Bucket=bucket, Key=each)


def _archived_models(prefix_uri: str, session: Any) -> list[str]:
    """The models of a multi-model endpoint: the NAME.tar.gz objects under its prefix."""
    bucket, prefix = aws.split_s3(prefix_uri)
    s3, names = session.client("s3"), []
    with aws.aws_errors(f"list {prefix_uri}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"].removeprefix(prefix)
                if key.endswith(ARCHIVE) and "/" not in key:
                    names.append(key.removesuffix(ARCHIVE))
    return sorted(names)


def _trust_env(value: str | None) -> dict[str, str]:
    # SageMaker starts the image with the one argument `serve`: trust travels in its environment.
    granted = trust.parse(value)
    if not granted:
        return {}
    return {trust.TRUST_ENV: "1" if granted is True else ",".join(granted)}
