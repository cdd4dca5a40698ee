"""Files already verified against a manifest, so that loading an unchanged model reads no bytes.

Like git's index: once a file has hashed to its manifest's sha256, its absolute path is recorded
with ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``; a later load that stats the same
tuple takes the file as verified without reading it. Any write, chmod, rename over it or
replacement changes the inode or the ctime, and no user call can set the ctime back, so a changed
file is always hashed again.

One SQLite file under ``$MODELPACK_HOME/cache`` (never in the model directory, which stays
byte-identical to what was saved and may be read-only), in WAL mode for several processes. The
cache only ever saves work: a missing, locked, unreadable or corrupt cache means hashing every
file, never a failed load (a corrupt one is removed and rebuilt by later loads).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from modelpack import _fs
from modelpack.errors import InvalidInputError

if TYPE_CHECKING:
    import sqlite3

VERIFY_ENV = "MODELPACK_VERIFY"
HOME_ENV = "MODELPACK_HOME"  # the store's home (modelpack.store.db.home), without SQLAlchemy
# Hashing 1 MiB takes ~0.7 ms on one core here, a cache lookup ~7 us once the database is open
# (~0.3 ms, plus ~2.5 ms to import sqlite3): smaller files are hashed, and a model of small files
# never opens the cache at all.
SMALL_FILE = 1 << 20
MAX_ENTRIES = 100_000
# A file changed within one timestamp tick of the stat that recorded it could keep that stat
# (git's "racily clean" entries). Only files whose ctime is older than this, when first statted,
# are recorded: this covers coarse filesystem clocks (FAT: 2 s) and small clock skew on NFS.
RACY_NS = 2_000_000_000
BUSY_TIMEOUT_S = 2.0
TOUCH_NS = 86_400 * 10**9  # a hit refreshes its entry's age at most once a day
_CORRUPT = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_TABLE = "verified_files_v1"

log = logging.getLogger("modelpack")


def cache_path() -> Path:
    home = Path(os.environ.get(HOME_ENV) or Path.home() / ".modelpack").expanduser()
    return home / "cache" / "verified.sqlite"


def use_cache() -> bool:
    mode = os.environ.get(VERIFY_ENV, "").strip().lower()
    if mode in ("", "cached"):
        return True
    if mode == "full":
        return False
    raise InvalidInputError(
        f"{VERIFY_ENV}={mode!r} is not a verify mode; use 'full' (hash every file on every "
        "load) or 'cached' (the default: skip files verified before and unchanged since)"
    )


def hash_manifest(root: Path, expected: Mapping[str, str]) -> dict[str, str]:
    """The sha256 of each file in ``expected`` (relative path -> manifest sha256).

    A file recorded as verified with the sha256 the manifest expects, and whose stat tuple is
    unchanged since, is given that sha256 without being read.
    """
    if not use_cache():
        return _fs.hash_files(root, sorted(expected))
    started = time.time_ns()
    large: dict[str, tuple[str, str, int]] = {}  # absolute path -> (rel, stat key, ctime)
    for rel in expected:
        st = os.stat(root / rel)
        if st.st_size >= SMALL_FILE:
            large[os.path.abspath(root / rel)] = (rel, _stat_key(st), st.st_ctime_ns)
    if not large:
        return _fs.hash_files(root, sorted(expected))
    known = _lookup(list(large), started)
    hits = {
        rel: expected[rel]
        for path, (rel, key, _) in large.items()
        if known.get(path) == (key, expected[rel])
    }
    actual = _fs.hash_files(root, sorted(set(expected) - set(hits)))
    record = []
    for path, (rel, key, ctime_ns) in large.items():
        if rel in hits or actual[rel] != expected[rel] or ctime_ns > started - RACY_NS:
            continue
        with contextlib.suppress(OSError):
            if _stat_key(os.stat(path)) == key:  # unchanged while it was read
                record.append((path, key, actual[rel], started))
    if record:
        _record(record)
    return {**actual, **hits}


def _stat_key(st: os.stat_result) -> str:
    # Text, not integers: inode numbers may not fit SQLite's signed 64 bits.
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _lookup(paths: list[str], now: int) -> dict[str, tuple[str, str]]:
    """Path -> (stat key, sha256) of the recorded ones among ``paths``."""
    if not cache_path().is_file():
        return {}
    found, stale = {}, []
    with _connect() as conn:
        if conn is None:
            return {}
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT path, stat, sha256, used_at FROM {_TABLE} WHERE path IN ({marks})", chunk
            ).fetchall()
            for path, key, sha, used_at in rows:
                found[path] = (key, sha)
                if used_at < now - TOUCH_NS:
                    stale.append((now, path))
        if stale:
            conn.executemany(f"UPDATE {_TABLE} SET used_at = ? WHERE path = ?", stale)
    return found


def _record(rows: list[tuple[str, str, str, int]]) -> None:
    with _connect() as conn:
        if conn is None:
            return
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(f"INSERT OR REPLACE INTO {_TABLE} VALUES (?, ?, ?, ?)", rows)
        (count,) = conn.execute(f"SELECT count(*) FROM {_TABLE}").fetchone()
        if count > MAX_ENTRIES:
            conn.execute(
                f"DELETE FROM {_TABLE} WHERE path IN "
                f"(SELECT path FROM {_TABLE} ORDER BY used_at LIMIT ?)",
                (count - MAX_ENTRIES,),
            )
        conn.execute("COMMIT")


@contextlib.contextmanager
def _connect() -> Iterator[sqlite3.Connection | None]:
    """The cache's database, or None when it cannot be used; its errors inside are swallowed."""
    import sqlite3

    path = cache_path()
    conn = None
    failure: Exception | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_TABLE} (path TEXT PRIMARY KEY, stat TEXT NOT NULL, "
            "sha256 TEXT NOT NULL, used_at INTEGER NOT NULL)"
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {_TABLE}_age ON {_TABLE} (used_at)")
    except (OSError, RuntimeError, sqlite3.Error) as exc:  # RuntimeError: no home directory
        failure = exc
    try:
        yield None if failure else conn
    except (OSError, sqlite3.Error) as exc:
        failure = exc
    finally:
        if conn is not None:
            conn.close()  # rolls back an unfinished transaction
    if failure is not None:
        _unusable(path, failure)


def _unusable(path: Path, exc: Exception) -> None:
    if getattr(exc, "sqlite_errorcode", None) not in _CORRUPT:
        log.debug("verified-file cache %s unusable, hashing instead: %s", path, exc)
        return
    log.warning("the verified-file cache %s is corrupt (%s); starting a new one", path, exc)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.unlink(f"{path}{suffix}")
