"""How the CLI reads a model's input from a file or stdin: CSV or JSON in the scoring formats."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import orjson

from modelpack.errors import InvalidInputError


def read_input(file: Path) -> Any:
    """The data in ``file`` (``-``: stdin) for ``modelpack predict`` and ``deploy predict``."""
    import pandas as pd

    from modelpack.payload import decode

    if str(file) == "-":
        raw = sys.stdin.buffer.read()
    else:
        if not file.is_file():
            raise InvalidInputError(f"input file {file} does not exist")
        raw = file.read_bytes()
    if file.suffix.lower() == ".csv" or (
        file.suffix.lower() != ".json" and raw.lstrip()[:1] not in (b"{", b"[")
    ):
        try:
            return pd.read_csv(io.BytesIO(raw))
        except (ValueError, pd.errors.ParserError) as exc:
            raise InvalidInputError(f"{file}: not valid CSV ({exc})") from exc
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"{file}: not valid JSON ({exc})") from exc
    if isinstance(body, list):
        body = (
            {"dataframe_records": body} if body and isinstance(body[0], dict) else {"inputs": body}
        )
    data, _ = decode(body)
    return data
