"""Extension points: one small Protocol each, discovered through entry points.

Built-in plugins register through the same entry-point groups as third-party ones. Listing is
cheap (no plugin imported); loading happens on first use, and a plugin that does not satisfy
its Protocol is rejected by name. Every hook the core calls is declared here: the required ones
on ``Flavor``, ``Predictor``, ``Server``, ``Deployer`` and ``TrackingHook``, the optional ones
as capability Protocols (``ChecksTrust``, ``DeclaresSignature``, ``Wraps``, ``ExportsOnnx``,
``HasNative``) that the core tests with ``isinstance``. ``check_plugin`` compares the methods a
plugin defines with the Protocol's the way pluggy compares a hook implementation with its
specification: an implementation may take fewer arguments than the hook passes (the core then
does not pass them), never one the hook does not know.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, runtime_checkable

from modelpack.errors import InvalidInputError, PluginError
from modelpack.trust import Need, Trust

if TYPE_CHECKING:
    from modelpack.deploy import Deployment, Plan
    from modelpack.signature import Signature

GROUPS = {
    "flavor": "modelpack.flavors",
    "server": "modelpack.servers",
    "deployer": "modelpack.deployers",
    "tracking_hook": "modelpack.tracking_hooks",
}

# Flavor priorities: when several installed flavors accept an object, the highest wins (ties:
# by name). A library-specific flavor whose objects are also another library's (an XGBClassifier
# is a scikit-learn estimator; a Keras model on the torch backend is an nn.Module) declares
# SPECIFIC; generic flavors that accept anything with a method declare FALLBACK.
FALLBACK = -100
DEFAULT_PRIORITY = 0
SPECIFIC = 10


@dataclass(frozen=True)
class LoadOptions:
    """Options every flavor understands when loading.

    ``device`` is where tensors go (flavors without devices ignore it); ``trust`` is what the
    caller chose to trust (``modelpack.trust``): a flavor asks it before anything that may run
    code named by the model, and passes only what it grants to its format's loader.
    ``settings`` are the flavor's own load settings (``modelpack.load(uri, settings={...})``,
    e.g. the onnx flavor's session threads); a flavor refuses a key it does not know.
    """

    device: str = "cpu"
    trust: Trust = field(default_factory=Trust)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def trust_pickle(self) -> bool:
        """Deprecated: ``trust.everything``."""
        return self.trust.everything


@runtime_checkable
class Predictor(Protocol):
    """Turns one batch of input into one batch of output.

    The core enforces the signature before ``predict`` (``data`` is already checked and
    converted); ``params`` are the request's inference parameters (MLflow's ``params``), passed
    only when not empty and only to a ``predict`` that declares ``params``. Thread-safety: the
    servers call ``predict`` from one thread at a time per predictor.
    """

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any: ...


@runtime_checkable
class HasNative(Protocol):
    """A Predictor that exposes the library object it wraps (``Model.unwrap`` returns it)."""

    native: Any


@runtime_checkable
class Flavor(Protocol):
    """Saves and loads the native objects of one library.

    ``save(obj, path, **options) -> config`` writes the library's files into ``path`` (an empty
    directory) and returns the plain-data config stored in the descriptor; a flavor names its
    own keyword-only options, and an unknown one is refused before ``save`` runs. ``load`` and
    ``predictor`` read what ``save`` wrote; the core has verified the files and asked the trust
    policy first. ``priority`` (optional, default ``DEFAULT_PRIORITY``) orders flavors that
    accept the same object: the highest wins.
    """

    name: str

    def accepts(self, obj: Any) -> bool:
        """Whether ``save`` can take ``obj``; must not import optional libraries."""
        ...

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        """Distributions needed to load a model saved with ``config``."""
        ...

    # save(obj, path, **options) -> config. Declared as a read-only callable so that a method
    # with the flavor's own keyword-only options satisfies it (a method declared here would
    # have to accept any keyword); check_plugin checks it as ``_save_hook``.
    @property
    def save(self) -> Callable[..., dict[str, Any]]: ...

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        """The native object (an estimator, an ``nn.Module``, an ONNX session...)."""
        ...

    def predictor(
        self, path: Path, config: Mapping[str, Any], options: LoadOptions
    ) -> Predictor: ...


@runtime_checkable
class ChecksTrust(Protocol):
    """A flavor whose loads may execute or construct something named by the model files.

    ``trust_needs`` reads the saved files (without running anything from them) and returns
    every type, function, class, pickle or code a load would run or construct; the core asks the
    trust policy before ``load``/``predictor`` and records the list at save. A flavor without it
    declares that its loads run nothing from the files (ONNX, plain tensors).
    """

    def trust_needs(self, path: Path, config: Mapping[str, Any]) -> Sequence[Need]: ...


@runtime_checkable
class DeclaresSignature(Protocol):
    """A flavor whose files declare their inputs and outputs (an ONNX graph): ``save`` uses
    this signature when the caller gives none."""

    def signature(self, path: Path, config: Mapping[str, Any]) -> Signature | None: ...


@runtime_checkable
class Wraps(Protocol):
    """A flavor that can predict with the object being saved, without reading its files back.

    ``save`` uses it to infer the output signature from the input example (otherwise it loads
    the saved files with the flavor's ``predictor``).
    """

    def wrap(self, obj: Any, config: Mapping[str, Any]) -> Predictor: ...


@runtime_checkable
class ExportsOnnx(Protocol):
    """A flavor that can convert its models to ONNX (``modelpack convert --to onnx``).

    ``export_onnx`` gets the native object the flavor's predictor wraps, the flavor's config,
    the model's signature and ``example``: a batch of inputs already checked against it
    (generated rows of several, so a dynamic batch dimension is not specialised on one). It
    returns the ``onnx.ModelProto`` (or a ``modelpack.convert.OnnxExport`` holding it, with the
    rows where the source's own answer is a tie) whose inputs take what the signature
    describes (one tensor or named tensors; a table as one ``(n, 1)`` input per column) and
    whose outputs are what the flavor's predictor returns: one output for an array, else the
    keys of its mapping, of the same dtypes. The parity gate then checks it on generated rows
    (a 2-D ``(n, 1)`` output where the predictor answers ``(n,)`` is reshaped first). The
    model's ``producer_name``/``producer_version`` are recorded as its converter. ``opset`` is
    the user's ``--opset`` (None: the exporter's default); an exporter that takes no ``opset``
    is refused one. A model it cannot convert raises ``ConversionError`` naming the step
    (anything else it raises becomes a one-line ``ConversionError`` too).
    """

    def export_onnx(
        self,
        native: Any,
        config: Mapping[str, Any],
        signature: Signature,
        example: Any,
        *,
        opset: int | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class ServeSettings:
    """How ``Server.run`` serves a model: where it listens and how it loads the model.

    ``options`` are the server's own (for ``http``: batching, limits, timeouts; see
    ``modelpack serve --help``); a server refuses options it does not know.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    trust: bool | list[str] | None = None
    flavor: str | None = None  # None: the model's loader; "onnx": its onnx flavor on ORT
    device: str = "cpu"
    log_level: str = "info"
    options: Mapping[str, Any] = field(default_factory=dict)
    # Several models by name (name -> URI), served by one process: ``run`` is then given an
    # empty ``uri`` (a server's options may name more, e.g. the http server's ``repository``).
    models: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Server(Protocol):
    """Serves models over a network protocol.

    ``app`` builds an ASGI application for a Predictor already loaded (embedding, tests);
    ``run`` loads the model at ``uri`` and serves it until the process is told to stop
    (SIGTERM drains), blocking; it raises ``ModelpackError`` when the model cannot load.
    """

    name: str

    def app(self, predictor: Predictor, signature: Signature | None, **options: Any) -> Any: ...

    def run(self, uri: str, settings: ServeSettings) -> None: ...


@runtime_checkable
class Deployer(Protocol):
    """Deploys models to one target (a process, a cluster, a cloud service).

    ``options`` maps each option key the target understands to its help text; the core refuses
    other keys before calling the deployer. ``plan`` computes what ``create``/``update`` would
    do without side effects. ``create`` and ``update`` start the change and return at once
    (status ``creating``/``updating``): ``modelpack.deploy`` waits for ``ready`` by polling
    ``get`` and, when a new deployment never becomes ready, rolls it back with ``delete``. A
    deployer never waits on its own and never deletes on failure; only a ``create``/``update``
    call that raises undoes the steps it had made itself. ``get`` observes the change (and may
    finish it: a blue/green swap once the new version answers) and reports the last change's
    outcome: after an update that failed while the previous version keeps serving, ``failed``
    with the reason, until the next change. ``get`` of an unknown name raises
    ``DeploymentError`` naming it. Optional: ``local_state = True`` declares that the
    deployments live on this machine, so ``list`` makes no network call (the team server lists
    such targets).
    """

    name: str
    options: Mapping[str, str]

    def plan(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Plan: ...
    def create(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment: ...
    def update(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment: ...
    def delete(self, name: str, config: Mapping[str, Any]) -> None: ...
    def get(self, name: str, config: Mapping[str, Any]) -> Deployment: ...
    def list(self, config: Mapping[str, Any]) -> Sequence[Deployment]: ...
    def predict(self, name: str, data: Any, config: Mapping[str, Any]) -> Any: ...


@runtime_checkable
class TrackingHook(Protocol):
    """Receives tracking events (``run_started``, ``params_logged``, ...) as plain data."""

    def on_event(self, event: str, payload: Mapping[str, Any]) -> None: ...


_PROTOCOLS: dict[str, type] = {
    "flavor": Flavor,
    "server": Server,
    "deployer": Deployer,
    "tracking_hook": TrackingHook,
}
# Capabilities checked the same way when a plugin has them.
_CAPABILITIES: dict[str, tuple[type, ...]] = {
    "flavor": (ChecksTrust, DeclaresSignature, Wraps, ExportsOnnx),
}


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    value: str
    distribution: str
    version: str


def _entry_points(kind: str) -> dict[str, metadata.EntryPoint]:
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUPS[kind]):
        other = found.get(ep.name)
        if other is not None and other.value != ep.value:
            raise PluginError(
                f"two {kind} plugins are named {ep.name!r}: {other.value} and {ep.value}; "
                "uninstall one of them"
            )
        found[ep.name] = ep
    return found


def list_plugins(kind: str) -> list[PluginInfo]:
    """Installed plugins of one kind, without importing any of them."""
    infos = []
    for name, ep in sorted(_entry_points(kind).items()):
        dist = ep.dist
        infos.append(
            PluginInfo(
                kind=kind,
                name=name,
                value=ep.value,
                distribution=dist.name if dist else "?",
                version=dist.version if dist else "?",
            )
        )
    return infos


def names(kind: str) -> list[str]:
    return sorted(_entry_points(kind))


@functools.cache
def get_plugin(kind: str, name: str) -> Any:
    """Load, instantiate and check the plugin ``name`` of ``kind``."""
    eps = _entry_points(kind)
    if name not in eps:
        installed = ", ".join(sorted(eps)) or "none"
        raise PluginError(f"no {kind} named {name!r} is installed (installed: {installed})")
    ep = eps[name]
    try:
        target = ep.load()
    except ImportError as exc:
        raise PluginError(f"{kind} plugin {name!r} ({ep.value}) failed to import: {exc}") from exc
    plugin = target() if isinstance(target, type) else target
    check_plugin(kind, plugin, label=f"{name!r} ({ep.value})")
    return plugin


def check_plugin(kind: str, plugin: Any, *, label: str) -> None:
    """Reject a plugin that does not satisfy the Protocol of ``kind``, naming it and the hook.

    Attributes must exist; a method must be callable and, as pluggy checks a hook
    implementation against its specification, take no argument the hook does not pass
    (``self`` aside, and unless it takes ``**kwargs``) and require none the hook might not pass.
    Optional capabilities (``trust_needs``, ``export_onnx``, ...) are checked the same way
    when the plugin defines them.
    """
    protocol = _PROTOCOLS[kind]
    missing = [attr for attr in sorted(protocol_attrs(protocol)) if not hasattr(plugin, attr)]
    if missing:
        raise PluginError(
            f"{kind} plugin {label} does not satisfy the {protocol.__name__} protocol: "
            f"missing {', '.join(missing)}"
        )
    problems = _signature_problems(protocol, plugin)
    for capability in _CAPABILITIES.get(kind, ()):
        if all(hasattr(plugin, a) for a in protocol_attrs(capability)):
            problems += _signature_problems(capability, plugin)
    if problems:
        raise PluginError(
            f"{kind} plugin {label} does not satisfy the {protocol.__name__} protocol: "
            + "; ".join(problems)
        )


def _save_hook(self: Any, obj: Any, path: Path, **options: Any) -> dict[str, Any]:
    """What ``Flavor.save`` is called with."""
    raise NotImplementedError


_HOOKS_DECLARED_AS_PROPERTIES: dict[tuple[type, str], Callable[..., Any]] = {
    (Flavor, "save"): _save_hook
}


def _signature_problems(protocol: type, plugin: Any) -> list[str]:
    problems = []
    for attr in sorted(protocol_attrs(protocol)):
        spec = _HOOKS_DECLARED_AS_PROPERTIES.get((protocol, attr), getattr(protocol, attr, None))
        if not inspect.isfunction(spec):
            continue  # a data attribute (name, options, priority)
        impl = getattr(plugin, attr)
        if not callable(impl):
            problems.append(f"{attr} is not callable")
            continue
        try:
            have = inspect.signature(impl)
        except (TypeError, ValueError):  # a builtin without a signature: cannot tell
            continue
        problem = _compare(attr, list(inspect.signature(spec).parameters.values())[1:], have)
        if problem:
            problems.append(problem)
    return problems


def _compare(attr: str, hook: list[inspect.Parameter], impl: inspect.Signature) -> str | None:
    params = list(impl.parameters.values())
    if params and params[0].name == "self":  # an unbound function stored on the plugin
        params = params[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    known = {p.name for p in hook}
    open_keywords = any(p.kind is p.VAR_KEYWORD for p in hook)
    unknown = [
        p.name
        for p in params
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in known
        and p.default is p.empty
        and not (open_keywords and p.kind is p.KEYWORD_ONLY)
    ]
    if unknown:
        return f"{attr}() requires {', '.join(unknown)}, which the hook never passes"
    # Arguments the hook always passes by position must be accepted by position, in order.
    positional = [p for p in hook if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required_hook = [p for p in positional if p.default is p.empty]
    takes = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not any(p.kind is p.VAR_POSITIONAL for p in params) and len(takes) < len(required_hook):
        names_ = ", ".join(p.name for p in required_hook)
        return f"{attr}() takes {len(takes)} positional argument(s); the hook passes {names_}"
    return None


def protocol_attrs(protocol: type) -> set[str]:
    """The attributes and methods a Protocol declares."""
    attrs = getattr(protocol, "__protocol_attrs__", None)
    if attrs is not None:
        return set(attrs)
    # Python < 3.12 has no __protocol_attrs__.
    found: set[str] = set()
    for klass in protocol.__mro__:
        if klass in (Protocol, object, Generic):
            continue
        found.update(a for a in vars(klass) if not a.startswith("_"))
        found.update(getattr(klass, "__annotations__", {}))
    return found


def check_keys(given: Mapping[str, Any], known: Iterable[str], what: str) -> None:
    """Refuse keys of ``given`` outside ``known`` in one line, e.g. ``what`` = "the http server
    has no option" (how plugins check the options and settings they are given)."""
    valid = set(known)
    unknown = sorted(set(given) - valid)
    if unknown:
        raise InvalidInputError(
            f"{what} {', '.join(map(repr, unknown))} (valid: {', '.join(sorted(valid))})"
        )


def takes_params(predictor: Predictor) -> bool:
    """Whether ``predictor.predict`` declares ``params`` (or ``**kwargs``) to receive them."""
    try:
        parameters = inspect.signature(predictor.predict).parameters
    except (TypeError, ValueError):
        return False
    return "params" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def priority(flavor: Flavor) -> int:
    """The flavor's priority (``fallback = True`` is the older spelling of ``FALLBACK``)."""
    value = getattr(flavor, "priority", None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return FALLBACK if getattr(flavor, "fallback", False) else DEFAULT_PRIORITY


def flavor(name: str) -> Flavor:
    plugin: Flavor = get_plugin("flavor", name)
    return plugin


def server(name: str) -> Server:
    plugin: Server = get_plugin("server", name)
    return plugin


def deployer(name: str) -> Deployer:
    plugin: Deployer = get_plugin("deployer", name)
    return plugin


__all__ = [
    "DEFAULT_PRIORITY",
    "FALLBACK",
    "GROUPS",
    "SPECIFIC",
    "ChecksTrust",
    "DeclaresSignature",
    "Deployer",
    "ExportsOnnx",
    "Flavor",
    "HasNative",
    "LoadOptions",
    "PluginInfo",
    "Predictor",
    "ServeSettings",
    "Server",
    "TrackingHook",
    "Wraps",
    "check_keys",
    "check_plugin",
    "deployer",
    "flavor",
    "get_plugin",
    "list_plugins",
    "names",
    "priority",
    "protocol_attrs",
    "server",
    "takes_params",
]
