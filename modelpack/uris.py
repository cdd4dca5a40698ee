"""The one resolver from a model URI to a local, verified model directory."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from modelpack.descriptor import DESCRIPTOR
from modelpack.errors import ModelNotFoundError

Resolver = Callable[[str], Path]

# Schemes other than plain paths register here (the registry adds models:/ and runs:/).
_RESOLVERS: dict[str, Resolver] = {}


def register_scheme(scheme: str, resolver: Resolver) -> None:
    _RESOLVERS[scheme] = resolver


# The built-in schemes, named like entry points and imported on first use: the registry pulls
# in SQLAlchemy, S3 pulls in boto3. Named, not imported, because they sit above this module
# (the registry resolves the URIs it is given), so importing them here would be a cycle.
_BUILTIN = {
    "models": "modelpack._resolvers:resolve_models",
    "runs": "modelpack._resolvers:resolve_runs",
    "s3": "modelpack._resolvers:resolve_s3",
    "oci": "modelpack.oci:resolve",
}


def _builtin(scheme: str) -> Resolver | None:
    target = _BUILTIN.get(scheme)
    if target is None:
        return None
    module, _, attr = target.partition(":")
    resolver: Resolver = getattr(importlib.import_module(module), attr)
    return _RESOLVERS.setdefault(scheme, resolver)


def resolve(uri: str | Path) -> Path:
    """A local model directory for ``uri``: a path, ``file://``, ``models:/``, ``runs:/``, ``s3://``,
    ``oci://``."""
    if isinstance(uri, Path):
        return _local(uri, str(uri))
    text = str(uri)
    scheme = urlparse(text).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and text[1:3] in (":\\", ":/")):
        path = unquote(urlparse(text).path) if scheme == "file" else text
        return _local(Path(path).expanduser(), text)
    resolver = _RESOLVERS.get(scheme) or _builtin(scheme)
    if resolver is None:
        schemes = sorted({*_RESOLVERS, *_BUILTIN})
        known = ", ".join(["a path", "file://", *(f"{s}:" for s in schemes)])
        raise ModelNotFoundError(f"cannot resolve {text!r}: unknown URI scheme (known: {known})")
    return resolver(text)


def _local(path: Path, uri: str) -> Path:
    if not path.exists():
        raise ModelNotFoundError(f"no model at {uri}: the path does not exist")
    if not (path / DESCRIPTOR).is_file():
        if (path / "MLmodel").is_file():
            raise ModelNotFoundError(
                f"no model at {uri}: this is an MLflow model (it has an MLmodel file, no "
                f"{DESCRIPTOR}); bring it over with `modelpack import mlflow {uri} -o DIR`"
            )
        raise ModelNotFoundError(f"no model at {uri}: {DESCRIPTOR} is missing")
    return path
