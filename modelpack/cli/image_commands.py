"""``build-image``: a container image serving one model (the SageMaker serving contract)."""

from __future__ import annotations

import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from modelpack.cli._output import fail
from modelpack.cli._trust import TrustFlag, TrustTypes, trust_arg
from modelpack.errors import ModelpackError


class Engine(str, Enum):
    docker = "docker"
    podman = "podman"
    buildah = "buildah"


def register(app: typer.Typer) -> None:
    app.command("build-image")(build_image)


def build_image(
    uri: Annotated[
        str, typer.Argument(help="Model path or URI (an oci:// model is pulled on this host).")
    ],
    tag: Annotated[str, typer.Option("-t", "--tag", help="Image name and tag.")],
    base_image: Annotated[
        str, typer.Option(help="Base image with python3 and its venv module.")
    ] = "python:3.11-slim",
    gpu: Annotated[
        bool, typer.Option(help="onnxruntime-gpu in place of onnxruntime; ONNX models on CUDA.")
    ] = False,
    engine: Annotated[
        Engine | None, typer.Option(help="Engine [default: first usable: docker, podman, buildah].")
    ] = None,
    context_only: Annotated[
        Path | None,
        typer.Option(help="Write the Dockerfile and context into this directory; build nothing."),
    ] = None,
    fetch_model: Annotated[
        bool,
        typer.Option(
            help="Fetch the model (models:/, runs:/, s3://, oci://) when the server starts."
        ),
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Plain HTTP to the oci:// model's registry while baking it in (loopback hosts "
            "always are).",
        ),
    ] = False,
    network: Annotated[
        str | None, typer.Option(help="Network mode of the build's RUN steps (e.g. host).")
    ] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(help="CA bundle pip trusts inside the build (behind a TLS proxy)."),
    ] = None,
    trust: TrustFlag = False,
    trust_type: TrustTypes = None,
) -> None:
    """Write a Dockerfile and context for a model and build the image with docker/podman/buildah."""
    from modelpack.image import ImageOptions, build_image, find_engine, write_context

    granted = trust_arg(trust, trust_type)
    options = ImageOptions(
        base_image=base_image,
        gpu=gpu,
        fetch_model=fetch_model,
        insecure=insecure,
        trust=tuple(granted) if isinstance(granted, list) else granted,
    )
    try:
        if context_only is not None:
            write_context(uri, context_only, options)
            typer.echo(str(context_only))
            return
        chosen = find_engine(engine.value if engine else None)  # before the slow part
        with tempfile.TemporaryDirectory(prefix="modelpack-image-") as tmp:
            context = write_context(uri, Path(tmp) / "context", options)
            typer.echo(f"building {tag} with {chosen}", err=True)
            build_image(
                context,
                tag,
                engine=chosen,
                network=network,
                ca_bundle=ca_bundle,
                # Outside the context, so it outlives a failed build.
                log=Path(tempfile.gettempdir()) / f"modelpack-build-{_safe(tag)}.log",
            )
    except ModelpackError as exc:
        raise fail(exc) from None
    typer.echo(tag)


def _safe(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
