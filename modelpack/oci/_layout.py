"""A model directory as a CNCF ModelPack artifact (model-spec v1), and back.

Names and values follow github.com/modelpack/model-spec: ``docs/spec.md`` (media types and layer
guidance), ``docs/config.md`` and ``schema/config-schema.json`` (the config blob),
``docs/annotations.md`` (layer annotations). See docs/oci.md for the mapping.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from modelpack._artifact_paths import safe_relpath
from modelpack.descriptor import DESCRIPTOR, Descriptor
from modelpack.errors import InvalidModelError, UnsafePathError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG = "application/vnd.cncf.model.config.v1+json"
WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
DOC = "application/vnd.cncf.model.doc.v1.raw"
CODE_TAR = "application/vnd.cncf.model.code.v1.tar"
# Layer annotations of the spec, and the OCI title that oras and others name files by.
FILEPATH = "org.cncf.model.filepath"
FILE_METADATA = "org.cncf.model.file.metadata+json"
UNTESTED = "org.cncf.model.file.mediatype.untested"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
# modelpack's own manifest annotations (reverse-domain keys, as OCI annotations ask).
FLAVOR = "org.modelpack.flavor"
FLAVORS = "org.modelpack.flavors"
SIGNATURE = "org.modelpack.signature"
MODEL_DIGEST = "org.modelpack.digest"
MODEL_ID = "org.modelpack.model-id"

CODE_DIR = "model/code"  # where the python and torch flavors keep shipped code
SMALL_CONFIG = 1 << 20
_CONFIG_SUFFIXES = {".json", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".jinja"}
_WEIGHT_SUFFIXES = {
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".onnx",
    ".skops",
    ".pkl",
    ".ubj",
    ".cbm",
}
_DOC_NAMES = ("readme", "license", "licence", "notice", "model_card")
_FORMATS = {"torch": "pytorch", "lightning": "pytorch", "transformers": "pytorch"}
_PRECISIONS = {
    "float64": "fp64",
    "float32": "fp32",
    "float16": "fp16",
    "bfloat16": "bf16",
    "int8": "int8",
    "uint8": "uint8",
}
# Constant file attributes, as the spec's reproducibility guidance asks: no clock, no owner.
_EPOCH = "1970-01-01T00:00:00Z"


@dataclass
class Layer:
    media_type: str
    digest: str  # sha256:...
    size: int
    source: Path
    filepath: str
    annotations: dict[str, str] = field(default_factory=dict)

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "annotations": self.annotations,
        }


@dataclass
class Artifact:
    layers: list[Layer]
    config: bytes
    manifest: bytes

    @property
    def config_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def build(
    model_dir: Path, descriptor: Descriptor, work: Path, *, name: str, version: str
) -> Artifact:
    """The artifact of a verified model directory; a code tar, if any, is written under ``work``."""
    code = _code_files(descriptor)
    layers = [
        _file_layer(model_dir, rel, entry.sha256, entry.size, _kind(rel, entry.size))
        for rel, entry in sorted(descriptor.files.items())
        if rel not in code
    ]
    meta = (model_dir / DESCRIPTOR).read_bytes()
    layers.append(
        _file_layer(
            model_dir, DESCRIPTOR, hashlib.sha256(meta).hexdigest(), len(meta), WEIGHT_CONFIG
        )
    )
    order = {WEIGHT: 0, WEIGHT_CONFIG: 1, DOC: 2}
    layers.sort(key=lambda layer: (order[layer.media_type], layer.filepath))
    if code:
        layers.append(_code_layer(model_dir, sorted(code), work / "code.tar"))
    config = _config(model_dir, descriptor, layers, name=name, version=version)
    config_bytes = _canonical(config)
    artifact = Artifact(layers, config_bytes, b"")
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": CONFIG,
            "digest": artifact.config_digest,
            "size": len(config_bytes),
        },
        "layers": [layer.descriptor() for layer in layers],
        "annotations": _annotations(descriptor, meta),
    }
    artifact.manifest = _canonical(manifest)
    return artifact


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _code_files(descriptor: Descriptor) -> set[str]:
    ships = any(cfg.get("code_paths") or cfg.get("code") for cfg in descriptor.flavors.values())
    return {rel for rel in descriptor.files if ships and rel.startswith(f"{CODE_DIR}/")}


def _kind(rel: str, size: int) -> str:
    path = PurePosixPath(rel)
    suffix = path.suffix.lower()
    if suffix in _WEIGHT_SUFFIXES:
        return WEIGHT
    if path.name.lower().startswith(_DOC_NAMES) or suffix == ".md":
        return DOC
    if suffix in _CONFIG_SUFFIXES and size < SMALL_CONFIG:
        return WEIGHT_CONFIG
    return WEIGHT


def _file_metadata(name: str, size: int, mode: int = 0o644, typeflag: str = "0") -> str:
    meta = {"name": name, "mode": mode, "uid": 0, "gid": 0, "size": size}
    meta.update({"mtime": _EPOCH, "typeflag": ord(typeflag)})
    return json.dumps(meta, separators=(",", ":"))


def _file_layer(root: Path, rel: str, sha256: str, size: int, media_type: str) -> Layer:
    annotations = {
        FILEPATH: rel,
        FILE_METADATA: _file_metadata(rel, size),
        UNTESTED: "true",  # classified by file name, not by reading the file
        TITLE: rel,
    }
    return Layer(media_type, f"sha256:{sha256}", size, root / rel, rel, annotations)


def _code_layer(root: Path, files: list[str], out: Path) -> Layer:
    # Reproducible, as the spec's guidance asks: sorted entries, constant owner, time and mode.
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            info = tarfile.TarInfo(rel)
            info.size = (root / rel).stat().st_size
            info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
            info.uname = info.gname = ""
            with open(root / rel, "rb") as fh:
                tar.addfile(info, fh)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    size = out.stat().st_size
    annotations = {
        FILEPATH: CODE_DIR,
        FILE_METADATA: _file_metadata(CODE_DIR, 0, 0o755, "5"),
        UNTESTED: "false",
        TITLE: CODE_DIR,
    }
    return Layer(CODE_TAR, f"sha256:{digest}", size, out, CODE_DIR, annotations)


def _config(
    root: Path, descriptor: Descriptor, layers: list[Layer], *, name: str, version: str
) -> dict[str, Any]:
    meta = descriptor.metadata
    about: dict[str, Any] = {"name": str(meta.get("name") or name)}
    if meta.get("version") or version:
        about["version"] = str(meta.get("version") or version)
    if descriptor.created_at:
        about["createdAt"] = descriptor.created_at
    licenses = meta.get("licenses") or meta.get("license")
    if licenses:
        about["licenses"] = (
            [str(x) for x in licenses] if isinstance(licenses, list) else [str(licenses)]
        )
    if meta.get("description"):
        about["description"] = str(meta["description"])
    flavor = descriptor.flavors.get(descriptor.loader, {})
    config: dict[str, Any] = {"format": _FORMATS.get(descriptor.loader, descriptor.loader)}
    architecture = flavor.get("architecture") or flavor.get("model_type")
    if architecture:
        config["architecture"] = str(architecture)
    precision = _precision(flavor.get("dtypes") or flavor.get("dtype"))
    if precision:
        config["precision"] = precision
    params = sum(
        _safetensors_params(layer.source)
        for layer in layers
        if layer.filepath.endswith(".safetensors")
    )
    if params:
        config["paramSize"] = _param_size(params)
    return {
        "descriptor": about,
        "config": config,
        "modelfs": {"type": "layers", "diffIds": [layer.digest for layer in layers]},
    }


def _precision(dtypes: Any) -> str | None:
    names = {str(d) for d in (dtypes if isinstance(dtypes, list) else [dtypes] if dtypes else [])}
    if not names:
        return None
    if len(names) > 1:
        return "mixed"
    only = names.pop().removeprefix("torch.")
    return _PRECISIONS.get(only, only)


def _safetensors_params(path: Path) -> int:
    """The number of values in a safetensors file, from its JSON header alone."""
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(min(length, 100 << 20)))
    except (OSError, struct.error, ValueError):
        return 0
    total = 0
    for key, tensor in header.items():
        if key != "__metadata__" and isinstance(tensor, dict):
            count = 1
            for dim in tensor.get("shape") or []:
                count *= int(dim)
            total += count
    return total


def _param_size(count: int) -> str:
    """``<count><scale-prefix>`` with at most one decimal, as config.md defines paramSize."""
    for scale, prefix in ((10**15, "Q"), (10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= scale:
            return f"{count / scale:.1f}".removesuffix(".0") + prefix
    return f"{count / 1000:.1f}K"


def _annotations(descriptor: Descriptor, meta: bytes) -> dict[str, str]:
    out = {
        FLAVOR: descriptor.loader,
        FLAVORS: ",".join(sorted(descriptor.flavors)),
        MODEL_DIGEST: "sha256:" + hashlib.sha256(meta).hexdigest(),
        MODEL_ID: descriptor.model_id,
    }
    if descriptor.created_at:
        out[CREATED] = descriptor.created_at
    if descriptor.signature is not None:
        out[SIGNATURE] = json.dumps(descriptor.signature, sort_keys=True, separators=(",", ":"))
    return out


# -- reading -----------------------------------------------------------------------------


def check_manifest(body: bytes, media_type: str, where: str) -> dict[str, Any]:
    """The manifest as a dict, or a one-line error when it is not a ModelPack model artifact."""
    try:
        manifest = json.loads(body)
    except ValueError as exc:
        raise InvalidModelError(f"{where}: the manifest is not JSON") from exc
    if not isinstance(manifest, dict):
        raise InvalidModelError(f"{where}: the manifest is not a JSON object")
    kind = manifest.get("mediaType") or media_type
    if kind != MANIFEST:
        raise InvalidModelError(
            f"{where} is not a CNCF ModelPack model artifact: it is a "
            f"{kind or 'manifest of no media type'} (expected an OCI image manifest, {MANIFEST})"
        )
    config_type = (manifest.get("config") or {}).get("mediaType")
    artifact_type = manifest.get("artifactType")
    # OCI: with no artifactType, the config's media type is the artifact's type.
    if artifact_type != ARTIFACT_TYPE and not (artifact_type is None and config_type == CONFIG):
        raise InvalidModelError(
            f"{where} is not a CNCF ModelPack model artifact: artifactType "
            f"{artifact_type or '(none)'}, config {config_type or '(none)'} (expected "
            f"{ARTIFACT_TYPE} with a {CONFIG} config)"
        )
    if config_type != CONFIG:
        raise InvalidModelError(f"{where}: the config is {config_type}, expected {CONFIG}")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise InvalidModelError(f"{where}: the manifest lists no layers")
    for layer in layers:
        if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
            raise InvalidModelError(f"{where}: a layer descriptor has no digest")
        if not str(layer["digest"]).startswith("sha256:"):
            raise InvalidModelError(f"{where}: layer digest {layer['digest']} is not sha256")
        if not isinstance(layer.get("size"), int) or layer["size"] < 0:
            raise InvalidModelError(f"{where}: layer {layer['digest']} has no valid size")
    return manifest


def is_tar(media_type: str) -> bool:
    return media_type.endswith((".tar", ".tar+gzip"))


def check_layer_type(media_type: str, where: str) -> None:
    if media_type.endswith("+zstd"):
        raise InvalidModelError(
            f"{where}: zstd layers ({media_type}) are not supported; push with tar, tar+gzip or raw"
        )


def layer_path(layer: dict[str, Any], where: str) -> str:
    """Where a raw layer's file goes: ``org.cncf.model.filepath``, else the OCI title."""
    annotations = layer.get("annotations") or {}
    path = annotations.get(FILEPATH) or annotations.get(TITLE)
    if not path:
        raise InvalidModelError(
            f"{where}: layer {layer['digest']} names no file ({FILEPATH} or {TITLE} annotation)"
        )
    return safe_relpath(str(path))


def extract_tar(blob: Path, root: Path, where: str) -> list[str]:
    """Regular files and folders only, each inside ``root``; the files' relative paths."""
    written = []
    with tarfile.open(blob, "r:*") as tar:
        for member in tar:
            rel = safe_relpath(member.name) if member.name.strip("./") else ""
            if member.isdir() or not rel:
                continue
            if not member.isfile():
                raise UnsafePathError(f"{where}: tar entry {member.name!r} is not a regular file")
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, open(dest, "xb") as out:
                while piece := source.read(1 << 20):
                    out.write(piece)
            written.append(rel)
    return written
