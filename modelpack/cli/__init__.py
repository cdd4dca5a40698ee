"""The ``modelpack`` command line."""

from __future__ import annotations

import sys
import warnings

import typer

from modelpack.cli._output import USER_ERROR_EXIT
from modelpack.cli._output import fail as fail  # deprecated here: import from cli._output
from modelpack.errors import ModelpackError

app = typer.Typer(
    name="modelpack",
    help="Package, version, serve and deploy models from any Python ML library.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


_registered = False


def _register() -> None:
    # Once per process: main() called again (tests, the security driver) must not add every
    # command a second time (typer rebuilt all of them on each call, ever slower).
    global _registered
    if _registered:
        return
    _registered = True
    from modelpack.cli import (
        batch_commands,
        convert_commands,
        deploy_commands,
        gc_commands,
        image_commands,
        import_commands,
        kfp_commands,
        model_commands,
        oci_commands,
        registry_commands,
        runs_commands,
        serve_commands,
        server_commands,
        trust_commands,
    )

    batch_commands.register(app)
    convert_commands.register(app)
    deploy_commands.register(app)
    gc_commands.register(app)
    image_commands.register(app)
    import_commands.register(app)
    kfp_commands.register(app)
    model_commands.register(app)
    oci_commands.register(app)
    registry_commands.register(app)
    runs_commands.register(app)
    serve_commands.register(app)
    server_commands.register(app)
    trust_commands.register(app)


def _show_warning(
    message: Warning | str, category: type[Warning], *_: object, **__: object
) -> None:
    typer.echo(f"warning: {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    warnings.showwarning = _show_warning  # one line, not the source line of the warning
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except ModelpackError as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        sys.exit(USER_ERROR_EXIT)
