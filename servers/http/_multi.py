"""The many-models server: every model by name (v2, ``/invocations/{name}``), the v2 repository
extension (Triton's, MLServer's), and SageMaker's multi-model container contract."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelpack._version import __version__
from modelpack.errors import (
    InvalidInputError,
    MemoryBudgetError,
    ModelExistsError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from modelpack.payload import dumps

from . import _v2
from ._app import JSON, ServerBase, error_response
from ._metrics import MultiModelMetrics
from ._openapi import openapi
from ._repository import LoadSettings, ModelRepository
from ._served import ServeOptions
from ._sources import check_model_name

# What SageMaker's multi-model contract answers when a model does not fit: SageMaker then
# unloads models it chooses and tries again.
_INSUFFICIENT_STORAGE = 507


class MultiModelServer(ServerBase):
    """Serves every model of a ``ModelRepository``."""

    extensions = ("binary_tensor_data", "model_repository")

    def __init__(
        self,
        models: Mapping[str, str],
        options: ServeOptions,
        settings: LoadSettings,
        per_model: Mapping[str, Mapping[str, Any]] | None = None,
        discover: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__(options)
        self.metrics = MultiModelMetrics(self.static_routes(), lambda n: n in self.repo.entries)
        self.repo = ModelRepository(
            models, options, per_model or {}, settings, self.metrics, discover
        )
        self.metrics.watch_models(self.repo.placed, self.repo.readiness)
        self._tasks: list[asyncio.Task[None]] = []

    def routes(self) -> list[Route]:
        routes = [
            *self.protocol_routes(),
            Route("/invocations/{name}", self.invocations, methods=["POST"]),
            Route("/v2/repository/index", self.repository_index, methods=["POST"]),
            Route("/v2/repository/models/{name}/load", self.repository_load, methods=["POST"]),
            Route("/v2/repository/models/{name}/unload", self.repository_unload, methods=["POST"]),
        ]
        if self.options.sagemaker:
            routes += [
                Route("/models", self.sagemaker_list, methods=["GET"]),
                Route("/models", self.sagemaker_load, methods=["POST"]),
                Route("/models/{name}", self.sagemaker_get, methods=["GET"]),
                Route("/models/{name}", self.sagemaker_unload, methods=["DELETE"]),
                Route("/models/{name}/invoke", self.invocations, methods=["POST"]),
            ]
        return routes

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # The port answers at once; /ping says 503 until every model has loaded or failed to.
        self._tasks = [
            asyncio.create_task(self.repo.start()),
            asyncio.create_task(self.repo.follow()),
        ]
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            for entry in self.repo.entries.values():
                if entry.task is not None:
                    entry.task.cancel()
            await self.repo.close()

    # -- the server ------------------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        """Ready once every model loaded at start has loaded or failed (a failed one is not
        ready on its own routes and in the index; the others serve)."""
        if self.draining:
            raise ModelNotReadyError("the server is shutting down", retry_after=1)
        if not self.repo.started:
            raise ModelNotReadyError("the models are loading; retry shortly", retry_after=1)
        if request.url.path == "/v2/health/ready":
            return Response(b'{"ready":true}', media_type=JSON)
        return Response(b"", media_type=JSON)

    v2_ready = ping

    async def health(self, request: Request) -> Response:
        await self.ping(request)
        return Response(b'{"status":"ready"}', media_type=JSON)

    def _default(self) -> str:
        """The one model plain ``/invocations``, ``/metadata`` and ``/openapi.json`` answer for."""
        names = sorted(self.repo.entries)
        if len(names) == 1:
            return names[0]
        raise InvalidInputError(
            f"this server serves {len(names)} models ({', '.join(names) or 'none'}): "
            "name one, e.g. POST /invocations/{name} or /v2/models/{name}/infer"
        )

    async def metadata(self, request: Request) -> Response:
        if len(self.repo.entries) != 1:
            return Response(orjson.dumps({"models": self.repo.index()}), media_type=JSON)
        name = self._default()
        async with self.repo.using(name) as loaded:
            model = loaded.model
            sig = model.signature.to_dict() if model.signature else None
            body = {"name": name, "version": loaded.version, **model.info, "signature": sig}
        return Response(dumps(body), media_type=JSON)

    async def openapi(self, request: Request) -> Response:
        name = self._default()
        async with self.repo.using(name) as loaded:
            doc = openapi(name, __version__, loaded.model.signature)
        return Response(orjson.dumps(doc), media_type=JSON)

    # -- predictions -----------------------------------------------------------------------

    async def invocations(self, request: Request) -> Response:
        name = request.path_params.get("name") or self._default()
        async with self.repo.using(name) as loaded:
            return await self.invoke(loaded.model, request)

    async def v2_infer(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        async with self.repo.using(name, version) as loaded:
            return await self.infer(name, loaded.model, request)

    async def v2_model(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        async with self.repo.using(name, version) as loaded:
            model = loaded.model
            platform = f"modelpack-{model.info.get('loader', 'python')}"
            body = _v2.model_metadata(name, platform, model.signature)
            body["versions"] = [loaded.version]
        return Response(orjson.dumps(body), media_type=JSON)

    async def v2_model_ready(self, request: Request) -> Response:
        """Says whether the model answers now; never loads it."""
        name, version = request.path_params["name"], request.path_params.get("version")
        entry = self.repo.entry(name)
        loaded = entry.current
        if loaded is None:
            reason = f": {entry.reason}" if entry.reason else ""
            raise ModelNotReadyError(f"model {name!r} is not ready ({entry.state}{reason})")
        if version is not None and version != loaded.version:
            raise ModelNotFoundError(f"model {name!r} has version {loaded.version}, not {version}")
        return Response(orjson.dumps({"name": name, "ready": True}), media_type=JSON)

    # -- the v2 repository extension -------------------------------------------------------

    async def repository_index(self, request: Request) -> Response:
        body = await self._json(request)
        ready_only = body.get("ready", False)
        if not isinstance(ready_only, bool):
            raise InvalidInputError(f"'ready' must be true or false, not {ready_only!r}")
        return Response(orjson.dumps(self.repo.index(ready_only=ready_only)), media_type=JSON)

    async def repository_load(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await self._json(request)
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInputError("'parameters' must be an object")
        overrides = sorted(k for k in parameters if k == "config" or k.startswith("file:"))
        if overrides:
            raise InvalidInputError(
                f"load parameters {', '.join(overrides)} are not supported: a model's files "
                "and settings come from its folder or the registry"
            )
        entry = self.repo.entries.get(name)
        if entry is None:
            uri = self.repo.discover(name)
            if uri is None:
                raise ModelNotFoundError(
                    f"no model named {name!r} in this server's repository; "
                    f"it has: {', '.join(sorted(self.repo.entries)) or 'none'}"
                )
            entry = self.repo.add(name, uri)
        entry.error, entry.unloaded = None, False
        await self.repo.load(entry)
        return Response(b"", media_type=JSON)

    async def repository_unload(self, request: Request) -> Response:
        await self._json(request)
        await self.repo.unload(self.repo.entry(request.path_params["name"]))
        return Response(b"", media_type=JSON)

    async def _json(self, request: Request) -> dict[str, Any]:
        raw = await self._body(request)
        if not raw.strip():
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidInputError("the request body must be a JSON object")
        return body

    # -- SageMaker's multi-model contract --------------------------------------------------

    def _sagemaker_row(self, name: str) -> dict[str, str]:
        return {"modelName": name, "modelUrl": self.repo.entry(name).uri}

    async def sagemaker_list(self, request: Request) -> Response:
        """SageMaker's List Models, in pages when asked: ``limit`` models at most (MMS's
        parameter), from after ``next_page_token`` (the last name of the page before: names
        are listed in order, so a model loaded or unloaded meanwhile moves no other)."""
        names = sorted(n for n, e in self.repo.entries.items() if not e.unloaded)
        after = request.query_params.get("next_page_token")
        if after:
            names = [n for n in names if n > after]
        raw = request.query_params.get("limit")
        limit = _page_size(raw) if raw is not None else len(names)
        body: dict[str, Any] = {"models": [self._sagemaker_row(n) for n in names[:limit]]}
        if len(names) > limit:
            body["nextPageToken"] = names[limit - 1]
        return Response(orjson.dumps(body), media_type=JSON)

    async def sagemaker_load(self, request: Request) -> Response:
        body = await self._json(request)
        name, url = body.get("model_name"), body.get("url")
        if not isinstance(name, str) or not isinstance(url, str) or not url:
            raise InvalidInputError('give {"model_name": NAME, "url": PATH}')
        check_model_name(name)
        existing = self.repo.entries.get(name)
        if existing is not None and not existing.unloaded:
            raise ModelExistsError(f"model {name!r} is already loaded")
        entry = self.repo.add(name, url)
        try:
            await self.repo.load(entry)
        except MemoryBudgetError as exc:
            del self.repo.entries[name]
            response = error_response(exc, request.url.path)
            response.status_code = _INSUFFICIENT_STORAGE
            return response
        except Exception:
            del self.repo.entries[name]  # SageMaker may try again: nothing half-added stays
            raise
        return Response(orjson.dumps({"modelName": name, "modelUrl": url}), media_type=JSON)

    async def sagemaker_get(self, request: Request) -> Response:
        name = request.path_params["name"]
        entry = self.repo.entry(name)
        if entry.unloaded:
            raise ModelNotFoundError(f"model {name!r} is not loaded")
        return Response(orjson.dumps(self._sagemaker_row(name)), media_type=JSON)

    async def sagemaker_unload(self, request: Request) -> Response:
        name = request.path_params["name"]
        await self.repo.unload(self.repo.entry(name))
        del self.repo.entries[name]
        return Response(b"", media_type=JSON)


def _page_size(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidInputError(f"limit must be a whole number from 1 to 1000, not {raw!r}")
    return int(raw)
