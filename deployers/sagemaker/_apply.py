"""Starting a SageMaker create/update (undoing its own steps when one fails), and settling it.

``apply`` makes the model, the endpoint config and the endpoint (or points the endpoint at the
new config) and returns: SageMaker does the rest. An update tags the endpoint with what it may
leave unused (``modelpack:retire-config:NAME``, ``modelpack:retire-model:NAME``: the old config
and models, and the new ones in case SageMaker rolls the update back) and with the config it
wants (``modelpack:update-to``). ``settle``, run by ``get`` once the endpoint is InService,
deletes what the endpoint no longer uses and tells whether the update took.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from modelpack.deploy import Deployment
from modelpack.deployers.sagemaker import _aws as aws
from modelpack.deployers.sagemaker._options import Settings
from modelpack.errors import DeploymentError

if TYPE_CHECKING:
    from modelpack.deployers.sagemaker._deployer import SageMakerDeployer, _Steps

MANAGED_TAG = "modelpack:managed"
RETIRE_TAG = "modelpack:retire-"  # + "config:NAME" or "model:NAME" (a model and its config
# share their name)
UPDATE_TAG = "modelpack:update-to"


def apply(
    deployer: SageMakerDeployer, steps: _Steps, settings: Settings, session: Any
) -> Deployment:
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model
    from sagemaker.core.shapes import ContainerDefinition, ProductionVariant, Tag

    kw = {"session": session, "region": session.region_name}
    undo = aws.Rollback()
    try:
        if steps.push_from:
            aws.push_image(
                session,
                steps.push_from,
                steps.image,
                settings.repository,
                engine=settings.engine,
                tls_verify=settings.tls_verify,
            )
        for key, model_dir in steps.archives.items():
            aws.upload_model_tar(session, model_dir, steps.bucket, key, undo)
        spec = steps.model
        with aws.aws_errors(f"create model {spec['model_name']}"):
            model = Model.create(
                model_name=spec["model_name"],
                primary_container=ContainerDefinition(**spec["primary_container"]),
                execution_role_arn=spec["execution_role_arn"],
                **kw,
            )
        undo.push(f"model {model.model_name}", model.delete)
        config_spec = steps.endpoint_config
        with aws.aws_errors(f"create endpoint config {config_spec['endpoint_config_name']}"):
            config = EndpointConfig.create(
                endpoint_config_name=config_spec["endpoint_config_name"],
                production_variants=[
                    ProductionVariant(**v) for v in config_spec["production_variants"]
                ],
                **kw,
            )
        undo.push(f"endpoint config {config.endpoint_config_name}", config.delete)
        if steps.current is None:
            with aws.aws_errors(f"create endpoint {steps.name}"):
                Endpoint.create(
                    endpoint_name=steps.name,
                    endpoint_config_name=config.endpoint_config_name,
                    tags=[Tag(key=MANAGED_TAG, value="true")],
                    **kw,
                )
        else:
            _tag_update(session, steps, undo)
            with aws.aws_errors(f"update endpoint {steps.name}"):
                endpoint = Endpoint.get(endpoint_name=steps.name, **kw)
                endpoint.endpoint_config_name = config.endpoint_config_name
                endpoint.update()
    except BaseException as exc:
        undo.run()
        if isinstance(exc, DeploymentError) and steps.current is not None:
            raise DeploymentError(f"{exc} (the endpoint keeps its previous model)") from exc
        raise
    return deployer.status(steps.name, session)


def _tag_update(session: Any, steps: _Steps, undo: aws.Rollback) -> None:
    assert steps.current is not None
    client = session.client("sagemaker")
    new_config = steps.endpoint_config["endpoint_config_name"]
    config, *models = steps.retired
    retire = [("config", new_config), ("model", steps.model["model_name"]), ("config", config)]
    retire += [("model", model) for model in models]
    tags = [{"Key": f"{RETIRE_TAG}{kind}:{name}", "Value": "true"} for kind, name in retire]
    tags.append({"Key": UPDATE_TAG, "Value": new_config})
    arn = steps.current["arn"]
    with aws.aws_errors(f"tag endpoint {steps.name}"):
        client.add_tags(ResourceArn=arn, Tags=tags)
    keys = [t["Key"] for t in tags]
    undo.push(f"tags of {steps.name}", lambda: client.delete_tags(ResourceArn=arn, TagKeys=keys))


def settle(current: dict[str, Any], session: Any) -> str | None:
    """On an InService endpoint: delete what an update left unused; why it failed, if it did."""
    client = session.client("sagemaker")
    with aws.aws_errors(f"list the tags of {current['arn']}"):
        listed = client.list_tags(ResourceArn=current["arn"]).get("Tags", [])
    tags = {t["Key"]: t["Value"] for t in listed}
    used = in_use(current)
    wanted = tags.get(UPDATE_TAG)
    done = [UPDATE_TAG] if wanted == current["config"] else []
    unused = []
    for key in tags:
        if key.startswith(RETIRE_TAG):
            kind, _, resource = key.removeprefix(RETIRE_TAG).partition(":")
            if (kind, resource) not in used:
                unused.append((kind, resource))
            done.append(key)
    delete_all(unused, session)
    if done:
        with aws.aws_errors(f"untag {current['arn']}"):
            client.delete_tags(ResourceArn=current["arn"], TagKeys=done)
    if wanted is None or wanted == current["config"]:
        return None
    why = f": {current['reason']}" if current.get("reason") else ""
    return (
        f"the update to endpoint config {wanted} did not take{why}; SageMaker keeps the endpoint "
        f"on {current['config']}, which keeps serving"
    )


def in_use(current: dict[str, Any]) -> set[tuple[str, str]]:
    """The endpoint's config and models as (kind, name): a model and its config share a name."""
    return {("config", current["config"]), *(("model", v["model"]) for v in current["variants"])}


def retired(current: dict[str, Any], session: Any) -> list[tuple[str, str]]:
    """What an unsettled update tagged for deletion: (kind, name) pairs."""
    client = session.client("sagemaker")
    with aws.aws_errors(f"list the tags of {current['arn']}"):
        listed = client.list_tags(ResourceArn=current["arn"]).get("Tags", [])
    found = [t["Key"].removeprefix(RETIRE_TAG) for t in listed if t["Key"].startswith(RETIRE_TAG)]
    return [(kind, name) for kind, _, name in (key.partition(":") for key in found)]


def delete_all(resources: list[tuple[str, str]], session: Any) -> None:
    """Delete these (kind, name) resources, logging those that cannot be."""
    cleanup = aws.Rollback()
    for kind, name in resources:
        cleanup.push(f"{kind} {name}", functools.partial(_delete, kind, name, session))
    cleanup.run()


def _delete(kind: str, name: str, session: Any) -> None:
    from sagemaker.core.resources import EndpointConfig, Model

    kw = {"session": session, "region": session.region_name}
    if kind == "config":
        EndpointConfig.get(endpoint_config_name=name, **kw).delete()
    else:
        Model.get(model_name=name, **kw).delete()
