"""The model registry: registered models, monotonic versions, aliases, stages, tags, search.

Blobs are uploaded before a version row is written, and the version number is taken from the
model's counter by an atomic ``UPDATE ... RETURNING`` in the same transaction as the insert: a
killed process leaves at most unreferenced blobs, and numbers are never reused.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from modelpack._rest import client as _client
from modelpack.descriptor import Descriptor
from modelpack.errors import InvalidInputError, ModelNotFoundError, RegistryConflictError
from modelpack.registry import _rest as _remote
from modelpack.registry._sql import (
    MODEL_FIELDS,
    VERSION_FIELDS,
    ModelVersion,
    Page,
    RegisteredModel,
    StageTransition,
    hydrate_models,
    hydrate_versions,
    model_condition,
    order_clauses,
    paged,
    version_condition,
    version_query,
    where,
)
from modelpack.store.db import get_engine, now_ms, read, write
from modelpack.store.schema import (
    aliases,
    model_tags,
    model_versions,
    registered_models,
    stage_transitions,
    version_tags,
)

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

STAGES = ("None", "Staging", "Production", "Archived")
READY = "READY"
mv, rm = model_versions, registered_models
_VERSION_ORDER = {
    "name": rm.c.name,
    "version": mv.c.version,
    "created_at": mv.c.created_at,
    "updated_at": mv.c.updated_at,
    "stage": mv.c.stage,
    "run_id": mv.c.run_id,
}
_MODEL_ORDER = {"name": rm.c.name, "created_at": rm.c.created_at, "updated_at": rm.c.updated_at}


def _check_name(name: str, what: str = "model name") -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise InvalidInputError(f"invalid {what} {name!r}: give 1 to 256 characters")
    if "/" in name or "@" in name or any(ord(c) < 32 for c in name):
        raise InvalidInputError(
            f"invalid {what} {name!r}: '/', '@' and control characters are not allowed"
        )
    return name


def _check_tag(key: str, value: Any) -> tuple[str, str]:
    if not isinstance(key, str) or not key or len(key) > 256:
        raise InvalidInputError(f"invalid tag key {key!r}: give 1 to 256 characters")
    return key, str(value)


def _model_id(conn: Connection, name: str) -> int:
    found = conn.execute(select(rm.c.id).where(rm.c.name == name)).scalar()
    if found is None:
        raise ModelNotFoundError(f"no registered model named {name!r}")
    return int(found)


def _version_id(conn: Connection, name: str, version: int) -> int:
    model_id = _model_id(conn, name)
    found = conn.execute(
        select(mv.c.id).where(mv.c.model_id == model_id, mv.c.version == int(version))
    ).scalar()
    if found is None:
        raise ModelNotFoundError(f"model {name!r} has no version {version}")
    return int(found)


def _load_version(conn: Connection, version_id: int) -> ModelVersion:
    rows = conn.execute(version_query().where(mv.c.id == version_id)).all()
    return hydrate_versions(conn, rows)[0]


def _parent(parent: str | ModelVersion | tuple[str, int] | None) -> tuple[str | None, int | None]:
    if parent is None:
        return None, None
    if isinstance(parent, ModelVersion):
        return parent.name, parent.version
    if isinstance(parent, tuple):
        return _check_name(parent[0]), int(parent[1])
    text = parent.removeprefix("models:/")
    name, _, version = text.rpartition("/")
    if not name or not version.isdigit():
        raise InvalidInputError(f"invalid parent {parent!r}: use 'NAME/VERSION'")
    return _check_name(name), int(version)


def register(
    name: str,
    model_uri: str | os.PathLike[str],
    *,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    run_id: str | None = None,
    parent: str | ModelVersion | tuple[str, int] | None = None,
) -> ModelVersion:
    """Store the model at ``model_uri`` and register it as the next version of ``name``."""
    from modelpack.artifacts import default_store, store_model
    from modelpack.uris import resolve

    _check_name(name)
    tag_rows = [_check_tag(k, v) for k, v in (tags or {}).items()]
    parent_name, parent_version = _parent(parent)
    source = str(model_uri)
    path = resolve(Path(model_uri) if isinstance(model_uri, os.PathLike) else source)
    if "://" not in source and ":/" not in source:
        source = str(Path(source).expanduser().resolve())
    if run_id is None and source.startswith("runs:/"):
        run_id = source.removeprefix("runs:/").split("/", 1)[0]
    if (api := _client()) is not None:
        return _remote.register(
            api,
            name,
            path,
            source=source,
            run_id=run_id,
            parent=(parent_name, parent_version),
            tags=dict(tag_rows),
            description=description,
        )
    descriptor_sha, descriptor = store_model(default_store(), path)  # blobs first, then the row
    return register_stored(
        name,
        descriptor_sha,
        descriptor,
        source=source,
        run_id=run_id,
        parent=(parent_name, parent_version),
        tags=tag_rows,
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
    """Write the version row of a model whose blobs are already in the artifact store."""
    _check_name(name)
    parent_name, parent_version = parent
    tag_rows = [_check_tag(k, v) for k, v in tags]
    now = now_ms()
    row = {
        "source": source,
        "run_id": run_id,
        "parent_name": parent_name,
        "parent_version": parent_version,
        "description": description,
        "status": READY,
        "stage": None,
        "descriptor_sha256": descriptor_sha,
        "flavors": json.dumps(sorted(descriptor.flavors)),
        "signature": json.dumps(descriptor.signature) if descriptor.signature else None,
        "created_at": now,
        "updated_at": now,
    }
    with write() as conn:
        model_id, version = _next_version(conn, name, now)
        _insert_version(conn, {"model_id": model_id, "version": version, **row}, tag_rows)
    # A new version has no alias yet: build it from what was written instead of reading it back.
    return ModelVersion(
        name=name,
        version=version,
        source=source,
        run_id=run_id,
        aliases=[],
        stage=None,
        tags=dict(tag_rows),
        description=description,
        status=READY,
        parent=f"{parent_name}/{parent_version}" if parent_name else None,
        flavors=sorted(descriptor.flavors),
        signature=descriptor.signature,
        created_at=now,
        updated_at=now,
        descriptor_sha256=descriptor_sha,
    )


def _insert_version(
    conn: Connection, row: Mapping[str, Any], tag_rows: list[tuple[str, str]]
) -> None:
    version_id = conn.execute(insert(mv).values(**row).returning(mv.c.id)).scalar_one()
    if tag_rows:
        conn.execute(
            insert(version_tags),
            [{"version_id": version_id, "key": k, "value": v} for k, v in tag_rows],
        )


def _next_version(conn: Connection, name: str, now: int) -> tuple[int, int]:
    """Create the model if needed and take its next version number, in one statement."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(rm).values(name=name, created_at=now, updated_at=now, last_version=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[rm.c.name],
        set_={"last_version": rm.c.last_version + 1, "updated_at": now},
    )
    model_id, version = conn.execute(stmt.returning(rm.c.id, rm.c.last_version)).one()
    return int(model_id), int(version)


def get_version(name: str, version: int | str) -> ModelVersion:
    if (api := _client()) is not None:
        return _remote.get_version(api, name, version)
    with read() as conn:
        return _load_version(conn, _version_id(conn, name, int(version)))


def latest_version(name: str) -> ModelVersion:
    if (api := _client()) is not None:
        return _remote.get_version(api, name, "latest")
    with read() as conn:
        model_id = _model_id(conn, name)
        found = conn.execute(
            select(mv.c.id).where(mv.c.model_id == model_id).order_by(mv.c.version.desc()).limit(1)
        ).scalar()
        if found is None:
            raise ModelNotFoundError(f"registered model {name!r} has no versions")
        return _load_version(conn, found)


def get_by_alias(name: str, alias: str) -> ModelVersion:
    if (api := _client()) is not None:
        return _remote.get_by_alias(api, name, alias)
    with read() as conn:
        model_id = _model_id(conn, name)
        found = conn.execute(
            select(aliases.c.version_id).where(
                aliases.c.model_id == model_id, aliases.c.alias == alias
            )
        ).scalar()
        if found is None:
            raise ModelNotFoundError(f"registered model {name!r} has no alias {alias!r}")
        return _load_version(conn, found)


def search_versions(
    filter: str | None = None,
    *,
    order_by: str | Iterable[str] = ("name ASC", "version DESC"),
    max_results: int = 100,
    page_token: str | None = None,
) -> Page[ModelVersion]:
    """Versions matching ``filter`` (syntax in docs/registry.md), one page at a time."""
    if (api := _client()) is not None:
        return _remote.search_versions(api, filter, order_by, max_results, page_token)
    query = version_query()
    condition = where(filter, VERSION_FIELDS, version_condition)
    if condition is not None:
        query = query.where(condition)
    query = query.order_by(*order_clauses(order_by, _VERSION_ORDER, mv.c.id))
    with read() as conn:
        rows, token = paged(conn, query, max_results, page_token)
        return Page(hydrate_versions(conn, rows), token)


def set_alias(name: str, alias: str, version: int | str) -> ModelVersion:
    if (api := _client()) is not None:
        return _remote.set_alias(api, name, alias, version)
    _check_name(alias, "alias")
    if alias.lower() == "latest" or alias.isdigit():
        raise InvalidInputError(f"invalid alias {alias!r}: 'latest' and numbers are reserved")
    with write() as conn:
        version_id = _version_id(conn, name, int(version))
        model_id = _model_id(conn, name)
        conn.execute(
            delete(aliases).where(aliases.c.model_id == model_id, aliases.c.alias == alias)
        )
        conn.execute(insert(aliases).values(model_id=model_id, alias=alias, version_id=version_id))
        _touch_version(conn, version_id)
        return _load_version(conn, version_id)


def delete_alias(name: str, alias: str) -> None:
    if (api := _client()) is not None:
        return _remote.delete_alias(api, name, alias)
    with write() as conn:
        model_id = _model_id(conn, name)
        gone = conn.execute(
            delete(aliases).where(aliases.c.model_id == model_id, aliases.c.alias == alias)
        )
        if gone.rowcount == 0:
            raise ModelNotFoundError(f"registered model {name!r} has no alias {alias!r}")


def _touch_version(conn: Connection, version_id: int, **values: Any) -> None:
    conn.execute(update(mv).where(mv.c.id == version_id).values(updated_at=now_ms(), **values))


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


def transition(
    name: str,
    version: int | str,
    stage: str | None,
    comment: str | None = None,
    *,
    user: str | None = None,
) -> ModelVersion:
    """Move a version to ``stage`` and record who, when, from, to and why in its history."""
    if (api := _client()) is not None:
        return _remote.transition(api, name, version, stage, comment, user)
    to_stage = normalize_stage(stage)
    who = user or os.environ.get("MODELPACK_USER") or getpass.getuser()
    with write() as conn:
        version_id = _version_id(conn, name, int(version))
        from_stage = conn.execute(select(mv.c.stage).where(mv.c.id == version_id)).scalar()
        _touch_version(conn, version_id, stage=to_stage)
        conn.execute(
            insert(stage_transitions).values(
                model_id=_model_id(conn, name),
                version=int(version),
                from_stage=from_stage,
                to_stage=to_stage,
                user=who,
                timestamp=now_ms(),
                comment=comment,
            )
        )
        return _load_version(conn, version_id)


def history(name: str, version: int | str | None = None) -> list[StageTransition]:
    if (api := _client()) is not None:
        return _remote.history(api, name, version)
    st = stage_transitions
    with read() as conn:
        query = select(st).where(st.c.model_id == _model_id(conn, name))
        if version is not None:
            query = query.where(st.c.version == int(version))
        rows = conn.execute(query.order_by(st.c.timestamp, st.c.id)).all()
    return [
        StageTransition(name, r.version, r.from_stage, r.to_stage, r.user, r.timestamp, r.comment)
        for r in rows
    ]


def set_tag(name: str, version: int | str, key: str, value: Any) -> None:
    if (api := _client()) is not None:
        return _remote.set_tag(api, name, version, *_check_tag(key, value))
    key, text = _check_tag(key, value)
    with write() as conn:
        version_id = _version_id(conn, name, int(version))
        vt = version_tags
        conn.execute(delete(vt).where(vt.c.version_id == version_id, vt.c.key == key))
        conn.execute(insert(vt).values(version_id=version_id, key=key, value=text))
        _touch_version(conn, version_id)


def delete_tag(name: str, version: int | str, key: str) -> None:
    if (api := _client()) is not None:
        return _remote.delete_tag(api, name, version, key)
    with write() as conn:
        version_id = _version_id(conn, name, int(version))
        vt = version_tags
        gone = conn.execute(delete(vt).where(vt.c.version_id == version_id, vt.c.key == key))
        if gone.rowcount == 0:
            raise ModelNotFoundError(f"version {version} of {name!r} has no tag {key!r}")


def update_version(
    name: str, version: int | str, *, description: str | None = None
) -> ModelVersion:
    if (api := _client()) is not None:
        return _remote.update_version(api, name, version, description)
    with write() as conn:
        version_id = _version_id(conn, name, int(version))
        _touch_version(conn, version_id, description=description)
        return _load_version(conn, version_id)


def delete_version(name: str, version: int | str) -> None:
    """Delete a version (its number is never reused); its stage history is kept."""
    if (api := _client()) is not None:
        return _remote.delete_version(api, name, version)
    with write() as conn:
        version_id = _version_id(conn, name, int(version))
        conn.execute(delete(aliases).where(aliases.c.version_id == version_id))
        conn.execute(delete(version_tags).where(version_tags.c.version_id == version_id))
        conn.execute(delete(mv).where(mv.c.id == version_id))


def create_model(
    name: str, *, description: str | None = None, tags: Mapping[str, Any] | None = None
) -> RegisteredModel:
    if (api := _client()) is not None:
        return _remote.create_model(
            api, name, description, dict(_check_tag(k, v) for k, v in (tags or {}).items())
        )
    _check_name(name)
    tag_rows = [_check_tag(k, v) for k, v in (tags or {}).items()]
    now = now_ms()
    with write() as conn:
        if conn.execute(select(rm.c.id).where(rm.c.name == name)).scalar() is not None:
            raise RegistryConflictError(f"a registered model named {name!r} already exists")
        model_id = conn.execute(
            insert(rm)
            .values(name=name, description=description, created_at=now, updated_at=now)
            .returning(rm.c.id)
        ).scalar_one()
        if tag_rows:
            rows = [{"model_id": model_id, "key": k, "value": v} for k, v in tag_rows]
            conn.execute(insert(model_tags), rows)
        return _load_model(conn, name)


def _load_model(conn: Connection, name: str) -> RegisteredModel:
    rows = conn.execute(select(rm).where(rm.c.name == name)).all()
    if not rows:
        raise ModelNotFoundError(f"no registered model named {name!r}")
    return hydrate_models(conn, rows)[0]


def get_model(name: str) -> RegisteredModel:
    if (api := _client()) is not None:
        return _remote.get_model(api, name)
    with read() as conn:
        return _load_model(conn, name)


def search_models(
    filter: str | None = None,
    *,
    order_by: str | Iterable[str] = "name ASC",
    max_results: int = 100,
    page_token: str | None = None,
) -> Page[RegisteredModel]:
    if (api := _client()) is not None:
        return _remote.search_models(api, filter, order_by, max_results, page_token)
    query = select(rm)
    condition = where(filter, MODEL_FIELDS, model_condition)
    if condition is not None:
        query = query.where(condition)
    query = query.order_by(*order_clauses(order_by, _MODEL_ORDER, rm.c.id))
    with read() as conn:
        rows, token = paged(conn, query, max_results, page_token)
        return Page(hydrate_models(conn, rows), token)


def set_model_tag(name: str, key: str, value: Any) -> None:
    if (api := _client()) is not None:
        return _remote.set_model_tag(api, name, *_check_tag(key, value))
    key, text = _check_tag(key, value)
    with write() as conn:
        model_id = _model_id(conn, name)
        mt = model_tags
        conn.execute(delete(mt).where(mt.c.model_id == model_id, mt.c.key == key))
        conn.execute(insert(mt).values(model_id=model_id, key=key, value=text))
        conn.execute(update(rm).where(rm.c.id == model_id).values(updated_at=now_ms()))


def delete_model_tag(name: str, key: str) -> None:
    if (api := _client()) is not None:
        return _remote.delete_model_tag(api, name, key)
    with write() as conn:
        mt = model_tags
        model_id = _model_id(conn, name)
        gone = conn.execute(delete(mt).where(mt.c.model_id == model_id, mt.c.key == key))
        if gone.rowcount == 0:
            raise ModelNotFoundError(f"registered model {name!r} has no tag {key!r}")


def update_model(name: str, *, description: str | None = None) -> RegisteredModel:
    if (api := _client()) is not None:
        return _remote.update_model(api, name, description)
    with write() as conn:
        model_id = _model_id(conn, name)
        values = {"description": description, "updated_at": now_ms()}
        conn.execute(update(rm).where(rm.c.id == model_id).values(**values))
        return _load_model(conn, name)


def delete_model(name: str) -> None:
    """Delete a registered model with all its versions, aliases, tags and history."""
    if (api := _client()) is not None:
        return _remote.delete_model(api, name)
    with write() as conn:
        model_id = _model_id(conn, name)
        ids = select(mv.c.id).where(mv.c.model_id == model_id).scalar_subquery()
        conn.execute(delete(aliases).where(aliases.c.model_id == model_id))
        conn.execute(delete(version_tags).where(version_tags.c.version_id.in_(ids)))
        conn.execute(delete(mv).where(mv.c.model_id == model_id))
        conn.execute(delete(stage_transitions).where(stage_transitions.c.model_id == model_id))
        conn.execute(delete(model_tags).where(model_tags.c.model_id == model_id))
        conn.execute(delete(rm).where(rm.c.id == model_id))


def engine_url() -> str:
    return get_engine().url.render_as_string(hide_password=True)
