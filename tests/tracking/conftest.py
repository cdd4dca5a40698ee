"""Tracking fixtures: an isolated SQLite home, and the registry's store on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import modelpack.tracking
from modelpack.store import db

# The registry's fixtures, shared as they are: every store test runs on SQLite and PostgreSQL.
from tests.registry.conftest import postgres_server, store_uri  # noqa: F401


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh SQLite store and artifact directory under a temporary MODELPACK_HOME."""
    path = tmp_path / "home"
    monkeypatch.setenv("MODELPACK_HOME", str(path))
    for name in ("MODELPACK_STORE_URI", "MODELPACK_ARTIFACT_URI", "MODELPACK_EXPERIMENT"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield path
    finally:
        db.dispose_all()


@pytest.fixture(autouse=True)
def _no_leftover_runs() -> Iterator[None]:
    yield
    while modelpack.tracking.active_run() is not None:
        modelpack.tracking.end_run()
    modelpack.tracking.autolog(disable=True)
