"""``/api/v1``: the registry and tracking APIs over HTTP, one route per Python call.

Handlers are plain functions run in the thread pool (the store is synchronous SQLAlchemy);
``api()`` registers each with the role it needs, a summary for ``/api/v1/openapi.json``, and
the status it answers with. A handler returns JSON-able data, or ``None`` for 204.
"""

from __future__ import annotations

import getpass
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import QueryParams

from modelpack import registry
from modelpack.errors import InvalidInputError
from modelpack.registry._filters import INT64_MAX, INT64_MIN
from modelpack.teamserver._auth import Principal
from modelpack.tracking import _store

MAX_METRICS_PER_CALL = 100_000
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_INTEGER = re.compile(r"-?[0-9]+")  # ASCII only: str.isdigit() and int() also take '³', '٣'


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:60]}..."


def check_int(value: object, what: str, *, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """``value`` if it is an int (not a bool) in [low, high]; else a 400 naming ``what``.

    The default range is SQLite's INTEGER: a larger number cannot even be bound to a query.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInputError(f"{what} must be an integer, not {_shown(value)}")
    if not low <= value <= high:
        raise InvalidInputError(f"{what} must be in [{low}, {high}], not {_shown(value)}")
    return value


def parse_int(text: str, what: str, *, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """The integer written in ``text`` (a path or query parameter), checked as by check_int.

    Every number the API reads from a path, a query or a body goes through here or check_int.
    """
    if not _INTEGER.fullmatch(text):
        raise InvalidInputError(f"{what} must be an integer, not {_shown(text)}")
    if len(text.lstrip("-").lstrip("0")) > 19:  # past int64 (and int() refuses 4,300+ digits)
        raise InvalidInputError(f"{what} must be in [{low}, {high}], not {_shown(text)}")
    return check_int(int(text), what, low=low, high=high)


@dataclass
class Call:
    """What a handler gets: path parameters, query, decoded JSON body, and the caller."""

    path: Mapping[str, str]
    query: QueryParams
    body: Any
    principal: Principal
    auth: bool

    def field(self, key: str, kind: type | tuple[type, ...], *, required: bool = False) -> Any:
        body = self.body if isinstance(self.body, dict) else {}
        value = body.get(key)
        if value is None:
            if required:
                raise InvalidInputError(f"request body: {key!r} is required")
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise InvalidInputError(f"request body: {key!r} must be {names}, not {value!r}")
        return value

    def strings(self, key: str) -> dict[str, str]:
        found = self.field(key, dict) or {}
        return {str(k): str(v) for k, v in found.items()}

    def int_query(self, key: str, default: int, *, low: int = 1, high: int = 100_000) -> int:
        raw = self.query.get(key)
        if raw is None or raw == "":
            return default
        return parse_int(raw, f"query parameter {key!r}", low=low, high=high)

    def version_path(self) -> int | None:
        """The ``{version}`` path parameter: a version number, or None for 'latest'."""
        number = self.path["version"]
        if number == "latest":
            return None
        if not _INTEGER.fullmatch(number):
            raise InvalidInputError(
                f"invalid version {_shown(number)}: give a number or 'latest' "
                "(path parameter 'version')"
            )
        return parse_int(number, "path parameter 'version'", low=0)

    def user(self) -> str:
        if self.auth:  # with tokens, the audit trail names the token, not what the client says
            return self.principal.name
        given = self.field("user", str)
        return given or os.environ.get("MODELPACK_USER") or getpass.getuser()


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class ApiRoute:
    method: str
    path: str
    role: str
    status: int
    summary: str
    handler: Handler


ROUTES: list[ApiRoute] = []


def api(
    method: str, path: str, summary: str, *, role: str | None = None, status: int = 200
) -> Callable[[Handler], Handler]:
    needed = role or ("read" if method in ("GET", "HEAD") else "write")

    def register(handler: Handler) -> Handler:
        ROUTES.append(ApiRoute(method, path, needed, status, summary, handler))
        return handler

    return register


def _engine() -> Any:
    from modelpack.store.db import get_engine

    return get_engine()


def _order(call: Call, default: tuple[str, ...]) -> tuple[str, ...] | list[str]:
    return call.query.getlist("order_by") or default


# -- registered models ---------------------------------------------------------------------


@api("GET", "/models", "Search registered models (filter, order_by, max_results, page_token)")
def search_models(call: Call) -> Any:
    page = registry.search_models(
        call.query.get("filter") or None,
        order_by=_order(call, ("name ASC",)),
        max_results=call.int_query("max_results", 100, high=10_000),
        page_token=call.query.get("page_token") or None,
    )
    # orjson writes the dataclasses itself: the same JSON as to_dict() without asdict()'s
    # deep copies (~25 ms per 1,000 versions).
    return {"models": page.items, "next_page_token": page.next_page_token}


@api("POST", "/models", "Create a registered model", status=201)
def create_model(call: Call) -> Any:
    return registry.create_model(
        call.field("name", str, required=True),
        description=call.field("description", str),
        tags=call.strings("tags"),
    ).to_dict()


@api("GET", "/models/{name}", "Get a registered model")
def get_model(call: Call) -> Any:
    return registry.get_model(call.path["name"]).to_dict()


@api("PATCH", "/models/{name}", "Update a registered model's description")
def update_model(call: Call) -> Any:
    description = call.field("description", str)
    return registry.update_model(call.path["name"], description=description).to_dict()


@api("DELETE", "/models/{name}", "Delete a model and all its versions", role="admin", status=204)
def delete_model(call: Call) -> None:
    registry.delete_model(call.path["name"])


@api("PUT", "/models/{name}/tags/{key}", "Set a tag of a registered model", status=204)
def set_model_tag(call: Call) -> None:
    value = call.field("value", (str, int, float, bool), required=True)
    registry.set_model_tag(call.path["name"], call.path["key"], value)


@api("DELETE", "/models/{name}/tags/{key}", "Delete a tag of a registered model", status=204)
def delete_model_tag(call: Call) -> None:
    registry.delete_model_tag(call.path["name"], call.path["key"])


# -- versions ------------------------------------------------------------------------------


@api("GET", "/versions", "Search versions (filter, order_by, max_results, page_token)")
def search_versions(call: Call) -> Any:
    page = registry.search_versions(
        call.query.get("filter") or None,
        order_by=_order(call, ("name ASC", "version DESC")),
        max_results=call.int_query("max_results", 100, high=10_000),
        page_token=call.query.get("page_token") or None,
    )
    return {"versions": page.items, "next_page_token": page.next_page_token}  # see above


@api(
    "POST",
    "/models/{name}/versions",
    "Register a version from uploaded blobs (descriptor_sha256, source, run_id, parent, tags)",
    status=201,
)
def register_version(call: Call) -> Any:
    from modelpack.artifacts import check_manifest_paths, local_store
    from modelpack.descriptor import DESCRIPTOR, Descriptor

    sha = call.field("descriptor_sha256", str, required=True)
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise InvalidInputError("request body: 'descriptor_sha256' must be 64 hex digits")
    store = local_store()
    with tempfile.TemporaryDirectory(prefix="modelpack-register-") as tmp:
        if not store.exists(sha):
            raise InvalidInputError(f"blob {sha} (the descriptor) was not uploaded")
        store.get_file(sha, Path(tmp) / DESCRIPTOR)
        descriptor = Descriptor.read(Path(tmp))
    check_manifest_paths(descriptor)  # as the embedded store does: nothing stored if unsafe
    missing = [rel for rel, entry in descriptor.files.items() if not store.exists(entry.sha256)]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} file(s) of the model were not uploaded, first {missing[0]!r}"
        )
    parent = call.field("parent", str)
    if parent is not None:  # "NAME/VERSION": the version is stored, so it must fit in 64 bits
        number = parent.rpartition("/")[2]
        if number.isdigit():  # what _parent accepts (Unicode digits too): check it here
            parse_int(number, "request body: 'parent' version", low=0)
    parent_name, parent_version = registry.parse_parent(parent)
    return registry.register_stored(
        call.path["name"],
        sha,
        descriptor,
        source=call.field("source", str, required=True),
        run_id=call.field("run_id", str),
        parent=(parent_name, parent_version),
        tags=list(call.strings("tags").items()),
        description=call.field("description", str),
    ).to_dict()


def _version(call: Call) -> Any:
    number = call.version_path()
    if number is None:
        return registry.latest_version(call.path["name"])
    return registry.get_version(call.path["name"], number)


@api("GET", "/models/{name}/versions/{version}", "Get a version (a number or 'latest')")
def get_version(call: Call) -> Any:
    return _version(call).to_dict()


@api("PATCH", "/models/{name}/versions/{version}", "Update a version's description")
def update_version(call: Call) -> Any:
    number = _version(call).version
    description = call.field("description", str)
    return registry.update_version(call.path["name"], number, description=description).to_dict()


@api("DELETE", "/models/{name}/versions/{version}", "Delete a version", role="admin", status=204)
def delete_version(call: Call) -> None:
    registry.delete_version(call.path["name"], _version(call).version)


@api("PUT", "/models/{name}/versions/{version}/tags/{key}", "Set a version tag", status=204)
def set_version_tag(call: Call) -> None:
    value = call.field("value", (str, int, float, bool), required=True)
    registry.set_tag(call.path["name"], _version(call).version, call.path["key"], value)


@api("DELETE", "/models/{name}/versions/{version}/tags/{key}", "Delete a tag", status=204)
def delete_version_tag(call: Call) -> None:
    registry.delete_tag(call.path["name"], _version(call).version, call.path["key"])


@api("POST", "/models/{name}/versions/{version}/stage", "Move a version to a stage")
def transition(call: Call) -> Any:
    return registry.transition(
        call.path["name"],
        _version(call).version,
        call.field("stage", str),
        call.field("comment", str),
        user=call.user(),
    ).to_dict()


@api("GET", "/models/{name}/history", "Stage transitions of a model (or ?version=N)")
def history(call: Call) -> Any:
    raw = call.query.get("version")
    number = parse_int(raw, "query parameter 'version'", low=0) if raw else None
    found = registry.history(call.path["name"], number)
    return {"transitions": [t.to_dict() for t in found]}


@api("GET", "/models/{name}/aliases/{alias}", "The version an alias points to")
def get_alias(call: Call) -> Any:
    return registry.get_by_alias(call.path["name"], call.path["alias"]).to_dict()


@api("PUT", "/models/{name}/aliases/{alias}", "Point an alias at a version ({'version': N})")
def set_alias(call: Call) -> Any:
    given = call.field("version", int, required=True)
    number = check_int(given, "request body: 'version'", low=0)
    return registry.set_alias(call.path["name"], call.path["alias"], number).to_dict()


@api("DELETE", "/models/{name}/aliases/{alias}", "Delete an alias", status=204)
def delete_alias(call: Call) -> None:
    registry.delete_alias(call.path["name"], call.path["alias"])


# -- tracking ------------------------------------------------------------------------------


@api("GET", "/experiments", "Experiments with their run count and last run time")
def list_experiments(call: Call) -> Any:
    return {"experiments": _store.list_experiments(_engine())}


@api("GET", "/runs", "Runs newest first (experiment, parent_id, max_results)")
def search_runs(call: Call) -> Any:
    found = _store.search_runs(
        _engine(),
        experiment=call.query.get("experiment") or None,
        parent_id=call.query.get("parent_id") or None,
        max_results=call.int_query("max_results", 1000),
    )
    return {"runs": [r.to_dict() for r in found]}


@api("POST", "/runs", "Start a run (experiment, id, name, parent_id, tags)", status=201)
def create_run(call: Call) -> Any:
    import uuid

    experiment = _store.check_name(call.field("experiment", str, required=True), "experiment")
    run_id = call.field("id", str) or uuid.uuid4().hex
    if not _RUN_ID.fullmatch(run_id):
        raise InvalidInputError(f"invalid run id {run_id!r}: give 32 lowercase hex digits")
    name = call.field("name", str)
    if name is not None:
        _store.check_name(name, "run name")
    tags = {_store.check_key(k, "tag key"): v for k, v in call.strings("tags").items()}
    parent_id = call.field("parent_id", str)
    engine = _engine()
    if parent_id is not None:
        _store.get_run(engine, parent_id)
    exp_id = _store.experiment_id(engine, experiment)
    start = _store.create_run(engine, run_id, exp_id, name, parent_id, tags)
    return {"id": run_id, "start_time": start}


def _run_id(call: Call) -> str:
    run_id = call.path["run_id"]
    _store.require_runs(_engine(), [run_id])  # RunNotFoundError (404) for an unknown run
    return run_id


@api("GET", "/runs/{run_id}", "Get a run with its params, tags and latest metrics")
def get_run(call: Call) -> Any:
    return _store.get_run(_engine(), call.path["run_id"]).to_dict()


@api("PATCH", "/runs/{run_id}", "End a run ({'status': FINISHED|FAILED|KILLED})")
def end_run(call: Call) -> Any:
    status = call.field("status", str, required=True)
    if status not in _store.STATUSES[1:]:
        raise InvalidInputError(f"invalid run status {status!r}: use FINISHED, FAILED or KILLED")
    _store.end_run(_engine(), _run_id(call), status)
    return _store.get_run(_engine(), call.path["run_id"]).to_dict()


@api("POST", "/runs/{run_id}/params", "Log params ({'params': {key: value}})")
def log_params(call: Call) -> Any:
    values = {_store.check_key(k, "param key"): v for k, v in call.strings("params").items()}
    run_id = _run_id(call)  # an unknown run is a 404 even with nothing to log
    added = _store.log_params(_engine(), run_id, values) if values else {}
    return {"added": added}


@api("POST", "/runs/{run_id}/tags", "Set run tags ({'tags': {key: value}})", status=204)
def set_run_tags(call: Call) -> None:
    values = {_store.check_key(k, "tag key"): v for k, v in call.strings("tags").items()}
    run_id = _run_id(call)  # an unknown run is a 404 even with nothing to set
    if values:
        _store.set_tags(_engine(), run_id, values)


@api(
    "POST",
    "/metrics",
    "Log a batch of metrics ({'metrics': [[run_id, key, value, step, timestamp], ...]})",
    status=204,
)
def log_metrics(call: Call) -> None:
    rows = call.field("metrics", list, required=True)
    if len(rows) > MAX_METRICS_PER_CALL:
        raise InvalidInputError(f"at most {MAX_METRICS_PER_CALL} metrics per call")
    checked = []
    for i, row in enumerate(rows):
        try:
            run_id, key, value, step, timestamp = row
            ok = (
                isinstance(run_id, str)
                and isinstance(key, str)
                and 0 < len(key) <= _store.KEY_MAX
                and isinstance(value, int | float)
                and isinstance(step, int)
                and isinstance(timestamp, int)
                and not isinstance(step, bool)
                and not isinstance(timestamp, bool)
            )
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidInputError(
                f"metrics[{i}]: give [run_id, key, value, step, timestamp], not {row!r}"[:300]
            )
        # Inline, not check_int: up to 100,000 rows a call. Steps and timestamps are stored as
        # SQLite INTEGERs; a value is stored as a float (an int of up to 64 bits converts).
        if not (INT64_MIN <= step <= INT64_MAX and INT64_MIN <= timestamp <= INT64_MAX):
            check_int(step, f"metrics[{i}]: step")
            check_int(timestamp, f"metrics[{i}]: timestamp")
        checked.append((run_id, key, float(value), step, timestamp))
    engine = _engine()
    # Not get_run: it ranks every metric of the run for its latest values, so each batch
    # would cost as much as the whole run logged so far.
    _store.require_runs(engine, {row[0] for row in checked})
    _store.insert_metrics(engine, checked)


@api("GET", "/runs/{run_id}/metrics", "Every metric's history of a run")
def metric_histories(call: Call) -> Any:
    found = _store.metric_histories(_engine(), _run_id(call))
    return {"metrics": {k: [m.__dict__ for m in v] for k, v in found.items()}}


@api("GET", "/runs/{run_id}/metrics/{key}", "One metric's history")
def metric_history(call: Call) -> Any:
    found = _store.metric_history(_engine(), _run_id(call), call.path["key"])
    return {"metrics": [m.__dict__ for m in found]}


@api("GET", "/runs/{run_id}/artifacts", "A run's artifact files: path -> sha256, size")
def list_artifacts(call: Call) -> Any:
    found = _store.list_artifacts(_engine(), _run_id(call))
    return {"artifacts": {p: {"sha256": s, "size": n} for p, (s, n) in found.items()}}


@api("POST", "/runs/{run_id}/artifacts", "Record uploaded blobs as run artifacts", status=204)
def add_artifacts(call: Call) -> None:
    from modelpack.artifacts import local_store, safe_relpath

    given = call.field("files", dict, required=True)
    files: dict[str, tuple[str, int]] = {}
    for path, entry in given.items():
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], int)):
            raise InvalidInputError(f"files[{_shown(path)}]: give [sha256, size]")
        size = check_int(entry[1], f"files[{_shown(path)}]: size", low=0)
        files[safe_relpath(path)] = (str(entry[0]), size)
    store = local_store()
    missing = [p for p, (sha, _) in files.items() if not store.exists(sha)]
    if missing:
        raise InvalidInputError(f"{len(missing)} file(s) were not uploaded, first {missing[0]!r}")
    replace = call.field("replace", str)
    _store.add_artifacts(_engine(), _run_id(call), files, replace=replace)


# -- the rest --------------------------------------------------------------------------------


@api(
    "GET",
    "/deployments",
    "Deployments of every installed target that keeps them on this machine (local_state); "
    "a target that fails is an entry of errors",
)
def list_deployments(call: Call) -> Any:
    # Remote targets (a cluster, a cloud) are not listed: that would be network calls per page.
    from modelpack import deploy, plugins
    from modelpack.errors import ModelpackError

    found: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for target in plugins.names("deployer"):
        try:
            deployer = plugins.deployer(target)
            if deploy.keeps_local_state(deployer):
                found.extend(d.to_dict() for d in deploy.list(deployer, {}))
        except ModelpackError as exc:
            errors.append({"target": target, "error": exc.to_dict()})
        except Exception as exc:  # a third-party deployer's bug: reported, not a 500
            message = f"{type(exc).__name__}: {exc}"
            errors.append({"target": target, "error": {"code": "plugin_error", "message": message}})
    return {"deployments": found, "errors": errors}


@api("GET", "/whoami", "The caller's role, and whether the server requires tokens", role="public")
def whoami(call: Call) -> Any:
    if call.auth and call.principal.name == "anonymous":
        return {"auth": "token", "role": None, "name": None}
    return {
        "auth": "token" if call.auth else "none",
        "role": call.principal.role,
        "name": call.principal.name,
    }
