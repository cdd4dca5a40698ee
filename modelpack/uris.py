"""The one resolver from a model URI to a local, verified model directory."""

from __future__ import annotations

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


def resolve(uri: str | Path) -> Path:
    """A local model directory for ``uri`` (a path or ``file://`` URI for now)."""
    if isinstance(uri, Path):
        return _local(uri, str(uri))
    text = str(uri)
    scheme = urlparse(text).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and text[1:3] in (":\\", ":/")):
        path = unquote(urlparse(text).path) if scheme == "file" else text
        return _local(Path(path).expanduser(), text)
    resolver = _RESOLVERS.get(scheme)
    if resolver is None:
        known = ", ".join(["a path", "file://", *(f"{s}:" for s in sorted(_RESOLVERS))])
        raise ModelNotFoundError(f"cannot resolve {text!r}: unknown URI scheme (known: {known})")
    return resolver(text)


def _local(path: Path, uri: str) -> Path:
    if not path.exists():
        raise ModelNotFoundError(f"no model at {uri}: the path does not exist")
    if not (path / DESCRIPTOR).is_file():
        raise ModelNotFoundError(f"no model at {uri}: {DESCRIPTOR} is missing")
    return path
