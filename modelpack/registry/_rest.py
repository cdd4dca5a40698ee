"""``RestRegistry``: the registry through a team server, over its REST API."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpack._rest import RestArtifactStore, RestClient, q
from modelpack.registry._checks import check_tag
from modelpack.registry.types import ModelVersion, Page, RegisteredModel, StageTransition


def _version(data: Mapping[str, Any]) -> ModelVersion:
    return ModelVersion(**data)


def _model(data: Mapping[str, Any]) -> RegisteredModel:
    return RegisteredModel(**data)


def _search(
    filter: str | None, order_by: str | Iterable[str], max_results: int, page_token: str | None
) -> dict[str, Any]:
    return {
        "filter": filter,
        "order_by": [order_by] if isinstance(order_by, str) else list(order_by),
        "max_results": max_results,
        "page_token": page_token,
    }


@dataclass(frozen=True)
class RestRegistry:
    api: RestClient

    def register(
        self,
        name: str,
        path: Path,
        *,
        source: str,
        run_id: str | None,
        parent: tuple[str | None, int | None],
        tags: Mapping[str, str],
        description: str | None,
    ) -> ModelVersion:
        from modelpack.artifacts import store_model

        descriptor_sha, _ = store_model(RestArtifactStore(self.api), path)  # blobs, then the row
        body = {
            "descriptor_sha256": descriptor_sha,
            "source": source,
            "run_id": run_id,
            "parent": f"{parent[0]}/{parent[1]}" if parent[0] else None,
            "tags": dict(tags),
            "description": description,
        }
        return _version(self.api.call("POST", f"/models/{q(name)}/versions", body))

    def get_version(self, name: str, version: int | str) -> ModelVersion:
        return _version(self.api.call("GET", f"/models/{q(name)}/versions/{q(version)}"))

    def latest_version(self, name: str) -> ModelVersion:
        return self.get_version(name, "latest")

    def get_by_alias(self, name: str, alias: str) -> ModelVersion:
        return _version(self.api.call("GET", f"/models/{q(name)}/aliases/{q(alias)}"))

    def search_versions(
        self,
        filter: str | None,
        *,
        order_by: str | Iterable[str],
        max_results: int,
        page_token: str | None,
    ) -> Page[ModelVersion]:
        query = _search(filter, order_by, max_results, page_token)
        data = self.api.call("GET", "/versions", query=query)
        return Page([_version(v) for v in data["versions"]], data["next_page_token"])

    def set_alias(self, name: str, alias: str, version: int | str) -> ModelVersion:
        body = {"version": int(version)}
        return _version(self.api.call("PUT", f"/models/{q(name)}/aliases/{q(alias)}", body))

    def delete_alias(self, name: str, alias: str) -> None:
        self.api.call("DELETE", f"/models/{q(name)}/aliases/{q(alias)}")

    def transition(
        self,
        name: str,
        version: int | str,
        stage: str | None,
        comment: str | None,
        *,
        user: str | None,
    ) -> ModelVersion:
        body = {"stage": stage, "comment": comment, "user": user}
        path = f"/models/{q(name)}/versions/{q(version)}/stage"
        return _version(self.api.call("POST", path, body))

    def history(self, name: str, version: int | str | None) -> list[StageTransition]:
        data = self.api.call("GET", f"/models/{q(name)}/history", query={"version": version})
        return [StageTransition(**t) for t in data["transitions"]]

    def set_tag(self, name: str, version: int | str, key: str, value: str) -> None:
        path = f"/models/{q(name)}/versions/{q(version)}/tags/{q(key)}"
        self.api.call("PUT", path, {"value": value})

    def delete_tag(self, name: str, version: int | str, key: str) -> None:
        self.api.call("DELETE", f"/models/{q(name)}/versions/{q(version)}/tags/{q(key)}")

    def update_version(
        self, name: str, version: int | str, *, description: str | None
    ) -> ModelVersion:
        path = f"/models/{q(name)}/versions/{q(version)}"
        return _version(self.api.call("PATCH", path, {"description": description}))

    def delete_version(self, name: str, version: int | str) -> None:
        self.api.call("DELETE", f"/models/{q(name)}/versions/{q(version)}")

    def create_model(
        self, name: str, *, description: str | None, tags: Mapping[str, Any]
    ) -> RegisteredModel:
        # Checked here: the server would turn a key such as 1 into the string "1".
        checked = dict(check_tag(k, v) for k, v in tags.items())
        body = {"name": name, "description": description, "tags": checked}
        return _model(self.api.call("POST", "/models", body))

    def get_model(self, name: str) -> RegisteredModel:
        return _model(self.api.call("GET", f"/models/{q(name)}"))

    def search_models(
        self,
        filter: str | None,
        *,
        order_by: str | Iterable[str],
        max_results: int,
        page_token: str | None,
    ) -> Page[RegisteredModel]:
        query = _search(filter, order_by, max_results, page_token)
        data = self.api.call("GET", "/models", query=query)
        return Page([_model(m) for m in data["models"]], data["next_page_token"])

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.api.call("PUT", f"/models/{q(name)}/tags/{q(key)}", {"value": value})

    def delete_model_tag(self, name: str, key: str) -> None:
        self.api.call("DELETE", f"/models/{q(name)}/tags/{q(key)}")

    def update_model(self, name: str, *, description: str | None) -> RegisteredModel:
        return _model(self.api.call("PATCH", f"/models/{q(name)}", {"description": description}))

    def delete_model(self, name: str) -> None:
        self.api.call("DELETE", f"/models/{q(name)}")
