"""The client side of the team server: ``MODELPACK_TRACKING_URI=http://host:port``.

With a tracking URI set, the registry, tracking and artifact APIs send their calls to the
server instead of opening the SQL store; nothing else changes for the caller. The client is
the standard library's ``http.client`` (one keep-alive connection per thread), so that
``import modelpack`` and a training process stay free of extra dependencies.
"""

from __future__ import annotations

import atexit
import http.client
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import orjson

from modelpack._fs import sha256_file
from modelpack.errors import (
    ArtifactError,
    InvalidInputError,
    ModelpackError,
    ServerUnavailableError,
    error_class,
)

TRACKING_URI_ENV = "MODELPACK_TRACKING_URI"
TOKEN_ENV = "MODELPACK_TRACKING_TOKEN"
API = "/api/v1"
CHUNK = 1 << 20
_RETRIES = 3
_UNSET = object()

_override: Any = _UNSET
_clients: dict[tuple[int, str, str | None], RestClient] = {}
_lock = threading.Lock()


def set_tracking_uri(uri: str | None) -> None:
    """Send registry and tracking calls to the team server at ``uri`` (``http(s)://...``).

    ``None`` or ``""`` goes back to the embedded store; this overrides ``MODELPACK_TRACKING_URI``.
    """
    global _override
    if uri and not uri.startswith(("http://", "https://")):
        raise InvalidInputError(
            f"invalid tracking URI {uri!r}: give http://HOST:PORT of a `modelpack server`, "
            "or None for the embedded store"
        )
    _override = uri or None


def get_tracking_uri() -> str | None:
    """The team server's URI, or None when calls go to the embedded store."""
    uri = os.environ.get(TRACKING_URI_ENV) if _override is _UNSET else _override
    if not uri:
        return None
    if not uri.startswith(("http://", "https://")):
        raise InvalidInputError(
            f"invalid {TRACKING_URI_ENV} {uri!r}: give http://HOST:PORT of a `modelpack server`"
        )
    return str(uri).rstrip("/")


def client() -> RestClient | None:
    """The client for the configured server, or None for the embedded store."""
    uri = get_tracking_uri()
    if uri is None:
        return None
    key = (os.getpid(), uri, os.environ.get(TOKEN_ENV) or None)
    found = _clients.get(key)
    if found is None:
        with _lock:
            found = _clients.setdefault(key, RestClient(uri, key[2]))
    return found


def q(segment: object) -> str:
    """One URL path segment (model names may hold spaces and other characters)."""
    return quote(str(segment), safe="")


class RestClient:
    def __init__(self, uri: str, token: str | None = None, timeout: float = 60.0) -> None:
        parts = urlsplit(uri)
        if not parts.hostname:
            raise InvalidInputError(f"invalid tracking URI {uri!r}: no host")
        self.uri = uri
        self.token = token
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []  # of every thread, for close()
        self._open_lock = threading.Lock()

    def close(self) -> None:
        with self._open_lock:
            found, self._open = self._open, []
        for conn in found:
            conn.close()

    # -- transport ---------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout, blocksize=CHUNK)
            self._local.conn = conn
            with self._open_lock:
                self._open.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._open_lock:
                if conn in self._open:
                    self._open.remove(conn)

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> http.client.HTTPResponse:
        """One request; the response is returned unread. A stale keep-alive is retried once."""
        url = self._prefix + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        all_headers = self._headers(headers)
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, url, body=body, headers=all_headers)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop_connection()
                rewindable = body is None or isinstance(body, bytes)
                if attempt == 2 or not rewindable:
                    raise ServerUnavailableError(
                        f"the tracking server at {self.uri} closed the connection: {exc}"
                    ) from None
            except OSError as exc:
                self._drop_connection()
                raise ServerUnavailableError(
                    f"cannot reach the tracking server at {self.uri}: {exc}"
                ) from None
        raise AssertionError("unreachable")

    def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
    ) -> Any:
        """A JSON call: the decoded answer, or the server's error raised as its own class."""
        body = None if json is None else orjson.dumps(json)
        headers = {"Content-Type": "application/json"} if body is not None else None
        resp = self.send(method, API + path, body=body, headers=headers, query=query)
        data = resp.read()
        if resp.status >= 400:
            raise self._error(resp, data)
        return orjson.loads(data) if data else None

    def _error(self, resp: http.client.HTTPResponse, data: bytes) -> ModelpackError:
        try:
            error = orjson.loads(data)["error"]
            code, message = str(error["code"]), str(error["message"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            text = data[:200].decode("utf-8", "replace").strip()
            return ServerUnavailableError(
                f"the tracking server at {self.uri} answered {resp.status}: {text or resp.reason}"
            )
        cls = error_class(code)
        try:
            error_obj = cls(message)
        except TypeError:  # an error class with required keyword details
            error_obj = ModelpackError(message)
            error_obj.code = code
        error_obj.http_status = resp.status
        return error_obj

    # -- blobs: streamed, resumable -----------------------------------------------------------

    def blob_offset(self, sha256: str) -> int | None:
        """None when the server holds the blob; else how many bytes of it it has received."""
        resp = self.send("HEAD", f"{API}/blobs/{sha256}")
        resp.read()
        if resp.status == 200:
            return None
        if resp.status == 404:
            return int(resp.getheader("Upload-Offset") or 0)
        raise self._error(resp, b"")

    def upload_blob(self, path: Path, sha256: str) -> None:
        """Send ``path`` as blob ``sha256``, resuming where an interrupted upload stopped."""
        size = path.stat().st_size
        for attempt in range(1, _RETRIES + 1):
            offset = self.blob_offset(sha256)
            if offset is None:
                return
            offset = offset if offset <= size else 0
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size - offset),
            }
            if offset:
                headers["Content-Range"] = f"bytes {offset}-{size - 1}/{size}"
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    resp = self.send("PUT", f"{API}/blobs/{sha256}", body=fh, headers=headers)
                    data = resp.read()
            except (ServerUnavailableError, OSError):
                self._drop_connection()
                if attempt == _RETRIES:
                    raise
                time.sleep(0.2 * attempt)
                continue
            if resp.status >= 400:
                raise self._error(resp, data)
            return

    def download_blob(self, sha256: str, dest: Path) -> None:
        """Stream blob ``sha256`` into ``dest``, resuming with a Range request, then verify it."""
        part = dest.with_name(f".{dest.name}.part")
        for attempt in range(1, _RETRIES + 1):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else None
            try:
                resp = self.send("GET", f"{API}/blobs/{sha256}", headers=headers)
                if resp.status >= 400 and resp.status != 416:
                    raise self._error(resp, resp.read())
                mode = "ab" if resp.status == 206 else "wb"
                with open(part, mode) as fh:
                    while block := resp.read(CHUNK):
                        fh.write(block)
                break
            except (ServerUnavailableError, OSError, http.client.IncompleteRead):
                self._drop_connection()
                if attempt == _RETRIES:
                    raise
                time.sleep(0.2 * attempt)
        if sha256_file(part) != sha256:
            part.unlink(missing_ok=True)
            raise ArtifactError(f"blob {sha256} from {self.uri} does not match its hash")
        os.replace(part, dest)


class RestArtifactStore:
    """The artifact store behind a team server: blobs go up and down through its API."""

    def __init__(self, rest: RestClient) -> None:
        self.rest = rest
        self.uri = rest.uri

    def exists(self, sha256: str) -> bool:
        return self.rest.blob_offset(sha256) is None

    def put_file(self, path: Path, sha256: str | None = None) -> str:
        digest = sha256 or sha256_file(path)
        self.rest.upload_blob(path, digest)
        return digest

    def get_file(self, sha256: str, dest: Path) -> None:
        self.rest.download_blob(sha256, dest)

    def local_path(self, sha256: str) -> Path | None:
        return None


def close_all() -> None:
    """Close every client's connections (at exit, and when a test's server goes away)."""
    with _lock:
        found = list(_clients.values())
        _clients.clear()
    for rest in found:
        rest.close()


atexit.register(close_all)
