"""``serve``: the HTTP model server, also as a SageMaker serving container."""

from __future__ import annotations

import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from modelpack.cli._output import fail
from modelpack.cli._trust import TrustFlag, TrustPickle, TrustTypes, trust_arg
from modelpack.errors import (
    InvalidInputError,
    InvalidModelError,
    ModelpackError,
    UntrustedModelError,
)

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
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="NAME=URI: serve this model as NAME (repeat for several).",
        ),
    ] = None,
    repository: Annotated[
        str | None,
        typer.Option(
            help="Serve every model folder in this folder, with models:/ every registered "
            "model, with oci://HOST/NAMESPACE every model of a registry namespace (see "
            "--filter, --alias)."
        ),
    ] = None,
    filter: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help="With --repository models:/: registry filter (docs); with oci://: a glob on "
            "the model names.",
        ),
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option(
            help="With --repository models:/: serve each model's version with this alias; "
            "with oci://: the tag (default latest)."
        ),
    ] = None,
    lazy: Annotated[
        bool, typer.Option("--lazy", help="Load each model on its first request.")
    ] = False,
    max_memory: Annotated[
        str | None,
        typer.Option(
            help="Budget for the models loaded at once (bytes, or 500MB, 2GB, 1GiB): the "
            "least recently used are unloaded to make room."
        ),
    ] = None,
    follow_aliases: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Poll the registry every SECONDS; a models:/NAME@ALIAS model switches to the "
            "new version when the alias moves.",
        ),
    ] = None,
    model_config: Annotated[
        str | None,
        typer.Option(help="YAML: per model name, max_batch_size, max_latency_ms, ... (docs)."),
    ] = None,
) -> None:
    """Serve a model over HTTP (MLflow scoring protocol, Open Inference Protocol v2).

    Several models: -m NAME=URI (repeated) or --repository; each answers at
    /v2/models/NAME/infer and /invocations/NAME (docs/serving.md, "Many models").
    """
    from modelpack import plugins
    from modelpack._startup import lean_startup
    from modelpack.descriptor import Descriptor
    from modelpack.plugins import ServeSettings
    from modelpack.uris import resolve

    sagemaker = _sagemaker(uri)
    many = bool(model or repository or model_config or _sagemaker_multi_model(sagemaker))
    if many and uri not in (None, "serve"):
        raise fail(InvalidInputError("give a model URI, or -m/--repository: not both"))
    if not many and (filter or alias or lazy or max_memory or follow_aliases):
        raise fail(
            InvalidInputError(
                "--filter, --alias, --lazy, --max-memory and --follow-aliases apply to several "
                "models: give -m NAME=URI or --repository"
            )
        )
    if sagemaker:
        host = "0.0.0.0"
        port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", SAGEMAKER_PORT))
        timeout = float(os.environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT", timeout))
        if not many:  # several models share one process (see docs/serving.md)
            workers = int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", workers))
            if uri in (None, "serve"):
                uri = os.environ.get("MODELPACK_SAGEMAKER_MODEL_DIR", SAGEMAKER_MODEL_DIR)
    granted = trust_arg(trust, trust_type, trust_pickle)
    options: dict[str, Any] = {
        "max_batch_size": max_batch_size,
        "max_latency_ms": max_latency_ms,
        "max_queue_size": max_queue_size,
        "max_body_bytes": int(max_body_mb * 1024 * 1024),
        "max_decode_bytes": int(max_decode_mb * 1024 * 1024),
        "timeout_s": timeout,
        "sagemaker": sagemaker,
        "drain": drain,
    }
    models: dict[str, str] = {}
    if many:
        target = ""  # the server serves settings.models and the options' repository
        try:
            models = parse_models(model or [])
            options.update(
                repository=repository,
                repository_filter=filter,
                repository_alias=alias,
                lazy=lazy,
                max_memory=parse_size(max_memory) if max_memory else None,
                follow_aliases=follow_aliases,
                model_config=_read_model_config(model_config),
            )
        except ModelpackError as exc:
            raise fail(exc) from None
    else:
        if uri is None:
            raise typer.BadParameter("give a model path or URI", param_hint="URI")
        # Fail before binding on a URI that is not a model: one line, not a server that never
        # readies.
        path = resolve(uri)
        descriptor = Descriptor.read(path)
        if runtime is Runtime.onnx and "onnx" not in descriptor.flavors:
            raise fail(
                InvalidModelError(
                    f"{uri} has no onnx flavor; add one with: modelpack convert {uri} --to onnx"
                )
            )
        if runtime is Runtime.native:  # refused here, before binding, with nothing imported
            with lean_startup():  # the CLI owns this process: the model's imports start here
                from modelpack.model import check_trust

                check_trust(path, granted)
        options["name"] = name
        target = str(path)
    settings = ServeSettings(
        host=host,
        port=port,
        workers=workers,
        trust=granted,
        flavor="onnx" if runtime is Runtime.onnx else None,
        device=device,
        log_level=log_level,
        options=options,
        models=models,
    )
    try:
        plugins.server("http").run(target, settings)
    except UntrustedModelError as exc:
        raise fail(exc) from None
    except InvalidInputError as exc:  # several models: a bad --repository, --model-config...
        raise fail(exc, **({} if many else {"exit_code": 1})) from None
    except ModelpackError as exc:
        raise fail(exc, exit_code=1) from None


def _sagemaker_multi_model(sagemaker: bool) -> bool:
    # What SageMaker sets on a container of a multi-model endpoint (Mode: MultiModel).
    return sagemaker and os.environ.get("SAGEMAKER_MULTI_MODEL", "").lower() in ("true", "1")


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str) -> int:
    """Bytes from ``1048576``, ``500MB``, ``2GB`` (powers of 1000) or ``1GiB`` (of 1024)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise InvalidInputError(
            f"--max-memory {text!r}: give bytes or a size such as 500MB, 2GB or 1GiB"
        )
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise InvalidInputError(f"--max-memory {text!r}: give a size above zero")
    return size


def parse_models(args: list[str]) -> dict[str, str]:
    """``NAME=URI`` pairs, each name once (the server checks the names themselves)."""
    models: dict[str, str] = {}
    for arg in args:
        name, sep, uri = arg.partition("=")
        if not sep or not name or not uri:
            raise InvalidInputError(f"-m {arg!r}: give NAME=URI, e.g. -m iris=./models/iris")
        if name in models:
            raise InvalidInputError(f"-m: the model name {name!r} is given twice")
        models[name] = uri
    return models


def _read_model_config(path: str | None) -> Any:
    if path is None:
        return None
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InvalidInputError(f"--model-config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"--model-config {path}: not valid YAML: {exc}") from None
