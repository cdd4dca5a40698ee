"""Loading skips files verified before and unchanged since; any change is still caught."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import modelpack
from modelpack import _fs, _verified
from modelpack.errors import IntegrityError, InvalidInputError
from tests.conftest import ROOT
from tests.models import Doubler

BIG = "model/artifacts/weights"
# Files are recorded only once their ctime is this old; the tests age them by sleeping past it.
RACY_NS = 50_000_000


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELPACK_VERIFY", raising=False)
    monkeypatch.setattr(_verified, "RACY_NS", RACY_NS)
    return tmp_path / "home"


@pytest.fixture
def hashed(monkeypatch):
    """The relative paths (under the model directory) of every file read to hash it."""
    calls: list[Path] = []
    real = _fs.sha256_file

    def counting(path: Path) -> str:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(_fs, "sha256_file", counting)
    return calls


def _save(base: Path, name: str = "m", size: int = 3 << 20) -> Path:
    weights = base / f"{name}.bin"
    weights.write_bytes(os.urandom(size))
    path = modelpack.save(Doubler(), base / name, artifacts={"weights": weights})
    time.sleep(2 * RACY_NS / 1e9)  # old enough to be recorded
    return path


def _names(calls: list[Path], model: Path) -> set[str]:
    return {p.relative_to(model).as_posix() for p in calls}


@pytest.fixture
def warm(tmp_path, hashed):
    """A saved model loaded once, so that its large file is recorded as verified."""
    path = _save(tmp_path)
    hashed.clear()
    modelpack.load(path)
    assert BIG in _names(hashed, path)
    hashed.clear()
    return path


def test_second_load_reads_no_file_to_hash(tmp_path, hashed, monkeypatch):
    monkeypatch.setattr(_verified, "SMALL_FILE", 0)  # every file goes through the cache
    path = _save(tmp_path)
    hashed.clear()
    files = set(modelpack.load(path).descriptor.files)
    assert _names(hashed, path) == files
    hashed.clear()
    assert modelpack.load(path).predict(pd.DataFrame({"x": [1.0]})).tolist() == [2.0]
    assert hashed == []


def test_small_files_are_hashed_large_ones_skipped(warm, hashed):
    modelpack.load(warm)
    assert hashed and BIG not in _names(hashed, warm)
    assert all(p.stat().st_size < _verified.SMALL_FILE for p in hashed)


def test_a_file_written_just_before_the_load_is_not_recorded(tmp_path, hashed, monkeypatch):
    monkeypatch.setattr(_verified, "RACY_NS", 3600 * 10**9)  # every file counts as fresh
    path = _save(tmp_path)
    modelpack.load(path)
    hashed.clear()
    modelpack.load(path)
    assert BIG in _names(hashed, path)


def test_one_byte_changed_in_place_with_mtime_restored_is_caught(warm):
    big = warm / BIG
    before = big.stat()
    with open(big, "r+b") as fh:
        fh.seek(before.st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 1]))
    os.utime(big, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = big.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    with pytest.raises(IntegrityError, match=BIG) as caught:
        modelpack.load(warm)
    assert caught.value.details["file"] == BIG


def test_file_replaced_by_one_of_the_same_size_is_caught(warm):
    big = warm / BIG
    before = big.stat()
    other = big.with_name("other")
    other.write_bytes(os.urandom(before.st_size))
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, big)
    with pytest.raises(IntegrityError, match=BIG):
        modelpack.load(warm)


def test_verify_full_rehashes_every_file(warm, hashed, monkeypatch):
    monkeypatch.setenv("MODELPACK_VERIFY", "full")
    modelpack.load(warm)
    assert BIG in _names(hashed, warm)


def test_unknown_verify_mode_is_a_clear_error(warm, monkeypatch):
    monkeypatch.setenv("MODELPACK_VERIFY", "fast")
    with pytest.raises(InvalidInputError, match="MODELPACK_VERIFY='fast'.*'full'"):
        modelpack.load(warm)


def _forge_entry(model: Path) -> None:
    """Change the large file, then make the cache claim the changed file is verified."""
    big = model / BIG
    with open(big, "r+b") as fh:
        fh.write(b"\0" * 16)
    key = _verified._stat_key(big.stat())
    with sqlite3.connect(_verified.cache_path()) as conn:
        updated = conn.execute(
            "UPDATE verified_files_v1 SET stat = ? WHERE path = ?", (key, str(big))
        ).rowcount
    assert updated == 1


def test_cli_verify_and_full_mode_never_trust_the_cache(warm, monkeypatch):
    _forge_entry(warm)
    modelpack.load(warm)  # the forged entry is trusted: this proves the cache is consulted
    out = subprocess.run(
        [sys.executable, "-m", "modelpack", "verify", str(warm)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and BIG in out.stderr
    monkeypatch.setenv("MODELPACK_VERIFY", "full")
    with pytest.raises(IntegrityError, match=BIG):
        modelpack.load(warm)


def test_corrupt_cache_is_ignored_then_rebuilt(warm, hashed, caplog):
    db = _verified.cache_path()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"not a database" * 1000)
    modelpack.load(warm)
    assert BIG in _names(hashed, warm)
    assert "corrupt" in caplog.text
    modelpack.load(warm)  # records into a new database
    hashed.clear()
    modelpack.load(warm)
    assert BIG not in _names(hashed, warm)


def test_unusable_cache_location_falls_back_to_hashing(tmp_path, hashed, monkeypatch):
    path = _save(tmp_path)
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("MODELPACK_HOME", str(blocker))
    for _ in range(2):
        hashed.clear()
        modelpack.load(path)
        assert BIG in _names(hashed, path)


def test_cache_lives_outside_the_model_directory(warm, home):
    listing = {p: p.stat().st_mtime_ns for p in warm.rglob("*")}
    modelpack.load(warm)
    assert {p: p.stat().st_mtime_ns for p in warm.rglob("*")} == listing
    assert _verified.cache_path().is_relative_to(home)


def test_cache_keeps_at_most_max_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(_verified, "MAX_ENTRIES", 2)
    paths = [_save(tmp_path, f"m{i}") for i in range(3)]
    for path in paths:
        modelpack.load(path)
    with sqlite3.connect(_verified.cache_path()) as conn:
        rows = [r[0] for r in conn.execute("SELECT path FROM verified_files_v1")]
    assert sorted(rows) == sorted(str(p / BIG) for p in paths[1:])


_WORKER = """
import json, sys
from pathlib import Path
import pandas as pd
import modelpack
from modelpack import _fs, _verified
_verified.RACY_NS = {racy}
hashed = []
real = _fs.sha256_file
_fs.sha256_file = lambda p: (hashed.append(str(p)), real(p))[1]
for _ in range(4):
    for path in sys.argv[1:]:
        assert modelpack.load(path).predict(pd.DataFrame({{"x": [1.0]}})).tolist() == [2.0]
print(json.dumps(hashed))
"""


def test_concurrent_loads_from_two_processes(tmp_path, hashed):
    paths = [_save(tmp_path, f"m{i}") for i in range(3)]
    hashed.clear()
    code = _WORKER.format(racy=RACY_NS)
    cmd = [sys.executable, "-c", code, *map(str, paths)]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(proc, *proc.communicate(timeout=120)) for proc in procs]
    for proc, out, err in results:
        assert proc.returncode == 0, err
        big_hashes = [p for p in json.loads(out) if p.endswith("weights")]
        assert len(big_hashes) <= len(paths)  # each large file at most once per process
    for path in paths:
        modelpack.load(path)
    assert not [p for p in hashed if p.name == "weights"]


def test_import_and_small_models_do_not_import_sqlite3(tmp_path):
    small = modelpack.save(Doubler(), tmp_path / "small")
    code = (
        "import sys, modelpack\n"
        "assert 'sqlite3' not in sys.modules\n"
        f"modelpack.load({str(small)!r})\n"
        "assert 'sqlite3' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
