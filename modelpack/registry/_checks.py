"""Argument checks shared by the public functions and the SQL backend."""

from __future__ import annotations

from typing import Any

from modelpack.errors import InvalidInputError
from modelpack.registry.types import ModelVersion

STAGES = ("None", "Staging", "Production", "Archived")


def check_name(name: str, what: str = "model name") -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise InvalidInputError(f"invalid {what} {name!r}: give 1 to 256 characters")
    if "/" in name or "@" in name or any(ord(c) < 32 for c in name):
        raise InvalidInputError(
            f"invalid {what} {name!r}: '/', '@' and control characters are not allowed"
        )
    return name


def check_tag(key: str, value: Any) -> tuple[str, str]:
    if not isinstance(key, str) or not key or len(key) > 256:
        raise InvalidInputError(f"invalid tag key {key!r}: give 1 to 256 characters")
    return key, str(value)


def normalize_stage(stage: str | None) -> str | None:
    if stage is None:
        return None
    known = {s.lower(): s for s in STAGES}
    canonical = known.get(stage.strip().lower(), stage.strip())
    if canonical == "None":
        return None
    if not canonical or len(canonical) > 64 or any(ord(c) < 32 for c in canonical):
        raise InvalidInputError(f"invalid stage {stage!r}: give 1 to 64 printable characters")
    return canonical


def parse_parent(
    parent: str | ModelVersion | tuple[str, int] | None,
) -> tuple[str | None, int | None]:
    """``(name, version)`` of a parent given as 'NAME/VERSION', a ModelVersion or a tuple."""
    if parent is None:
        return None, None
    if isinstance(parent, ModelVersion):
        return parent.name, parent.version
    if isinstance(parent, tuple):
        return check_name(parent[0]), int(parent[1])
    text = parent.removeprefix("models:/")
    name, _, version = text.rpartition("/")
    if not name or not version.isdigit():
        raise InvalidInputError(f"invalid parent {parent!r}: use 'NAME/VERSION'")
    return check_name(name), int(version)
