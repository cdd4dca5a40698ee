"""The team server's Starlette app: ``/api/v1`` (JSON), blobs, the web UI at ``/``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from modelpack._asgi import UnexpectedErrors
from modelpack.errors import (
    AuthenticationError,
    InvalidInputError,
    ModelpackError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from modelpack.teamserver._api import ROUTES, ApiRoute, Call
from modelpack.teamserver._auth import ANONYMOUS, Principal, TokenCache
from modelpack.teamserver._blobs import BlobService

log = logging.getLogger("modelpack.teamserver")
JSON = "application/json"
UI_DIR = Path(__file__).parent / "ui"
MAX_JSON_BYTES = 64 * 1024 * 1024
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


def _error(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type=JSON, headers=headers)


async def _on_modelpack_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelpackError)
    headers = None
    if "offset" in exc.details:
        headers = {"Upload-Offset": str(exc.details["offset"])}
        return _error(exc.code, exc.message, 409, headers)
    if isinstance(exc, AuthenticationError):
        headers = {"WWW-Authenticate": 'Bearer realm="modelpack"'}
    return _error(exc.code, exc.message, exc.http_status, headers)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _error(code, str(exc.detail), exc.status_code, dict(exc.headers or {}))


def _unexpected(scope: dict[str, Any], exc: BaseException) -> tuple[bytes, str]:
    log.error("unexpected error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
    message = "internal server error; see the server's log"
    return orjson.dumps({"error": {"code": "internal_error", "message": message}}), JSON


class Authenticator:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tokens = TokenCache()

    async def __call__(self, request: Request, role: str) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token.strip():
            principal = await run_in_threadpool(self.tokens.lookup, token.strip())
        if role == "public":
            return principal or ANONYMOUS
        if principal is None:
            raise AuthenticationError(
                "this server requires a token: send 'Authorization: Bearer TOKEN' "
                "(set MODELPACK_TRACKING_TOKEN; an admin creates one with "
                "`modelpack server token create --role read|write|admin`)"
                if not token
                else "unknown or revoked token"
            )
        if not principal.allows(role):
            raise PermissionDeniedError(
                f"token {principal.name!r} has role {principal.role!r}; this call needs {role!r}"
            )
        return principal


async def _body(request: Request) -> Any:
    if request.method in ("GET", "HEAD", "DELETE"):
        return None
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_JSON_BYTES:
        raise PayloadTooLargeError(f"request body over {MAX_JSON_BYTES} bytes")
    raw = await request.body()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}") from None


def _endpoint(route: ApiRoute, auth: Authenticator) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        principal = await auth(request, route.role)
        body = await _body(request)
        if body is not None and not isinstance(body, dict):
            raise InvalidInputError("request body must be a JSON object")
        call = Call(dict(request.path_params), request.query_params, body, principal, auth.enabled)
        result = await run_in_threadpool(route.handler, call)
        if route.status == 204 or result is None:
            return Response(status_code=204)
        return _json(result, route.status)

    endpoint.__name__ = route.handler.__name__
    return endpoint


def _blob_routes(blobs: BlobService, auth: Authenticator) -> list[Route]:
    async def blob(request: Request) -> Response:
        sha = request.path_params["sha256"]
        if request.method == "PUT":
            await auth(request, "write")
            return await blobs.put(sha, request)
        await auth(request, "read")
        if request.method == "HEAD":
            return await blobs.head(sha)
        return await blobs.get(sha)

    return [Route("/api/v1/blobs/{sha256}", blob, methods=["GET", "HEAD", "PUT"])]


def create_app(*, auth: bool = False, cors_origins: Sequence[str] = ()) -> Starlette:
    """The team server over the store and artifact store this process is configured with."""
    from modelpack.artifacts import local_store
    from modelpack.store.db import get_engine, home
    from modelpack.teamserver._openapi import openapi

    get_engine()  # migrate now, not on the first request
    authenticator = Authenticator(auth)
    blobs = BlobService(local_store(), home() / "uploads", home() / "server-cache")
    routes: list[Route | Mount] = [
        Route(f"/api/v1{r.path}", _endpoint(r, authenticator), methods=[r.method]) for r in ROUTES
    ]
    routes.extend(_blob_routes(blobs, authenticator))
    spec = openapi(ROUTES)

    async def openapi_json(request: Request) -> Response:
        return _json(spec)

    async def index(request: Request) -> Response:
        return FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    routes.append(Route("/api/v1/openapi.json", openapi_json, methods=["GET"]))
    routes.append(Route("/", index, methods=["GET"]))
    if UI_DIR.is_dir():
        routes.append(Mount("/ui", app=StaticFiles(directory=UI_DIR), name="ui"))
    middleware = [Middleware(UnexpectedErrors, render=_unexpected)]
    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Content-Range"],
                expose_headers=["Upload-Offset"],
            ),
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            ModelpackError: _on_modelpack_error,
            HTTPException: _on_http_error,
        },
    )
