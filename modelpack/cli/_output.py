"""How the CLI prints: tables by default, indented JSON with ``--json``, UTC times."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

import orjson
import typer

from modelpack.errors import ModelpackError

USER_ERROR_EXIT = 2


def fail(error: ModelpackError, exit_code: int = USER_ERROR_EXIT) -> typer.Exit:
    """Print ``error [code]: message`` on stderr; raise what this returns to exit."""
    typer.echo(f"error [{error.code}]: {error.message}", err=True)
    return typer.Exit(exit_code)


def echo_json(obj: Any) -> None:
    typer.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


def when(ms: int | None) -> str:
    """Epoch milliseconds as an ISO time in UTC, or '-'."""
    if ms is None:
        return "-"
    moment = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
    return moment.isoformat(timespec="seconds")


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table()
    for col in columns:
        out.add_column(col)
    for row in rows:
        out.add_row(*("-" if v is None or v == "" else str(v) for v in row))
    Console(width=200).print(out)
