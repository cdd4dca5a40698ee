"""``batch``: score files of any size with a model, in chunks."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from modelpack.cli._trust import TrustFlag, TrustPickle, TrustTypes, trust_arg


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [n.strip() for n in value.split(",") if n.strip()]


def batch(
    model_uri: Annotated[str, typer.Argument(help="Model path or URI.")],
    input: Annotated[str, typer.Argument(help="File, directory of part files, or s3:// URI.")],
    output: Annotated[str, typer.Argument(help="Output file (local or s3://).")],
    format: Annotated[
        str | None,
        typer.Option("--format", help="Output format: csv, parquet or jsonl (default: OUTPUT's)."),
    ] = None,
    input_format: Annotated[
        str | None, typer.Option("--input-format", help="Input format (default: INPUT's suffix).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per chunk.")] = 65_536,
    workers: Annotated[int, typer.Option("--workers", help="Processes scoring chunks.")] = 1,
    columns: Annotated[
        str | None,
        typer.Option("--columns", help="Comma-separated model inputs (default: the signature's)."),
    ] = None,
    passthrough: Annotated[
        str | None, typer.Option("--passthrough", help="Comma-separated columns copied to OUTPUT.")
    ] = None,
    on_error: Annotated[
        str,
        typer.Option(
            "--on-error",
            help="fail: stop at the first bad row; skip: score the others and list the bad "
            "rows (unparseable cells, signature mismatches, model errors) in "
            "OUTPUT.errors.jsonl.",
        ),
    ] = "fail",
    engine: Annotated[str, typer.Option("--engine", help="local or spark.")] = "local",
    trust: TrustFlag = False,
    trust_type: TrustTypes = None,
    trust_pickle: TrustPickle = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Report progress on stderr.")
    ] = True,
) -> None:
    """Score INPUT with a model into OUTPUT, streaming chunks (CSV, Parquet, JSON Lines)."""
    from modelpack.errors import InvalidInputError

    if engine == "spark":
        from modelpack.spark import score_files

        rows = score_files(
            model_uri,
            input,
            output,
            format=format,
            input_format=input_format,
            columns=_names(columns),
            passthrough=_names(passthrough) or [],
            trust=trust_arg(trust, trust_type, trust_pickle),
        )
        typer.echo(f"scored {rows:,} rows with spark into {output}")
        return
    if engine != "local":
        raise InvalidInputError(f"unknown --engine {engine!r}; choose local or spark")
    from modelpack.batch import score

    try:
        summary = score(
            model_uri,
            input,
            output,
            format=format,
            input_format=input_format,
            batch_size=batch_size,
            workers=workers,
            columns=_names(columns),
            passthrough=_names(passthrough) or (),
            on_error=on_error,
            progress=progress,
            trust=trust_arg(trust, trust_type, trust_pickle),
        )
    except KeyboardInterrupt:
        typer.echo("interrupted: no output was written", err=True)
        sys.exit(130)
    failed = f", {summary.failed_rows:,} failed (see {summary.errors_output})"
    typer.echo(
        f"scored {summary.scored_rows:,} of {summary.rows:,} rows in {summary.seconds:.1f} s "
        f"({summary.rows_per_second:,.0f} rows/s, {summary.workers} worker(s))"
        f"{failed if summary.failed_rows else ''} into {summary.output}"
    )
