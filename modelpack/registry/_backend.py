"""Where registry calls go: the SQL store in this process, or a team server over HTTP.

``SqlRegistry`` (``_sql``) and ``RestRegistry`` (``_rest``) take and return the same values,
so the public functions check their arguments and hand them to ``backend()``, whichever it is.
Checks that only the SQL backend makes (alias and stage names, the default user) run on the
server for a remote caller, so both answer the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from modelpack._rest import client
from modelpack.registry._rest import RestRegistry
from modelpack.registry.types import ModelVersion, Page, RegisteredModel, StageTransition

Parent = tuple[str | None, int | None]  # (name, version) of the version a new one derives from


class RegistryBackend(Protocol):
    """What the public functions call: one method per registry operation."""

    def register(
        self,
        name: str,
        path: Path,
        *,
        source: str,
        run_id: str | None,
        parent: Parent,
        tags: Mapping[str, str],
        description: str | None,
    ) -> ModelVersion:
        """Store the blobs of the model at local ``path``, then write its version row."""
        ...

    def get_version(self, name: str, version: int | str) -> ModelVersion: ...

    def latest_version(self, name: str) -> ModelVersion: ...

    def get_by_alias(self, name: str, alias: str) -> ModelVersion: ...

    def search_versions(
        self,
        filter: str | None,
        *,
        order_by: str | Iterable[str],
        max_results: int,
        page_token: str | None,
    ) -> Page[ModelVersion]: ...

    def set_alias(self, name: str, alias: str, version: int | str) -> ModelVersion: ...

    def delete_alias(self, name: str, alias: str) -> None: ...

    def transition(
        self,
        name: str,
        version: int | str,
        stage: str | None,
        comment: str | None,
        *,
        user: str | None,
    ) -> ModelVersion: ...

    def history(self, name: str, version: int | str | None) -> list[StageTransition]: ...

    def set_tag(self, name: str, version: int | str, key: str, value: str) -> None: ...

    def delete_tag(self, name: str, version: int | str, key: str) -> None: ...

    def update_version(
        self, name: str, version: int | str, *, description: str | None
    ) -> ModelVersion: ...

    def delete_version(self, name: str, version: int | str) -> None: ...

    def create_model(
        self, name: str, *, description: str | None, tags: Mapping[str, Any]
    ) -> RegisteredModel:
        """Checks ``tags`` itself: the SQL backend checks the name before them."""
        ...

    def get_model(self, name: str) -> RegisteredModel: ...

    def search_models(
        self,
        filter: str | None,
        *,
        order_by: str | Iterable[str],
        max_results: int,
        page_token: str | None,
    ) -> Page[RegisteredModel]: ...

    def set_model_tag(self, name: str, key: str, value: str) -> None: ...

    def delete_model_tag(self, name: str, key: str) -> None: ...

    def update_model(self, name: str, *, description: str | None) -> RegisteredModel: ...

    def delete_model(self, name: str) -> None: ...


def backend() -> RegistryBackend:
    """The backend for the current configuration (``MODELPACK_TRACKING_URI`` or the store)."""
    api = client()
    if api is not None:
        return RestRegistry(api)
    # Imported here: a client of a team server never loads SQLAlchemy.
    from modelpack.registry._sql import SqlRegistry
    from modelpack.store.db import get_engine

    return SqlRegistry(get_engine())
