"""The ``kubernetes`` deploy target: a Deployment and Service (or a KServe InferenceService)."""

from modelpack.deployers.kubernetes._deployer import KubernetesDeployer

__all__ = ["KubernetesDeployer"]
