"""The ``modelpack.yaml`` descriptor of a model directory, and its manifest."""

from __future__ import annotations

import datetime as _dt
import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from modelpack._fs import atomic_write_bytes, hash_files, walk_files
from modelpack._version import __version__
from modelpack.errors import FormatVersionError, IntegrityError, InvalidModelError

if TYPE_CHECKING:
    from modelpack.signature import Signature

DESCRIPTOR = "modelpack.yaml"
# libyaml's safe loader/dumper when present: ~8x faster than the pure-Python ones.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# 2: the descriptor carries ``trust`` (what loading needs to trust) and ``checksum`` (of itself).
FORMAT_VERSION = 2


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass
class Descriptor:
    flavors: dict[str, dict[str, Any]]
    loader: str
    signature: dict[str, Any] | None = None
    input_example: dict[str, Any] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] | None = None
    trust: dict[str, Any] | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    model_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    modelpack_version: str = __version__

    @property
    def model_signature(self) -> Signature | None:
        """``signature`` parsed into a :class:`Signature` (once per descriptor)."""
        if self.signature is None:
            return None
        cached: tuple[dict[str, Any], Signature] | None = self.__dict__.get("_parsed_signature")
        if cached is None or cached[0] is not self.signature:
            from modelpack.signature import Signature

            cached = (self.signature, Signature.from_dict(self.signature))
            self.__dict__["_parsed_signature"] = cached
        return cached[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "model_id": self.model_id,
            "created_at": self.created_at,
            "modelpack_version": self.modelpack_version,
            "loader": self.loader,
            "flavors": self.flavors,
            "signature": self.signature,
            "input_example": self.input_example,
            "environment": self.environment,
            "metadata": self.metadata,
            "parent": self.parent,
            "trust": self.trust,
            "files": {p: {"size": e.size, "sha256": e.sha256} for p, e in self.files.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = DESCRIPTOR) -> Descriptor:
        if not isinstance(data, dict):
            raise InvalidModelError(f"{source}: expected a mapping at the top level")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise InvalidModelError(f"{source}: format_version is missing or not an integer")
        if version > FORMAT_VERSION:
            raise FormatVersionError(
                f"{source} has format_version {version}, but modelpack {__version__} reads "
                f"up to {FORMAT_VERSION}; upgrade modelpack to load this model"
            )
        known = {*cls.__dataclass_fields__, CHECKSUM}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidModelError(f"{source}: unknown field(s) {', '.join(unknown)}")
        for required in ("model_id", "loader", "flavors", "files"):
            if required not in data:
                raise InvalidModelError(f"{source}: required field {required!r} is missing")
        flavors = data["flavors"]
        if not isinstance(flavors, dict) or data["loader"] not in flavors:
            raise InvalidModelError(f"{source}: loader {data['loader']!r} is not in flavors")
        try:
            files = {
                str(p): FileEntry(size=int(e["size"]), sha256=str(e["sha256"]))
                for p, e in (data["files"] or {}).items()
            }
        except (TypeError, KeyError, ValueError) as exc:
            raise InvalidModelError(f"{source}: malformed files manifest ({exc})") from exc
        kwargs = {k: v for k, v in data.items() if k not in ("files", CHECKSUM)}
        kwargs["created_at"] = str(kwargs.get("created_at", ""))
        for key in ("environment", "metadata"):
            kwargs[key] = kwargs.get(key) or {}
        return cls(files=files, **kwargs)

    @classmethod
    def read(cls, model_dir: Path) -> Descriptor:
        path = Path(model_dir) / DESCRIPTOR
        if not path.is_file():
            raise InvalidModelError(f"{model_dir} is not a model directory (no {DESCRIPTOR})")
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
        except yaml.YAMLError as exc:
            raise InvalidModelError(f"{path}: not valid YAML ({exc})".splitlines()[0]) from exc
        descriptor = cls.from_dict(data, source=str(path))
        check_checksum(data, source=str(path))
        return descriptor

    def write(self, model_dir: Path) -> None:
        data = self.to_dict()
        # The checksum is over what a reader gets back, so YAML's own spellings cannot skew it.
        data[CHECKSUM] = content_checksum(yaml.load(_dump(data), Loader=_Loader))
        atomic_write_bytes(Path(model_dir) / DESCRIPTOR, _dump(data).encode("utf-8"))


CHECKSUM = "checksum"


def _dump(data: dict[str, Any]) -> str:
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    return text


def content_checksum(data: dict[str, Any]) -> str:
    """sha256 of the descriptor's content less the checksum itself, in a canonical JSON form.

    It catches a descriptor edited after save (a changed signature or flavor config loads
    differently even when every file matches the manifest). Whoever edits on purpose can
    recompute it: the model's *digest* (the sha256 of the whole descriptor file), pinned
    outside the directory by a registry, a trust grant or ``--digest``, is what resists that.
    """
    body = {k: v for k, v in data.items() if k != CHECKSUM}
    canonical = orjson.dumps(
        body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
    )
    return f"sha256:{hashlib.sha256(canonical).hexdigest()}"


def check_checksum(data: dict[str, Any], *, source: str) -> None:
    if data.get("format_version", 1) < 2:
        return  # written before descriptors carried a checksum
    recorded = data.get(CHECKSUM)
    if not isinstance(recorded, str):
        raise IntegrityError(f"{source}: the descriptor's checksum is missing", file=DESCRIPTOR)
    if recorded != content_checksum(data):
        raise IntegrityError(
            f"{source} was edited after the model was saved: its content does not match "
            "its checksum",
            file=DESCRIPTOR,
        )


def build_manifest(model_dir: Path) -> dict[str, FileEntry]:
    rel = [p for p in walk_files(model_dir) if p != DESCRIPTOR]
    hashes = hash_files(model_dir, rel)
    return {p: FileEntry(size=(model_dir / p).stat().st_size, sha256=hashes[p]) for p in rel}


def verify_manifest(
    model_dir: Path,
    files: dict[str, FileEntry],
    *,
    cached: bool = False,
    known: dict[str, str] | None = None,
) -> None:
    """Raise :class:`IntegrityError` naming the first file that differs from the manifest.

    ``cached`` (what loading uses) skips files verified before and unchanged since, unless
    ``MODELPACK_VERIFY=full``; without it every file is hashed (``modelpack verify``).
    ``known``: the sha256 of files the caller has just written from bytes it hashed on the way
    (an OCI pull checks each blob's digest as it streams): compared, not read again.
    """
    model_dir = Path(model_dir)
    present = {p for p in walk_files(model_dir) if p != DESCRIPTOR}
    for rel in sorted(set(files) - present):
        raise IntegrityError(f"{model_dir}: file {rel} is missing", file=rel)
    for rel in sorted(present - set(files)):
        raise IntegrityError(f"{model_dir}: unexpected file {rel} is not in the manifest", file=rel)
    for rel, entry in files.items():
        size = (model_dir / rel).stat().st_size
        if size != entry.size:
            raise IntegrityError(
                f"{model_dir}: file {rel} has {size} bytes, the manifest says {entry.size}",
                file=rel,
            )
    known = {rel: sha for rel, sha in (known or {}).items() if rel in files}
    rest = sorted(set(files) - set(known))
    if cached:
        from modelpack._verified import hash_manifest

        actual = hash_manifest(model_dir, {rel: files[rel].sha256 for rel in rest})
    else:
        actual = hash_files(model_dir, rest)
    actual.update(known)
    for rel, entry in files.items():
        if actual[rel] != entry.sha256:
            raise IntegrityError(
                f"{model_dir}: file {rel} does not match its sha256 in the manifest", file=rel
            )
