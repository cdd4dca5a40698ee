"""The store's engine: SQLite under ``$MODELPACK_HOME`` or ``MODELPACK_STORE_URI``, migrated.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE``: a writer takes the lock up front instead of upgrading a read lock mid-way,
which is what makes several processes writing at once safe (no "database is locked" on upgrade).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

from modelpack.errors import StoreError

HOME_ENV = "MODELPACK_HOME"
STORE_ENV = "MODELPACK_STORE_URI"
BUSY_TIMEOUT_MS = 60_000
_WRITE = "modelpack_write"
# Any fixed 64-bit key: the advisory lock that serializes migrations on PostgreSQL.
_PG_MIGRATION_LOCK = 0x6D6F64656C706B

_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".modelpack").expanduser()


def store_uri() -> str:
    uri = os.environ.get(STORE_ENV)
    if uri:
        return uri
    return f"sqlite:///{home() / 'modelpack.db'}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def get_engine(uri: str | None = None) -> Engine:
    """The one engine for ``uri`` in this process, its schema upgraded to the head revision."""
    uri = uri or store_uri()
    key = (os.getpid(), uri)  # engines (and their pooled sockets) never cross a fork
    engine = _engines.get(key)
    if engine is not None:
        return engine
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = open_engine(uri)
            upgrade(engine)
            _engines[key] = engine
    return engine


def dispose_all() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def open_engine(uri: str) -> Engine:
    """A new engine for ``uri``, configured but not migrated (see :func:`get_engine`)."""
    try:
        if uri.startswith("sqlite"):
            return _sqlite_engine(uri)
        return create_engine(uri, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot open the store at {_redact(uri)}: {exc}") from exc


def _sqlite_engine(uri: str) -> Engine:
    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(uri, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN is ours to choose.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA case_sensitive_like = ON")  # LIKE behaves as on PostgreSQL
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextlib.contextmanager
def write(engine: Engine | None = None) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any error."""
    engine = engine or get_engine()
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


@contextlib.contextmanager
def read(engine: Engine | None = None) -> Iterator[Connection]:
    engine = engine or get_engine()
    with engine.connect() as conn, conn.begin():
        yield conn


def _alembic_config(conn: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = conn
    return config


# The newest migration; a test checks it against alembic's head. Opening an up-to-date store
# compares against it with one SELECT and never imports alembic (~0.5 s per process).
HEAD_REVISION = "0003"


def current_revision(conn: Connection) -> str | None:
    from sqlalchemy import inspect

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    config = _alembic_config(None)  # type: ignore[arg-type]
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision``; concurrent processes wait for one another."""
    target = HEAD_REVISION if revision == "head" else revision
    with engine.connect() as conn:
        if current_revision(conn) == target:
            conn.rollback()
            return
        conn.rollback()
    try:
        with engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    lock = text("SELECT pg_advisory_xact_lock(:k)")
                    conn.execute(lock, {"k": _PG_MIGRATION_LOCK})
                # Under the lock: another process may have migrated while we waited.
                if current_revision(conn) != target:
                    from alembic import command

                    command.upgrade(_alembic_config(conn), revision)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot migrate the store at {_redact(str(engine.url))}: {exc}") from exc


def _redact(uri: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable store URI>"
