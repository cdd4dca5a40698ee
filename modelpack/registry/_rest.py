"""``modelpack.registry`` through a team server: the same functions, over its REST API."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from modelpack._rest import RestArtifactStore, RestClient, q
from modelpack.registry._sql import ModelVersion, Page, RegisteredModel, StageTransition


def version(data: Mapping[str, Any]) -> ModelVersion:
    return ModelVersion(**data)


def model(data: Mapping[str, Any]) -> RegisteredModel:
    return RegisteredModel(**data)


def _order(order_by: str | Iterable[str]) -> list[str]:
    return [order_by] if isinstance(order_by, str) else list(order_by)


def register(
    api: RestClient,
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

    descriptor_sha, _ = store_model(RestArtifactStore(api), path)  # blobs first, then the row
    body = {
        "descriptor_sha256": descriptor_sha,
        "source": source,
        "run_id": run_id,
        "parent": f"{parent[0]}/{parent[1]}" if parent[0] else None,
        "tags": dict(tags),
        "description": description,
    }
    return version(api.call("POST", f"/models/{q(name)}/versions", body))


def get_version(api: RestClient, name: str, number: int | str) -> ModelVersion:
    return version(api.call("GET", f"/models/{q(name)}/versions/{q(number)}"))


def get_by_alias(api: RestClient, name: str, alias: str) -> ModelVersion:
    return version(api.call("GET", f"/models/{q(name)}/aliases/{q(alias)}"))


def search_versions(
    api: RestClient,
    filter: str | None,
    order_by: str | Iterable[str],
    max_results: int,
    page_token: str | None,
) -> Page[ModelVersion]:
    query = {
        "filter": filter,
        "order_by": _order(order_by),
        "max_results": max_results,
        "page_token": page_token,
    }
    data = api.call("GET", "/versions", query=query)
    return Page([version(v) for v in data["versions"]], data["next_page_token"])


def search_models(
    api: RestClient,
    filter: str | None,
    order_by: str | Iterable[str],
    max_results: int,
    page_token: str | None,
) -> Page[RegisteredModel]:
    query = {
        "filter": filter,
        "order_by": _order(order_by),
        "max_results": max_results,
        "page_token": page_token,
    }
    data = api.call("GET", "/models", query=query)
    return Page([model(m) for m in data["models"]], data["next_page_token"])


def set_alias(api: RestClient, name: str, alias: str, number: int | str) -> ModelVersion:
    body = {"version": int(number)}
    return version(api.call("PUT", f"/models/{q(name)}/aliases/{q(alias)}", body))


def delete_alias(api: RestClient, name: str, alias: str) -> None:
    api.call("DELETE", f"/models/{q(name)}/aliases/{q(alias)}")


def transition(
    api: RestClient,
    name: str,
    number: int | str,
    stage: str | None,
    comment: str | None,
    user: str | None,
) -> ModelVersion:
    body = {"stage": stage, "comment": comment, "user": user}
    path = f"/models/{q(name)}/versions/{q(number)}/stage"
    return version(api.call("POST", path, body))


def history(api: RestClient, name: str, number: int | str | None) -> list[StageTransition]:
    query = {"version": number}
    data = api.call("GET", f"/models/{q(name)}/history", query=query)
    return [StageTransition(**t) for t in data["transitions"]]


def set_tag(api: RestClient, name: str, number: int | str, key: str, value: str) -> None:
    path = f"/models/{q(name)}/versions/{q(number)}/tags/{q(key)}"
    api.call("PUT", path, {"value": value})


def delete_tag(api: RestClient, name: str, number: int | str, key: str) -> None:
    api.call("DELETE", f"/models/{q(name)}/versions/{q(number)}/tags/{q(key)}")


def update_version(
    api: RestClient, name: str, number: int | str, description: str | None
) -> ModelVersion:
    path = f"/models/{q(name)}/versions/{q(number)}"
    return version(api.call("PATCH", path, {"description": description}))


def delete_version(api: RestClient, name: str, number: int | str) -> None:
    api.call("DELETE", f"/models/{q(name)}/versions/{q(number)}")


def create_model(
    api: RestClient, name: str, description: str | None, tags: Mapping[str, str]
) -> RegisteredModel:
    body = {"name": name, "description": description, "tags": dict(tags)}
    return model(api.call("POST", "/models", body))


def get_model(api: RestClient, name: str) -> RegisteredModel:
    return model(api.call("GET", f"/models/{q(name)}"))


def set_model_tag(api: RestClient, name: str, key: str, value: str) -> None:
    api.call("PUT", f"/models/{q(name)}/tags/{q(key)}", {"value": value})


def delete_model_tag(api: RestClient, name: str, key: str) -> None:
    api.call("DELETE", f"/models/{q(name)}/tags/{q(key)}")


def update_model(api: RestClient, name: str, description: str | None) -> RegisteredModel:
    return model(api.call("PATCH", f"/models/{q(name)}", {"description": description}))


def delete_model(api: RestClient, name: str) -> None:
    api.call("DELETE", f"/models/{q(name)}")
