"""``modelpack registry ...``: register, look up, alias, transition, tag and search versions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from modelpack.cli._output import echo_json, table, when
from modelpack.errors import InvalidInputError

registry_app = typer.Typer(
    help="Versions, aliases, stages and tags of registered models.", no_args_is_help=True
)
models_app = typer.Typer(help="Registered models.", no_args_is_help=True)
registry_app.add_typer(models_app, name="models")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE (repeatable).")]


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")


def _parse_tags(items: Sequence[str] | None) -> dict[str, str]:
    tags = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--tag {item!r}: use KEY=VALUE")
        tags[key] = value
    return tags


def _show_versions(versions: Sequence[Any], as_json: bool, token: str | None = None) -> None:
    if as_json:
        body: Any = [v.to_dict() for v in versions]
        echo_json({"versions": body, "next_page_token": token} if token else body)
        return
    table(
        ("name", "version", "stage", "aliases", "tags", "run_id", "created", "source"),
        [
            (
                v.name,
                v.version,
                v.stage,
                ", ".join(v.aliases),
                ", ".join(f"{k}={t}" for k, t in v.tags.items()),
                v.run_id,
                when(v.created_at),
                v.source,
            )
            for v in versions
        ],
    )
    if token:
        typer.echo(f"more: --page-token {token}")


@registry_app.command("register")
def register_version(
    name: str,
    model_uri: str,
    tag: TagOpt = None,
    description: Annotated[str | None, typer.Option(help="Version description.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run that produced the model.")] = None,
    parent: Annotated[str | None, typer.Option(help="NAME/VERSION it derives from.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register the model at MODEL_URI as the next version of NAME."""
    from modelpack import registry

    version = registry.register(
        name,
        model_uri,
        tags=_parse_tags(tag),
        description=description,
        run_id=run_id,
        parent=parent,
    )
    _show_versions([version], as_json)


@registry_app.command("get")
def get_version(name: str, version: str, as_json: JsonOpt = False) -> None:
    """Show one version (VERSION is a number, 'latest' or '@ALIAS')."""
    from modelpack import registry

    if version == "latest":
        found = registry.latest_version(name)
    elif version.startswith("@"):
        found = registry.get_by_alias(name, version[1:])
    else:
        found = registry.get_version(name, _int(version))
    _show_versions([found], as_json)


def _int(text: str) -> int:
    if not text.isdigit():
        raise InvalidInputError(f"version {text!r} is not a positive integer")
    return int(text)


@registry_app.command("search")
@registry_app.command("list")
def search_versions(
    filter: Annotated[
        str | None, typer.Option("--filter", "-f", help="See docs/registry.md.")
    ] = None,
    order_by: Annotated[list[str] | None, typer.Option(help="FIELD [ASC|DESC].")] = None,
    max_results: Annotated[int, typer.Option(help="Page size.")] = 100,
    page_token: Annotated[str | None, typer.Option(help="From a previous page.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List versions matching a filter, e.g. \"name = 'iris' AND alias = 'champion'\"."""
    from modelpack import registry

    page = registry.search_versions(
        filter,
        order_by=order_by or ("name ASC", "version DESC"),
        max_results=max_results,
        page_token=page_token,
    )
    _show_versions(page.items, as_json, page.next_page_token)


@registry_app.command("set-alias")
def set_alias(name: str, alias: str, version: str, as_json: JsonOpt = False) -> None:
    """Point ALIAS of NAME at VERSION."""
    from modelpack import registry

    _show_versions([registry.set_alias(name, alias, _int(version))], as_json)


@registry_app.command("delete-alias")
def delete_alias(name: str, alias: str) -> None:
    from modelpack import registry

    registry.delete_alias(name, alias)
    typer.echo(f"deleted alias {alias!r} of {name!r}")


@registry_app.command("transition")
def transition(
    name: str,
    version: str,
    stage: str,
    comment: Annotated[str | None, typer.Option(help="Why (kept in the history).")] = None,
    user: Annotated[str | None, typer.Option(help="Who (default: the login name).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Move VERSION of NAME to STAGE (None, Staging, Production, Archived or custom)."""
    from modelpack import registry

    found = registry.transition(name, _int(version), stage, comment, user=user)
    _show_versions([found], as_json)


@registry_app.command("history")
def history(
    name: str,
    version: Annotated[int | None, typer.Option(help="Only this version.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage transitions of NAME: who, when, from, to, comment."""
    from modelpack import registry

    events = registry.history(name, version)
    if as_json:
        echo_json([e.to_dict() for e in events])
        return
    table(
        ("version", "when", "user", "from", "to", "comment"),
        [
            (e.version, when(e.timestamp), e.user, e.from_stage, e.to_stage or "None", e.comment)
            for e in events
        ],
    )


@registry_app.command("set-tag")
def set_tag(name: str, version: str, key: str, value: str) -> None:
    from modelpack import registry

    registry.set_tag(name, _int(version), key, value)
    typer.echo(f"tagged {name!r} version {version}: {key}={value}")


@registry_app.command("delete-tag")
def delete_tag(name: str, version: str, key: str) -> None:
    from modelpack import registry

    registry.delete_tag(name, _int(version), key)
    typer.echo(f"deleted tag {key!r} of {name!r} version {version}")


@registry_app.command("delete-version")
def delete_version(name: str, version: str) -> None:
    from modelpack import registry

    registry.delete_version(name, _int(version))
    typer.echo(f"deleted {name!r} version {version}")


def _show_models(models: Sequence[Any], as_json: bool, token: str | None = None) -> None:
    if as_json:
        body: Any = [m.to_dict() for m in models]
        echo_json({"models": body, "next_page_token": token} if token else body)
        return
    table(
        ("name", "latest", "aliases", "tags", "updated", "description"),
        [
            (
                m.name,
                m.latest_version,
                ", ".join(f"{a}->{v}" for a, v in m.aliases.items()),
                ", ".join(f"{k}={t}" for k, t in m.tags.items()),
                when(m.updated_at),
                m.description,
            )
            for m in models
        ],
    )
    if token:
        typer.echo(f"more: --page-token {token}")


@models_app.command("list")
def list_models(
    filter: Annotated[
        str | None, typer.Option("--filter", "-f", help="See docs/registry.md.")
    ] = None,
    max_results: Annotated[int, typer.Option(help="Page size.")] = 100,
    page_token: Annotated[str | None, typer.Option(help="From a previous page.")] = None,
    as_json: JsonOpt = False,
) -> None:
    from modelpack import registry

    page = registry.search_models(filter, max_results=max_results, page_token=page_token)
    _show_models(page.items, as_json, page.next_page_token)


@models_app.command("get")
def get_model(name: str, as_json: JsonOpt = False) -> None:
    from modelpack import registry

    _show_models([registry.get_model(name)], as_json)


@models_app.command("create")
def create_model(
    name: str,
    description: Annotated[str | None, typer.Option(help="Model description.")] = None,
    tag: TagOpt = None,
    as_json: JsonOpt = False,
) -> None:
    from modelpack import registry

    _show_models(
        [registry.create_model(name, description=description, tags=_parse_tags(tag))], as_json
    )


@models_app.command("delete")
def delete_model(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete NAME with all its versions, aliases, tags and history."""
    from modelpack import registry

    if not yes:
        typer.confirm(f"delete {name!r} and all its versions?", abort=True)
    registry.delete_model(name)
    typer.echo(f"deleted registered model {name!r}")
