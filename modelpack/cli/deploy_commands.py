"""``deploy``: plan, create, update, delete, get, list and predict through any deployer."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from modelpack import deploy
from modelpack.cli._output import fail
from modelpack.cli._trust import TrustFlag, TrustTypes, trust_arg
from modelpack.deploy import Deployment, Plan
from modelpack.errors import InvalidInputError, ModelpackError

# Read from -C/--config until the next release: --timeout says it now, for every target.
LEGACY_READY_TIMEOUT = "ready_timeout"

deploy_app = typer.Typer(
    help="Deploy a model to a target (local, onnx, kubernetes, sagemaker, bentoml or any "
    "installed deployer) and manage its deployments.",
    no_args_is_help=True,
)

Target = Annotated[
    str, typer.Option("-t", "--target", help="Deployer name (`modelpack plugins` lists them).")
]
Name = Annotated[str, typer.Option("--name", help="Deployment name.")]
ModelUri = Annotated[
    list[str] | None,
    typer.Option(
        "-m",
        "--model-uri",
        help="Model path or URI; NAME=URI (repeatable): a many-models deployment serving each "
        "model by name (targets that run one server for several models).",
    ),
]
Repository = Annotated[
    str | None,
    typer.Option(
        "--repository",
        help="Many models: every model folder in this folder, or with models:/ every registered "
        "model (see --filter, --alias); combines with -m NAME=URI.",
    ),
]
RegistryFilter = Annotated[
    str | None, typer.Option("--filter", help="With --repository models:/: registry filter.")
]
RegistryAlias = Annotated[
    str | None,
    typer.Option("--alias", help="With --repository models:/: each model's version at ALIAS."),
]
Options = Annotated[
    list[str] | None,
    typer.Option("-C", help="Target option key=value (repeatable; values read as YAML)."),
]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="YAML or JSON file of target options.")
]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Return without waiting until ready.")]
Timeout = Annotated[
    float | None, typer.Option(min=0, help="Seconds to wait until ready [default: 600].")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")


# -- commands --------------------------------------------------------------------------------


@deploy_app.command("plan")
def plan(
    target: Target,
    name: Name,
    model_uri: ModelUri = None,
    repository: Repository = None,
    registry_filter: RegistryFilter = None,
    alias: RegistryAlias = None,
    options: Options = None,
    config_file: ConfigFile = None,
    as_json: AsJson = False,
    trust: TrustFlag = False,
    trust_type: TrustTypes = None,
) -> None:
    """Show what create or update would do (manifests as YAML on stdout); touch nothing."""
    with _user_errors():
        config, _ = _config(target, options, config_file, trust=(trust, trust_type))
        model = _model(model_uri, repository, registry_filter, alias)
        _print_plan(deploy.plan(target, name, model, config), as_json)


@deploy_app.command("create")
def create(
    target: Target,
    name: Name,
    model_uri: ModelUri = None,
    repository: Repository = None,
    registry_filter: RegistryFilter = None,
    alias: RegistryAlias = None,
    options: Options = None,
    config_file: ConfigFile = None,
    no_wait: NoWait = False,
    timeout: Timeout = None,
    as_json: AsJson = False,
    trust: TrustFlag = False,
    trust_type: TrustTypes = None,
) -> None:
    """Deploy a model under a new name and wait until it is ready (removed again if never)."""
    with _user_errors():
        config, legacy = _config(target, options, config_file, trust=(trust, trust_type))
        model = _model(model_uri, repository, registry_filter, alias)
        with _progress(f"creating {name} on {target}") as show:
            deployment = deploy.create(
                target,
                name,
                model,
                config,
                wait=not no_wait,
                timeout=_timeout(timeout, legacy),
                on_poll=_poll_line(name, show),
            )
        _print_deployment(deployment, as_json)


@deploy_app.command("update")
def update(
    target: Target,
    name: Name,
    model_uri: ModelUri = None,
    repository: Repository = None,
    registry_filter: RegistryFilter = None,
    alias: RegistryAlias = None,
    options: Options = None,
    config_file: ConfigFile = None,
    no_wait: NoWait = False,
    timeout: Timeout = None,
    as_json: AsJson = False,
    trust: TrustFlag = False,
    trust_type: TrustTypes = None,
) -> None:
    """Replace a deployment's model (or options); the old version serves until the new is ready."""
    with _user_errors():
        config, legacy = _config(target, options, config_file, trust=(trust, trust_type))
        model = _model(model_uri, repository, registry_filter, alias)
        with _progress(f"updating {name} on {target}") as show:
            deployment = deploy.update(
                target,
                name,
                model,
                config,
                wait=not no_wait,
                timeout=_timeout(timeout, legacy),
                on_poll=_poll_line(name, show),
            )
        _print_deployment(deployment, as_json)


@deploy_app.command("delete")
def delete(
    target: Target, name: Name, options: Options = None, config_file: ConfigFile = None
) -> None:
    """Stop a deployment and remove everything it created."""
    with _user_errors():
        config, _ = _config(target, options, config_file)
        deploy.delete(target, name, config)
        typer.echo(f"deleted {name} on {target}", err=True)


@deploy_app.command("get")
def get(
    target: Target,
    name: Name,
    options: Options = None,
    config_file: ConfigFile = None,
    as_json: AsJson = False,
) -> None:
    """Show one deployment: status, endpoint, model and target details."""
    with _user_errors():
        config, _ = _config(target, options, config_file)
        _print_deployment(deploy.get(target, name, config), as_json)


@deploy_app.command("list")
def list_deployments(
    target: Target, options: Options = None, config_file: ConfigFile = None, as_json: AsJson = False
) -> None:
    """List a target's deployments with their status."""
    with _user_errors():
        config, _ = _config(target, options, config_file)
        found = deploy.list(target, config)
    if as_json:
        _echo_json([d.to_dict() for d in found])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("name", "status", "endpoint", "model"):
        table.add_column(column)
    for d in found:
        table.add_row(d.name, d.status, d.endpoint or "-", d.model_uri)
    Console(width=200).print(table)


@deploy_app.command("predict")
def predict(
    target: Target,
    name: Name,
    input_file: Annotated[
        Path, typer.Option("-i", "--input", help="JSON (MLflow formats) or CSV file, - for stdin.")
    ],
    options: Options = None,
    config_file: ConfigFile = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Many-models deployment: the model (by name) that answers."),
    ] = None,
) -> None:
    """Send a JSON or CSV file to a deployment and print its predictions as JSON."""
    from modelpack.cli._input import read_input
    from modelpack.payload import to_jsonable

    with _user_errors():
        config, _ = _config(target, options, config_file)
        data = read_input(input_file)
        predictions = deploy.predict(target, name, data, config, model=model)
    _echo_json({"predictions": to_jsonable(predictions)})


# -- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except ModelpackError as exc:
        raise fail(exc) from None


def _model(
    given: list[str] | None,
    repository: str | None,
    registry_filter: str | None,
    alias: str | None,
) -> str | deploy.ModelSet:
    """One model URI, or the model set -m NAME=URI (repeated) and --repository describe."""
    given = given or []
    if repository is None and len(given) == 1 and not _named(given[0]):
        if registry_filter is not None or alias is not None:
            raise InvalidInputError(
                "--filter and --alias apply to --repository models:/ or oci://HOST/NAMESPACE"
            )
        return given[0]
    if not given and repository is None:
        raise InvalidInputError("give the model: -m URI, or -m NAME=URI (repeatable), --repository")
    from modelpack.cli.serve_commands import parse_models  # -m NAME=URI as `serve` reads it

    return deploy.ModelSet(parse_models(given), repository, registry_filter, alias)


def _named(value: str) -> bool:
    """Whether ``-m`` got NAME=URI (a model of a set) rather than a path or URI: anything with
    ``=`` but an existing path, or a URI with ``=`` in it (``s3://b/date=2024/m``); a bad NAME
    is then refused with the set, not taken for a URI."""
    name, sep, _ = value.partition("=")
    return bool(sep) and ":" not in name and not Path(value).exists()


def _config(
    target: str,
    pairs: list[str] | None,
    config_file: Path | None,
    trust: tuple[bool, list[str] | None] = (False, None),
) -> tuple[dict[str, Any], float | None]:
    """The target options from --config and -C (the deprecated ready_timeout taken out)."""
    config = {**_read_config(config_file), **_parse_pairs(pairs or [])}
    granted = trust_arg(*trust)  # --trust / --trust-type: the deployer's `trust` option
    if granted:
        config["trust"] = "true" if granted is True else ",".join(granted)
    legacy = None
    if LEGACY_READY_TIMEOUT in config:
        from modelpack.plugins import deployer

        if LEGACY_READY_TIMEOUT not in deployer(target).options:
            value = config.pop(LEGACY_READY_TIMEOUT)
            try:
                legacy = float(value)
            except (TypeError, ValueError):
                raise InvalidInputError(f"ready_timeout must be a number, got {value!r}") from None
            typer.echo(
                "warning: the ready_timeout option is deprecated and will be refused in the "
                "next release; use --timeout",
                err=True,
            )
    return config, legacy


def _timeout(given: float | None, legacy: float | None) -> float:
    if given is not None:
        return given
    return legacy if legacy is not None else deploy.DEFAULT_TIMEOUT


def _read_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInputError(f"cannot read the config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path} is not valid YAML or JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} must hold a mapping of option keys to values")
    return {str(k): v for k, v in data.items()}


def _parse_pairs(pairs: list[str]) -> dict[str, Any]:
    import yaml

    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"-C takes key=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        config[key.strip()] = value
    return config


def _poll_line(name: str, show: Callable[[str], None]) -> deploy.OnPoll:
    def on_poll(current: Deployment, elapsed: float) -> None:
        show(f"{name} on {current.target}: {current.status} ({elapsed:.0f} s)")

    return on_poll


@contextlib.contextmanager
def _progress(title: str) -> Iterator[Callable[[str], None]]:
    """A spinner on a terminal; plain lines on stderr (one per change) otherwise."""
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal:
        with console.status(title) as status:
            yield lambda line: status.update(line)
        return
    typer.echo(title, err=True)
    last_state, last_at = "", time.monotonic()

    def show(line: str) -> None:
        nonlocal last_state, last_at
        state = line.rsplit(" (", 1)[0]
        if state != last_state or time.monotonic() - last_at >= 10:
            typer.echo(line, err=True)
            last_state, last_at = state, time.monotonic()

    yield show


def _print_plan(plan: Plan, as_json: bool) -> None:
    if as_json:
        _echo_json(dataclasses.asdict(plan))
        return
    header = [f"plan for {plan.name!r} on {plan.target} ({plan.model_uri})"]
    model_set = deploy.ModelSet.parse(plan.model_uri)
    if model_set is not None:
        header += [f"  {line}" for line in model_set.describe()]
    if plan.image:
        header.append(f"image: {plan.image}")
    header += [f"- {action}" for action in plan.actions]
    if not plan.documents:
        typer.echo("\n".join(header))
        return
    import yaml

    # Manifests alone on stdout (pipe them to kubectl); what they mean goes to stderr.
    typer.echo("\n".join(f"# {line}" for line in header), err=True)
    typer.echo(yaml.safe_dump_all(plan.documents, sort_keys=False, explicit_start=True), nl=False)


def _print_deployment(deployment: Deployment, as_json: bool) -> None:
    if as_json:
        _echo_json(deployment.to_dict())
        return
    lines = [
        f"name:     {deployment.name}",
        f"target:   {deployment.target}",
        f"status:   {deployment.status}",
        f"endpoint: {deployment.endpoint or '-'}",
        f"model:    {deployment.model_uri}",
    ]
    lines += [f"{k + ':':<9} {v}" for k, v in deployment.details.items() if v is not None]
    typer.echo("\n".join(lines))


def _echo_json(obj: Any) -> None:
    typer.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


__all__ = ["register"]
