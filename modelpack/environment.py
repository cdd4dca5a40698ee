"""The pinned runtime requirements of a saved model."""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable
from importlib import metadata

from modelpack._version import __version__

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(distributions: Iterable[str]) -> list[str]:
    """``name==version`` for each installed distribution; explicit specs pass through."""
    out: dict[str, str] = {"modelpack": f"modelpack=={__version__}"}
    for spec in distributions:
        match = _NAME.match(spec)
        if not match:
            continue
        name = match.group(1)
        key = _normalize(name)
        if spec.strip() != name:  # the user gave a version or marker: keep it as written
            out[key] = spec.strip()
            continue
        try:
            out[key] = f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            out[key] = name
    return [out[k] for k in sorted(out)]


def environment_info() -> dict[str, str]:
    return {"python": platform.python_version(), "requirements": "requirements.txt"}
