"""Where blobs live and how paths are checked: the helpers every artifact store shares.

Below both ``modelpack.artifacts`` and the S3 store, so neither imports the other's module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from modelpack._fs import leftovers, remove
from modelpack.errors import UnsafePathError


def blob_key(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise UnsafePathError(f"not a sha256 hex digest: {sha256!r}")
    return f"sha256/{sha256[:2]}/{sha256}"


def safe_relpath(path: str) -> str:
    """``path`` as a normalized relative POSIX path; absolute paths and ``..`` are refused."""
    if not path or "\x00" in path:
        raise UnsafePathError(f"artifact path {path!r} is empty or contains a NUL byte")
    posix = path.replace("\\", "/")
    pure = PurePosixPath(posix)
    if pure.is_absolute() or (len(posix) > 1 and posix[1] == ":"):
        raise UnsafePathError(f"artifact path {path!r} is absolute; give a relative path")
    if ".." in pure.parts:
        raise UnsafePathError(f"artifact path {path!r} climbs out of its root with '..'")
    parts = [p for p in pure.parts if p != "."]
    if not parts:
        raise UnsafePathError(f"artifact path {path!r} names no file")
    return "/".join(parts)


def cache_root() -> Path:
    from modelpack.store.db import home

    return home() / "cache"


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove(leftovers(target.parent, name=target.name))
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a lost race with another process: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
