"""``kfp``: Kubeflow Pipelines components that run ``modelpack batch`` and ``modelpack deploy``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from modelpack.cli._output import fail
from modelpack.errors import InvalidInputError, ModelpackError

kfp_app = typer.Typer(help="Kubeflow Pipelines (KFP v2) components.", no_args_is_help=True)


class Step(str, Enum):
    batch = "batch"
    deploy = "deploy"


def register(app: typer.Typer) -> None:
    app.add_typer(kfp_app, name="kfp")


@kfp_app.command("component")
def component(
    step: Annotated[Step, typer.Argument(help="The step: batch or deploy.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Component YAML to write.")],
    image: Annotated[
        str | None,
        typer.Option(help="modelpack image the container component runs (`build-image`)."),
    ] = None,
    python: Annotated[
        bool,
        typer.Option(
            "--python", help="A lightweight Python component (modelpack from pip), no image."
        ),
    ] = False,
    packages: Annotated[
        list[str] | None,
        typer.Option(
            "--package",
            metavar="REQUIREMENT",
            help="With --python: what the step pip-installs (repeatable) [default: "
            "modelpack==this version].",
        ),
    ] = None,
    base_image: Annotated[
        str, typer.Option(help="With --python: the image the step runs in.")
    ] = "python:3.11-slim",
) -> None:
    """Write a KFP component YAML for a batch or deploy step (load it with kfp's loaders)."""
    try:
        _check(image, python, packages)
        from modelpack import kfp

        if python:
            build = (
                kfp.batch_python_component if step is Step.batch else kfp.deploy_python_component
            )
            made = build(packages_to_install=packages, base_image=base_image)
        else:
            assert image is not None  # _check
            made = (kfp.batch_component if step is Step.batch else kfp.deploy_component)(image)
        kfp.write_component(made, output)
    except ModelpackError as exc:
        raise fail(exc) from None
    typer.echo(str(output))


def _check(image: str | None, python: bool, packages: list[str] | None) -> None:
    if python and image is not None:
        raise InvalidInputError("give --image (a container component) or --python, not both")
    if not python and image is None:
        raise InvalidInputError(
            "give --image IMAGE (a modelpack image: `modelpack build-image`) or --python "
            "(a lightweight component that installs modelpack with pip)"
        )
    if packages and not python:
        raise InvalidInputError("--package applies to --python components only")
