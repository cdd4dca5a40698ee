"""The SageMaker target's ``-C key=value`` options, checked and typed once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelpack.deploy import check_options, option_bool
from modelpack.errors import InvalidInputError

OPTIONS = {
    "region": "AWS region (default: the AWS configuration's)",
    "role": "ARN of the IAM role SageMaker runs the model with (needed to create/update)",
    "image": "image URI already in ECR to serve the model with (skips the push)",
    "local_image": "local image (e.g. from `modelpack build-image`) to push to ECR",
    "repository": "ECR repository local_image is pushed to (default: modelpack)",
    "registry": "push the image bytes to this registry host instead of the account's ECR",
    "tls_verify": "verify TLS when pushing with podman (default: true)",
    "engine": "podman or docker, to push local_image (default: whichever is installed)",
    "bucket": "S3 bucket for model.tar.gz (default: sagemaker-REGION-ACCOUNT, made if missing)",
    "prefix": "S3 key prefix for model.tar.gz (default: modelpack/NAME)",
    "instance_type": "instance type of the variant (default: ml.m5.large)",
    "instance_count": "instances of the variant (default: 1)",
    "strategy": "update: replace (default; one variant, the new model) or canary",
    "canary_weight": "strategy=canary: share of traffic for the new model (default: 0.1)",
    "batch_input": "predict: s3:// prefix to score with a Batch Transform job",
    "batch_output": "predict: s3:// prefix the Batch Transform job writes to",
    "content_type": "predict: request content type (default: application/json; batch: text/csv)",
    "wait": "predict with batch_input: wait until the Batch Transform job is done (default: true)",
    "trust": "what the container may run when it loads the model: true (everything) or "
    "NAME[,NAME] exact types/classes; set as its MODELPACK_TRUST (default: nothing)",
    "batch_timeout": "predict with batch_input: seconds to wait for the job (default: 1800)",
    "delete_artifacts": "delete: also delete the model.tar.gz objects in S3 (default: false)",
    "model": "predict: the model (by name) of a multi-model endpoint that answers (its "
    "TargetModel NAME.tar.gz)",
}

STRATEGIES = ("replace", "canary")


def _number(key: str, value: Any, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"option {key}={value!r} is not a {kind.__name__}") from None


@dataclass(frozen=True)
class Settings:
    region: str | None = None
    role: str | None = None
    image: str | None = None
    local_image: str | None = None
    repository: str = "modelpack"
    registry: str | None = None
    tls_verify: bool = True
    engine: str | None = None
    bucket: str | None = None
    prefix: str | None = None
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    strategy: str = "replace"
    canary_weight: float = 0.1
    batch_input: str | None = None
    batch_output: str | None = None
    content_type: str | None = None
    wait: bool = True
    batch_timeout: float = 1800.0
    delete_artifacts: bool = False
    trust: str | None = None
    model: str | None = None

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> Settings:
        check_options("sagemaker", OPTIONS, config)
        values: dict[str, Any] = {k: v for k, v in config.items() if v is not None}
        for key in ("tls_verify", "wait", "delete_artifacts"):
            if key in values:
                values[key] = option_bool(key, values[key])
        if "instance_count" in values:
            values["instance_count"] = _number("instance_count", values["instance_count"], int)
        for key in ("canary_weight", "batch_timeout"):
            if key in values:
                values[key] = _number(key, values[key], float)
        stripped: dict[str, Any] = {
            k: v.strip() if isinstance(v, str) else v for k, v in values.items()
        }
        settings = cls(**stripped)
        if settings.strategy not in STRATEGIES:
            raise InvalidInputError(
                f"option strategy={settings.strategy!r}: use one of {', '.join(STRATEGIES)}"
            )
        if not 0 < settings.canary_weight < 1:
            raise InvalidInputError("option canary_weight must be between 0 and 1, e.g. 0.1")
        if settings.image and settings.local_image:
            raise InvalidInputError("give either image (already in ECR) or local_image (to push)")
        return settings
