"""The model registry: registered models, monotonic versions, aliases, stages, tags, search.

Each function checks its arguments and calls ``backend()``: the SQL store of this process
(``_sql.SqlRegistry``), or the team server at ``MODELPACK_TRACKING_URI`` (``_rest.RestRegistry``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from modelpack.descriptor import Descriptor
from modelpack.registry._backend import backend
from modelpack.registry._checks import STAGES as STAGES
from modelpack.registry._checks import check_name, check_tag
from modelpack.registry._checks import normalize_stage as normalize_stage
from modelpack.registry._checks import parse_parent as parse_parent
from modelpack.registry.types import READY as READY
from modelpack.registry.types import ModelVersion, Page, RegisteredModel, StageTransition

__all__ = [
    "ModelVersion",
    "Page",
    "RegisteredModel",
    "StageTransition",
    "create_model",
    "delete_alias",
    "delete_model",
    "delete_model_tag",
    "delete_tag",
    "delete_version",
    "get_by_alias",
    "get_model",
    "get_version",
    "history",
    "latest_version",
    "register",
    "search_models",
    "search_versions",
    "set_alias",
    "set_model_tag",
    "set_tag",
    "transition",
    "update_model",
    "update_version",
]

_parent = parse_parent  # its name before it was public


def register(
    name: str,
    model_uri: str | os.PathLike[str],
    *,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    run_id: str | None = None,
    parent: str | ModelVersion | tuple[str, int] | None = None,
    source: str | None = None,
) -> ModelVersion:
    """Store the model at ``model_uri`` and register it as the next version of ``name``.

    ``source`` is where the version says it came from (default: ``model_uri``, a path made
    absolute): an importer names the original when ``model_uri`` is a temporary folder.
    """
    from modelpack.uris import resolve

    check_name(name)
    tag_rows = [check_tag(k, v) for k, v in (tags or {}).items()]
    parent_name, parent_version = parse_parent(parent)
    path = resolve(Path(model_uri) if isinstance(model_uri, os.PathLike) else str(model_uri))
    if source is None:
        source = str(model_uri)
        if "://" not in source and ":/" not in source:
            source = str(Path(source).expanduser().resolve())
    if run_id is None and source.startswith("runs:/"):
        run_id = source.removeprefix("runs:/").split("/", 1)[0]
    return backend().register(
        name,
        path,
        source=source,
        run_id=run_id,
        parent=(parent_name, parent_version),
        tags=dict(tag_rows),
        description=description,
    )


def register_stored(
    name: str,
    descriptor_sha: str,
    descriptor: Descriptor,
    *,
    source: str,
    run_id: str | None,
    parent: tuple[str | None, int | None],
    tags: list[tuple[str, str]],
    description: str | None,
) -> ModelVersion:
    """Write the version row of a model whose blobs are already in the artifact store.

    Always into the SQL store of this process: the team server calls it for its clients.
    """
    from modelpack.registry._sql import SqlRegistry
    from modelpack.store.db import get_engine

    check_name(name)
    tag_rows = [check_tag(k, v) for k, v in tags]
    return SqlRegistry(get_engine()).register_stored(
        name,
        descriptor_sha,
        descriptor,
        source=source,
        run_id=run_id,
        parent=parent,
        tags=tag_rows,
        description=description,
    )


def get_version(name: str, version: int | str) -> ModelVersion:
    return backend().get_version(name, version)


def latest_version(name: str) -> ModelVersion:
    return backend().latest_version(name)


def get_by_alias(name: str, alias: str) -> ModelVersion:
    return backend().get_by_alias(name, alias)


def search_versions(
    filter: str | None = None,
    *,
    order_by: str | Iterable[str] = ("name ASC", "version DESC"),
    max_results: int = 100,
    page_token: str | None = None,
) -> Page[ModelVersion]:
    """Versions matching ``filter`` (syntax in docs/registry.md), one page at a time."""
    return backend().search_versions(
        filter, order_by=order_by, max_results=max_results, page_token=page_token
    )


def set_alias(name: str, alias: str, version: int | str) -> ModelVersion:
    return backend().set_alias(name, alias, version)


def delete_alias(name: str, alias: str) -> None:
    backend().delete_alias(name, alias)


def transition(
    name: str,
    version: int | str,
    stage: str | None,
    comment: str | None = None,
    *,
    user: str | None = None,
) -> ModelVersion:
    """Move a version to ``stage`` and record who, when, from, to and why in its history."""
    return backend().transition(name, version, stage, comment, user=user)


def history(name: str, version: int | str | None = None) -> list[StageTransition]:
    return backend().history(name, version)


def set_tag(name: str, version: int | str, key: str, value: Any) -> None:
    backend().set_tag(name, version, *check_tag(key, value))


def delete_tag(name: str, version: int | str, key: str) -> None:
    backend().delete_tag(name, version, key)


def update_version(
    name: str, version: int | str, *, description: str | None = None
) -> ModelVersion:
    return backend().update_version(name, version, description=description)


def delete_version(name: str, version: int | str) -> None:
    """Delete a version (its number is never reused); its stage history is kept."""
    backend().delete_version(name, version)


def create_model(
    name: str, *, description: str | None = None, tags: Mapping[str, Any] | None = None
) -> RegisteredModel:
    return backend().create_model(name, description=description, tags=tags or {})


def get_model(name: str) -> RegisteredModel:
    return backend().get_model(name)


def search_models(
    filter: str | None = None,
    *,
    order_by: str | Iterable[str] = "name ASC",
    max_results: int = 100,
    page_token: str | None = None,
) -> Page[RegisteredModel]:
    return backend().search_models(
        filter, order_by=order_by, max_results=max_results, page_token=page_token
    )


def set_model_tag(name: str, key: str, value: Any) -> None:
    backend().set_model_tag(name, *check_tag(key, value))


def delete_model_tag(name: str, key: str) -> None:
    backend().delete_model_tag(name, key)


def update_model(name: str, *, description: str | None = None) -> RegisteredModel:
    return backend().update_model(name, description=description)


def delete_model(name: str) -> None:
    """Delete a registered model with all its versions, aliases, tags and history."""
    backend().delete_model(name)


def engine_url() -> str:
    from modelpack.store.db import get_engine

    return get_engine().url.render_as_string(hide_password=True)
