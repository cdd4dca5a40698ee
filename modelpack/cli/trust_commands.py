"""``scan`` and ``trust add|list|remove``: what a model runs when it loads, and who allowed it."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from modelpack.cli._output import fail
from modelpack.errors import IntegrityError, ModelNotFoundError

trust_app = typer.Typer(
    help="Trust grants for single models, tied to their content (sha256 of the descriptor).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)
    app.add_typer(trust_app, name="trust")


def scan(
    uri: Annotated[str, typer.Argument(help="Model path or URI.")],
    flavor: Annotated[
        str | None, typer.Option(help="Flavor to load with [default: the model's loader].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Exit 0 if the model loads with no trust, 1 (listing what needs trust) if not.

    The files are verified first and read without running anything from them.
    """
    from modelpack.descriptor import verify_manifest
    from modelpack.model import untrusted_needs
    from modelpack.trust import descriptor_digest

    try:
        path, descriptor, needs = untrusted_needs(uri, flavor=flavor)
        verify_manifest(path, descriptor.files)
    except IntegrityError as exc:
        raise fail(exc, exit_code=1) from None
    digest = f"sha256:{descriptor_digest(path)}"
    if as_json:
        body = {
            "digest": digest,
            "executes_code": bool(needs),
            "needs": [n.to_dict() for n in needs],
        }
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    elif needs:
        typer.echo(f"{uri}: executes code: yes ({digest})")
        for need in needs:
            typer.echo(f"  needs trust: {need}")
    else:
        typer.echo(f"{uri}: executes code: no; loads with no trust ({digest})")
    if needs:
        raise typer.Exit(1)


@trust_app.command("add")
def add(uri: Annotated[str, typer.Argument(help="Model path or URI.")]) -> None:
    """Trust this model's exact content: it loads with what it needs, until it changes."""
    from modelpack.descriptor import verify_manifest
    from modelpack.model import untrusted_needs
    from modelpack.trust import add_grant, descriptor_digest

    path, descriptor, needs = untrusted_needs(uri)
    verify_manifest(path, descriptor.files)  # grant what was checked, not what might be
    digest = descriptor_digest(path)
    add_grant(digest, uri=uri, model_id=descriptor.model_id, needs=needs)
    listed = ", ".join(str(n) for n in needs) or "nothing (it needs no trust)"
    typer.echo(f"trusted sha256:{digest} ({uri}): {listed}")


@trust_app.command("list")
def list_grants(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The models trusted with `modelpack trust add`."""
    from modelpack.trust import read_grants

    grants = read_grants()
    if as_json:
        typer.echo(orjson.dumps(grants, option=orjson.OPT_INDENT_2).decode())
        return
    if not grants:
        typer.echo("no trusted models")
    for digest, info in sorted(grants.items(), key=lambda kv: str(kv[1].get("granted_at"))):
        needs = ", ".join(info.get("needs") or []) or "-"
        typer.echo(f"sha256:{digest}  {info.get('uri')}  {info.get('granted_at')}  {needs}")


@trust_app.command("remove")
def remove(
    target: Annotated[str, typer.Argument(help="Model path or URI, or a sha256:<digest>.")],
) -> None:
    """Withdraw the trust given to a model."""
    from modelpack.trust import descriptor_digest, remove_grant
    from modelpack.uris import resolve

    digest = target.lower().removeprefix("sha256:")
    if not (len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        digest = descriptor_digest(resolve(target))
    if not remove_grant(digest):
        raise fail(ModelNotFoundError(f"sha256:{digest} is not a trusted model"))
    typer.echo(f"removed trust for sha256:{digest}")
