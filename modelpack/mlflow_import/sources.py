"""Where an MLflow model is: a directory, ``runs:/RUN_ID/PATH``, ``models:/NAME/VERSION``,
``models:/NAME@ALIAS`` or ``models:/m-<id>`` (an MLflow 3 logged model) of a tracking store.

MLflow 3 logs a model as a "logged model" of its own (``models/m-<id>/artifacts``) rather than
under the run's artifacts, and a registered version's ``source`` is then ``models:/m-<id>``:
both are followed to the logged model's artifact location.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack.errors import ArtifactError, InvalidInputError, ModelNotFoundError
from modelpack.mlflow_import.mlmodel import MLMODEL
from modelpack.mlflow_import.store import Store, Version, open_store

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


@dataclass
class Located:
    """A local copy of the MLflow model, and where it came from (kept as metadata)."""

    path: Path
    origin: dict[str, Any] = field(default_factory=dict)


def tracking_store(tracking_uri: str | None, src: str) -> Store:
    uri = tracking_uri or os.environ.get(TRACKING_URI_ENV)
    if not uri:
        raise InvalidInputError(
            f"{src} names a model of an MLflow tracking store: give its --tracking-uri "
            f"(sqlite:///mlflow.db, http://HOST:PORT) or set {TRACKING_URI_ENV}"
        )
    return open_store(uri)


def locate(src: str, tracking_uri: str | None, workdir: Path) -> Located:
    """The MLflow model ``src`` as a local directory (downloaded under ``workdir`` if remote)."""
    if src.startswith("runs:/"):
        store = tracking_store(tracking_uri, src)
        run_id, _, rel = src.removeprefix("runs:/").partition("/")
        return Located(_run_model(store, run_id, rel, workdir), {"source": src, "run_id": run_id})
    if src.startswith("models:/"):
        store = tracking_store(tracking_uri, src)
        return _registered(store, src, workdir)
    path = Path(src.removeprefix("file://")).expanduser()
    if not (path / MLMODEL).is_file():
        what = "does not exist" if not path.exists() else f"has no {MLMODEL} file"
        raise ModelNotFoundError(f"no MLflow model at {src}: the path {what}")
    return Located(path, {"source": str(path.resolve())})


def _checked(path: Path, what: str) -> Path:
    if not (path / MLMODEL).is_file():
        raise ModelNotFoundError(f"{what} holds no MLflow model (no {MLMODEL} file)")
    return path


def _run_model(store: Store, run_id: str, rel: str, workdir: Path) -> Path:
    if not run_id or not rel:
        raise InvalidInputError(f"runs:/{run_id}/{rel}: use runs:/RUN_ID/ARTIFACT_PATH")
    base = store.run_artifact_uri(run_id).rstrip("/")
    target = workdir / "run-artifacts"
    try:
        found = store.download(f"{base}/{rel.strip('/')}", target)
        if (found / MLMODEL).is_file():
            return found
    except ArtifactError:
        pass  # MLflow 3 keeps it as a logged model of the run, not under the run's artifacts
    model_id = store.logged_model_of_run(run_id, rel.strip("/"))
    if model_id is None:
        raise ModelNotFoundError(f"runs:/{run_id}/{rel}: the run has no model at {rel!r}")
    return _logged_model(store, model_id, workdir)


def _logged_model(store: Store, model_id: str, workdir: Path) -> Path:
    location = store.logged_model_location(model_id)
    if location is None:
        raise ModelNotFoundError(f"no logged model {model_id} in the MLflow store at {store.uri}")
    return _checked(store.download(location, workdir / model_id), f"logged model {model_id}")


def _registered(store: Store, src: str, workdir: Path) -> Located:
    ref = src.removeprefix("models:/").strip("/")
    if ref.startswith("m-") and "/" not in ref and "@" not in ref:
        return Located(_logged_model(store, ref, workdir), {"source": src, "model_id": ref})
    name, version = _version_of(store, ref, src)
    return Located(
        version_path(store, version, workdir),
        {
            "source": src,
            "registered_model": name,
            "version": version.version,
            "run_id": version.run_id,
        },
    )


def _version_of(store: Store, ref: str, src: str) -> tuple[str, Version]:
    if "@" in ref:
        name, _, alias = ref.rpartition("@")
    else:
        name, _, number = ref.rpartition("/")
        alias = ""
        if not name or not number.isdigit():
            raise InvalidInputError(f"{src}: use models:/NAME/VERSION or models:/NAME@ALIAS")
    versions = store.versions(name)
    for version in versions:
        if (alias and alias in version.aliases) or (not alias and str(version.version) == number):
            return name, version
    if not versions:
        raise ModelNotFoundError(f"{src}: no registered model {name!r} at {store.uri}")
    raise ModelNotFoundError(f"{src}: {name!r} has no such version or alias at {store.uri}")


def version_path(store: Store, version: Version, workdir: Path) -> Path:
    """The files of a registered version: its source (logged model, run, location)."""
    source = version.source
    target = workdir / f"{version.name}-v{version.version}"
    if source.startswith("models:/m-"):
        return _logged_model(store, source.removeprefix("models:/").strip("/"), target)
    if source.startswith("runs:/"):
        run_id, _, rel = source.removeprefix("runs:/").partition("/")
        return _run_model(store, run_id, rel, target)
    location = source or version.storage_location or ""
    what = f"version {version.version} of {version.name!r} ({location})"
    return _checked(store.download(location, target / "files"), what)
