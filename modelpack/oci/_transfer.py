"""Push a model directory as an artifact; pull one into a verified model directory."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from modelpack.descriptor import DESCRIPTOR, Descriptor, verify_manifest
from modelpack.errors import IntegrityError, InvalidInputError, InvalidModelError, ModelExistsError
from modelpack.oci import _layout
from modelpack.oci._client import Registry
from modelpack.oci._reference import DEFAULT_TAG, Reference, parse

DEFAULT_CHUNK_SIZE = 16 << 20
MAX_CONFIG = 4 << 20


@dataclass(frozen=True)
class PushResult:
    reference: str  # oci://HOST/REPO:TAG@sha256:...
    digest: str
    blobs: int
    uploaded: int  # blobs the registry lacked
    uploaded_bytes: int


@dataclass(frozen=True)
class PullResult:
    reference: str
    digest: str
    path: Path


def push(
    model_uri: str | Path,
    reference: str,
    *,
    insecure: bool = False,
    username: str | None = None,
    password: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PushResult:
    from modelpack._artifact_paths import cache_root
    from modelpack.artifacts import check_manifest_paths
    from modelpack.uris import resolve

    ref = parse(reference)
    if ref.digest:
        raise InvalidInputError(f"{reference}: push to a tag (oci://HOST/REPO:TAG), not a digest")
    if chunk_size < 1:
        raise InvalidInputError(f"chunk size {chunk_size} must be positive")
    tag = ref.tag or DEFAULT_TAG
    state_dir = cache_root() / "oci" / "uploads"
    model_dir = resolve(model_uri)
    descriptor = Descriptor.read(model_dir)
    check_manifest_paths(descriptor)
    verify_manifest(model_dir, descriptor.files, cached=True)
    name, version = _name_version(str(model_uri), ref.repository, tag)
    with (
        tempfile.TemporaryDirectory(prefix="modelpack-oci-") as tmp,
        Registry(ref, insecure=insecure, username=username, password=password) as registry,
    ):
        work = Path(tmp)
        artifact = _layout.build(model_dir, descriptor, work, name=name, version=version)
        (work / "config.json").write_bytes(artifact.config)
        blobs = [(artifact.config_digest, len(artifact.config), work / "config.json")]
        blobs += [(layer.digest, layer.size, layer.source) for layer in artifact.layers]
        uploaded = uploaded_bytes = 0
        for digest, size, source in dict.fromkeys(blobs):
            if not registry.has_blob(digest):
                registry.upload_blob(digest, size, source, chunk_size, state_dir)
                uploaded += 1
                uploaded_bytes += size
        digest = registry.put_manifest(artifact.manifest, tag)
    pinned = Reference(ref.host, ref.repository, tag, digest)
    return PushResult(str(pinned), digest, len(blobs), uploaded, uploaded_bytes)


def _name_version(model_uri: str, repository: str, tag: str) -> tuple[str, str]:
    if model_uri.startswith("models:/"):
        parts = model_uri.removeprefix("models:/").split("/")
        if len(parts) == 2 and parts[1].isdigit():
            return parts[0], parts[1]
        return parts[0].split("@")[0], tag
    return repository.rsplit("/", 1)[-1], tag


def pull(
    reference: str,
    directory: str | Path,
    *,
    insecure: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> PullResult:
    """Into a new folder, atomically; into an existing empty one (a mounted volume) file by file,
    the descriptor last, so that a half-pulled folder is never taken for a model."""
    from modelpack._fs import atomic_directory

    ref = parse(reference)
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ModelExistsError(f"{target} exists and is not an empty folder; pull into a new one")
    with Registry(ref, insecure=insecure, username=username, password=password) as registry:
        if not target.exists():
            with atomic_directory(target) as tmp:
                digest = fetch(registry, tmp)
        else:
            stage = target / f".pull.tmp-{uuid.uuid4().hex[:8]}"
            stage.mkdir()
            try:
                digest = fetch(registry, stage)
                entries = sorted(stage.iterdir(), key=lambda p: p.name == DESCRIPTOR)
                for entry in entries:
                    entry.rename(target / entry.name)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
    return PullResult(str(ref.with_digest(digest)), digest, target)


def fetch(registry: Registry, root: Path, manifest: tuple[bytes, str, str] | None = None) -> str:
    """Every layer of the artifact into the empty folder ``root``, each blob checked against its
    digest as it streams, then the model's own manifest; the manifest's digest."""
    body, media_type, digest = manifest or registry.get_manifest()
    where = str(registry.ref.with_digest(digest))
    data = _layout.check_manifest(body, media_type, where)
    config = data["config"]
    if not isinstance(config.get("size"), int) or config["size"] > MAX_CONFIG:
        raise InvalidModelError(f"{where}: the config blob is missing a size or larger than 4 MiB")
    buffer = io.BytesIO()
    registry.read_blob(str(config["digest"]), config["size"], buffer)
    try:
        parsed = json.loads(buffer.getvalue())
    except ValueError as exc:
        raise InvalidModelError(f"{where}: the model config blob is not JSON") from exc
    if not isinstance(parsed, dict) or "modelfs" not in parsed:
        raise InvalidModelError(f"{where}: the model config has no modelfs")
    written: set[str] = set()
    streamed: dict[str, str] = {}  # file -> the sha256 its blob was checked against
    for layer in data["layers"]:
        kind = str(layer.get("mediaType") or "")
        _layout.check_layer_type(kind, where)
        if _layout.is_tar(kind):
            blob = root / f".layer-{uuid.uuid4().hex[:8]}.tar"
            try:
                with open(blob, "wb") as out:
                    registry.read_blob(layer["digest"], layer["size"], out)
                files = _layout.extract_tar(blob, root, where)
            except FileExistsError as exc:
                raise InvalidModelError(
                    f"{where}: two layers hold the file {exc.filename}"
                ) from exc
            finally:
                blob.unlink(missing_ok=True)
            written.update(files)
            continue
        rel = _layout.layer_path(layer, where)
        if rel in written:
            raise InvalidModelError(f"{where}: two layers hold the file {rel}")
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "xb") as out:
            registry.read_blob(layer["digest"], layer["size"], out)
        written.add(rel)
        if str(layer["digest"]).startswith("sha256:"):  # what read_blob hashed it with
            streamed[rel] = str(layer["digest"]).removeprefix("sha256:")
    _check_model(root, data, where, streamed)
    return digest


def _check_model(
    root: Path, manifest: dict[str, object], where: str, streamed: dict[str, str]
) -> None:
    from modelpack.artifacts import check_manifest_paths

    path = root / DESCRIPTOR
    if not path.is_file():
        raise InvalidModelError(
            f"{where} is a model artifact without {DESCRIPTOR}: not a modelpack model "
            f"(push a model directory with `modelpack push`)"
        )
    annotations = manifest.get("annotations")
    pinned = annotations.get(_layout.MODEL_DIGEST) if isinstance(annotations, dict) else None
    actual = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    if pinned and pinned != actual:
        raise IntegrityError(
            f"{where}: {DESCRIPTOR} hashes to {actual}, the manifest's {_layout.MODEL_DIGEST} "
            f"says {pinned}",
            file=DESCRIPTOR,
        )
    descriptor = Descriptor.read(root)
    check_manifest_paths(descriptor)
    # A raw layer's file is the blob whose sha256 was checked as it streamed: compared with the
    # manifest, not hashed a second time (files from tar layers are).
    verify_manifest(root, descriptor.files, known=streamed)
