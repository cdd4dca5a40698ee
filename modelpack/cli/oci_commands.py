"""``modelpack push`` and ``modelpack pull``: models as OCI artifacts (CNCF ModelPack format)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from modelpack.cli._output import echo_json
from modelpack.errors import InvalidInputError

InsecureOpt = Annotated[
    bool,
    typer.Option("--insecure", help="Plain HTTP to this registry (loopback hosts always are)."),
]
UserOpt = Annotated[
    str | None, typer.Option("--username", "-u", help="Registry user (with --password-stdin).")
]
PasswordOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the registry password from stdin.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def register(app: typer.Typer) -> None:
    app.command("push")(push)
    app.command("pull")(pull)


def _password(username: str | None, from_stdin: bool) -> str | None:
    if from_stdin != (username is not None):
        raise InvalidInputError("--username and --password-stdin go together")
    if not from_stdin:
        return None
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise InvalidInputError("--password-stdin: stdin held no password")
    return password


def push(
    model: Annotated[
        str, typer.Argument(help="Model URI: a path, models:/, runs:/, s3://, oci://.")
    ],
    reference: Annotated[str, typer.Argument(help="oci://HOST/REPOSITORY:TAG")],
    insecure: InsecureOpt = False,
    username: UserOpt = None,
    password_stdin: PasswordOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Push a model to an OCI registry as a CNCF ModelPack artifact."""
    from modelpack import oci

    password = _password(username, password_stdin)
    result = oci.push(model, reference, insecure=insecure, username=username, password=password)
    if as_json:
        echo_json(
            {
                "reference": result.reference,
                "digest": result.digest,
                "blobs": result.blobs,
                "uploaded": result.uploaded,
                "uploaded_bytes": result.uploaded_bytes,
            }
        )
        return
    typer.echo(
        f"pushed {result.reference} ({result.uploaded} of {result.blobs} blobs uploaded, "
        f"{result.uploaded_bytes} bytes)"
    )


def pull(
    reference: Annotated[str, typer.Argument(help="oci://HOST/REPOSITORY[:TAG|@sha256:DIGEST]")],
    directory: Annotated[Path, typer.Argument(help="New or empty folder to pull the model into.")],
    insecure: InsecureOpt = False,
    username: UserOpt = None,
    password_stdin: PasswordOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Pull a model artifact into a folder, verifying every blob and the model's manifest."""
    from modelpack import oci

    password = _password(username, password_stdin)
    result = oci.pull(reference, directory, insecure=insecure, username=username, password=password)
    if as_json:
        echo_json(
            {"reference": result.reference, "digest": result.digest, "path": str(result.path)}
        )
        return
    typer.echo(f"pulled {result.reference} into {result.path}")
    typer.echo(f"digest: {result.digest}")
