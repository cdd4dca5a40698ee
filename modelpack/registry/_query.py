"""The SQL behind reading registry records: hydration, filters, ordering, paging."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    exists,
    func,
    not_,
    select,
)

from modelpack.errors import InvalidInputError
from modelpack.registry._filters import INT64_MAX, Condition, parse_filter
from modelpack.registry.types import ModelVersion, RegisteredModel
from modelpack.store.schema import (
    aliases,
    model_tags,
    model_versions,
    registered_models,
    version_tags,
)

mv, rm = model_versions, registered_models


VERSION_COLUMNS = (
    mv.c.id,
    rm.c.name,
    mv.c.version,
    mv.c.source,
    mv.c.run_id,
    mv.c.stage,
    mv.c.description,
    mv.c.status,
    mv.c.parent_name,
    mv.c.parent_version,
    mv.c.flavors,
    mv.c.signature,
    mv.c.created_at,
    mv.c.updated_at,
    mv.c.descriptor_sha256,
)


def version_query() -> Select[Any]:
    return select(*VERSION_COLUMNS).select_from(mv.join(rm, mv.c.model_id == rm.c.id))


def hydrate_versions(conn: Connection, rows: Sequence[Any]) -> list[ModelVersion]:
    """Versions for ``rows`` (of ``version_query``) with their tags and aliases, in two queries
    whatever the count. Rows are unpacked by position: a Row's attribute lookup cost ~1 us per
    field, most of the time of a 1,000-version search."""
    plain = [tuple(r) for r in rows]
    ids = [t[0] for t in plain]
    tags: dict[int, dict[str, str]] = {i: {} for i in ids}
    names: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        for vid, key, value in conn.execute(
            select(version_tags.c.version_id, version_tags.c.key, version_tags.c.value)
            .where(version_tags.c.version_id.in_(ids))
            .order_by(version_tags.c.key)
        ):
            tags[vid][key] = value
        for vid, alias in conn.execute(
            select(aliases.c.version_id, aliases.c.alias)
            .where(aliases.c.version_id.in_(ids))
            .order_by(aliases.c.alias)
        ):
            names[vid].append(alias)
    return [
        ModelVersion(
            name=name,
            version=version,
            source=source,
            run_id=run_id,
            aliases=names[vid],
            stage=stage,
            tags=tags[vid],
            description=description,
            status=status,
            parent=f"{parent_name}/{parent_version}" if parent_name else None,
            flavors=_json(flavors),
            signature=_json(signature) if signature else None,
            created_at=created_at,
            updated_at=updated_at,
            descriptor_sha256=sha,
        )
        for (
            vid,
            name,
            version,
            source,
            run_id,
            stage,
            description,
            status,
            parent_name,
            parent_version,
            flavors,
            signature,
            created_at,
            updated_at,
            sha,
        ) in plain
    ]


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # json.dumps writes NaN/Infinity and integers past 64 bits, which orjson refuses
        return json.loads(text)


def hydrate_models(conn: Connection, rows: Sequence[Any]) -> list[RegisteredModel]:
    ids = [r.id for r in rows]
    tags: dict[int, dict[str, str]] = {i: {} for i in ids}
    alias_map: dict[int, dict[str, int]] = {i: {} for i in ids}
    latest: dict[int, int] = {}
    if ids:
        for mid, key, value in conn.execute(
            select(model_tags.c.model_id, model_tags.c.key, model_tags.c.value)
            .where(model_tags.c.model_id.in_(ids))
            .order_by(model_tags.c.key)
        ):
            tags[mid][key] = value
        for mid, alias, version in conn.execute(
            select(aliases.c.model_id, aliases.c.alias, mv.c.version)
            .join(mv, mv.c.id == aliases.c.version_id)
            .where(aliases.c.model_id.in_(ids))
            .order_by(aliases.c.alias)
        ):
            alias_map[mid][alias] = version
        latest = dict(
            conn.execute(
                select(mv.c.model_id, func.max(mv.c.version))
                .where(mv.c.model_id.in_(ids))
                .group_by(mv.c.model_id)
            ).all()
        )
    return [
        RegisteredModel(
            name=r.name,
            description=r.description,
            tags=tags[r.id],
            aliases=alias_map[r.id],
            latest_version=latest.get(r.id),
            created_at=r.created_at,
            updated_at=r.updated_at,
        )
        for r in rows
    ]


def _compare(column: Any, op: str, values: tuple[Any, ...]) -> ColumnElement[bool]:
    value = values[0]
    ops: dict[str, Callable[[], ColumnElement[bool]]] = {
        "=": lambda: column == value,
        "!=": lambda: column != value,
        "<": lambda: column < value,
        "<=": lambda: column <= value,
        ">": lambda: column > value,
        ">=": lambda: column >= value,
        "LIKE": lambda: column.like(value),
        "NOT LIKE": lambda: column.not_like(value),
        "IN": lambda: column.in_(values),
        "NOT IN": lambda: column.not_in(values),
    }
    return ops[op]()


_NEGATED = {"!=": "=", "NOT LIKE": "LIKE", "NOT IN": "IN"}


def _as_text(cond: Condition) -> tuple[str, ...]:
    return tuple(str(v) for v in cond.values)


def _as_int(cond: Condition) -> tuple[int, ...]:
    if not all(isinstance(v, int) for v in cond.values):
        raise InvalidInputError(
            f"bad filter at position {cond.pos}: {cond.field} compares with integers", pos=cond.pos
        )
    return tuple(int(v) for v in cond.values)


def _membership(
    base: Callable[[ColumnElement[bool]], ColumnElement[bool]], column: Any, cond: Condition
) -> ColumnElement[bool]:
    # "alias != 'x'" means: no alias x (not: some alias other than x).
    if cond.op in _NEGATED and cond.field == "alias":
        return not_(base(_compare(column, _NEGATED[cond.op], _as_text(cond))))
    return base(_compare(column, cond.op, _as_text(cond)))


def version_condition(cond: Condition) -> ColumnElement[bool]:
    if cond.field == "tags":
        key = cond.key or ""
        # IN, not a correlated EXISTS: SQLite then finds the matching tags through
        # ix_version_tags_key_value instead of probing the tags of every version in turn.
        return _membership(
            lambda c: mv.c.id.in_(
                select(version_tags.c.version_id).where(version_tags.c.key == key, c)
            ),
            version_tags.c.value,
            cond,
        )
    if cond.field == "alias":
        return _membership(
            lambda c: exists().where(aliases.c.version_id == mv.c.id, c), aliases.c.alias, cond
        )
    if cond.field == "version":
        return _compare(mv.c.version, cond.op, _as_int(cond))
    if cond.field in ("created_at", "updated_at"):
        return _compare(mv.c[cond.field], cond.op, _as_int(cond))
    if cond.field == "stage":
        return _compare(func.coalesce(mv.c.stage, "None"), cond.op, _as_text(cond))
    column = rm.c.name if cond.field == "name" else mv.c[cond.field]
    return _compare(column, cond.op, _as_text(cond))


def model_condition(cond: Condition) -> ColumnElement[bool]:
    if cond.field == "tags":
        key = cond.key or ""
        return _membership(
            lambda c: exists().where(model_tags.c.model_id == rm.c.id, model_tags.c.key == key, c),
            model_tags.c.value,
            cond,
        )
    if cond.field in ("created_at", "updated_at"):
        return _compare(rm.c[cond.field], cond.op, _as_int(cond))
    return _compare(rm.c[cond.field], cond.op, _as_text(cond))


VERSION_FIELDS = frozenset(
    {"name", "version", "run_id", "stage", "alias", "status", "source", "description", "tags"}
    | {"created_at", "updated_at"}
)
MODEL_FIELDS = frozenset({"name", "description", "tags", "created_at", "updated_at"})


def where(
    text: str | None, fields: frozenset[str], build: Callable[[Condition], ColumnElement[bool]]
) -> ColumnElement[bool] | None:
    conditions = [build(c) for c in parse_filter(text, fields)]
    return and_(*conditions) if conditions else None


def order_clauses(
    order_by: str | Iterable[str], columns: dict[str, Any], tiebreak: Any
) -> list[Any]:
    items = [order_by] if isinstance(order_by, str) else list(order_by)
    clauses = []
    for item in items:
        parts = item.split()
        direction = parts[1].upper() if len(parts) > 1 else "ASC"
        valid = 1 <= len(parts) <= 2 and parts[0] in columns
        if not valid or direction not in ("ASC", "DESC"):
            raise InvalidInputError(
                f"bad order_by {item!r}: use 'FIELD [ASC|DESC]' with FIELD one of "
                f"{', '.join(sorted(columns))}"
            )
        column = columns[parts[0]]
        clauses.append(column.desc() if direction == "DESC" else column.asc())
    return [*clauses, tiebreak]


def page_offset(token: str | None) -> int:
    if not token:
        return 0
    shown = token if len(token) <= 60 else f"{token[:60]}..."
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidInputError(f"invalid page_token {shown!r}") from exc
    # ASCII digits only (int() takes '٣' and ' 7 '), and an OFFSET SQLite can bind.
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 19:
        raise InvalidInputError(f"invalid page_token {shown!r}")
    offset = int(text)
    if offset > INT64_MAX:
        raise InvalidInputError(f"invalid page_token {shown!r}")
    return offset


def paged(conn: Connection, query: Select[Any], max_results: int, token: str | None) -> Any:
    if not 1 <= max_results <= 10_000:
        raise InvalidInputError(f"max_results must be 1..10000, got {max_results}")
    offset = page_offset(token)
    rows = conn.execute(query.limit(max_results + 1).offset(offset)).all()
    more = len(rows) > max_results
    next_token = base64.urlsafe_b64encode(str(offset + max_results).encode()).decode()
    return rows[:max_results], (next_token if more else None)
