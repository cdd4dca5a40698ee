"""``modelpack server``: the team server (REST API, blobs, web UI), and its tokens."""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated

import typer

from modelpack.errors import InvalidInputError

server_app = typer.Typer(
    help="Run the team server: registry, runs and artifacts over HTTP, with a web UI.",
    invoke_without_command=True,
)
token_app = typer.Typer(help="Bearer tokens for `modelpack server --auth token`.")
server_app.add_typer(token_app, name="token")

DEFAULT_PORT = 8700


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")


def _use_store(store_uri: str | None, artifact_uri: str | None) -> None:
    from modelpack._rest import TRACKING_URI_ENV, set_tracking_uri

    # The server itself always talks to the store: never to another server (or itself).
    os.environ.pop(TRACKING_URI_ENV, None)
    set_tracking_uri(None)
    if store_uri:
        os.environ["MODELPACK_STORE_URI"] = store_uri
    if artifact_uri:
        os.environ["MODELPACK_ARTIFACT_URI"] = artifact_uri


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


StoreOpt = Annotated[
    str | None, typer.Option("--store-uri", help="SQL store (default: MODELPACK_STORE_URI).")
]


@server_app.callback()
def server(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    auth: Annotated[
        str, typer.Option(help="'none' (default) or 'token': every call needs a bearer token.")
    ] = "none",
    store_uri: StoreOpt = None,
    artifact_uri: Annotated[
        str | None,
        typer.Option(help="Artifact store, a directory or s3://bucket/prefix."),
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow browser calls from this origin (repeatable).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Start the team server (`modelpack server token ...` manages its tokens)."""
    if ctx.invoked_subcommand is not None:
        _use_store(store_uri, artifact_uri)
        return
    if auth not in ("none", "token"):
        raise InvalidInputError(f"invalid --auth {auth!r}: use 'none' or 'token'")
    if not 0 < port < 65536:
        raise InvalidInputError(f"invalid --port {port}: give 1 to 65535")
    _use_store(store_uri, artifact_uri)
    import uvicorn

    from modelpack.registry import engine_url
    from modelpack.teamserver import create_app

    if auth == "none" and not _is_loopback(host):
        typer.echo(
            f"warning: serving on {host} without --auth token: anyone who can reach this "
            "port can change and delete models",
            err=True,
        )
    app = create_app(auth=auth == "token", cors_origins=cors_origin or ())
    typer.echo(
        f"modelpack server on http://{host}:{port} (store {engine_url()}, "
        f"auth {auth}); clients: export MODELPACK_TRACKING_URI=http://{host}:{port}",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="read, write or admin.")],
    name: Annotated[
        str | None, typer.Option(help="Who the token is for (named in audit trails).")
    ] = None,
) -> None:
    """Create a token and print it (it is shown only this once)."""
    from modelpack.teamserver._auth import create_token

    typer.echo(create_token(role, name))


@token_app.command("list")
def token_list() -> None:
    """Tokens: id, name, role, created, revoked (never the token itself)."""
    from modelpack.cli._output import table, when
    from modelpack.teamserver._auth import list_tokens

    rows = [
        (t["id"], t["name"] or "-", t["role"], when(t["created_at"]), when(t["revoked_at"]))
        for t in list_tokens()
    ]
    table(["id", "name", "role", "created", "revoked"], rows)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The id from `token list`.")],
) -> None:
    """Revoke a token: the server refuses it within seconds."""
    from modelpack.teamserver._auth import revoke_token

    revoke_token(token_id)
    typer.echo(f"revoked token {token_id}")
