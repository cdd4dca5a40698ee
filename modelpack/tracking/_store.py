"""SQL for tracking: experiments, runs, params, tags, metrics and run artifacts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from modelpack.errors import InvalidInputError, ParamConflictError, RunNotFoundError
from modelpack.store.db import now_ms, read, write
from modelpack.store.schema import experiments, metrics, params, run_artifacts, run_tags, runs

KEY_MAX = 256
STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")


@dataclass(frozen=True)
class Metric:
    key: str
    value: float
    step: int
    timestamp: int


@dataclass
class Run:
    """A run as stored: its info, its params and tags, and the latest value of each metric."""

    id: str
    experiment: str
    name: str | None
    status: str
    start_time: int
    end_time: int | None
    parent_id: str | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_key(key: object, what: str) -> str:
    if not isinstance(key, str) or not key or len(key) > KEY_MAX:
        raise InvalidInputError(f"invalid {what} {key!r}: give a string of 1 to {KEY_MAX} chars")
    return key


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > KEY_MAX:
        raise InvalidInputError(f"invalid {what} {name!r}: give 1 to {KEY_MAX} characters")
    if any(ord(c) < 32 for c in name):
        raise InvalidInputError(f"invalid {what} {name!r}: control characters are not allowed")
    return name


def experiment_id(engine: Engine, name: str) -> int:
    """The id of experiment ``name``, created on first use (safe against a concurrent create)."""
    query = select(experiments.c.id).where(experiments.c.name == name)
    with read(engine) as conn:
        found = conn.execute(query).scalar()
    if found is not None:
        return int(found)
    try:
        with write(engine) as conn:
            found = conn.execute(query).scalar()
            if found is None:
                values = {"name": name, "created_at": now_ms()}
                stmt = insert(experiments).values(values).returning(experiments.c.id)
                found = conn.execute(stmt).scalar_one()
    except SQLIntegrityError:  # another process created it between our read and write
        with read(engine) as conn:
            found = conn.execute(query).scalar_one()
    return int(found)


def create_run(
    engine: Engine,
    run_id: str,
    experiment: int,
    name: str | None,
    parent_id: str | None,
    tags: Mapping[str, str],
) -> int:
    start = now_ms()
    with write(engine) as conn:
        conn.execute(
            insert(runs).values(
                id=run_id,
                experiment_id=experiment,
                parent_run_id=parent_id,
                name=name,
                status="RUNNING",
                start_time=start,
            )
        )
        if tags:
            rows = [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()]
            conn.execute(insert(run_tags), rows)
    return start


def end_run(engine: Engine, run_id: str, status: str) -> None:
    with write(engine) as conn:
        stmt = update(runs).where(runs.c.id == run_id).values(status=status, end_time=now_ms())
        conn.execute(stmt)


def log_params(engine: Engine, run_id: str, values: Mapping[str, str]) -> dict[str, str]:
    """Insert new params; the same value again is a no-op, another value a conflict."""
    with write(engine) as conn:
        query = select(params.c.key, params.c.value).where(
            params.c.run_id == run_id, params.c.key.in_(list(values))
        )
        existing = {k: v for k, v in conn.execute(query)}
        for key, old in existing.items():
            if old != values[key]:
                raise ParamConflictError(
                    f"param {key!r} of run {run_id} is already {old!r} and cannot become "
                    f"{values[key]!r}: params are immutable; log the new value under another key "
                    "or in a new run"
                )
        new = [
            {"run_id": run_id, "key": k, "value": v} for k, v in values.items() if k not in existing
        ]
        if new:
            conn.execute(insert(params), new)
    return {row["key"]: row["value"] for row in new}


def set_tags(engine: Engine, run_id: str, values: Mapping[str, str]) -> None:
    with write(engine) as conn:
        keys = list(values)
        conn.execute(delete(run_tags).where(run_tags.c.run_id == run_id, run_tags.c.key.in_(keys)))
        conn.execute(
            insert(run_tags), [{"run_id": run_id, "key": k, "value": v} for k, v in values.items()]
        )


def insert_metrics(engine: Engine, rows: Sequence[tuple[str, str, float, int, int]]) -> None:
    """(run_id, key, value, step, timestamp) rows, in one DBAPI ``executemany``.

    The driver's own executemany skips SQLAlchemy's per-row parameter processing: about ten
    times faster for metric batches, which would otherwise compete with training for the GIL.
    """
    quote = engine.dialect.identifier_preparer.quote
    columns = ", ".join(quote(c) for c in ("run_id", "key", "value", "step", "timestamp"))
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {quote(metrics.name)} ({columns}) VALUES ({', '.join([mark] * 5)})"
    with write(engine) as conn:
        conn.exec_driver_sql(sql, list(rows))


def add_artifacts(
    engine: Engine, run_id: str, files: Mapping[str, tuple[str, int]], replace: str | None = None
) -> None:
    """Rows of ``run_artifacts``: path relative to the run root -> (sha256, size).

    Rows at the same paths are replaced; with ``replace``, every row under that directory too
    (a model logged again must not keep files of the previous one).
    """
    ra = run_artifacts.c
    with write(engine) as conn:
        if replace:
            escaped = replace.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            under = or_(ra.path == replace, ra.path.like(f"{escaped}/%", escape="\\"))
            conn.execute(delete(run_artifacts).where(ra.run_id == run_id, under))
        for chunk in _chunks(list(files), 500):
            conn.execute(delete(run_artifacts).where(ra.run_id == run_id, ra.path.in_(chunk)))
        rows = [
            {"run_id": run_id, "path": p, "sha256": s, "size": n} for p, (s, n) in files.items()
        ]
        if rows:
            conn.execute(insert(run_artifacts), rows)


def list_artifacts(engine: Engine, run_id: str) -> dict[str, tuple[str, int]]:
    query = (
        select(run_artifacts.c.path, run_artifacts.c.sha256, run_artifacts.c.size)
        .where(run_artifacts.c.run_id == run_id)
        .order_by(run_artifacts.c.path)
    )
    with read(engine) as conn:
        return {p: (s, int(n)) for p, s, n in conn.execute(query)}


def metric_history(engine: Engine, run_id: str, key: str) -> list[Metric]:
    m = metrics.c
    query = (
        select(m.key, m.value, m.step, m.timestamp)
        .where(m.run_id == run_id, m.key == key)
        .order_by(m.step, m.timestamp, m.id)
    )
    with read(engine) as conn:
        return [Metric(k, float(v), int(s), int(t)) for k, v, s, t in conn.execute(query)]


def require_runs(engine: Engine, run_ids: Iterable[str]) -> None:
    """Raise RunNotFoundError unless every run exists: one indexed lookup, no hydration."""
    wanted = set(run_ids)
    with read(engine) as conn:
        found = set(conn.execute(select(runs.c.id).where(runs.c.id.in_(wanted))).scalars())
    missing = sorted(wanted - found)
    if missing:
        raise RunNotFoundError(f"no run with id {missing[0]!r}")


def get_run(engine: Engine, run_id: str) -> Run:
    found = search_runs(engine, run_ids=[run_id])
    if not found:
        raise RunNotFoundError(f"no run with id {run_id!r}")
    return found[0]


def search_runs(
    engine: Engine,
    *,
    experiment: str | None = None,
    run_ids: Sequence[str] | None = None,
    parent_id: str | None = None,
    max_results: int = 1000,
) -> list[Run]:
    """Runs, newest first, each with its params, tags and latest metrics (4 queries in all)."""
    r, e = runs.c, experiments.c
    query = (
        select(r.id, e.name, r.name, r.status, r.start_time, r.end_time, r.parent_run_id)
        .join_from(runs, experiments, r.experiment_id == e.id)
        .order_by(r.start_time.desc(), r.id)
        .limit(max_results)
    )
    if experiment is not None:
        query = query.where(e.name == experiment)
    if run_ids is not None:
        query = query.where(r.id.in_(list(run_ids)))
    if parent_id is not None:
        query = query.where(r.parent_run_id == parent_id)
    with read(engine) as conn:
        found = [Run(*row) for row in conn.execute(query)]
        by_id = {run.id: run for run in found}
        for chunk in _chunks(list(by_id), 500):
            _hydrate(conn, chunk, by_id)
    return found


def _hydrate(conn: Connection, ids: Sequence[str], by_id: Mapping[str, Run]) -> None:
    for table, attr in ((params, "params"), (run_tags, "tags")):
        query = select(table.c.run_id, table.c.key, table.c.value).where(table.c.run_id.in_(ids))
        for run_id, key, value in conn.execute(query.order_by(table.c.key)):
            getattr(by_id[run_id], attr)[key] = value
    m = metrics.c
    ranked = (
        select(
            m.run_id,
            m.key,
            m.value,
            func.row_number()
            .over(
                partition_by=(m.run_id, m.key),
                order_by=(m.step.desc(), m.timestamp.desc(), m.id.desc()),
            )
            .label("rank"),
        )
        .where(m.run_id.in_(ids))
        .subquery()
    )
    latest = select(ranked.c.run_id, ranked.c.key, ranked.c.value).where(ranked.c.rank == 1)
    for run_id, key, value in conn.execute(latest.order_by(ranked.c.key)):
        by_id[run_id].metrics[key] = float(value)


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def list_experiments(engine: Engine) -> list[dict[str, Any]]:
    """Every experiment with its run count and latest run start, newest activity first."""
    e, r = experiments.c, runs.c
    query = (
        select(e.id, e.name, func.count(r.id), func.max(r.start_time))
        .join_from(experiments, runs, r.experiment_id == e.id, isouter=True)
        .group_by(e.id, e.name)
        .order_by(func.coalesce(func.max(r.start_time), 0).desc(), e.name)
    )
    with read(engine) as conn:
        return [
            {"id": int(i), "name": n, "run_count": int(c), "last_run_time": t}
            for i, n, c, t in conn.execute(query)
        ]


def metric_histories(engine: Engine, run_id: str) -> dict[str, list[Metric]]:
    """Every metric of a run, each key's values ordered by step (one query)."""
    m = metrics.c
    query = (
        select(m.key, m.value, m.step, m.timestamp)
        .where(m.run_id == run_id)
        .order_by(m.key, m.step, m.timestamp, m.id)
    )
    found: dict[str, list[Metric]] = {}
    with read(engine) as conn:
        for k, v, s, t in conn.execute(query):
            found.setdefault(k, []).append(Metric(k, float(v), int(s), int(t)))
    return found
