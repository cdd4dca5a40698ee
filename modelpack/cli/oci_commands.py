"""Placeholder: the oci commands are being written (issue 16)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
