"""``serve``: the HTTP model server, also as a SageMaker serving container."""

from __future__ import annotations

import os
from enum import Enum
from typing import Annotated

import typer

from modelpack.cli._output import fail
from modelpack.cli._trust import TrustFlag, TrustPickle, TrustTypes, trust_arg
from modelpack.errors import InvalidModelError, ModelpackError, UntrustedModelError

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
    from modelpack import plugins
    from modelpack.descriptor import Descriptor
    from modelpack.model import check_trust
    from modelpack.plugins import ServeSettings
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
    settings = ServeSettings(
        host=host,
        port=port,
        workers=workers,
        trust=granted,
        flavor="onnx" if runtime is Runtime.onnx else None,
        device=device,
        log_level=log_level,
        options={
            "name": name,
            "max_batch_size": max_batch_size,
            "max_latency_ms": max_latency_ms,
            "max_queue_size": max_queue_size,
            "max_body_bytes": int(max_body_mb * 1024 * 1024),
            "max_decode_bytes": int(max_decode_mb * 1024 * 1024),
            "timeout_s": timeout,
            "sagemaker": sagemaker,
            "drain": drain,
        },
    )
    try:
        plugins.server("http").run(str(path), settings)
    except UntrustedModelError as exc:
        raise fail(exc) from None
    except ModelpackError as exc:
        raise fail(exc, exit_code=1) from None
