"""Extension points: one small Protocol each, discovered through entry points.

Built-in plugins register through the same entry-point groups as third-party
ones. Listing is cheap (no plugin imported); loading happens on first use, and a
plugin that does not satisfy its Protocol is rejected by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, runtime_checkable

from modelpack.errors import PluginError
from modelpack.trust import Need, Trust

if TYPE_CHECKING:
    from modelpack.signature import Signature

GROUPS = {
    "flavor": "modelpack.flavors",
    "server": "modelpack.servers",
    "deployer": "modelpack.deployers",
    "tracking_hook": "modelpack.tracking_hooks",
}


@dataclass(frozen=True)
class LoadOptions:
    """Options every flavor understands when loading.

    ``device`` is where tensors go (flavors without devices ignore it); ``trust`` is what the
    caller chose to trust (``modelpack.trust``): a flavor asks it before anything that may run
    code named by the model, and passes only what it grants to its format's loader.
    """

    device: str = "cpu"
    trust: Trust = field(default_factory=Trust)

    @property
    def trust_pickle(self) -> bool:
        """Deprecated: ``trust.everything``."""
        return self.trust.everything


@runtime_checkable
class Predictor(Protocol):
    """Turns one batch of (signature-checked) input into one batch of output."""

    def predict(self, data: Any) -> Any: ...


@runtime_checkable
class Flavor(Protocol):
    """Saves and loads the native objects of one library."""

    name: str

    def accepts(self, obj: Any) -> bool:
        """Whether ``save`` can take ``obj``; must not import optional libraries."""
        ...

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        """Distributions needed to load a model saved with ``config``."""
        ...

    # save(obj, path, **options) -> config: flavors name their own keyword options.
    @property
    def save(self) -> Callable[..., dict[str, Any]]: ...

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any: ...

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
class Server(Protocol):
    name: str

    def app(self, predictor: Predictor, signature: Signature | None, **options: Any) -> Any: ...


@runtime_checkable
class Deployer(Protocol):
    name: str

    def plan(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Any: ...
    def create(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Any: ...
    def update(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Any: ...
    def delete(self, name: str, config: Mapping[str, Any]) -> None: ...
    def get(self, name: str, config: Mapping[str, Any]) -> Any: ...
    def list(self, config: Mapping[str, Any]) -> Any: ...
    def predict(self, name: str, data: Any, config: Mapping[str, Any]) -> Any: ...


@runtime_checkable
class TrackingHook(Protocol):
    def on_event(self, event: str, payload: Mapping[str, Any]) -> None: ...


_PROTOCOLS: dict[str, type] = {
    "flavor": Flavor,
    "server": Server,
    "deployer": Deployer,
    "tracking_hook": TrackingHook,
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
    """Reject a plugin that does not satisfy the Protocol of ``kind``, naming it."""
    protocol = _PROTOCOLS[kind]
    missing = [
        attr
        for attr in sorted(getattr(protocol, "__protocol_attrs__", _protocol_attrs(protocol)))
        if not hasattr(plugin, attr)
    ]
    if missing:
        raise PluginError(
            f"{kind} plugin {label} does not satisfy the {protocol.__name__} protocol: "
            f"missing {', '.join(missing)}"
        )


def _protocol_attrs(protocol: type) -> set[str]:
    # Python < 3.12 has no __protocol_attrs__.
    attrs: set[str] = set()
    for klass in protocol.__mro__:
        if klass in (Protocol, object, Generic):
            continue
        attrs.update(a for a in vars(klass) if not a.startswith("_"))
        attrs.update(getattr(klass, "__annotations__", {}))
    return attrs


def flavor(name: str) -> Flavor:
    plugin: Flavor = get_plugin("flavor", name)
    return plugin
