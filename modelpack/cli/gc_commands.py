"""``gc``: remove what interrupted saves, registrations and uploads left behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("gc")(gc)


def gc(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Folders to clean too (e.g. where you save models)."),
    ] = None,
    age: Annotated[
        float, typer.Option(min=0, help="Only leftovers older than this many seconds.")
    ] = 3600.0,
    dry_run: Annotated[bool, typer.Option(help="List them; delete nothing.")] = False,
) -> None:
    """Delete stale .NAME.tmp-* / .NAME.old-* leftovers under $MODELPACK_HOME and PATHS.

    A save or register killed half way leaves them; the next write to the same place removes
    its own, this removes all of them. Anything younger than --age is left alone: a write in
    progress may own it.
    """
    from modelpack._fs import leftovers, remove
    from modelpack.store.db import home

    found: list[Path] = []
    for root in [home(), *(paths or [])]:
        for directory, dirnames, _ in os.walk(root):
            here = leftovers(Path(directory), age=age)
            found += here
            skipped = {p.name for p in here}
            dirnames[:] = [d for d in dirnames if d not in skipped]
    for path in found:
        typer.echo(str(path))
    if dry_run:
        typer.echo(f"{len(found)} leftover(s); nothing deleted (--dry-run)")
        return
    freed = remove(found)
    typer.echo(f"removed {len(found)} leftover(s), {freed:,} bytes")
