"""Both registry backends implement RegistryBackend, and backend() picks one per call."""

from __future__ import annotations

import inspect
import typing

import pytest

from modelpack import _rest, registry
from modelpack.registry._backend import RegistryBackend, backend
from modelpack.registry._rest import RestRegistry
from modelpack.registry._sql import SqlRegistry
from modelpack.store import db

OPERATIONS = sorted(
    name
    for name, value in vars(RegistryBackend).items()
    if inspect.isfunction(value) and not name.startswith("_")
)


def _shape(function: typing.Callable[..., object]) -> list[tuple[str, object, object, object]]:
    hints = typing.get_type_hints(function)
    params = inspect.signature(function).parameters.values()
    return [(p.name, p.kind, p.default, hints.get(p.name)) for p in params] + [
        ("return", None, None, hints.get("return"))
    ]


def test_every_public_operation_has_a_backend_method() -> None:
    public = {name for name in registry.__all__ if name[0].islower()}
    assert public == set(OPERATIONS)


@pytest.mark.parametrize("implementation", [SqlRegistry, RestRegistry])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_backend_matches_the_protocol(implementation: type, operation: str) -> None:
    expected = getattr(RegistryBackend, operation)
    assert _shape(getattr(implementation, operation)) == _shape(expected)


def test_backend_is_remote_with_a_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_rest, "_override", _rest._UNSET)
    monkeypatch.setenv("MODELPACK_TRACKING_URI", "http://127.0.0.1:9")
    found = backend()
    assert isinstance(found, RestRegistry) and found.api is _rest.client()


def test_backend_is_the_sql_store_without_one(
    sql_store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_rest, "_override", _rest._UNSET)
    found = backend()
    assert isinstance(found, SqlRegistry) and found.engine is db.get_engine()


def test_types_stay_importable_from_their_old_places() -> None:
    from modelpack.registry import _sql, types

    for name in ("ModelVersion", "Page", "RegisteredModel", "StageTransition"):
        assert getattr(registry, name) is getattr(types, name) is getattr(_sql, name)
    assert registry._parent is registry.parse_parent
