"""Content-addressed artifact store: blobs under ``sha256/ab/<hash>``, locally or on S3.

A model directory is stored as one blob per file plus its ``modelpack.yaml`` as a blob; the
descriptor's hash names the whole model. Unchanged files across versions are stored once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from modelpack._artifact_paths import _staging
from modelpack._artifact_paths import blob_key as blob_key
from modelpack._artifact_paths import cache_root as cache_root
from modelpack._artifact_paths import safe_relpath as safe_relpath
from modelpack._fs import leftovers, remove, sha256_file
from modelpack.descriptor import DESCRIPTOR, Descriptor, verify_manifest
from modelpack.errors import ArtifactError, IntegrityError, UnsafePathError

ARTIFACT_ENV = "MODELPACK_ARTIFACT_URI"


class ArtifactStore(Protocol):
    uri: str

    def exists(self, sha256: str) -> bool: ...

    def put_file(self, path: Path, sha256: str | None = None) -> str: ...

    def get_file(self, sha256: str, dest: Path) -> None: ...

    def local_path(self, sha256: str) -> Path | None: ...


class LocalArtifactStore:
    """Blobs in a local directory; each is written to a temporary name, then renamed."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.uri = str(self.root)

    def _path(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def local_path(self, sha256: str) -> Path | None:
        path = self._path(sha256)
        return path if path.is_file() else None

    def put_file(self, path: Path, sha256: str | None = None) -> str:
        digest = sha256 or sha256_file(path)
        target = self._path(digest)
        if target.is_file():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        remove(leftovers(target.parent, name=digest))  # a killed upload's half blob
        tmp = target.with_name(f".{digest}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            shutil.copyfile(path, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            if sha256 is not None and sha256_file(tmp) != sha256:
                raise ArtifactError(f"{path} changed while it was being stored")
            os.chmod(tmp, 0o444)  # blobs are immutable; cached models hardlink to them
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return digest

    def get_file(self, sha256: str, dest: Path) -> None:
        source = self._path(sha256)
        if not source.is_file():
            raise ArtifactError(f"blob {sha256} is missing from the artifact store {self.uri}")
        shutil.copyfile(source, dest)

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def default_store() -> ArtifactStore:
    """The team server's store when ``MODELPACK_TRACKING_URI`` is set; else the store named by
    ``MODELPACK_ARTIFACT_URI``, else ``$MODELPACK_HOME/artifacts``."""
    from modelpack._rest import RestArtifactStore, client

    api = client()
    if api is not None:
        return RestArtifactStore(api)
    return local_store()


def local_store() -> ArtifactStore:
    """The store this process reaches directly (what a team server stores into)."""
    uri = os.environ.get(ARTIFACT_ENV)
    if uri and uri.startswith("s3://"):
        from modelpack._s3 import S3ArtifactStore

        return S3ArtifactStore(uri)
    if uri:
        return LocalArtifactStore(Path(uri.removeprefix("file://")).expanduser())
    from modelpack.store.db import home

    return LocalArtifactStore(home() / "artifacts")


def check_manifest_paths(descriptor: Descriptor) -> None:
    """Refuse a manifest naming a path outside the model, or one spelled two ways."""
    for rel in descriptor.files:
        if safe_relpath(rel) != rel or rel == DESCRIPTOR:
            raise UnsafePathError(f"manifest path {rel!r} is not a plain relative file path")


def put_tree(store: ArtifactStore, root: Path) -> dict[str, tuple[str, int]]:
    """Store every file under ``root``; return relative path -> (sha256, size)."""
    from modelpack._fs import hash_files, walk_files

    rel = walk_files(root)
    hashes = hash_files(root, rel)
    for path in rel:
        store.put_file(root / path, hashes[path])
    return {p: (hashes[p], (root / p).stat().st_size) for p in rel}


def store_model(store: ArtifactStore, model_dir: Path) -> tuple[str, Descriptor]:
    """Verify and store a model directory; return its descriptor's sha256 and the descriptor."""
    descriptor = Descriptor.read(model_dir)
    check_manifest_paths(descriptor)
    verify_manifest(model_dir, descriptor.files)
    for rel, entry in descriptor.files.items():
        store.put_file(model_dir / rel, entry.sha256)
    return store.put_file(model_dir / DESCRIPTOR), descriptor


def materialize(descriptor_sha: str, store: ArtifactStore | None = None) -> Path:
    """The model directory whose descriptor has ``descriptor_sha``, rebuilt and verified."""
    store = store or default_store()
    target = cache_root() / "models" / descriptor_sha
    if (target / DESCRIPTOR).is_file():
        # The registry pinned this digest: a cached copy whose descriptor changed is not it.
        if hashlib.sha256((target / DESCRIPTOR).read_bytes()).hexdigest() != descriptor_sha:
            raise IntegrityError(
                f"{target}: the cached descriptor changed since it was fetched; the registry "
                f"records sha256:{descriptor_sha} (delete the folder to fetch it again)",
                file=DESCRIPTOR,
            )
        return target
    with _staging(target) as tmp:
        _fetch(store, descriptor_sha, tmp / DESCRIPTOR)
        if hashlib.sha256((tmp / DESCRIPTOR).read_bytes()).hexdigest() != descriptor_sha:
            raise ArtifactError(f"blob {descriptor_sha} does not match its hash")
        descriptor = Descriptor.read(tmp)
        files = {safe_relpath(rel): entry.sha256 for rel, entry in descriptor.files.items()}
        _fetch_all(store, files, tmp)
        verify_manifest(tmp, descriptor.files)
    return target


def materialize_files(files: Mapping[str, str], store: ArtifactStore | None = None) -> Path:
    """A directory holding ``files`` (relative path -> sha256), cached by its listing's hash."""
    store = store or default_store()
    listing = "\n".join(f"{safe_relpath(p)}\t{s}" for p, s in sorted(files.items()))
    target = cache_root() / "trees" / hashlib.sha256(listing.encode()).hexdigest()
    if target.is_dir():
        return target
    with _staging(target) as tmp:
        _fetch_all(store, {safe_relpath(p): s for p, s in files.items()}, tmp)
        if (tmp / DESCRIPTOR).is_file():
            verify_manifest(tmp, Descriptor.read(tmp).files)
    return target


def _fetch_all(store: ArtifactStore, files: Mapping[str, str], root: Path) -> None:
    for rel, sha in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        _fetch(store, sha, dest)


def _fetch(store: ArtifactStore, sha256: str, dest: Path) -> None:
    local = store.local_path(sha256)
    if local is not None:
        with contextlib.suppress(OSError):  # another filesystem: fall back to a copy
            os.link(local, dest)
            return
    store.get_file(sha256, dest)
