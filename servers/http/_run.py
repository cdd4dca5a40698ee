"""``HttpServer.run``: uvicorn with one or several workers, draining on SIGTERM."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from modelpack.errors import InvalidInputError, ModelpackError, PredictionError
from modelpack.plugins import ServeSettings, check_keys

from ._draining import WORKER, _draining_server
from ._served import ServeOptions


def run(uri: str, settings: ServeSettings) -> None:
    """Serve the model at ``uri`` until SIGTERM/SIGINT; raise its error when it cannot load.

    ``uri`` empty: serve ``settings.models`` and the models the options' ``repository`` names
    (see ``app_for_models``), each loading or failing on its own.
    """
    import orjson
    import uvicorn

    given = dict(settings.options)
    if not uri:
        _run_many(settings, given)
        return
    owned = {"owns_process": True, "freeze_heap": True}
    options = serve_options({**owned, **given}, run_options=("drain",))
    drain = float(given.get("drain", 3.0))
    common = _uvicorn_options(settings, options)
    if settings.workers > 1:
        spec = {
            "uri": uri,
            "trust": settings.trust,
            "flavor": settings.flavor,
            "device": settings.device,
            "options": dataclasses.asdict(options),
        }
        os.environ[SPEC_ENV] = orjson.dumps(spec).decode()
        config = uvicorn.Config(
            "modelpack.servers.http._run:app_from_env",
            factory=True,
            workers=settings.workers,
            **common,
        )
        # uvicorn's supervisor forwards SIGTERM to every worker; ours makes each one drain
        # as a single server does (uvicorn.run's own would stop each worker at once).
        from ._workers import DrainingMultiprocess

        DrainingMultiprocess(config, [config.bind_socket()], drain).run()
        return
    app = app_for_uri(
        uri,
        trust=settings.trust,
        flavor=settings.flavor,
        device=settings.device,
        **dataclasses.asdict(options),
    )
    model_server = app.state.model_server
    server = _draining_server(uvicorn.Config(app, **common), model_server, drain)

    def stop(exc: BaseException) -> None:
        server.should_exit = True

    model_server.on_load_failure = stop
    server.run()
    error = model_server.load_error
    if error is None:
        return
    if isinstance(error, ModelpackError):
        raise error
    raise PredictionError(f"the model failed to load: {error}") from error


def _run_many(settings: ServeSettings, given: dict[str, Any]) -> None:
    import uvicorn

    if settings.workers > 1:
        raise InvalidInputError(
            "several models are served by one worker process (--workers 1): a repository "
            "load, unload or memory budget must hold for the whole server"
        )
    drain = float(given.pop("drain", 3.0))
    given.setdefault("owns_process", True)
    app = app_for_models(
        settings.models,
        trust=settings.trust,
        flavor=settings.flavor,
        device=settings.device,
        **given,
    )
    server = app.state.model_server
    config = uvicorn.Config(app, **_uvicorn_options(settings, server.options))
    _draining_server(config, server, drain).run()


def app_for_models(
    models: Mapping[str, str],
    *,
    trust: bool | list[str] | None = None,
    flavor: str | None = None,
    device: str = "cpu",
    **options: Any,
) -> Any:
    """An ASGI app serving several models by name (``models``: name -> URI), and those of
    ``repository`` (a folder, or ``models:/`` with ``repository_filter`` and
    ``repository_alias``). ``lazy``, ``max_memory`` (bytes), ``follow_aliases`` (seconds)
    and ``model_config`` (name -> batching settings, or a URI) are the many-models options."""
    from ._app import build_app
    from ._multi import MultiModelServer
    from ._repository import LoadSettings
    from ._sources import ModelSources, Repository, model_config

    multi = {k: options.pop(k) for k in MULTI_OPTIONS if k in options}
    source = multi.get("repository")
    repository = (
        Repository(source, multi.get("repository_filter"), multi.get("repository_alias"))
        if source
        else None
    )
    config = model_config(multi.get("model_config"), "--model-config")
    follow = multi.get("follow_aliases")
    sources = ModelSources(dict(models), repository, config, follow_aliases=bool(follow))
    memory = multi.get("max_memory")
    settings = LoadSettings(
        trust=trust,
        flavor=flavor,
        device=device,
        lazy=bool(multi.get("lazy", False)),
        max_memory=int(memory) if memory else None,
        follow_aliases=float(follow) if follow else None,
    )
    server = MultiModelServer(
        sources.collect(), serve_options(options), settings, config, sources.discover
    )
    return build_app(server)


# The many-models server's own options (``app_for_models``), beside ServeOptions' fields.
MULTI_OPTIONS = (
    "lazy",
    "max_memory",
    "follow_aliases",
    "repository",
    "repository_filter",
    "repository_alias",
    "model_config",
)


def _uvicorn_options(settings: ServeSettings, options: ServeOptions) -> dict[str, Any]:
    from ._protocol import NoDelayHttpProtocol

    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # per-request logging costs more than the predict of a small model
        # One process: asyncio's loop, not uvloop. Quick models predict on the loop, and uvloop
        # defers the answers' socket writes behind new requests (MagicStack/uvloop#631), so
        # under load some clients wait for many rounds: p99 at 64 connections 340 ms vs 30 ms
        # measured, same throughput. Several: uvloop, which shares the connections of the one
        # listening socket out between the workers far better (16 connections, 2 workers:
        # 3,400-3,500 req/s vs 2,100-2,600), and with fewer connections each, no such tail.
        "loop": "asyncio" if settings.workers <= 1 else "auto",
        "http": NoDelayHttpProtocol,  # asyncio leaves Nagle on for the --workers socket
        "timeout_graceful_shutdown": int(options.timeout_s) + 5,
        "lifespan": "on",
        "ws": "none",  # no websocket route: don't import a websocket implementation
        "log_config": _log_config(settings.log_level),
    }


SPEC_ENV = "MODELPACK_SERVE_SPEC"


def app_for_uri(
    uri: str,
    *,
    trust: bool | list[str] | None = None,
    flavor: str | None = None,
    device: str = "cpu",
    **options: Any,
) -> Any:
    """An ASGI app that loads the model at ``uri`` when it starts (``/ping`` 503 until then)."""
    from ._app import ModelServer, build_app
    from ._loading import uri_loader

    loader = uri_loader(uri, trust=trust, flavor=flavor, device=device)
    return build_app(ModelServer(loader, serve_options(options)))


def app_from_env() -> Any:
    """The app of one worker process when ``--workers`` > 1 (uvicorn imports it by name)."""
    import orjson

    spec = orjson.loads(os.environ[SPEC_ENV])
    app = app_for_uri(
        spec["uri"],
        trust=spec.get("trust"),
        flavor=spec.get("flavor"),
        device=spec.get("device", "cpu"),
        **spec["options"],
    )
    WORKER["model_server"] = app.state.model_server  # the worker's drain marks it draining
    return app


def serve_options(given: dict[str, Any], *, run_options: Sequence[str] = ()) -> ServeOptions:
    """``ServeOptions`` from plain options, refusing a key the http server does not know.

    ``run_options`` are the keys only ``run`` takes (``drain``): known there, not passed on.
    """
    known = [f.name for f in dataclasses.fields(ServeOptions)]
    check_keys(given, [*known, *run_options], "the http server has no option")
    return ServeOptions(**{k: v for k, v in given.items() if k not in run_options})


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus modelpack's own lines (model ready in N s, load failures)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["modelpack"] = {
        "handlers": ["default"],
        "level": level.upper() if level.upper() != "TRACE" else "DEBUG",
        "propagate": False,
    }
    return config
