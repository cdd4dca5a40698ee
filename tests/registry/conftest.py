"""Store fixtures: every registry test runs on SQLite and on a real PostgreSQL; S3 on moto."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpack.store import db

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def _as_postgres_user(*args: str) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return list(args)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A server URI without database name: MODELPACK_TEST_POSTGRES_URI or a throwaway cluster."""
    given = os.environ.get("MODELPACK_TEST_POSTGRES_URI")
    if given:
        yield given.rstrip("/")
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        _skip_or_fail("PostgreSQL is not installed (apt-get install postgresql)")
    bindir = Path(bins[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="modelpack-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = free_port()
    run = subprocess.run
    run(
        _as_postgres_user(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"),
        check=True,
        capture_output=True,
    )
    opts = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=200"
    pg_ctl = str(bindir / "pg_ctl")
    run(
        _as_postgres_user(
            pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "start"
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        run(
            _as_postgres_user(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


def _create_database(server: str) -> str:
    import psycopg

    name = f"mp_{uuid.uuid4().hex[:12]}"
    plain = server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(f"{plain}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


def _sql_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    home = tmp_path / "home"
    monkeypatch.setenv("MODELPACK_HOME", str(home))
    for name in ("MODELPACK_ARTIFACT_URI", "MODELPACK_TRACKING_URI", "MODELPACK_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "sqlite":
        uri = f"sqlite:///{home / 'modelpack.db'}"
    else:
        uri = _create_database(request.getfixturevalue("postgres_server"))
    monkeypatch.setenv("MODELPACK_STORE_URI", uri)
    try:
        yield uri
    finally:
        db.dispose_all()


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store_uri(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh, empty SQL store (and MODELPACK_HOME) for one test, on each backend."""
    yield from _sql_store(request, tmp_path, monkeypatch)


@pytest.fixture(params=["sqlite", "postgres", "server"])
def store_uri(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh, empty store for one test: SQLite, PostgreSQL, or a live team server.

    With "server", a `modelpack server` keeps its store and blobs under ``tmp_path/home`` (where
    the SQL params keep theirs), and this process is its client: MODELPACK_TRACKING_URI is set
    and MODELPACK_HOME is another directory, so nothing can reach the store but the API.
    """
    if request.param != "server":
        yield from _sql_store(request, tmp_path, monkeypatch)
        return
    from modelpack import _rest
    from modelpack._rest import close_all
    from tests._team_server import team_server

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "client-home"))
    for name in ("MODELPACK_ARTIFACT_URI", "MODELPACK_STORE_URI", "MODELPACK_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with team_server(home) as url:
        monkeypatch.setattr(_rest, "_override", _rest._UNSET)  # the env var decides, as for a user
        monkeypatch.setenv("MODELPACK_TRACKING_URI", url)
        try:
            yield url
        finally:
            from modelpack.tracking._batcher import batcher

            batcher.flush()
            close_all()
            db.dispose_all()


@pytest.fixture
def s3_bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import boto3

    for key, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    """A tiny python-flavor model with a weights-like artifact file."""
    return save_small(tmp_path / "small")


def save_small(path: Path, weights: bytes = b"w" * 4096, offset: float = 0.0) -> Path:
    import modelpack
    from tests.models import Doubler

    art = path.parent / f".{path.name}-factor"
    art.write_bytes(weights)
    return modelpack.save(Doubler(offset), path, artifacts={"weights": art}, overwrite=True)
