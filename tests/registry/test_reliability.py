"""Concurrent registration and killed processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import modelpack
from modelpack import registry
from tests.registry.conftest import ROOT, save_small

PROCESSES = 8
PER_PROCESS = 50


def _worker(*args: str | Path | int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.registry._worker", *map(str, args)],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_registrations_are_numbered_once(store_uri, tmp_path):
    registry.create_model("race")  # the store exists and is migrated before the race starts
    models = [save_small(tmp_path / f"m{i}", weights=bytes([i]) * 1024) for i in range(PROCESSES)]
    started = time.perf_counter()
    procs = [_worker("register", m, "race", PER_PROCESS) for m in models]
    outputs = [p.communicate(timeout=300) for p in procs]
    elapsed = time.perf_counter() - started
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    numbers = sorted(int(n) for out, _ in outputs for n in out.split())
    total = PROCESSES * PER_PROCESS
    assert numbers == list(range(1, total + 1))
    page = registry.search_versions("name = 'race'", max_results=total)
    assert sorted(v.version for v in page) == numbers
    for version in page:
        assert modelpack.load(version.uri).path.is_dir()
    print(f"\n{PROCESSES}x{PER_PROCESS} registrations on {store_uri.split(':')[0]}: {elapsed:.1f}s")


def _blobs_are_whole(root: Path) -> None:
    for blob in (root / "sha256").rglob("*"):
        if blob.is_file():
            assert not blob.name.startswith("."), f"temporary file left: {blob}"
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


@pytest.mark.parametrize("moment", ["hang-upload", "hang-insert"])
def test_sigkill_mid_register_leaves_no_broken_version(sql_store_uri, tmp_path, moment):
    model = save_small(tmp_path / "m", weights=os.urandom(2 << 20))
    registry.create_model("k")
    marker = tmp_path / "marker"
    proc = _worker(moment, model, "k", marker)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert registry.search_versions("name = 'k'").items == []
    _blobs_are_whole(Path(os.environ["MODELPACK_HOME"]) / "artifacts")
    version = registry.register("k", model)
    assert version.version == 1
    assert modelpack.load("models:/k/1").path.is_dir()
