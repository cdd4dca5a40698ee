"""``/api/v1/blobs/{sha256}``: content-addressed uploads and downloads, streamed and resumable.

Upload: ``PUT`` streams the body into a partial file under ``$MODELPACK_HOME/uploads``; a
``Content-Range: bytes START-END/TOTAL`` header continues a partial upload from START (which
must be what the server has: ``HEAD`` answers 404 with ``Upload-Offset``). When the file is
complete its sha256 is checked, then it moves into the artifact store. Download: ``GET``
answers from the store with ``Range`` support, so a client resumes a broken download.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response

from modelpack.errors import ArtifactError, IntegrityError, InvalidInputError, ModelNotFoundError

_SHA = re.compile(r"[0-9a-f]{64}")
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class BlobService:
    def __init__(self, store: Any, uploads: Path, cache: Path) -> None:
        self.store = store
        self.uploads = uploads
        self.cache = cache
        self._locks: dict[str, asyncio.Lock] = {}

    def _check(self, sha: str) -> str:
        if not _SHA.fullmatch(sha):
            raise InvalidInputError(f"invalid blob name {sha!r}: give a sha256 (64 hex digits)")
        return sha

    def _part(self, sha: str) -> Path:
        return self.uploads / f"{sha}.part"

    def _lock(self, sha: str) -> asyncio.Lock:
        return self._locks.setdefault(sha, asyncio.Lock())

    async def head(self, sha: str) -> Response:
        self._check(sha)
        if await run_in_threadpool(self.store.exists, sha):
            return Response(status_code=200)
        part = self._part(sha)
        offset = part.stat().st_size if part.exists() else 0
        return Response(status_code=404, headers={"Upload-Offset": str(offset)})

    async def get(self, sha: str) -> Response:
        self._check(sha)
        path = await run_in_threadpool(self._readable, sha)
        return FileResponse(path, media_type="application/octet-stream")

    def _readable(self, sha: str) -> Path:
        local = self.store.local_path(sha)
        if local is not None:
            return Path(local)
        cached = self.cache / sha  # a remote (S3) store: fetched once, then served with Range
        if not cached.is_file():
            if not self.store.exists(sha):
                raise ModelNotFoundError(f"no blob {sha} in the artifact store")
            self.cache.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".{sha}.tmp")
            self.store.get_file(sha, tmp)
            tmp.replace(cached)
        return cached

    async def put(self, sha: str, request: Request) -> Response:
        self._check(sha)
        async with self._lock(sha):
            if await run_in_threadpool(self.store.exists, sha):
                await _drain(request)
                return Response(status_code=200)
            part = self._part(sha)
            start, total = self._range(request, part)
            self.uploads.mkdir(parents=True, exist_ok=True)
            received = start
            fh = await run_in_threadpool(open, part, "r+b" if start else "wb")
            try:
                if start:
                    fh.seek(start)
                    fh.truncate()
                async for chunk in request.stream():
                    await run_in_threadpool(fh.write, chunk)
                    received += len(chunk)
            except ClientDisconnect:
                return Response(status_code=400)  # the partial file stays: resume from there
            finally:
                await run_in_threadpool(fh.close)
            if total is not None and received < total:
                return Response(status_code=202, headers={"Upload-Offset": str(received)})
            await run_in_threadpool(self._commit, sha, part)
            return Response(status_code=201)

    def _range(self, request: Request, part: Path) -> tuple[int, int | None]:
        header = request.headers.get("content-range")
        if header is None:
            return 0, None
        found = _RANGE.fullmatch(header.strip())
        if found is None:
            raise InvalidInputError(f"invalid Content-Range {header!r}: use bytes START-END/TOTAL")
        start, _end, total = (int(x) for x in found.groups())
        have = part.stat().st_size if part.exists() else 0
        if start != have:
            raise InvalidInputError(
                f"upload of {part.stem} resumes at byte {have}, not {start}", offset=have
            )
        return start, total

    def _commit(self, sha: str, part: Path) -> None:
        from modelpack._fs import sha256_file

        try:
            if sha256_file(part) != sha:
                raise IntegrityError(f"the uploaded bytes do not hash to {sha}; upload it again")
            self.store.put_file(part, sha)
        except (IntegrityError, ArtifactError):
            part.unlink(missing_ok=True)
            raise
        part.unlink(missing_ok=True)


async def _drain(request: Request) -> None:
    try:
        async for _ in request.stream():
            pass
    except ClientDisconnect:
        pass
