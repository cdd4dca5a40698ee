"""``serve``: the HTTP model server, also as a SageMaker serving container."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelpack.cli import fail
from modelpack.cli._trust import TrustFlag, TrustPickle, TrustTypes, trust_arg
from modelpack.errors import InvalidModelError, ModelpackError, UntrustedModelError

if TYPE_CHECKING:
    from modelpack.servers.http._served import ServeOptions

SAGEMAKER_MODEL_DIR = "/opt/ml/model"
SAGEMAKER_PORT = 8080


class Runtime(str, Enum):
    native = "native"
    onnx = "onnx"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def _sagemaker(uri: str | None) -> bool:
    # SageMaker runs the image with the single argument `serve`; its env vars say so too.
    return uri == "serve" or any(k.startswith("SAGEMAKER_") for k in os.environ)


def serve(
    uri: Annotated[
        str | None,
        typer.Argument(help="Model path or URI; `serve` (or SAGEMAKER_* env): SageMaker mode."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 5000,
    workers: Annotated[int, typer.Option(min=1, help="Processes, each with the model.")] = 1,
    name: Annotated[str, typer.Option(help="Model name in the v2 routes.")] = "model",
    max_batch_size: Annotated[
        int, typer.Option(min=0, help="Rows per merged predict call; 0 turns batching off.")
    ] = 0,
    max_latency_ms: Annotated[
        float, typer.Option(min=0, help="Longest wait for a batch to fill.")
    ] = 5.0,
    max_queue_size: Annotated[
        int, typer.Option(min=1, help="Requests waiting for a batch before 503.")
    ] = 1024,
    max_body_mb: Annotated[float, typer.Option(min=0, help="Largest request body (413).")] = 64.0,
    max_decode_mb: Annotated[
        float,
        typer.Option(min=0, help="Request megabytes decoded at once; past it 503 + Retry-After."),
    ] = 128.0,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds per request (504).")] = 60.0,
    drain: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds after SIGTERM during which requests on open connections are still "
            "answered (with Connection: close) while /ping says 503.",
        ),
    ] = 3.0,
    trust: TrustFlag = False,
    trust_type: TrustTypes = None,
    trust_pickle: TrustPickle = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    runtime: Annotated[
        Runtime, typer.Option(help="native: the model's own flavor; onnx: its onnx flavor.")
    ] = Runtime.native,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Serve a model over HTTP (MLflow scoring protocol, Open Inference Protocol v2)."""
    from modelpack.descriptor import Descriptor
    from modelpack.model import check_trust
    from modelpack.servers.http._served import ServeOptions
    from modelpack.uris import resolve

    sagemaker = _sagemaker(uri)
    if sagemaker:
        host = "0.0.0.0"
        port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", SAGEMAKER_PORT))
        workers = int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", workers))
        timeout = float(os.environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT", timeout))
        if uri in (None, "serve"):
            uri = os.environ.get("MODELPACK_SAGEMAKER_MODEL_DIR", SAGEMAKER_MODEL_DIR)
    if uri is None:
        raise typer.BadParameter("give a model path or URI", param_hint="URI")
    # Fail before binding on a URI that is not a model: one line, not a server that never readies.
    path = resolve(uri)
    descriptor = Descriptor.read(path)
    if runtime is Runtime.onnx and "onnx" not in descriptor.flavors:
        raise fail(
            InvalidModelError(
                f"{uri} has no onnx flavor; add one with: modelpack convert {uri} --to onnx"
            )
        )
    granted = trust_arg(trust, trust_type, trust_pickle)
    if runtime is Runtime.native:  # refused here, before binding, with nothing imported
        check_trust(path, granted)
    options = ServeOptions(
        name=name,
        max_batch_size=max_batch_size,
        max_latency_ms=max_latency_ms,
        max_queue_size=max_queue_size,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_decode_bytes=int(max_decode_mb * 1024 * 1024),
        timeout_s=timeout,
        sagemaker=sagemaker,
        freeze_heap=True,  # a `modelpack serve` process is the server's own
    )
    _run(
        Path(path),
        options,
        host,
        port,
        workers,
        granted,
        log_level,
        runtime=runtime.value,
        device=device,
        drain=drain,
    )


def _draining_server_class() -> Any:
    import uvicorn

    class _DrainingServer(uvicorn.Server):
        """On SIGTERM: stop listening, say 503 on /ping and ``Connection: close`` on every
        answer, keep answering open connections for up to ``drain_s`` (less once none is
        left), then shut down as uvicorn does (in-flight requests finish)."""

        def __init__(self, config: Any, model_server: Any, drain_s: float) -> None:
            super().__init__(config)
            self.model_server = model_server
            self.drain_s = drain_s
            self.draining_since: float | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig != signal.SIGTERM or self.draining_since is not None or not self.drain_s:
                super().handle_exit(sig, frame)  # a second signal, or SIGINT: as before
                return
            self._captured_signals.append(sig)
            self.draining_since = time.monotonic()
            self.model_server.draining = True
            for listening in self.servers:
                listening.close()  # new connections go to another replica

        async def on_tick(self, counter: int) -> bool:
            since = self.draining_since
            if since is not None and not self.should_exit:
                idle = not self.server_state.connections
                if idle or time.monotonic() - since >= self.drain_s:
                    self.should_exit = True
            return bool(await super().on_tick(counter))

    return _DrainingServer


def _draining_server(config: Any, model_server: Any, drain_s: float) -> Any:
    return _draining_server_class()(config, model_server, drain_s)


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


def _run(
    path: Path,
    options: ServeOptions,
    host: str,
    port: int,
    workers: int,
    trust: bool | list[str] | None,
    log_level: str,
    *,
    runtime: str = "native",
    device: str = "cpu",
    drain: float = 3.0,
) -> None:
    import orjson
    import uvicorn

    from modelpack.servers.http import HttpServer
    from modelpack.servers.http._loading import SPEC_ENV
    from modelpack.servers.http._protocol import NoDelayHttpProtocol

    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,  # per-request logging costs more than the predict of a small model
        # One process: asyncio's loop, not uvloop. Quick models predict on the loop, and uvloop
        # defers the answers' socket writes behind new requests (MagicStack/uvloop#631), so
        # under load some clients wait for many rounds: p99 at 64 connections 340 ms vs 30 ms
        # measured, same throughput. Several: uvloop, which shares the connections of the one
        # listening socket out between the workers far better (16 connections, 2 workers:
        # 3,400-3,500 req/s vs 2,100-2,600), and with fewer connections each, no such tail.
        "loop": "asyncio" if workers <= 1 else "auto",
        "http": NoDelayHttpProtocol,  # asyncio leaves Nagle on for the --workers socket
        "timeout_graceful_shutdown": int(options.timeout_s) + 5,
        "lifespan": "on",
        "log_config": _log_config(log_level),
    }
    if workers > 1:
        spec = {
            "uri": str(path),
            "trust": trust,
            "runtime": runtime,
            "device": device,
            "options": dataclasses.asdict(options),
        }
        os.environ[SPEC_ENV] = orjson.dumps(spec).decode()
        uvicorn.run(
            "modelpack.servers.http._loading:app_from_env", factory=True, workers=workers, **common
        )
        return
    app = HttpServer().app_for_uri(
        str(path),
        trust=trust,
        runtime=runtime,
        device=device,
        **dataclasses.asdict(options),
    )
    model_server = app.state.model_server
    server = _draining_server(uvicorn.Config(app, **common), model_server, drain)

    def stop(exc: BaseException) -> None:
        server.should_exit = True

    model_server.on_load_failure = stop
    server.run()
    if model_server.load_error is not None:
        error = model_server.load_error
        if isinstance(error, UntrustedModelError):
            raise fail(error)
        if isinstance(error, ModelpackError):
            raise fail(error, exit_code=1)
        typer.echo(f"error: the model failed to load: {error}", err=True)
        raise typer.Exit(1)
