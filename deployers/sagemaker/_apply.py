"""Carrying out a SageMaker create/update, undoing what it made when a step fails."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from modelpack.deploy import Deployment
from modelpack.deployers.sagemaker import _aws as aws
from modelpack.deployers.sagemaker._options import Settings
from modelpack.errors import DeploymentError

if TYPE_CHECKING:
    from modelpack.deployers.sagemaker._deployer import SageMakerDeployer, _Steps


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
        bucket, key = steps.model_data
        aws.upload_model_tar(session, steps.model_dir, bucket, key, undo)
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
                endpoint = Endpoint.create(
                    endpoint_name=steps.name,
                    endpoint_config_name=config.endpoint_config_name,
                    tags=[Tag(key="modelpack:managed", value="true")],
                    **kw,
                )
            undo.push(f"endpoint {steps.name}", endpoint.delete)
        else:
            with aws.aws_errors(f"update endpoint {steps.name}"):
                endpoint = Endpoint.get(endpoint_name=steps.name, **kw)
                endpoint.endpoint_config_name = config.endpoint_config_name
                endpoint.update()
        if not settings.wait:
            return deployer.status(steps.name, session)
        ready = deployer.wait_ready(steps.name, settings, session)
    except BaseException as exc:
        undo.run()
        if isinstance(exc, DeploymentError) and steps.current is not None:
            raise DeploymentError(f"{exc} (the endpoint keeps its previous model)") from exc
        raise
    _retire(steps.retired, kw)
    return ready


def _retire(names: list[str], kw: dict[str, Any]) -> None:
    """Delete the endpoint config and models the endpoint no longer uses."""
    from sagemaker.core.resources import EndpointConfig

    if not names:
        return
    config, *models = names
    cleanup = aws.Rollback()
    cleanup.push(
        f"endpoint config {config}",
        lambda: EndpointConfig.get(endpoint_config_name=config, **kw).delete(),
    )
    for model in models:
        cleanup.push(f"model {model}", functools.partial(_delete_model, model, kw))
    cleanup.run()


def _delete_model(name: str, kw: dict[str, Any]) -> None:
    from sagemaker.core.resources import Model

    Model.get(model_name=name, **kw).delete()
