"""AWS plumbing for the SageMaker deployer: sessions, errors, model.tar.gz in S3, images in ECR.

boto3 and sagemaker-core are imported here on first use only (the ``sagemaker`` extra).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from modelpack.descriptor import DESCRIPTOR
from modelpack.errors import DeploymentError, MissingDependencyError

log = logging.getLogger("modelpack.deployers.sagemaker")


def boto3_session(region: str | None) -> Any:
    try:
        import boto3
        import sagemaker.core.resources  # noqa: F401  (checked here: the extra installs both)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the sagemaker target needs {exc.name}: pip install 'modelpack[sagemaker]'",
            package=exc.name or "sagemaker-core",
        ) from exc
    session = boto3.Session(region_name=region) if region else boto3.Session()
    if not session.region_name:
        raise DeploymentError(
            "no AWS region is configured: pass -C region=REGION or set AWS_DEFAULT_REGION"
        )
    return session


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Any AWS failure while doing ``action`` becomes one DeploymentError line with its message."""
    from botocore.exceptions import BotoCoreError, ClientError
    from pydantic import ValidationError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        message = error.get("Message") or str(exc)
        raise DeploymentError(
            f"AWS refused to {action}: {error.get('Code', 'Error')}: {_one_line(message)}"
        ) from exc
    except BotoCoreError as exc:
        raise DeploymentError(f"cannot {action}: {_one_line(str(exc))}") from exc
    except ValidationError as exc:
        # sagemaker-core validates the API's answers; an incomplete one lands here.
        first = exc.errors()[0] if exc.errors() else {"msg": str(exc)}
        raise DeploymentError(
            f"unexpected answer from SageMaker to {action}: {exc.title}: "
            f"{'.'.join(map(str, first.get('loc', ())))} {first['msg']}"
        ) from exc


def is_not_found(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, DeploymentError) else exc
    response = getattr(cause, "response", None) or {}
    error = response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    return code in ("ResourceNotFound", "NoSuchKey", "404") or (
        code == "ValidationException" and ("Could not find" in message or "not exist" in message)
    )


class Rollback:
    """Undo steps for a half-done create/update, run newest first when it fails."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, undo: Callable[[], object]) -> None:
        self._steps.append((what, undo))

    def run(self) -> None:
        for what, undo in reversed(self._steps):
            try:
                undo()
            except Exception as exc:  # keep undoing the rest; the original error wins
                log.warning("could not clean up %s: %s", what, _one_line(str(exc)))
        self._steps.clear()


def model_digest(model_dir: Path) -> str:
    # The descriptor holds the sha256 of every file: its own hash names the whole model.
    return hashlib.sha256((model_dir / DESCRIPTOR).read_bytes()).hexdigest()


def account_id(session: Any) -> str:
    with aws_errors("read the AWS account id (sts.get_caller_identity)"):
        return str(session.client("sts").get_caller_identity()["Account"])


def default_bucket(session: Any) -> str:
    return f"sagemaker-{session.region_name}-{account_id(session)}"


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise DeploymentError(f"not an S3 URI: {uri!r} (expected s3://bucket/prefix)")
    return parsed.netloc, parsed.path.lstrip("/")


def upload_model_tar(session: Any, model_dir: Path, bucket: str, key: str, undo: Rollback) -> None:
    """``model.tar.gz`` of the model directory (what SageMaker unpacks into /opt/ml/model)."""
    s3 = session.client("s3")
    with aws_errors(f"find S3 bucket {bucket}"):
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception as exc:
            if not is_not_found(exc):
                raise
            region = session.region_name
            extra = (
                {}
                if region == "us-east-1"
                else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            )
            s3.create_bucket(Bucket=bucket, **extra)
    with aws_errors(f"check s3://{bucket}/{key}"):
        try:
            s3.head_object(Bucket=bucket, Key=key)
            return  # content-addressed: this exact model is there already
        except Exception as exc:
            if not is_not_found(exc):
                raise
    with tempfile.TemporaryDirectory(prefix="modelpack-sagemaker-") as tmp:
        archive = Path(tmp) / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(model_dir.rglob("*")):
                tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
        with aws_errors(f"upload s3://{bucket}/{key}"):
            s3.upload_file(str(archive), bucket, key)
    undo.push(f"s3://{bucket}/{key}", lambda: s3.delete_object(Bucket=bucket, Key=key))


def _engine(name: str | None) -> str:
    for candidate in [name] if name else ["podman", "docker"]:
        if candidate and shutil.which(candidate):
            return candidate
    raise DeploymentError(
        f"no container engine found to push the image ({name or 'podman or docker'}): "
        "install podman (apt-get install podman) or pass -C image=URI of an image already in ECR"
    )


def _run(args: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DeploymentError(f"{' '.join(args[:2])} failed: {_one_line(tail[0])}")


def ecr_registry(session: Any, registry: str | None) -> str:
    if registry:
        return registry
    return f"{account_id(session)}.dkr.ecr.{session.region_name}.amazonaws.com"


def push_image(
    session: Any,
    local_image: str,
    remote: str,
    repository: str,
    *,
    engine: str | None,
    tls_verify: bool,
) -> None:
    """Create the ECR repository if needed, log in with an ECR token, tag and push."""
    from botocore.exceptions import ClientError

    tool = _engine(engine)
    ecr = session.client("ecr")
    with aws_errors(f"create ECR repository {repository}"):
        try:
            ecr.describe_repositories(repositoryNames=[repository])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "RepositoryNotFoundException":
                raise
            ecr.create_repository(repositoryName=repository)
    with aws_errors("get an ECR authorization token"):
        token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, password = base64.b64decode(token).decode().split(":", 1)
    registry = remote.split("/", 1)[0]
    tls = [] if tls_verify or tool != "podman" else ["--tls-verify=false"]
    _run([tool, "login", *tls, "--username", user, "--password-stdin", registry], password)
    _run([tool, "tag", local_image, remote])
    _run([tool, "push", *tls, remote])


_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise DeploymentError(
            f"{name!r} is not a valid SageMaker endpoint name: use letters, digits and "
            "hyphens, at most 63 characters, starting with a letter or digit"
        )
