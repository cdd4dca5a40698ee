"""``import_registry``: an MLflow model registry copied into modelpack's, through its public API.

Registered models (description, tags), their versions with the same numbers (each converted with
``import_mlflow``; description, tags, stage and the MLflow run id kept), and aliases. modelpack
numbers versions itself, one after the last: a gap in MLflow's numbers (a deleted version) is
kept by registering a placeholder for the missing number and deleting it. Each imported version
carries the tag ``mlflow.imported_from`` (``TRACKING_URI#NAME/VERSION``), so a re-run updates
what it imported before instead of importing it twice, and never touches a version it did not
import.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack.errors import ModelNotFoundError, ModelpackError
from modelpack.mlflow_import.api import save_located
from modelpack.mlflow_import.sources import Located, version_path
from modelpack.mlflow_import.store import RegisteredModel, Store, Version, open_store
from modelpack.trust import Trust, TrustArg, policy

MARKER = "mlflow.imported_from"
RUN_TAG = "mlflow.run_id"
STAGES = ("Staging", "Production", "Archived")


@dataclass
class RegistryReport:
    """What came over (``NAME/VERSION``) and what did not, with why."""

    imported: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "updated": self.updated,
            "aliases": self.aliases,
            "skipped": [{"what": w, "why": why} for w, why in self.skipped],
        }


def import_registry(
    tracking_uri: str, names: Iterable[str] | None = None, *, trust: TrustArg = None
) -> RegistryReport:
    """Copy the registered models of the MLflow store at ``tracking_uri`` (or only ``names``)."""
    store = open_store(tracking_uri)
    wanted = list(names or [])
    models = store.registered_models()
    report = RegistryReport()
    for name in wanted:
        if name not in {m.name for m in models}:
            report.skipped.append((name, f"no registered model {name!r} at {tracking_uri}"))
    trust_policy = policy(trust)
    with tempfile.TemporaryDirectory(prefix="modelpack-mlflow-registry-") as work:
        for model in models:
            if not wanted or model.name in wanted:
                _import_model(store, model, trust_policy, Path(work), report)
    return report


def _import_model(
    store: Store, model: RegisteredModel, trust: Trust, work: Path, report: RegistryReport
) -> None:
    from modelpack import registry

    try:
        registry.get_model(model.name)
    except ModelNotFoundError:
        registry.create_model(model.name, description=model.description, tags=model.tags)
    else:
        if model.description:
            registry.update_model(model.name, description=model.description)
        for key, value in model.tags.items():
            registry.set_model_tag(model.name, key, value)
    kept: set[int] = set()
    for version in store.versions(model.name):
        what = f"{model.name}/{version.version}"
        try:
            if _import_version(store, version, trust, work, report):
                kept.add(version.version)
        except ModelpackError as exc:
            report.skipped.append((what, f"[{exc.code}] {exc.message}"))
    for alias, number in sorted(model.aliases.items()):
        if number in kept:
            registry.set_alias(model.name, alias, number)
            report.aliases.append(f"{model.name}@{alias} -> {number}")
        else:
            report.skipped.append((f"{model.name}@{alias}", f"version {number} did not come over"))


def _marker(store: Store, version: Version) -> str:
    return f"{store.uri}#{version.name}/{version.version}"


def _tags(store: Store, version: Version) -> dict[str, str]:
    tags = dict(version.tags)
    tags[MARKER] = _marker(store, version)
    if version.run_id:
        tags[RUN_TAG] = version.run_id
    return tags


def _import_version(
    store: Store, version: Version, trust: Trust, work: Path, report: RegistryReport
) -> bool:
    """Import (or update) one version; True when modelpack holds it under the same number."""
    from modelpack import registry

    what = f"{version.name}/{version.version}"
    if version.status != "READY":
        report.skipped.append((what, f"its status in MLflow is {version.status}, not READY"))
        return False
    try:
        existing = registry.get_version(version.name, version.version)
    except ModelNotFoundError:
        existing = None
    if existing is not None:
        if existing.tags.get(MARKER) != _marker(store, version):
            report.skipped.append(
                (what, "modelpack already has this version, not imported from this MLflow one")
            )
            return False
        _sync(store, version)
        report.updated.append(what)
        return True
    target = work / f"{version.name}-{version.version}"
    located = Located(version_path(store, version, work / "download"), {"source": _source(version)})
    save_located(located, target, trust=trust, overwrite=True)
    created = _register_as(version, target, _tags(store, version))
    if version.stage in STAGES:
        registry.transition(version.name, created, version.stage, "imported from MLflow")
    if created != version.version:
        report.skipped.append(
            (what, f"registered as version {created}: modelpack had used the number before")
        )
        return False
    report.imported.append(what)
    return True


def _source(version: Version) -> str:
    return f"models:/{version.name}/{version.version}"


def _register_as(version: Version, path: Path, tags: dict[str, str]) -> int:
    """Register ``path`` as ``version.version`` when modelpack's next number allows it."""
    from modelpack import registry

    while True:
        created = registry.register(
            version.name,
            path,
            tags=tags,
            description=version.description,
            run_id=version.run_id,
            source=tags[MARKER],  # not the temporary folder the model was converted into
        )
        if created.version >= version.version:
            return created.version
        registry.delete_version(version.name, created.version)  # a number MLflow left unused


def _sync(store: Store, version: Version) -> None:
    from modelpack import registry

    current = registry.get_version(version.name, version.version)
    if (current.description or None) != (version.description or None):
        registry.update_version(version.name, version.version, description=version.description)
    for key, value in _tags(store, version).items():
        if current.tags.get(key) != value:
            registry.set_tag(version.name, version.version, key, value)
    stage = version.stage if version.stage in STAGES else None
    if current.stage != stage:
        registry.transition(version.name, version.version, stage, "synced from MLflow")
