"""Where the many-models server's models come from: ``-m NAME=URI``, a folder of model folders,
the registry (``models:/`` with a filter and an alias), an OCI registry's namespace
(``oci://HOST/NAMESPACE``, a glob filter and a tag), and the per-model settings file."""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack._names import check_model_name as check_model_name
from modelpack._names import is_model_name
from modelpack.descriptor import DESCRIPTOR
from modelpack.errors import (
    AuthenticationError,
    InvalidInputError,
    ModelNotFoundError,
    PermissionDeniedError,
)

log = logging.getLogger("modelpack.serve")

# The per-model settings a --model-config file may give (the rest are the server's).
MODEL_SETTINGS = ("max_batch_size", "max_latency_ms", "max_queue_size")
_ALIAS_URI = re.compile(r"^models:/+([^/@]+)@([^/@]+)$")


def alias_of(uri: str) -> tuple[str, str] | None:
    """(registered name, alias) of a ``models:/NAME@ALIAS`` URI."""
    match = _ALIAS_URI.match(uri)
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True)
class Repository:
    """``--repository``: a folder whose model folders are models (named after the folder), or
    ``models:/``: the registered models matching ``filter`` (each at ``alias``, else its latest
    version), or ``oci://HOST/NAMESPACE``: the repositories of the registry's catalog under
    NAMESPACE whose name matches the glob ``filter`` (each at the tag ``alias``, else ``latest``).
    ``discover`` finds one more model by name (Triton's load of a model added since);
    ``insecure`` reads such a registry over plain HTTP (as ``modelpack pull --insecure``)."""

    source: str
    filter: str | None = None
    alias: str | None = None
    insecure: bool = False

    @property
    def registry(self) -> bool:
        return self.source.startswith("models:")

    @property
    def oci(self) -> bool:
        return self.source.startswith(OCI)

    def models(self) -> dict[str, str]:
        if self.registry:
            return self._registered()
        if self.oci:
            return self._oci_models()
        folder = self._folder()
        return {
            p.name: str(p)
            for p in sorted(folder.iterdir())
            if (p / DESCRIPTOR).is_file() and is_model_name(p.name)
        }

    def discover(self, name: str) -> str | None:
        if not is_model_name(name):
            return None
        if self.oci:
            return self._oci_models(quiet=True).get(name)
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
                if uri is not None and is_model_name(model.name):
                    found[model.name] = uri
            token = page.next_page_token
            if not token:
                return found

    def _uri_of(self, name: str, aliases: Mapping[str, int]) -> str | None:
        if self.alias is None:
            return f"models:/{name}/latest"
        return f"models:/{name}@{self.alias}" if self.alias in aliases else None

    def _oci_models(self, *, quiet: bool = False) -> dict[str, str]:
        """NAME -> ``oci://HOST/NAMESPACE/REPO:TAG`` of every repository under the namespace
        that has the tag (``/`` of a nested REPO becomes ``.`` in NAME); one without it is left
        out (a warning unless ``quiet``), as a registered model without the alias is."""
        from modelpack.oci import list_repositories, list_tags

        host, namespace = _oci_namespace(self.source)
        tag = self.alias or "latest"
        _check_tag(self.source, tag)
        prefix = f"{namespace}/" if namespace else ""
        try:
            repositories = list_repositories(host, insecure=self.insecure)
        except (AuthenticationError, PermissionDeniedError, ModelNotFoundError) as exc:
            login = " (or log in: docker/podman/oras login)" if exc.http_status == 401 else ""
            raise type(exc)(
                f"--repository {self.source}: the registry {host} does not list its "
                f"repositories (GET /v2/_catalog answered {exc.http_status}), as many hosted "
                f"registries do: give each model with -m NAME=oci://{host}/{prefix}REPO:TAG{login}"
            ) from None
        found: dict[str, str] = {}
        named: dict[str, str] = {}
        for repo in sorted(r for r in repositories if r.startswith(prefix)):
            name = repo[len(prefix) :].replace("/", ".")
            if not is_model_name(name):
                if not quiet:
                    log.warning("--repository %s: %s is no model name: left out", self.source, repo)
                continue
            if self.filter is not None and not fnmatch.fnmatchcase(name, self.filter):
                continue
            if name in named:
                raise InvalidInputError(
                    f"--repository {self.source}: {named[name]} and {repo} would both be the "
                    f"model {name!r}; serve one of them with -m NAME=oci://{host}/REPO:TAG"
                )
            named[name] = repo
            if tag not in list_tags(f"{OCI}{host}/{repo}", insecure=self.insecure):
                if not quiet:
                    log.warning(
                        "--repository %s: %s has no tag %r: left out", self.source, repo, tag
                    )
                continue
            found[name] = f"{OCI}{host}/{repo}:{tag}"
        return found


OCI = "oci://"


def _oci_namespace(source: str) -> tuple[str, str]:
    """(HOST[:PORT], NAMESPACE) of ``oci://HOST[/NAMESPACE]``; no NAMESPACE: the whole catalog."""
    from modelpack.oci import parse

    rest = source.removeprefix(OCI).rstrip("/")
    host, _, namespace = rest.partition("/")
    ref = parse(f"{OCI}{host}/{namespace or 'any'}")
    if ref.tag or ref.digest:
        raise InvalidInputError(
            f"--repository {source}: give a namespace, oci://HOST/NAMESPACE, without a tag or "
            "digest (--alias TAG picks each repository's tag)"
        )
    return ref.host, namespace


def _check_tag(source: str, tag: str) -> None:
    from modelpack.oci import parse

    try:
        parse(f"{OCI}localhost/any:{tag}")
    except InvalidInputError:
        raise InvalidInputError(
            f"--repository {source}: --alias {tag!r} is not an OCI tag (letters, digits, "
            "'_', '.', '-'; at most 128)"
        ) from None


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


def combine(repository: Repository | None, models: Mapping[str, str]) -> dict[str, str]:
    """Name -> URI of the models of ``repository`` (read now), then ``models`` (``-m``): what
    a server or a deployment of a model set serves. A name in both is refused."""
    found = dict(repository.models()) if repository else {}
    for name, uri in models.items():
        if name in found:
            assert repository is not None
            raise InvalidInputError(
                f"the model name {name!r} is both in -m and in the repository {repository.source}"
            )
        found[name] = uri
    return found


@dataclass(frozen=True)
class ModelSources:
    """Everything that names the models of one server (what ``modelpack serve`` was given)."""

    models: Mapping[str, str] = field(default_factory=dict)
    repository: Repository | None = None
    config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    follow_aliases: bool = False

    def collect(self) -> dict[str, str]:
        """Name -> URI of every model to serve from the start; a name given twice is refused."""
        if self.follow_aliases and self.repository and self.repository.oci:
            raise InvalidInputError(
                "--follow-aliases follows models:/NAME@ALIAS models, not the tags of an "
                "oci:// repository: restart the server to serve a moved tag"
            )
        found = combine(self.repository, self.models)
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
