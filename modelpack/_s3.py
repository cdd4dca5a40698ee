"""S3 (boto3, imported here only): a blob store, and model directories under an ``s3://`` prefix.

boto3 honours ``AWS_ENDPOINT_URL``, which is how tests point it at a local emulator.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from modelpack._artifact_paths import _staging, blob_key, cache_root, safe_relpath
from modelpack.descriptor import DESCRIPTOR, Descriptor, verify_manifest
from modelpack.errors import ArtifactError, MissingDependencyError, ModelNotFoundError


def _client() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise MissingDependencyError(
            "S3 needs boto3: pip install 'modelpack[s3]'", package="boto3"
        ) from exc
    return boto3.client("s3")


def split_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ArtifactError(f"not an S3 URI: {uri!r} (expected s3://bucket/prefix)")
    return parsed.netloc, parsed.path.strip("/")


def _is_missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class S3ArtifactStore:
    """Blobs under ``s3://bucket/prefix/sha256/ab/<hash>``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.bucket, self.prefix = split_uri(uri)
        self._s3: Any = None

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = _client()
        return self._s3

    def _key(self, sha256: str) -> str:
        return f"{self.prefix}/{blob_key(sha256)}" if self.prefix else blob_key(sha256)

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(sha256))
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise ArtifactError(f"cannot reach {self.uri}: {exc}") from exc
        return True

    def local_path(self, sha256: str) -> Path | None:
        return None

    def put_file(self, path: Path, sha256: str | None = None) -> str:
        from modelpack._fs import sha256_file

        digest = sha256 or sha256_file(path)
        if not self.exists(digest):
            # An S3 PUT is atomic: a killed upload leaves no object behind.
            self.s3.upload_file(str(path), self.bucket, self._key(digest))
        return digest

    def get_file(self, sha256: str, dest: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            self.s3.download_file(self.bucket, self._key(sha256), str(dest))
        except ClientError as exc:
            raise ArtifactError(f"blob {sha256} is missing from {self.uri}: {exc}") from exc

    def total_bytes(self) -> int:
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        return sum(obj["Size"] for page in pages for obj in page.get("Contents", []))


def download_model(uri: str) -> Path:
    """A model directory stored as plain files under an S3 prefix, downloaded and verified."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_uri(uri)
    s3 = _client()
    key = f"{prefix}/{DESCRIPTOR}" if prefix else DESCRIPTOR
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        target = cache_root() / "models" / hashlib.sha256(body).hexdigest()
        if (target / DESCRIPTOR).is_file():
            return target
        with _staging(target) as tmp:
            (tmp / DESCRIPTOR).write_bytes(body)
            descriptor = Descriptor.read(tmp)
            for rel in descriptor.files:
                dest = tmp / safe_relpath(rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, f"{prefix}/{rel}" if prefix else rel, str(dest))
            verify_manifest(tmp, descriptor.files)
    except ClientError as exc:
        if _is_missing(exc) or "NoSuchBucket" in str(exc):
            raise ModelNotFoundError(
                f"no model at {uri}: a file under it is missing ({exc})"
            ) from exc
        raise ArtifactError(f"cannot read {uri}: {exc}") from exc
    except BotoCoreError as exc:  # no credentials, no endpoint: one line, not a traceback
        raise ArtifactError(f"cannot read {uri}: {exc}") from exc
    return target
