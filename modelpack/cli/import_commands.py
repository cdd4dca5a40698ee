"""``modelpack import mlflow|mlflow-registry``: bring MLflow models and registries over."""

from __future__ import annotations

from typing import Annotated

import typer

from modelpack.cli._output import echo_json, table
from modelpack.cli._trust import TrustFlag, TrustTypes, trust_arg

import_app = typer.Typer(
    help="Bring models over from other tools (MLflow), without those tools installed.",
    no_args_is_help=True,
)

TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="The MLflow store: sqlite:///mlflow.db, postgresql://..., or http://HOST:PORT of "
        "an MLflow server [default: MLFLOW_TRACKING_URI].",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
    import_app.command("mlflow")(import_model)
    import_app.command("mlflow-registry")(import_registry)


def import_model(
    src: Annotated[
        str,
        typer.Argument(
            help="An MLflow model directory, runs:/RUN_ID/PATH, models:/NAME/VERSION, "
            "models:/NAME@ALIAS or models:/m-ID."
        ),
    ],
    output: Annotated[str, typer.Option("-o", "--output", help="The modelpack model to write.")],
    tracking_uri: TrackingUri = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
    trust: TrustFlag = False,
    trust_types: TrustTypes = None,
) -> None:
    """Convert one MLflow model into a modelpack model directory."""
    from modelpack.descriptor import Descriptor
    from modelpack.mlflow_import.api import import_mlflow

    path = import_mlflow(
        src,
        output,
        tracking_uri=tracking_uri,
        trust=trust_arg(trust, trust_types),
        overwrite=overwrite,
    )
    descriptor = Descriptor.read(path)
    typer.echo(f"imported {src} -> {path} (flavor {descriptor.loader})")


def import_registry(
    tracking_uri: TrackingUri = None,
    names: Annotated[
        list[str] | None,
        typer.Option("--name", help="Only this registered model (repeatable) [default: all]."),
    ] = None,
    trust: TrustFlag = False,
    trust_types: TrustTypes = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Copy registered models, versions (same numbers), aliases, tags and descriptions."""
    import os

    from modelpack.errors import InvalidInputError
    from modelpack.mlflow_import.registry import import_registry as run_import
    from modelpack.mlflow_import.sources import TRACKING_URI_ENV

    uri = tracking_uri or os.environ.get(TRACKING_URI_ENV)
    if not uri:
        raise InvalidInputError(f"give the MLflow store with --tracking-uri or {TRACKING_URI_ENV}")
    report = run_import(uri, names, trust=trust_arg(trust, trust_types))
    if as_json:
        echo_json(report.to_dict())
        return
    rows = [(what, "imported", "") for what in report.imported]
    rows += [(what, "up to date", "") for what in report.updated]
    rows += [(alias, "alias set", "") for alias in report.aliases]
    rows += [(what, "NOT imported", why) for what, why in report.skipped]
    table(("what", "result", "why"), rows)
    if report.skipped:
        typer.echo(f"{len(report.skipped)} item(s) did not come over; see 'why' above", err=True)
