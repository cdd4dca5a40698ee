"""The trust options every command that loads a model takes (``--trust``, ``--trust-type``)."""

from __future__ import annotations

from typing import Annotated

import typer

TrustFlag = Annotated[
    bool,
    typer.Option(
        "--trust",
        help="Trust everything this model runs when it loads (pickles, shipped code, any type): "
        "only for a model from a source you trust.",
    ),
]
TrustTypes = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-type",
        metavar="NAME",
        help="Trust one exact type, function or class name the model needs (repeatable).",
    ),
]
TrustPickle = Annotated[
    bool, typer.Option("--trust-pickle", hidden=True, help="Deprecated spelling of --trust.")
]


def trust_arg(
    trust: bool, trust_types: list[str] | None, trust_pickle: bool = False
) -> bool | list[str] | None:
    """What ``modelpack.load(trust=...)`` gets: None leaves it to MODELPACK_TRUST and grants."""
    if trust or trust_pickle:
        if trust_pickle:
            typer.echo("warning: --trust-pickle is deprecated; use --trust", err=True)
        return True
    return list(trust_types) if trust_types else None
