"""``SqlRegistry``: the registry in the SQL store of this process.

Blobs are uploaded before a version row is written, and the version number is taken from the
model's counter by an atomic ``UPDATE ... RETURNING`` in the same transaction as the insert: a
killed process leaves at most unreferenced blobs, and numbers are never reused.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from modelpack.descriptor import Descriptor
from modelpack.errors import InvalidInputError, ModelNotFoundError, RegistryConflictError
from modelpack.registry._checks import check_name, check_tag, normalize_stage
from modelpack.registry._query import (
    MODEL_FIELDS,
    VERSION_FIELDS,
    hydrate_models,
    hydrate_versions,
    model_condition,
    order_clauses,
    paged,
    version_condition,
    version_query,
    where,
)
from modelpack.registry.types import (
    READY,
    ModelVersion,
    Page,
    RegisteredModel,
    StageTransition,
)
from modelpack.store.db import now_ms, read, write
from modelpack.store.schema import (
    aliases,
    model_tags,
    model_versions,
    registered_models,
    stage_transitions,
    version_tags,
)

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


def _load_model(conn: Connection, name: str) -> RegisteredModel:
    rows = conn.execute(select(rm).where(rm.c.name == name)).all()
    if not rows:
        raise ModelNotFoundError(f"no registered model named {name!r}")
    return hydrate_models(conn, rows)[0]


def _touch_version(conn: Connection, version_id: int, **values: Any) -> None:
    conn.execute(update(mv).where(mv.c.id == version_id).values(updated_at=now_ms(), **values))


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


@dataclass(frozen=True)
class SqlRegistry:
    engine: Engine

    def register(
        self,
        name: str,
        path: Path,
        *,
        source: str,
        run_id: str | None,
        parent: tuple[str | None, int | None],
        tags: Mapping[str, str],
        description: str | None,
    ) -> ModelVersion:
        from modelpack.artifacts import default_store, store_model

        descriptor_sha, descriptor = store_model(default_store(), path)  # blobs, then the row
        return self.register_stored(
            name,
            descriptor_sha,
            descriptor,
            source=source,
            run_id=run_id,
            parent=parent,
            tags=list(tags.items()),
            description=description,
        )

    def register_stored(
        self,
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
        """Write the version row of a model whose blobs are stored; arguments already checked."""
        parent_name, parent_version = parent
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
        with write(self.engine) as conn:
            model_id, version = _next_version(conn, name, now)
            _insert_version(conn, {"model_id": model_id, "version": version, **row}, tags)
        # A new version has no alias yet: build it from what was written, not read it back.
        return ModelVersion(
            name=name,
            version=version,
            source=source,
            run_id=run_id,
            aliases=[],
            stage=None,
            tags=dict(tags),
            description=description,
            status=READY,
            parent=f"{parent_name}/{parent_version}" if parent_name else None,
            flavors=sorted(descriptor.flavors),
            signature=descriptor.signature,
            created_at=now,
            updated_at=now,
            descriptor_sha256=descriptor_sha,
        )

    def get_version(self, name: str, version: int | str) -> ModelVersion:
        with read(self.engine) as conn:
            return _load_version(conn, _version_id(conn, name, int(version)))

    def latest_version(self, name: str) -> ModelVersion:
        with read(self.engine) as conn:
            model_id = _model_id(conn, name)
            found = conn.execute(
                select(mv.c.id)
                .where(mv.c.model_id == model_id)
                .order_by(mv.c.version.desc())
                .limit(1)
            ).scalar()
            if found is None:
                raise ModelNotFoundError(f"registered model {name!r} has no versions")
            return _load_version(conn, found)

    def get_by_alias(self, name: str, alias: str) -> ModelVersion:
        with read(self.engine) as conn:
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
        self,
        filter: str | None,
        *,
        order_by: str | Iterable[str],
        max_results: int,
        page_token: str | None,
    ) -> Page[ModelVersion]:
        query = version_query()
        condition = where(filter, VERSION_FIELDS, version_condition)
        if condition is not None:
            query = query.where(condition)
        query = query.order_by(*order_clauses(order_by, _VERSION_ORDER, mv.c.id))
        with read(self.engine) as conn:
            rows, token = paged(conn, query, max_results, page_token)
            return Page(hydrate_versions(conn, rows), token)

    def set_alias(self, name: str, alias: str, version: int | str) -> ModelVersion:
        check_name(alias, "alias")
        if alias.lower() == "latest" or alias.isdigit():
            raise InvalidInputError(f"invalid alias {alias!r}: 'latest' and numbers are reserved")
        with write(self.engine) as conn:
            version_id = _version_id(conn, name, int(version))
            model_id = _model_id(conn, name)
            conn.execute(
                delete(aliases).where(aliases.c.model_id == model_id, aliases.c.alias == alias)
            )
            conn.execute(
                insert(aliases).values(model_id=model_id, alias=alias, version_id=version_id)
            )
            _touch_version(conn, version_id)
            return _load_version(conn, version_id)

    def delete_alias(self, name: str, alias: str) -> None:
        with write(self.engine) as conn:
            model_id = _model_id(conn, name)
            gone = conn.execute(
                delete(aliases).where(aliases.c.model_id == model_id, aliases.c.alias == alias)
            )
            if gone.rowcount == 0:
                raise ModelNotFoundError(f"registered model {name!r} has no alias {alias!r}")

    def transition(
        self,
        name: str,
        version: int | str,
        stage: str | None,
        comment: str | None,
        *,
        user: str | None,
    ) -> ModelVersion:
        to_stage = normalize_stage(stage)
        who = user or os.environ.get("MODELPACK_USER") or getpass.getuser()
        with write(self.engine) as conn:
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

    def history(self, name: str, version: int | str | None) -> list[StageTransition]:
        st = stage_transitions
        with read(self.engine) as conn:
            query = select(st).where(st.c.model_id == _model_id(conn, name))
            if version is not None:
                query = query.where(st.c.version == int(version))
            rows = conn.execute(query.order_by(st.c.timestamp, st.c.id)).all()
        return [
            StageTransition(
                name, r.version, r.from_stage, r.to_stage, r.user, r.timestamp, r.comment
            )
            for r in rows
        ]

    def set_tag(self, name: str, version: int | str, key: str, value: str) -> None:
        vt = version_tags
        with write(self.engine) as conn:
            version_id = _version_id(conn, name, int(version))
            conn.execute(delete(vt).where(vt.c.version_id == version_id, vt.c.key == key))
            conn.execute(insert(vt).values(version_id=version_id, key=key, value=value))
            _touch_version(conn, version_id)

    def delete_tag(self, name: str, version: int | str, key: str) -> None:
        vt = version_tags
        with write(self.engine) as conn:
            version_id = _version_id(conn, name, int(version))
            gone = conn.execute(delete(vt).where(vt.c.version_id == version_id, vt.c.key == key))
            if gone.rowcount == 0:
                raise ModelNotFoundError(f"version {version} of {name!r} has no tag {key!r}")

    def update_version(
        self, name: str, version: int | str, *, description: str | None
    ) -> ModelVersion:
        with write(self.engine) as conn:
            version_id = _version_id(conn, name, int(version))
            _touch_version(conn, version_id, description=description)
            return _load_version(conn, version_id)

    def delete_version(self, name: str, version: int | str) -> None:
        with write(self.engine) as conn:
            version_id = _version_id(conn, name, int(version))
            conn.execute(delete(aliases).where(aliases.c.version_id == version_id))
            conn.execute(delete(version_tags).where(version_tags.c.version_id == version_id))
            conn.execute(delete(mv).where(mv.c.id == version_id))

    def create_model(
        self, name: str, *, description: str | None, tags: Mapping[str, Any]
    ) -> RegisteredModel:
        check_name(name)
        tag_rows = [check_tag(k, v) for k, v in tags.items()]
        now = now_ms()
        with write(self.engine) as conn:
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

    def get_model(self, name: str) -> RegisteredModel:
        with read(self.engine) as conn:
            return _load_model(conn, name)

    def search_models(
        self,
        filter: str | None,
        *,
        order_by: str | Iterable[str],
        max_results: int,
        page_token: str | None,
    ) -> Page[RegisteredModel]:
        query = select(rm)
        condition = where(filter, MODEL_FIELDS, model_condition)
        if condition is not None:
            query = query.where(condition)
        query = query.order_by(*order_clauses(order_by, _MODEL_ORDER, rm.c.id))
        with read(self.engine) as conn:
            rows, token = paged(conn, query, max_results, page_token)
            return Page(hydrate_models(conn, rows), token)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        mt = model_tags
        with write(self.engine) as conn:
            model_id = _model_id(conn, name)
            conn.execute(delete(mt).where(mt.c.model_id == model_id, mt.c.key == key))
            conn.execute(insert(mt).values(model_id=model_id, key=key, value=value))
            conn.execute(update(rm).where(rm.c.id == model_id).values(updated_at=now_ms()))

    def delete_model_tag(self, name: str, key: str) -> None:
        mt = model_tags
        with write(self.engine) as conn:
            model_id = _model_id(conn, name)
            gone = conn.execute(delete(mt).where(mt.c.model_id == model_id, mt.c.key == key))
            if gone.rowcount == 0:
                raise ModelNotFoundError(f"registered model {name!r} has no tag {key!r}")

    def update_model(self, name: str, *, description: str | None) -> RegisteredModel:
        with write(self.engine) as conn:
            model_id = _model_id(conn, name)
            values = {"description": description, "updated_at": now_ms()}
            conn.execute(update(rm).where(rm.c.id == model_id).values(**values))
            return _load_model(conn, name)

    def delete_model(self, name: str) -> None:
        with write(self.engine) as conn:
            model_id = _model_id(conn, name)
            ids = select(mv.c.id).where(mv.c.model_id == model_id).scalar_subquery()
            conn.execute(delete(aliases).where(aliases.c.model_id == model_id))
            conn.execute(delete(version_tags).where(version_tags.c.version_id.in_(ids)))
            conn.execute(delete(mv).where(mv.c.model_id == model_id))
            conn.execute(delete(stage_transitions).where(stage_transitions.c.model_id == model_id))
            conn.execute(delete(model_tags).where(model_tags.c.model_id == model_id))
            conn.execute(delete(rm).where(rm.c.id == model_id))
