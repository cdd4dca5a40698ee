"""Where the many-models server's models come from: ``-m NAME=URI``, a folder of model folders,
the registry (``models:/`` with a filter and an alias), and the per-model settings file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack.descriptor import DESCRIPTOR
from modelpack.errors import InvalidInputError, ModelNotFoundError

# A name travels in URL paths (/v2/models/NAME/infer) and in metric labels.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# The per-model settings a --model-config file may give (the rest are the server's).
MODEL_SETTINGS = ("max_batch_size", "max_latency_ms", "max_queue_size")
_ALIAS_URI = re.compile(r"^models:/+([^/@]+)@([^/@]+)$")


def check_model_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInputError(
            f"invalid model name {name!r}: use letters, digits, '_', '.' and '-' "
            "(up to 128, starting with a letter or digit)"
        )
    return name


def alias_of(uri: str) -> tuple[str, str] | None:
    """(registered name, alias) of a ``models:/NAME@ALIAS`` URI."""
    match = _ALIAS_URI.match(uri)
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True)
class Repository:
    """``--repository``: a folder whose model folders are models (named after the folder), or
    ``models:/``: the registered models matching ``filter`` (each at ``alias``, else its latest
    version). ``discover`` finds one more model by name (Triton's load of a model added since)."""

    source: str
    filter: str | None = None
    alias: str | None = None

    @property
    def registry(self) -> bool:
        return self.source.startswith("models:")

    def models(self) -> dict[str, str]:
        if self.registry:
            return self._registered()
        folder = self._folder()
        return {
            p.name: str(p)
            for p in sorted(folder.iterdir())
            if (p / DESCRIPTOR).is_file() and _NAME.match(p.name)
        }

    def discover(self, name: str) -> str | None:
        if not _NAME.match(name):
            return None
        if not self.registry:
            path = self._folder() / name
            return str(path) if (path / DESCRIPTOR).is_file() else None
        from modelpack import registry

        try:
            found = registry.get_model(name)
        except ModelNotFoundError:
            return None
        return self._uri_of(name, found.aliases)

    def _folder(self) -> Path:
        folder = Path(self.source.removeprefix("file://")).expanduser()
        if not folder.is_dir():
            raise InvalidInputError(f"--repository {self.source}: no such folder")
        return folder

    def _registered(self) -> dict[str, str]:
        from modelpack import registry

        found: dict[str, str] = {}
        token = None
        while True:
            page = registry.search_models(self.filter, max_results=100, page_token=token)
            for model in page.items:
                uri = self._uri_of(model.name, model.aliases)
                if uri is not None and _NAME.match(model.name):
                    found[model.name] = uri
            token = page.next_page_token
            if not token:
                return found

    def _uri_of(self, name: str, aliases: Mapping[str, int]) -> str | None:
        if self.alias is None:
            return f"models:/{name}/latest"
        return f"models:/{name}@{self.alias}" if self.alias in aliases else None


def model_config(raw: Any, source: str) -> dict[str, dict[str, Any]]:
    """``--model-config``: ``{NAME: {uri?, max_batch_size?, max_latency_ms?, max_queue_size?}}``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{source}: give a mapping of model name to settings")
    config: dict[str, dict[str, Any]] = {}
    for name, settings in raw.items():
        check_model_name(str(name))
        if not isinstance(settings, dict):
            raise InvalidInputError(f"{source}: {name}: give a mapping of settings")
        unknown = sorted(set(settings) - {"uri", *MODEL_SETTINGS})
        if unknown:
            raise InvalidInputError(
                f"{source}: {name}: unknown setting(s) {', '.join(unknown)}; "
                f"known: uri, {', '.join(MODEL_SETTINGS)}"
            )
        for key in MODEL_SETTINGS:
            value = settings.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise InvalidInputError(f"{source}: {name}: {key} must be a number")
        config[str(name)] = dict(settings)
    return config


@dataclass(frozen=True)
class ModelSources:
    """Everything that names the models of one server (what ``modelpack serve`` was given)."""

    models: Mapping[str, str] = field(default_factory=dict)
    repository: Repository | None = None
    config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def collect(self) -> dict[str, str]:
        """Name -> URI of every model to serve from the start; a name given twice is refused."""
        found = dict(self.repository.models()) if self.repository else {}
        for name, uri in self.models.items():
            if name in found:
                raise InvalidInputError(
                    f"the model name {name!r} is both in -m and in the repository"
                )
            found[name] = uri
        for name, settings in self.config.items():
            if "uri" in settings:
                if name in found:
                    raise InvalidInputError(
                        f"the model {name!r} has a URI in -m and in --model-config"
                    )
                found[name] = str(settings["uri"])
            elif name not in found and not (self.repository and self.repository.discover(name)):
                raise InvalidInputError(
                    f"--model-config names {name!r}, which no -m or repository serves"
                )
        return found

    def discover(self, name: str) -> str | None:
        return self.repository.discover(name) if self.repository else None
