"""The ``sagemaker`` deploy target: a SageMaker model, endpoint config and endpoint."""

from modelpack.deployers.sagemaker._deployer import SageMakerDeployer

__all__ = ["SageMakerDeployer"]
