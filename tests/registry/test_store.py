"""Migrations and the engine."""

from __future__ import annotations

from sqlalchemy import insert, inspect, select, text

from modelpack import registry
from modelpack.store import db
from modelpack.store.schema import metadata, model_versions, registered_models, stage_transitions


def test_upgrade_from_0001_keeps_the_data(sql_store_uri):
    engine = db.open_engine(sql_store_uri)
    db.upgrade(engine, "0001")
    with engine.begin() as conn:
        assert db.current_revision(conn) == "0001"
        assert "stage_transitions" not in inspect(conn).get_table_names()
        conn.execute(
            insert(registered_models).values(
                id=1, name="old 'one'", created_at=1, updated_at=1, last_version=1
            )
        )
        conn.execute(
            insert(model_versions).values(
                model_id=1,
                version=1,
                source="s",
                status="READY",
                stage="Production",
                descriptor_sha256="0" * 64,
                flavors='["python"]',
                created_at=1,
                updated_at=1,
            )
        )
    engine.dispose()
    # Opening the store upgrades it to head.
    version = registry.get_version("old 'one'", 1)
    assert (version.stage, version.flavors) == ("Production", ["python"])
    with db.read() as conn:
        assert db.current_revision(conn) == db.head_revision() == db.HEAD_REVISION
        assert conn.execute(select(stage_transitions)).all() == []
    registry.transition("old 'one'", 1, "Archived")
    assert registry.history("old 'one'")[0].from_stage == "Production"


def test_migrations_create_exactly_the_schema(sql_store_uri):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.get_engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode(sql_store_uri):
    if not sql_store_uri.startswith("sqlite"):
        return
    with db.read() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == db.BUSY_TIMEOUT_MS
