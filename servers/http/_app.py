"""The Starlette application: routes, limits, errors and the model's life cycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelpack._asgi import UnexpectedErrors
from modelpack._startup import lean_startup
from modelpack._version import __version__
from modelpack.errors import (
    ModelNotFoundError,
    ModelNotReadyError,
    ModelpackError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from modelpack.payload import dumps

from . import _v2
from ._loading import Loader
from ._metrics import MetricsMiddleware, ServerMetrics
from ._openapi import openapi
from ._served import ServedModel, ServeOptions

log = logging.getLogger("modelpack.serve")

JSON = "application/json"
# Bodies up to this size are decoded on the event loop: a thread hop costs more than they do.
_INLINE_DECODE_BYTES = 64 * 1024
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _error_body(path: str, code: str, message: str) -> bytes:
    if path.startswith("/v2"):
        # The v2 protocol's error is a string (tritonclient fails on anything else).
        return orjson.dumps({"error": message, "code": code})
    return orjson.dumps({"error": {"code": code, "message": message}})


def error_response(exc: ModelpackError, path: str = "") -> Response:
    headers = None
    if isinstance(exc, ServiceUnavailableError):
        headers = {"Retry-After": str(exc.retry_after)}
    body = _error_body(path, exc.code, exc.message)
    return Response(body, status_code=exc.http_status, media_type=JSON, headers=headers)


async def _on_modelpack_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelpackError)
    return error_response(exc, request.url.path)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    body = _error_body(request.url.path, code, str(exc.detail))
    return Response(body, status_code=exc.status_code, media_type=JSON, headers=exc.headers)


def _unexpected(scope: dict[str, Any], exc: BaseException) -> tuple[bytes, str]:
    path = str(scope.get("path", ""))
    log.error("unexpected error on %s", path, exc_info=exc)
    message = "internal server error; see the server's log"
    return _error_body(path, "internal_error", message), JSON


async def _unimplemented(self: Any, request: Request) -> Response:
    raise NotImplementedError


class ServerBase:
    """What every server answers the same way whatever it serves: the request's body, limits
    and deadline, the MLflow and v2 protocols on one model, the server routes."""

    metrics: ServerMetrics
    extensions: tuple[str, ...] = ("binary_tensor_data",)

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.decoding = 0  # request bytes being decoded in threads right now
        self.draining = False  # set on SIGTERM: not ready, and every answer closes its connection
        self.on_load_failure: Callable[[BaseException], None] | None = None

    def routes(self) -> list[Route]:
        return self.protocol_routes()

    def protocol_routes(self) -> list[Route]:
        """The routes of the MLflow scoring protocol, v2 and the server, on this server's
        handlers."""
        v2model = "/v2/models/{name}"
        version = "/versions/{version}"
        return [
            Route("/ping", self.ping),
            Route("/health", self.health),
            Route("/version", self.version),
            Route("/metadata", self.metadata),
            Route("/metrics", self.render_metrics),
            Route("/openapi.json", self.openapi),
            Route("/invocations", self.invocations, methods=["POST"]),
            Route("/v2", self.v2_server),
            Route("/v2/health/live", self.v2_live),
            Route("/v2/health/ready", self.v2_ready),
            *(Route(v2model + v + "/ready", self.v2_model_ready) for v in ("", version)),
            *(Route(v2model + v, self.v2_model) for v in ("", version)),
            *(
                Route(v2model + v + "/infer", self.v2_infer, methods=["POST"])
                for v in ("", version)
            ),
        ]

    # Each server's own answers on the protocol routes.
    ping = health = metadata = openapi = invocations = _unimplemented
    v2_ready = v2_model_ready = v2_model = v2_infer = _unimplemented

    def lifespan(self, app: Starlette) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def static_routes(self) -> set[str]:
        return {r.path for r in self.routes() if "{" not in r.path}

    async def version(self, request: Request) -> Response:
        return Response(orjson.dumps({"modelpack": __version__}), media_type=JSON)

    async def render_metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def v2_server(self, request: Request) -> Response:
        body = {"name": "modelpack", "version": __version__, "extensions": self.extensions}
        return Response(orjson.dumps(body), media_type=JSON)

    async def v2_live(self, request: Request) -> Response:
        return Response(b'{"live":true}', media_type=JSON)

    # -- one model's predictions -----------------------------------------------------------

    async def invoke(self, model: ServedModel, request: Request) -> Response:
        """The MLflow scoring protocol on ``model``: decode, predict, ``{"predictions": ...}``."""
        with self._deadline():
            raw = await self._body(request)
            content_type = request.headers.get("content-type", "")
            if len(raw) <= _INLINE_DECODE_BYTES:
                data, params = model.decoder.decode(raw, content_type)
            else:
                with self._decode_budget(len(raw)):
                    data, params = await anyio.to_thread.run_sync(
                        model.decoder.decode, raw, content_type, abandon_on_cancel=True
                    )
            predictions = await model.predict(data, params)
        return Response(dumps({"predictions": predictions}), media_type=JSON)

    async def infer(self, name: str, model: ServedModel, request: Request) -> Response:
        """A v2 inference request on ``model``, answered as the model ``name``."""
        with self._deadline():
            raw = await self._body(request)
            infer = _v2.parse_infer(raw, request.headers.get(_v2.HEADER_LENGTH))
            data = model.decoder.enforce(_v2.to_model_input(infer.tensors, model.signature))
            predictions = await model.predict(data, infer.params)
        outputs = _v2.output_tensors(predictions, model.signature)
        body, header_length = _v2.encode_infer(name, infer, outputs)
        if header_length is None:
            return Response(body, media_type=JSON)
        return Response(
            body,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    @contextlib.contextmanager
    def _decode_budget(self, size: int) -> Any:
        budget = self.options.max_decode_bytes
        if self.decoding and self.decoding + size > budget:
            raise ServiceUnavailableError(
                f"{self.decoding:,} request bytes are being decoded and this body has {size:,}; "
                f"the server decodes at most {budget:,} at once (--max-decode-mb): retry",
                retry_after=1,
            )
        self.decoding += size
        try:
            yield
        finally:
            self.decoding -= size

    @contextlib.contextmanager
    def _deadline(self) -> Any:
        try:
            with anyio.fail_after(self.options.timeout_s):
                yield
        except TimeoutError:
            raise RequestTimeoutError(
                f"the request took longer than {self.options.timeout_s:g}s"
            ) from None

    async def _body(self, request: Request) -> bytes:
        limit = self.options.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"the body is {declared} bytes; the limit is {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ModelServer(ServerBase):
    """Holds the model (once loaded) and answers every route."""

    def __init__(self, loader: Loader, options: ServeOptions) -> None:
        super().__init__(options)
        self._loader = loader
        self.model: ServedModel | None = None
        self.load_error: BaseException | None = None
        self.metrics = ServerMetrics(self.static_routes())
        self.metrics.watch_placement(lambda: self.model.placed if self.model else None)

    # -- life cycle ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Load in the background: the port answers at once, and /ping says 503 until ready.
        task = asyncio.create_task(self._load())
        try:
            yield
        finally:
            task.cancel()
            if self.model is not None:
                await anyio.to_thread.run_sync(self.model.close)

    async def _load(self) -> None:
        start = time.perf_counter()
        # freeze_heap: the model loads with the collector paused, then the start-up heap is
        # frozen (no gc.collect() first: a full collection of it costs 0.07-0.45 s of the cold
        # start, freezing is O(1); its cyclic garbage, if any, is kept for good).
        lean = lean_startup(collector=self.options.freeze_heap, docs=self.options.owns_process)
        try:
            with lean:
                model = await anyio.to_thread.run_sync(
                    self._loader, self.options, self.metrics.batch_rows.observe
                )
        except Exception as exc:
            self.load_error = exc
            log.error("the model failed to load: %s", exc)
            if self.on_load_failure is not None:
                self.on_load_failure(exc)
            return
        if self.options.freeze_heap:
            frozen = gc.get_freeze_count()
            log.debug("%d objects from start-up frozen out of the garbage collector", frozen)
        self.model = model
        self.metrics.load_seconds.set(time.perf_counter() - start)
        log.info("model %r ready in %.2fs", self.options.name, time.perf_counter() - start)

    def require_ready(self) -> ServedModel:
        if self.draining:
            raise ModelNotReadyError("the server is shutting down", retry_after=1)
        return self.require()

    def require(self) -> ServedModel:
        if self.model is not None:
            return self.model
        if self.load_error is not None:
            raise ModelNotReadyError(f"the model failed to load: {self.load_error}", retry_after=60)
        raise ModelNotReadyError("the model is loading; retry shortly", retry_after=1)

    # -- plain routes ----------------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        self.require_ready()
        return Response(b"", media_type=JSON)

    async def health(self, request: Request) -> Response:
        self.require_ready()
        return Response(b'{"status":"ready"}', media_type=JSON)

    async def metadata(self, request: Request) -> Response:
        model = self.require()
        sig = model.signature.to_dict() if model.signature else None
        body = {"name": self.options.name, **model.info, "signature": sig}
        return Response(dumps(body), media_type=JSON)

    async def openapi(self, request: Request) -> Response:
        model = self.require()
        doc = openapi(self.options.name, __version__, model.signature)
        return Response(orjson.dumps(doc), media_type=JSON)

    # -- MLflow scoring protocol -----------------------------------------------------------

    async def invocations(self, request: Request) -> Response:
        return await self.invoke(self.require(), request)

    # -- Open Inference Protocol v2 --------------------------------------------------------

    async def v2_ready(self, request: Request) -> Response:
        self.require_ready()
        return Response(b'{"ready":true}', media_type=JSON)

    def _v2_model(self, request: Request) -> ServedModel:
        name = request.path_params["name"]
        if name != self.options.name:
            raise ModelNotFoundError(
                f"no model named {name!r}; this server has {self.options.name!r}"
            )
        return self.require()

    async def v2_model_ready(self, request: Request) -> Response:
        self._v2_model(request)
        return Response(orjson.dumps({"name": self.options.name, "ready": True}), media_type=JSON)

    async def v2_model(self, request: Request) -> Response:
        model = self._v2_model(request)
        platform = f"modelpack-{model.info.get('loader', 'python')}"
        body = _v2.model_metadata(self.options.name, platform, model.signature)
        return Response(orjson.dumps(body), media_type=JSON)

    async def v2_infer(self, request: Request) -> Response:
        return await self.infer(self.options.name, self._v2_model(request), request)


class ClosingWhenDraining:
    """While the server drains, every answer says ``Connection: close``: a client that sends on
    an idle keep-alive connection gets its answer and then reconnects elsewhere, instead of
    finding the socket reset under it when the server exits."""

    def __init__(self, app: Any, server: ServerBase) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.server.draining:  # the usual case: no wrapper
            await self.app(scope, receive, send)
            return

        async def closing(message: Any) -> None:
            if message["type"] == "http.response.start" and self.server.draining:
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


def build_app(server: ServerBase) -> Starlette:
    app = Starlette(
        routes=server.routes(),
        middleware=[
            Middleware(MetricsMiddleware, metrics=server.metrics),
            Middleware(UnexpectedErrors, render=_unexpected),  # counted by the metrics too
            Middleware(ClosingWhenDraining, server=server),
        ],
        exception_handlers={
            ModelpackError: _on_modelpack_error,
            HTTPException: _on_http_error,
        },
        lifespan=server.lifespan,
    )
    app.state.model_server = server
    return app
