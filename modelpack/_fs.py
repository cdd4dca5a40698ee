"""Atomic directory writes and file hashing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modelpack.errors import ModelExistsError

_CHUNK = 8 * 1024 * 1024


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
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
