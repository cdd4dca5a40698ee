"""The OCI distribution API over the standard library's ``http.client``.

One :class:`Registry` per repository: it keeps one connection alive, answers the registry's
``WWW-Authenticate`` challenges (Bearer token flow or Basic) and streams bodies from files.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import re
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

from modelpack.errors import (
    ArtifactError,
    AuthenticationError,
    IntegrityError,
    ModelNotFoundError,
    PermissionDeniedError,
    ServerUnavailableError,
)
from modelpack.oci import _auth
from modelpack.oci._reference import Reference, parse

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
TIMEOUT_S = 60.0
_READ = 1 << 20
_RETRIES = 3
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5
_MAX_PAGES = 10_000
# (file, offset, length) is re-sendable after a 401 or a dropped connection, unlike a stream.
Body = bytes | tuple[Path, int, int] | None
_TRANSFER_ERRORS = (OSError, http.client.HTTPException)


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes


class Registry:
    def __init__(
        self,
        ref: Reference,
        *,
        insecure: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.ref = ref
        self.scheme = "http" if insecure or ref.is_loopback else "https"
        self.base = f"{self.scheme}://{ref.host}"
        self.credentials = _auth.find(ref.host, username, password)
        self._authorization: str | None = None
        self._conn: http.client.HTTPConnection | None = None
        self.bytes_sent = 0

    # -- transport ------------------------------------------------------------------------

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.scheme == "https":
                ctx = ssl.create_default_context()
                self._conn = http.client.HTTPSConnection(
                    self.ref.host, timeout=TIMEOUT_S, context=ctx
                )
            else:
                self._conn = http.client.HTTPConnection(self.ref.host, timeout=TIMEOUT_S)
        return self._conn

    def url(self, path: str) -> str:
        return urljoin(self.base, path)

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: Body
    ) -> http.client.HTTPResponse:
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.base:
            raise ArtifactError(f"registry {self.ref.host} sent a location on another host: {url}")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = self._connection()
        conn.putrequest(method, target, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        if self._authorization:
            conn.putheader("Authorization", self._authorization)
        if isinstance(body, bytes):
            conn.putheader("Content-Length", str(len(body)))
        elif body is not None:
            conn.putheader("Content-Length", str(body[2]))
        elif method in ("PUT", "POST", "PATCH"):
            conn.putheader("Content-Length", "0")
        conn.endheaders()
        if isinstance(body, bytes):
            conn.send(body)
            self.bytes_sent += len(body)
        elif body is not None:
            self._send_file(conn, *body)
        return conn.getresponse()

    def _send_file(
        self, conn: http.client.HTTPConnection, path: Path, offset: int, length: int
    ) -> None:
        with open(path, "rb") as fh:
            fh.seek(offset)
            left = length
            while left:
                piece = fh.read(min(_READ, left))
                if not piece:
                    raise ArtifactError(f"{path} shrank while it was being uploaded")
                conn.send(piece)
                self.bytes_sent += len(piece)
                left -= len(piece)

    def _exchange(
        self, method: str, url: str, headers: dict[str, str], body: Body
    ) -> http.client.HTTPResponse:
        """One request, reconnecting once when a kept-alive connection was closed under us; not
        a PATCH, which may have left part of its chunk behind (the upload loop resumes it)."""
        for attempt in (0, 1):
            try:
                return self._send(method, url, headers, body)
            except (ConnectionRefusedError, socket.gaierror) as exc:
                self.close()
                raise self._unreachable(exc) from exc
            except _TRANSFER_ERRORS as exc:
                self.close()
                if attempt or method == "PATCH":
                    raise self._unreachable(exc) from exc
        raise AssertionError("unreachable")

    def _unreachable(self, exc: BaseException) -> ServerUnavailableError:
        reason = (
            exc.strerror
            if isinstance(exc, OSError) and exc.strerror
            else str(exc) or type(exc).__name__
        )
        return ServerUnavailableError(f"cannot reach the registry at {self.base}: {reason}")

    @contextlib.contextmanager
    def stream(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: Body = None
    ) -> Iterator[http.client.HTTPResponse]:
        """The response, authenticated; its body is for the caller to read."""
        url = self.url(path)
        headers = dict(headers or {})
        resp = self._exchange(method, url, headers, body)
        if resp.status == 401:
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.read()
            self._authenticate(challenge)
            resp = self._exchange(method, url, headers, body)
            if resp.status == 401:
                resp.read()
                raise self._refused()
        try:
            yield resp
        finally:
            with contextlib.suppress(*_TRANSFER_ERRORS):
                resp.read()  # drain, so that the connection can carry the next request
            if resp.will_close:
                self.close()

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: Body = None
    ) -> Reply:
        with self.stream(method, path, headers, body) as resp:
            try:
                data = resp.read() if method != "HEAD" else b""
            except _TRANSFER_ERRORS as exc:
                self.close()
                raise self._unreachable(exc) from exc
            return Reply(resp.status, resp.headers, data)

    # -- authentication -------------------------------------------------------------------

    def _tried(self) -> str:
        if self.credentials is None:
            return f"no credentials (none given, none in {_auth.config_path()})"
        return f"credentials from {self.credentials.source}"

    def _refused(self) -> AuthenticationError:
        return AuthenticationError(
            f"registry {self.ref.host} refused {self._tried()}; log in (docker/podman/oras "
            "login) or pass --username and --password-stdin"
        )

    def _authenticate(self, challenge: str) -> None:
        scheme, _, params = challenge.strip().partition(" ")
        if scheme.lower() == "basic":
            if self.credentials is None:
                raise self._refused()
            self._authorization = self.credentials.basic()
        elif scheme.lower() == "bearer":
            fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
            self._authorization = f"Bearer {self._token(fields)}"
        else:
            raise AuthenticationError(
                f"registry {self.ref.host} asks for {scheme or 'an unnamed'} authentication, "
                "which modelpack does not speak (Basic and Bearer tokens only)"
            )

    def _token(self, params: dict[str, str]) -> str:
        realm = params.get("realm")
        if not realm:
            raise AuthenticationError(
                f"registry {self.ref.host} sent a Bearer challenge with no realm"
            )
        query: dict[str, str] = {k: params[k] for k in ("service", "scope") if k in params}
        request = urllib.request.Request(f"{realm}?{urlencode(query)}" if query else realm)
        if self.credentials is not None:
            request.add_header("Authorization", self.credentials.basic())
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise self._refused() from exc
            raise ArtifactError(f"token service {realm} answered {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ServerUnavailableError(f"cannot get a token from {realm}: {exc}") from exc
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not token:
            raise AuthenticationError(f"token service {realm} answered no token")
        return str(token)

    # -- errors ---------------------------------------------------------------------------

    def fail(self, reply: Reply, what: str) -> Exception:
        detail = _registry_message(reply.body)
        if reply.status == 403:
            return PermissionDeniedError(
                f"registry {self.ref.host} denied {what} to {self._tried()}{detail}"
            )
        if reply.status == 404:
            return ModelNotFoundError(f"{what}: not found in {self.ref.host}{detail}")
        return ArtifactError(f"{what}: registry {self.ref.host} answered {reply.status}{detail}")

    # -- the API --------------------------------------------------------------------------

    def _path(self, kind: str, ref: str) -> str:
        return f"/v2/{self.ref.repository}/{kind}/{ref}"

    def repositories(self, page_size: int = 1000) -> list[str]:
        """Every repository name of the registry's catalog (``GET /v2/_catalog``, followed
        page by page through its ``Link`` header). 401/403/404 raise as the other calls do:
        many hosted registries keep their catalog to themselves."""
        return self._paged(f"/v2/_catalog?n={page_size}", "repositories", "the catalog")

    def tags(self, page_size: int = 1000) -> list[str]:
        """The tags of this repository (``GET /v2/<name>/tags/list``, paged the same way);
        empty when the repository has none or does not exist."""
        path = f"/v2/{self.ref.repository}/tags/list?n={page_size}"
        try:
            return self._paged(path, "tags", f"the tags of {self.ref}")
        except ModelNotFoundError:
            return []

    def _paged(self, path: str, key: str, what: str) -> list[str]:
        found: list[str] = []
        next_path: str | None = path
        for _ in range(_MAX_PAGES):
            if next_path is None:
                return found
            reply = self.request("GET", next_path, {"Accept": "application/json"})
            if reply.status != 200:
                raise self.fail(reply, f"listing {what}")
            try:
                items = json.loads(reply.body).get(key) or []
            except (ValueError, AttributeError) as exc:
                raise ArtifactError(
                    f"listing {what}: registry {self.ref.host} answered no JSON object"
                ) from exc
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ArtifactError(f"listing {what}: registry {self.ref.host} sent no {key} list")
            found += items
            next_path = _next_page(reply.headers.get("Link"), next_path)
        raise ArtifactError(f"listing {what}: more than {_MAX_PAGES} pages")

    def get_manifest(self) -> tuple[bytes, str, str]:
        """The manifest's bytes, media type and digest (checked against a pinned digest)."""
        accept = ", ".join((MANIFEST, INDEX, DOCKER_MANIFEST))
        reply = self.request("GET", self._path("manifests", self.ref.target), {"Accept": accept})
        if reply.status == 404:
            raise ModelNotFoundError(
                f"{self.ref}: no such manifest (the repository or the "
                f"{'digest' if self.ref.digest else 'tag ' + repr(self.ref.target)} does not exist)"
            )
        if reply.status != 200:
            raise self.fail(reply, f"reading the manifest of {self.ref}")
        digest = "sha256:" + hashlib.sha256(reply.body).hexdigest()
        if self.ref.digest and digest != self.ref.digest:
            raise IntegrityError(
                f"{self.ref}: the registry sent a manifest whose digest is {digest}"
            )
        media_type = (reply.headers.get("Content-Type") or "").split(";")[0].strip()
        return reply.body, media_type, digest

    def put_manifest(self, body: bytes, tag: str) -> str:
        reply = self.request("PUT", self._path("manifests", tag), {"Content-Type": MANIFEST}, body)
        if reply.status != 201:
            raise self.fail(reply, f"pushing the manifest to {self.ref}")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def has_blob(self, digest: str) -> bool:
        reply = self.request("HEAD", self._path("blobs", digest))
        if reply.status == 404:
            return False
        if reply.status != 200:
            raise self.fail(reply, f"checking blob {digest}")
        return True

    def read_blob(self, digest: str, size: int, sink: BinaryIO) -> None:
        """Stream the blob into ``sink``, checking its size and digest as it comes.

        Registries backed by object storage answer with a redirect to it (a presigned URL):
        followed without the registry's credentials, never from HTTPS down to HTTP.
        """
        hasher = hashlib.sha256()
        with self.stream("GET", self._path("blobs", digest)) as resp:
            if resp.status not in _REDIRECTS:
                got = self._copy(resp, digest, size, sink, hasher)
                location = None
            else:
                location = urljoin(
                    self.url(self._path("blobs", digest)), resp.getheader("Location", "")
                )
        for _ in range(_MAX_REDIRECTS):
            if location is None:
                break
            parts = urlsplit(location)
            if parts.scheme not in ("http", "https") or (
                parts.scheme == "http" and self.scheme == "https"
            ):
                raise ArtifactError(
                    f"blob {digest}: registry {self.ref.host} redirects to {location}"
                )
            conn_cls = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = conn_cls(parts.netloc, timeout=TIMEOUT_S)
            try:
                conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
                resp = conn.getresponse()
                if resp.status in _REDIRECTS:
                    location = urljoin(location, resp.getheader("Location", ""))
                    continue
                got = self._copy(resp, digest, size, sink, hasher)
                location = None
            except (OSError, http.client.HTTPException) as exc:
                raise ServerUnavailableError(
                    f"blob {digest}: cannot read {parts.netloc}: {exc}"
                ) from exc
            finally:
                conn.close()
        if location is not None:
            raise ArtifactError(f"blob {digest}: more than {_MAX_REDIRECTS} redirects")
        actual = "sha256:" + hasher.hexdigest()
        if got != size or actual != digest:
            raise IntegrityError(
                f"{self.ref}: blob {digest} does not match its descriptor "
                f"(got {got} bytes{'' if got > size else ' hashing to ' + actual}, expected {size})"
            )

    def _copy(
        self,
        resp: http.client.HTTPResponse,
        digest: str,
        size: int,
        sink: BinaryIO,
        hasher: hashlib._Hash,
    ) -> int:
        if resp.status != 200:
            raise self.fail(Reply(resp.status, resp.headers, resp.read()), f"blob {digest}")
        got = 0
        try:
            while piece := resp.read(_READ):
                got += len(piece)
                if got > size:
                    break
                hasher.update(piece)
                sink.write(piece)
        except _TRANSFER_ERRORS as exc:
            self.close()
            raise self._unreachable(exc) from exc
        return got

    def upload_blob(
        self, digest: str, size: int, source: Path, chunk_size: int, state_dir: Path | None = None
    ) -> None:
        """Monolithic PUT when small; PATCH chunks with Content-Range, resumed after a drop.

        With ``state_dir``, a chunked upload's location is kept there after every chunk, so that
        the next push of the same blob (another process, after a kill) resumes it.
        """
        body: Body = (source, 0, size)
        state = None
        if size <= chunk_size:
            location = self._start_upload(digest)
        else:
            state = self._state_file(state_dir, digest)
            location = self._upload_chunks(digest, size, source, chunk_size, state)
            body = None
        sep = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream"}
        reply = self.request("PUT", f"{location}{sep}digest={digest}", headers, body)
        if reply.status != 201:
            raise self.fail(reply, f"finishing the upload of {digest} to {self.ref}")
        if state is not None:
            state.unlink(missing_ok=True)

    def _state_file(self, state_dir: Path | None, digest: str) -> Path | None:
        if state_dir is None:
            return None
        key = f"{self.base}/{self.ref.repository}@{digest}".encode()
        return state_dir / f"{hashlib.sha256(key).hexdigest()}.json"

    def _start_upload(self, digest: str) -> str:
        reply = self.request("POST", f"/v2/{self.ref.repository}/blobs/uploads/")
        if reply.status != 202:
            raise self.fail(reply, f"starting the upload of {digest} to {self.ref}")
        return self._location(reply)

    def _resume_or_start(self, digest: str, state: Path | None) -> tuple[str, int]:
        saved = None
        if state is not None:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                saved = str(json.loads(state.read_text(encoding="utf-8"))["location"])
        if saved:
            with contextlib.suppress(ArtifactError, ModelNotFoundError, PermissionDeniedError):
                status = self._upload_status(saved)
                if status is not None:
                    return status
        return self._start_upload(digest), 0

    def _upload_chunks(
        self, digest: str, size: int, source: Path, chunk_size: int, state: Path | None
    ) -> str:
        from modelpack._fs import atomic_write_bytes

        location, offset = self._resume_or_start(digest, state)
        failures = 0
        while offset < size:
            if state is not None:
                state.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(state, json.dumps({"location": location}).encode())
            end = min(offset + chunk_size, size) - 1
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{end}",
            }
            try:
                reply = self.request("PATCH", location, headers, (source, offset, end - offset + 1))
            except ServerUnavailableError:
                reply = None
            if reply is not None and reply.status == 202:
                location, offset = self._location(reply), _range_end(reply, end + 1)
                continue
            if reply is not None and reply.status not in (400, 404, 416):
                raise self.fail(reply, f"uploading a chunk to {self.ref}")
            # Dropped, or the registry holds another amount than we sent: ask where it stands.
            failures += 1
            if failures > _RETRIES:
                raise ServerUnavailableError(
                    f"uploading {digest} to {self.ref} failed {failures} times; try again"
                )
            status = self._upload_status(location)
            location, offset = status or (self._start_upload(digest), 0)
        return location

    def _upload_status(self, location: str) -> tuple[str, int] | None:
        """Where an interrupted upload stands (its location, the bytes it holds), or None when
        the registry cannot resume it (distribution 2.x, after a chunk was cut in the middle)."""
        reply = self.request("GET", location)
        if reply.status in (400, 404, 416):
            return None
        if reply.status != 204:
            raise self.fail(reply, f"resuming an interrupted upload to {self.ref}")
        return self._location(reply), _range_end(reply, 0)

    def _location(self, reply: Reply) -> str:
        location = reply.headers.get("Location")
        if not location:
            raise ArtifactError(f"registry {self.ref.host} answered an upload with no Location")
        return location


def _range_end(reply: Reply, default: int) -> int:
    """The next offset after the registry's ``Range: 0-N`` (N inclusive)."""
    match = re.fullmatch(r"(?:bytes=)?0-(\d+)", reply.headers.get("Range") or "")
    if match is None:
        return default
    last = int(match[1])
    # distribution writes "0-0" for an empty upload as well as for one byte.
    return 0 if last == 0 else last + 1


def _next_page(link: str | None, current: str) -> str | None:
    """Where ``Link: <URL>; rel="next"`` points (relative to this page; on another host it is
    refused when requested), or None on the last page."""
    if not link:
        return None
    for part in link.split(","):
        match = re.fullmatch(r"\s*<([^>]*)>\s*;(.*)", part)
        if match and re.search(r'rel="?next"?', match[2]):
            return urljoin(current, match[1])
    return None


def list_repositories(
    host: str,
    *,
    insecure: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> list[str]:
    """Every repository in the catalog of the registry at ``host`` (``HOST[:PORT]``)."""
    # The catalog belongs to no repository: any valid name stands in for one.
    with Registry(
        Reference(host, "catalog"), insecure=insecure, username=username, password=password
    ) as registry:
        return registry.repositories()


def list_tags(
    reference: str,
    *,
    insecure: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> list[str]:
    """The tags of the repository of ``oci://HOST/REPO`` (a tag or digest in it is ignored)."""
    ref = parse(reference)
    with Registry(ref, insecure=insecure, username=username, password=password) as registry:
        return registry.tags()


def manifest_digest(
    reference: str,
    *,
    insecure: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> str:
    """``sha256:...`` of the manifest ``oci://HOST/REPO:TAG`` names now: what pins the tag
    (``oci://HOST/REPO:TAG@DIGEST``) so that a later move of the tag changes nothing pulled."""
    ref = parse(reference)
    with Registry(ref, insecure=insecure, username=username, password=password) as registry:
        return registry.get_manifest()[2]


def _registry_message(body: bytes) -> str:
    with contextlib.suppress(ValueError, TypeError, KeyError, IndexError):
        errors = json.loads(body)["errors"]
        return f" ({errors[0]['code']}: {errors[0].get('message', '')})"
    return ""
