"""``models:/``, ``runs:/`` and ``s3://`` URIs, resolved to local verified directories.

Imported by :func:`modelpack.uris.resolve` on first use of one of these schemes, so that
``import modelpack`` stays free of SQLAlchemy and boto3.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from modelpack.errors import ModelNotFoundError

if TYPE_CHECKING:
    from modelpack.registry.types import ModelVersion


def resolve_models(uri: str) -> Path:
    """``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/latest``,
    ``models:/NAME/stage/STAGE``."""
    from modelpack.artifacts import materialize

    return materialize(find_model_version(uri).descriptor_sha256)


def find_model_version(uri: str) -> ModelVersion:
    """The registered version a ``models:/`` URI names now (an alias or ``latest`` moves)."""
    from modelpack import registry

    rest = unquote(uri.removeprefix("models:").lstrip("/"))
    parts = rest.split("/")
    if len(parts) == 1 and "@" in rest:
        name, alias = rest.rsplit("@", 1)
        return registry.get_by_alias(name, alias)
    if len(parts) == 2 and parts[1] == "latest":
        return registry.latest_version(parts[0])
    if len(parts) == 2 and parts[1].isdigit():
        return registry.get_version(parts[0], int(parts[1]))
    if len(parts) == 3 and parts[1] == "stage":
        page = registry.search_versions(
            f"name = '{_quote(parts[0])}' AND stage = '{_quote(parts[2])}'",
            order_by="version DESC",
            max_results=1,
        )
        if not page.items:
            raise ModelNotFoundError(f"{uri}: no version of {parts[0]!r} is in stage {parts[2]!r}")
        return page.items[0]
    raise ModelNotFoundError(
        f"cannot resolve {uri!r}: use models:/NAME/VERSION, models:/NAME@ALIAS, "
        "models:/NAME/latest or models:/NAME/stage/STAGE"
    )


def _quote(text: str) -> str:
    return text.replace("'", "''")


def resolve_runs(uri: str) -> Path:
    """``runs:/RUN_ID/PATH``: the run's artifacts under PATH, rebuilt from the artifact store."""
    from modelpack.artifacts import materialize_files, safe_relpath

    rest = unquote(uri.removeprefix("runs:").lstrip("/"))
    run_id, _, sub = rest.partition("/")
    prefix = safe_relpath(sub) if sub.strip("/") else ""
    rows = _remote_run_artifacts(run_id, prefix)
    if rows is None:
        rows = _local_run_artifacts(run_id, prefix)
    if not rows:
        raise ModelNotFoundError(f"{uri}: run {run_id!r} has no artifacts under {sub or '/'!r}")
    cut = len(prefix) + 1 if prefix else 0
    files = {path[cut:] if path != prefix else Path(path).name: sha for path, sha in rows}
    return materialize_files(files)


def _remote_run_artifacts(run_id: str, prefix: str) -> list[tuple[str, str]] | None:
    from modelpack._rest import client

    if client() is None:
        return None
    from modelpack.tracking._backend import backend

    found = backend().list_artifacts(run_id)
    return [
        (path, sha)
        for path, (sha, _size) in found.items()
        if not prefix or path == prefix or path.startswith(f"{prefix}/")
    ]


def _local_run_artifacts(run_id: str, prefix: str) -> list[tuple[str, str]]:
    from sqlalchemy import or_, select

    from modelpack.store.db import read
    from modelpack.store.schema import run_artifacts as ra

    query = select(ra.c.path, ra.c.sha256).where(ra.c.run_id == run_id)
    if prefix:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(or_(ra.c.path == prefix, ra.c.path.like(f"{escaped}/%", escape="\\")))
    with read() as conn:
        return [(path, sha) for path, sha in conn.execute(query)]


def resolve_s3(uri: str) -> Path:
    from modelpack._s3 import download_model

    return download_model(uri)
