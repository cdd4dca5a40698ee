"""``convert``: add an ONNX flavor to a saved model, refused unless its outputs match."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from modelpack.cli._output import fail
from modelpack.cli._trust import TrustFlag, TrustTypes, trust_arg
from modelpack.errors import ModelpackError, ParityError

PARITY_EXIT = 1  # the conversion ran and was refused; 2 stays for user mistakes


class Target(str, Enum):
    onnx = "onnx"


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)


def convert(
    uri: Annotated[str, typer.Argument(help="Model path or URI (its flavor must export ONNX).")],
    to: Annotated[Target, typer.Option("--to", help="Format to add.")] = Target.onnx,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="New model directory [default: <source>-onnx]."),
    ] = None,
    rtol: Annotated[float, typer.Option(min=0, help="Relative tolerance of the parity gate.")] = (
        1e-4
    ),
    atol: Annotated[float, typer.Option(min=0, help="Absolute tolerance of the parity gate.")] = (
        1e-5
    ),
    opset: Annotated[int | None, typer.Option(min=1, help="ONNX opset [default: exporter's].")] = (
        None
    ),
    rows: Annotated[int, typer.Option(min=0, help="Generated rows checked beside the example.")] = (
        1000
    ),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    trust: TrustFlag = False,
    trust_type: TrustTypes = None,
) -> None:
    """Convert a saved model to ONNX as a new model directory, checked for parity."""
    from modelpack.convert import to_onnx

    try:
        out = to_onnx(
            uri,
            output,
            rtol=rtol,
            atol=atol,
            opset=opset,
            rows=rows,
            overwrite=overwrite,
            trust=trust_arg(trust, trust_type),
        )
    except ParityError as exc:
        raise fail(exc, exit_code=PARITY_EXIT) from None
    except ModelpackError as exc:
        raise fail(exc) from None
    typer.echo(str(out))
