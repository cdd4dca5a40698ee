"""Atomic directory writes and file hashing."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modelpack.errors import ModelExistsError

_CHUNK = 8 * 1024 * 1024
# What an interrupted write leaves beside its target: ``.NAME.tmp-xxxxxxxx``, ``.NAME.old-...``.
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-[0-9a-f]{8}$")
STALE_AGE_S = 3600.0  # older than this, no live write can still own it


def sha256_file(path: Path) -> str:
    # hashlib releases the GIL on large updates, so several files hash in parallel.
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size <= _CHUNK:
            return hashlib.sha256(fh.read()).hexdigest()
        digest = hashlib.sha256()
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def hash_files(root: Path, relpaths: list[str]) -> dict[str, str]:
    # A thread pool only pays off when there is real data to hash in more than one file.
    total = sum((root / p).stat().st_size for p in relpaths)
    if len(relpaths) <= 1 or total < 4 * _CHUNK:
        return {p: sha256_file(root / p) for p in relpaths}
    workers = min(len(relpaths), os.cpu_count() or 1, 8)
    with ThreadPoolExecutor(workers) as pool:
        return dict(
            zip(relpaths, pool.map(lambda p: sha256_file(root / p), relpaths), strict=False)
        )


def walk_files(root: Path) -> list[str]:
    """Relative POSIX paths of every regular file under ``root``, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath, name)
            out.append(full.relative_to(root).as_posix())
    return sorted(out)


@contextlib.contextmanager
def atomic_directory(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; rename it into place on success.

    On any error the temporary directory is removed, so a crash never leaves half
    a directory under the final name.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise ModelExistsError(
            f"{target} already exists; choose another path or pass overwrite=True"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    remove(leftovers(target.parent, name=target.name))  # what a killed save left here
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            if exchange(tmp, target):  # one step: the target is whole at every instant
                shutil.rmtree(tmp, ignore_errors=True)  # now the old directory
                return
            # Elsewhere: rename away, then in; a kill between leaves the old one as .old-*.
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without it (glibc < 2.28, musl < 1.2.4)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return bool(rc == 0)


def leftovers(directory: Path, *, name: str | None = None, age: float = STALE_AGE_S) -> list[Path]:
    """What interrupted writes left in ``directory`` (for ``name``), older than ``age`` s."""
    found = []
    cutoff = time.time() - age
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            match = _LEFTOVER.match(entry.name)
            if match is None or (name is not None and match["name"] != name):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    found.append(Path(entry.path))
    return sorted(found)


def remove(paths: list[Path]) -> int:
    """Delete ``paths`` (files or directories); the bytes freed."""
    freed = 0
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            for root, _, files in os.walk(path):
                for f in files:
                    with contextlib.suppress(OSError):
                        freed += os.lstat(os.path.join(root, f)).st_size
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                freed += path.lstat().st_size
                path.unlink()
    return freed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
