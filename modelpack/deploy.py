"""Deploying through any deployer: the one place that checks options, waits and rolls back.

``plan``, ``create``, ``update``, ``delete``, ``get``, ``list`` and ``predict`` take a target
(a deployer's name, as ``modelpack plugins`` lists it, or a deployer object) and check ``config``
against the deployer's ``options`` before calling it. ``create`` and ``update`` start the change
through the deployer and, unless ``wait=False``, poll its ``get`` until the deployment is
``ready`` (``wait_until``: the only wait loop). A deployment that ``create`` made and that never
becomes ready is deleted again, and the error says so; a failed ``update`` is not undone here:
each target keeps its previous version serving where it can (docs/deploy/). What a deployer
returns (``Deployment``/``Plan`` objects, or plain mappings with their keys, as third-party
deployers may answer) is turned into ``Deployment``/``Plan`` here, once.
"""

from __future__ import annotations

import builtins
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from modelpack._names import check_model_name
from modelpack.errors import DeploymentError, InvalidInputError, ModelpackError

if TYPE_CHECKING:
    from modelpack.plugins import Deployer

DEFAULT_TIMEOUT = 600.0
# Polling starts quick (a local server answers within seconds) and backs off to this for targets
# whose changes take minutes (a SageMaker endpoint): one request every few seconds at most.
_FIRST_POLL_S = 0.2
_MAX_POLL_S = 5.0

OnPoll = Callable[["Deployment", float], None]


@dataclass
class Deployment:
    """One deployment as ``get``/``list`` report it (``get --json`` prints ``to_dict()``)."""

    name: str
    target: str
    model_uri: str
    status: str  # "creating", "updating", "ready", "failed", "dead" (its process is gone)...
    endpoint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """What ``create``/``update`` would do, computed without side effects.

    ``actions`` are one-line descriptions (API calls, processes, image builds); ``documents``
    are rendered manifests or request bodies, printed as multi-document YAML.
    """

    target: str
    name: str
    model_uri: str
    actions: builtins.list[str] = field(default_factory=builtins.list)
    documents: builtins.list[dict[str, Any]] = field(default_factory=builtins.list)
    image: str | None = None


MODEL_SET_SCHEME = "modelset:"
_SOURCE_KEYS = ("repository", "filter", "alias")


@dataclass(frozen=True)
class ModelSet:
    """Several models served by one deployment: ``models`` by name, and/or every model of a
    ``repository`` (a folder of model folders; ``models:/``: registered models matching
    ``filter``, each at ``alias`` else its latest version; or ``oci://HOST/NAMESPACE``: the
    registry's repositories under NAMESPACE whose name matches the glob ``filter``, each at the
    tag ``alias`` else ``latest``), as ``modelpack serve -m/--repository``.

    Its ``uri`` (``modelset:iris=/m/iris;churn=models:/churn@champion;@repository=/m/zoo``) is
    what a deployer receives as its ``model_uri`` and reports back; ``parse`` reads it again.
    """

    models: Mapping[str, str] = field(default_factory=dict)
    repository: str | None = None
    filter: str | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        for name, uri in self.models.items():
            check_model_name(name)
            if not uri:
                raise InvalidInputError(f"model {name!r} has no URI")
        if not self.models and not self.repository:
            raise InvalidInputError("a model set needs models (-m NAME=URI) or a --repository")
        if (self.filter or self.alias) and not str(self.repository or "").startswith(
            ("models:", "oci://")
        ):
            raise InvalidInputError(
                "--filter and --alias apply to --repository models:/ or oci://HOST/NAMESPACE"
            )

    @classmethod
    def parse(cls, uri: str) -> ModelSet | None:
        """The set a ``modelset:`` URI names; None for any other URI (one model)."""
        if not uri.startswith(MODEL_SET_SCHEME):
            return None
        models: dict[str, str] = {}
        sources: dict[str, str] = {}
        for part in uri.removeprefix(MODEL_SET_SCHEME).split(";"):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise InvalidInputError(f"{uri!r}: {part!r} is not NAME=URI or @KEY=VALUE")
            if key.startswith("@") and key[1:] in _SOURCE_KEYS:
                sources[key[1:]] = unquote(value)
            elif key in models:
                raise InvalidInputError(f"{uri!r}: the model name {key!r} is given twice")
            else:
                models[key] = unquote(value)
        return cls(models, **sources)

    @property
    def uri(self) -> str:
        parts = [f"{name}={_quote(uri)}" for name, uri in self.models.items()]
        sources = zip(_SOURCE_KEYS, (self.repository, self.filter, self.alias), strict=True)
        parts += [f"@{key}={_quote(value)}" for key, value in sources if value]
        return MODEL_SET_SCHEME + ";".join(parts)

    def describe(self) -> builtins.list[str]:
        """One line per source of models (what a plan shows)."""
        lines = [f"model {name}: {uri}" for name, uri in self.models.items()]
        if self.repository:
            which = f" matching {self.filter!r}" if self.filter else ""
            at = f" at alias {self.alias!r}" if self.alias else ""
            lines.append(f"every model of the repository {self.repository}{which}{at}")
        return lines


def _quote(value: str) -> str:
    return quote(value, safe="/:@.,_-+=~!$*()' ")


def serves_model_sets(deployer: Deployer) -> bool:
    """Whether the deployer runs many-models servers (``model_sets = True``): a ``ModelSet``
    (its ``modelset:`` URI) may be deployed with it."""
    return getattr(deployer, "model_sets", False) is True


# -- the library API -------------------------------------------------------------------------


def plan(
    target: str | Deployer,
    name: str,
    model_uri: str | ModelSet,
    config: Mapping[str, Any] | None = None,
) -> Plan:
    """What ``create`` (or ``update``, when ``name`` exists) would do; changes nothing."""
    deployer, options = _prepare(target, config)
    model_uri = _model_uri(deployer, model_uri)
    answer = deployer.plan(name, model_uri, options)
    return _as_plan(answer, deployer, name=name, model_uri=model_uri)


def create(
    target: str | Deployer,
    name: str,
    model_uri: str | ModelSet,
    config: Mapping[str, Any] | None = None,
    *,
    wait: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    on_poll: OnPoll | None = None,
) -> Deployment:
    """Deploy ``model_uri`` as ``name`` and, with ``wait``, return once it is ready.

    A deployment that fails or is not ready within ``timeout`` seconds is deleted again and a
    ``DeploymentError`` says so (or, when the delete fails too, what is left to delete).
    ``on_poll(deployment, elapsed_s)`` sees every status read while waiting.
    """
    deployer, options = _prepare(target, config)
    model_uri = _model_uri(deployer, model_uri)
    started = _as_deployment(deployer.create(name, model_uri, options), deployer, name, model_uri)
    if not wait:
        return started
    try:
        return _wait(deployer, name, options, timeout, on_poll)
    except ModelpackError as exc:
        raise DeploymentError(f"{exc.message}; {_roll_back(deployer, name, options)}") from exc


def update(
    target: str | Deployer,
    name: str,
    model_uri: str | ModelSet,
    config: Mapping[str, Any] | None = None,
    *,
    wait: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    on_poll: OnPoll | None = None,
) -> Deployment:
    """Move ``name`` to ``model_uri`` (and ``config``) and, with ``wait``, return once ready.

    Nothing is undone when the new version fails: the target keeps the previous one serving
    where it can, and ``get`` reports the failure (docs/deploy/ says what each target does).
    """
    deployer, options = _prepare(target, config)
    model_uri = _model_uri(deployer, model_uri)
    started = _as_deployment(deployer.update(name, model_uri, options), deployer, name, model_uri)
    if not wait:
        return started
    try:
        return _wait(deployer, name, options, timeout, on_poll)
    except _NotReadyInTime as exc:
        raise DeploymentError(
            f"{exc.message}; the update was left in progress: `modelpack deploy get -t "
            f"{deployer.name} --name {name}` shows where it stands"
        ) from exc


def delete(target: str | Deployer, name: str, config: Mapping[str, Any] | None = None) -> None:
    """Stop ``name`` and remove everything the target made for it."""
    deployer, options = _prepare(target, config)
    deployer.delete(name, options)


def get(target: str | Deployer, name: str, config: Mapping[str, Any] | None = None) -> Deployment:
    """One deployment; an unknown ``name`` is a ``DeploymentError`` naming it."""
    deployer, options = _prepare(target, config)
    return _as_deployment(deployer.get(name, options), deployer, name)


def list(  # shadows the builtin here, as Deployer.list does: the verb the CLI uses
    target: str | Deployer, config: Mapping[str, Any] | None = None
) -> builtins.list[Deployment]:
    """The target's deployments (those it made: e.g. labelled or tagged by modelpack)."""
    deployer, options = _prepare(target, config)
    answer = deployer.list(options)
    if isinstance(answer, Mapping) or not isinstance(answer, Iterable):
        raise DeploymentError(
            f"the {deployer.name} deployer's list answered {type(answer).__name__}, "
            "not a list of deployments"
        )
    return [_as_deployment(item, deployer) for item in answer]


def predict(
    target: str | Deployer,
    name: str,
    data: Any,
    config: Mapping[str, Any] | None = None,
    *,
    model: str | None = None,
) -> Any:
    """Send ``data`` (what ``modelpack.load(...).predict`` takes) to ``name``; its predictions.

    ``model`` names the model of a many-models deployment that answers (its ``model`` option).
    """
    deployer, options = _prepare(target, config)
    if model is not None:
        if not serves_model_sets(deployer):
            raise InvalidInputError(
                f"the {deployer.name} target serves one model per deployment: leave out the model"
            )
        options["model"] = model
    return deployer.predict(name, data, options)


def keeps_local_state(deployer: Deployer) -> bool:
    """Whether the deployer says its deployments live on this machine (``local_state = True``):
    listing them then makes no network call."""
    return getattr(deployer, "local_state", False) is True


# -- pieces every deployer may use -----------------------------------------------------------


def option_bool(key: str, value: Any) -> bool:
    """A boolean option from ``-C key=value`` text (true/false, yes/no, on/off, 1/0) or YAML."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidInputError(f"option {key}={value!r} is not a boolean (use true or false)")


def check_options(target: str, allowed: Mapping[str, str], config: Mapping[str, Any]) -> None:
    """Refuse unknown option keys, listing the valid ones."""
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise InvalidInputError(
            f"unknown option(s) for target {target!r}: {', '.join(unknown)} (valid: {valid})"
        )


class _NotReadyInTime(DeploymentError):
    """``wait_until`` ran out of time (the change may still complete)."""


def wait_until(
    check: Callable[[], Deployment],
    *,
    timeout: float,
    interval: float = 0.5,
    max_interval: float | None = None,
    on_poll: OnPoll | None = None,
) -> Deployment:
    """Poll ``check`` until the deployment is ready; a failure or a timeout is a DeploymentError.

    The pause between polls is ``interval``, or a tenth of the time waited so far up to
    ``max_interval`` when that is longer (default: ``interval``, no back-off): a change that
    takes minutes is not polled many times a second, and one that takes seconds is seen soon.
    """
    start = time.monotonic()
    longest = max(interval, max_interval or interval)
    while True:
        current = check()
        elapsed = time.monotonic() - start
        if on_poll is not None:
            on_poll(current, elapsed)
        if current.status == "ready":
            return current
        if current.status in ("failed", "dead"):  # dead: the process went away while we waited
            raise DeploymentError(
                f"deployment {current.name!r} on {current.target} failed: "
                f"{current.details.get('reason', 'no reason given')}"
            )
        if elapsed >= timeout:
            raise _NotReadyInTime(
                f"deployment {current.name!r} on {current.target} was not ready after "
                f"{timeout:.0f} s (status {current.status}"
                + (f": {current.details['reason']}" if current.details.get("reason") else "")
                + ")"
            )
        time.sleep(min(max(interval, elapsed / 10), longest, timeout - elapsed))


# -- internals -------------------------------------------------------------------------------


def _prepare(
    target: str | Deployer, config: Mapping[str, Any] | None
) -> tuple[Deployer, dict[str, Any]]:
    from modelpack import plugins

    if isinstance(target, str):
        deployer = plugins.deployer(target)
    else:
        deployer = target
        plugins.check_plugin("deployer", deployer, label=repr(deployer))
    options = dict(config or {})
    check_options(deployer.name, deployer.options, options)
    return deployer, options


def _model_uri(deployer: Deployer, model_uri: str | ModelSet) -> str:
    """The URI the deployer receives: a set's ``modelset:`` URI, when the deployer serves sets."""
    if isinstance(model_uri, ModelSet):
        model_uri = model_uri.uri
    else:
        model_uri = str(model_uri)
        if ModelSet.parse(model_uri) is None:
            return model_uri
    if not serves_model_sets(deployer):
        raise InvalidInputError(
            f"the {deployer.name} target deploys one model per deployment, not a model set "
            "(-m NAME=URI or --repository)"
        )
    return model_uri


def _wait(
    deployer: Deployer,
    name: str,
    config: Mapping[str, Any],
    timeout: float,
    on_poll: OnPoll | None,
) -> Deployment:
    return wait_until(
        lambda: _as_deployment(deployer.get(name, config), deployer, name),
        timeout=timeout,
        interval=_FIRST_POLL_S,
        max_interval=_MAX_POLL_S,
        on_poll=on_poll,
    )


def _roll_back(deployer: Deployer, name: str, config: Mapping[str, Any]) -> str:
    try:
        deployer.delete(name, config)
    except ModelpackError as exc:
        return (
            f"removing it failed too ({exc.message}): delete it with "
            f"`modelpack deploy delete -t {deployer.name} --name {name}`"
        )
    return "removed what was created"


_DEPLOYMENT_FIELDS = {f.name for f in dataclasses.fields(Deployment)}
_PLAN_FIELDS = {f.name for f in dataclasses.fields(Plan)}


def _as_deployment(
    answer: Any, deployer: Deployer, name: str | None = None, model_uri: str | None = None
) -> Deployment:
    # Third-party deployers may answer with plain mappings: they need not import modelpack.
    if isinstance(answer, Deployment):
        return answer
    if not isinstance(answer, Mapping):
        raise DeploymentError(
            f"the {deployer.name} deployer answered {type(answer).__name__}, not a Deployment"
        )
    known = {"target": deployer.name, "name": name, "model_uri": model_uri}
    values: dict[str, Any] = {k: v for k, v in known.items() if v is not None}
    values.update((k, v) for k, v in answer.items() if k in _DEPLOYMENT_FIELDS)
    missing = [k for k in ("name", "model_uri", "status") if values.get(k) is None]
    if missing:
        raise DeploymentError(
            f"the {deployer.name} deployer answered a deployment without {', '.join(missing)}"
        )
    values["details"] = dict(values.get("details") or {})
    return Deployment(**values)


def _as_plan(answer: Any, deployer: Deployer, *, name: str, model_uri: str) -> Plan:
    if isinstance(answer, Plan):
        return answer
    if not isinstance(answer, Mapping):
        raise DeploymentError(
            f"the {deployer.name} deployer answered {type(answer).__name__}, not a Plan"
        )
    values: dict[str, Any] = {"target": deployer.name, "name": name, "model_uri": model_uri}
    values.update((k, v) for k, v in answer.items() if k in _PLAN_FIELDS and v is not None)
    return Plan(**values)


__all__ = [
    "DEFAULT_TIMEOUT",
    "MODEL_SET_SCHEME",
    "Deployment",
    "ModelSet",
    "Plan",
    "check_options",
    "create",
    "delete",
    "get",
    "keeps_local_state",
    "list",
    "plan",
    "predict",
    "serves_model_sets",
    "update",
    "wait_until",
]
