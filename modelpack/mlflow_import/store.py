"""An MLflow tracking store read without MLflow: its SQL database, or a server's REST API.

``sqlite:///PATH`` (or any SQLAlchemy URL MLflow's store uses) is read directly with SQLAlchemy,
from MLflow's own tables; ``http(s)://HOST:PORT`` through MLflow's REST API (``/api/2.0/mlflow``)
and, for artifacts the server proxies, ``/api/2.0/mlflow-artifacts``. Both answer the same
questions in the same shapes (``Version``, ``RegisteredModel``).
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from modelpack.errors import (
    ArtifactError,
    InvalidInputError,
    ModelNotFoundError,
    StoreError,
)


@dataclass(frozen=True)
class Version:
    name: str
    version: int
    source: str
    run_id: str | None
    description: str | None
    stage: str | None
    status: str
    storage_location: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str | None
    tags: dict[str, str]
    aliases: dict[str, int]


class Store(Protocol):
    uri: str

    def run_artifact_uri(self, run_id: str) -> str: ...

    def logged_model_location(self, model_id: str) -> str | None: ...

    def logged_model_of_run(self, run_id: str, name: str) -> str | None: ...

    def registered_models(self) -> list[RegisteredModel]: ...

    def versions(self, name: str) -> list[Version]: ...

    def download(self, artifact_uri: str, dest: Path) -> Path: ...


def open_store(uri: str) -> Store:
    if uri.startswith(("http://", "https://")):
        return RestStore(uri.rstrip("/"))
    if "://" in uri and not uri.startswith("file:"):
        return SqlStore(uri)
    raise InvalidInputError(
        f"tracking URI {uri!r}: give the database of an MLflow store (sqlite:///mlflow.db, "
        "postgresql://...) or an MLflow server (http://HOST:PORT)"
    )


def _not_deleted(stage: str | None) -> bool:
    return stage != "Deleted_Internal"


def download_local(artifact_uri: str, dest: Path) -> Path | None:
    """A ``file:`` or plain-path artifact location copied to ``dest``; None for other schemes."""
    parsed = urllib.parse.urlsplit(artifact_uri)
    if parsed.scheme not in ("", "file"):
        return None
    source = Path(urllib.parse.unquote(parsed.path))
    if not source.exists():
        raise ArtifactError(f"the artifacts at {artifact_uri} do not exist")
    if source.is_dir():
        shutil.copytree(source, dest)
    else:
        dest.mkdir(parents=True)
        shutil.copy2(source, dest / source.name)
    return dest


def unsupported_scheme(artifact_uri: str) -> ArtifactError:
    return ArtifactError(
        f"cannot read the artifacts at {artifact_uri}: modelpack reads file: and mlflow-artifacts: "
        "locations; download them (`mlflow artifacts download -u URI -d DIR`) and import DIR"
    )


class SqlStore:
    """MLflow's SQL tracking/registry database, read with SQLAlchemy (MLflow 2 and 3 schemas)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._engine: Any = None

    def _rows(self, sql: str, **params: Any) -> list[Any]:
        import sqlalchemy as sa

        if self._engine is None:
            url = self.uri
            if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
                raise StoreError(f"no MLflow database at {url}")
            self._engine = sa.create_engine(url)
        try:
            with self._engine.connect() as conn:
                return list(conn.execute(sa.text(sql), params))
        except sa.exc.SQLAlchemyError as exc:
            first = str(exc).splitlines()[0]
            raise StoreError(f"cannot read the MLflow store at {self.uri}: {first}") from exc

    def run_artifact_uri(self, run_id: str) -> str:
        rows = self._rows("SELECT artifact_uri FROM runs WHERE run_uuid = :r", r=run_id)
        if not rows:
            raise ModelNotFoundError(f"no run {run_id} in the MLflow store at {self.uri}")
        return str(rows[0][0])

    def _has_logged_models(self) -> bool:
        import sqlalchemy as sa

        self._rows("SELECT 1")  # opens the engine
        return bool(sa.inspect(self._engine).has_table("logged_models"))

    def logged_model_location(self, model_id: str) -> str | None:
        if not self._has_logged_models():
            return None
        rows = self._rows(
            "SELECT artifact_location FROM logged_models WHERE model_id = :m", m=model_id
        )
        return str(rows[0][0]) if rows else None

    def logged_model_of_run(self, run_id: str, name: str) -> str | None:
        if not self._has_logged_models():
            return None
        rows = self._rows(
            "SELECT model_id FROM logged_models WHERE source_run_id = :r AND name = :n "
            "ORDER BY creation_timestamp_ms DESC",
            r=run_id,
            n=name,
        )
        return str(rows[0][0]) if rows else None

    def registered_models(self) -> list[RegisteredModel]:
        tags: dict[str, dict[str, str]] = {}
        for name, key, value in self._rows("SELECT name, key, value FROM registered_model_tags"):
            tags.setdefault(name, {})[key] = value
        aliases: dict[str, dict[str, int]] = {}
        for name, alias, version in self._rows(
            "SELECT name, alias, version FROM registered_model_aliases"
        ):
            aliases.setdefault(name, {})[alias] = int(version)
        return [
            RegisteredModel(name, desc, tags.get(name, {}), aliases.get(name, {}))
            for name, desc in self._rows(
                "SELECT name, description FROM registered_models ORDER BY name"
            )
        ]

    def versions(self, name: str) -> list[Version]:
        tags: dict[int, dict[str, str]] = {}
        for version, key, value in self._rows(
            "SELECT version, key, value FROM model_version_tags WHERE name = :n", n=name
        ):
            tags.setdefault(int(version), {})[key] = value
        aliases: dict[int, list[str]] = {}
        for alias, version in self._rows(
            "SELECT alias, version FROM registered_model_aliases WHERE name = :n", n=name
        ):
            aliases.setdefault(int(version), []).append(alias)
        rows = self._rows(
            "SELECT version, source, run_id, description, current_stage, status, "
            "storage_location FROM model_versions WHERE name = :n ORDER BY version",
            n=name,
        )
        return [
            Version(
                name=name,
                version=int(v),
                source=str(src or ""),
                run_id=run_id or None,
                description=desc,
                stage=None if stage in (None, "None") else str(stage),
                status=str(status),
                storage_location=loc,
                tags=tags.get(int(v), {}),
                aliases=sorted(aliases.get(int(v), [])),
            )
            for v, src, run_id, desc, stage, status, loc in rows
            if _not_deleted(stage)
        ]

    def download(self, artifact_uri: str, dest: Path) -> Path:
        local = download_local(artifact_uri, dest)
        if local is None:
            raise unsupported_scheme(artifact_uri)
        return local


class RestStore:
    """An MLflow tracking server, through its REST API (``/api/2.0/mlflow/...``)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def _get(self, endpoint: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.uri}{endpoint}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            if exc.code == 404 or "RESOURCE_DOES_NOT_EXIST" in body:
                raise ModelNotFoundError(f"{url}: not found ({_message(body)})") from exc
            raise StoreError(f"{url}: HTTP {exc.code} ({_message(body)})") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StoreError(f"cannot reach the MLflow server at {self.uri}: {exc}") from exc

    def run_artifact_uri(self, run_id: str) -> str:
        run = self._get("/api/2.0/mlflow/runs/get", run_id=run_id)
        return str(run["run"]["info"]["artifact_uri"])

    def logged_model_location(self, model_id: str) -> str | None:
        try:
            found = self._get(f"/api/2.0/mlflow/logged-models/{urllib.parse.quote(model_id)}")
        except ModelNotFoundError:
            return None
        return str(found["model"]["info"]["artifact_uri"])

    def logged_model_of_run(self, run_id: str, name: str) -> str | None:
        run = self._get("/api/2.0/mlflow/runs/get", run_id=run_id)
        for output in (run["run"].get("outputs") or {}).get("model_outputs") or []:
            model_id = str(output.get("model_id", ""))
            found = self._get(f"/api/2.0/mlflow/logged-models/{urllib.parse.quote(model_id)}")
            if found["model"]["info"].get("name") == name:
                return model_id
        return None

    def _pages(self, endpoint: str, key: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = self._get(endpoint, max_results=100, page_token=token, **params)
            items += page.get(key) or []
            token = page.get("next_page_token")
            if not token:
                return items

    def registered_models(self) -> list[RegisteredModel]:
        found = self._pages("/api/2.0/mlflow/registered-models/search", "registered_models")
        return [
            RegisteredModel(
                name=m["name"],
                description=m.get("description") or None,
                tags={t["key"]: t.get("value", "") for t in m.get("tags") or []},
                aliases={a["alias"]: int(a["version"]) for a in m.get("aliases") or []},
            )
            for m in sorted(found, key=lambda m: str(m["name"]))
        ]

    def versions(self, name: str) -> list[Version]:
        escaped = name.replace("'", "\\'")
        found = self._pages(
            "/api/2.0/mlflow/model-versions/search", "model_versions", filter=f"name='{escaped}'"
        )
        found_model = self._get("/api/2.0/mlflow/registered-models/get", name=name)
        aliases: dict[int, list[str]] = {}
        for entry in found_model["registered_model"].get("aliases") or []:
            aliases.setdefault(int(entry["version"]), []).append(str(entry["alias"]))
        out = [
            Version(
                name=name,
                version=int(v["version"]),
                source=str(v.get("source", "")),
                run_id=v.get("run_id") or None,
                description=v.get("description") or None,
                stage=None if v.get("current_stage") in (None, "None") else v["current_stage"],
                status=str(v.get("status", "READY")),
                storage_location=v.get("storage_location"),
                tags={t["key"]: t.get("value", "") for t in v.get("tags") or []},
                aliases=sorted(aliases.get(int(v["version"]), [])),
            )
            for v in found
        ]
        return sorted(out, key=lambda v: v.version)

    def download(self, artifact_uri: str, dest: Path) -> Path:
        parsed = urllib.parse.urlsplit(artifact_uri)
        if parsed.scheme == "mlflow-artifacts":
            root = parsed.path.lstrip("/")
            self._download_proxied(root, root, dest)
            return dest
        local = download_local(artifact_uri, dest)
        if local is None:
            raise unsupported_scheme(artifact_uri)
        return local

    def _download_proxied(self, root: str, path: str, dest: Path) -> None:
        listing = self._get("/api/2.0/mlflow-artifacts/artifacts", path=path)
        dest.mkdir(parents=True, exist_ok=True)
        for entry in listing.get("files") or []:
            rel = str(entry["path"]).rsplit("/", 1)[-1]
            if not rel or rel in (".", "..") or "/" in rel or "\\" in rel:
                raise ArtifactError(f"the MLflow server listed an unsafe artifact name {rel!r}")
            child = f"{path}/{rel}"
            if entry.get("is_dir"):
                self._download_proxied(root, child, dest / rel)
                continue
            url = f"{self.uri}/api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(child)}"
            try:
                with urllib.request.urlopen(url, timeout=300) as resp, open(dest / rel, "wb") as fh:
                    shutil.copyfileobj(resp, fh)
            except (urllib.error.URLError, OSError) as exc:
                raise ArtifactError(f"cannot download {url}: {exc}") from exc


def _message(body: str) -> str:
    try:
        return str(json.loads(body).get("message", body))[:200]
    except ValueError:
        return body[:200]
