"""Where tracking calls go: the SQL store in this process, or a team server over HTTP.

Both backends take and return the same values, so ``fluent`` and the metric batcher do not
know which one they talk to. Backends are frozen dataclasses: equal for the same engine or
client, so the batcher groups pending metrics by backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from modelpack._rest import RestClient, client, q
from modelpack.tracking import _store
from modelpack.tracking._store import Metric, Run

MetricRow = tuple[str, str, float, int, int]  # run_id, key, value, step, timestamp


@dataclass(frozen=True)
class SqlTracking:
    engine: Engine

    def create_run(
        self,
        run_id: str,
        experiment: str,
        name: str | None,
        parent_id: str | None,
        tags: Mapping[str, str],
    ) -> int:
        exp_id = _store.experiment_id(self.engine, experiment)
        return _store.create_run(self.engine, run_id, exp_id, name, parent_id, tags)

    def end_run(self, run_id: str, status: str) -> None:
        _store.end_run(self.engine, run_id, status)

    def log_params(self, run_id: str, values: Mapping[str, str]) -> dict[str, str]:
        return _store.log_params(self.engine, run_id, values)

    def set_tags(self, run_id: str, values: Mapping[str, str]) -> None:
        _store.set_tags(self.engine, run_id, values)

    def insert_metrics(self, rows: Sequence[MetricRow]) -> None:
        _store.insert_metrics(self.engine, rows)

    def add_artifacts(
        self, run_id: str, files: Mapping[str, tuple[str, int]], replace: str | None
    ) -> None:
        _store.add_artifacts(self.engine, run_id, files, replace=replace)

    def list_artifacts(self, run_id: str) -> dict[str, tuple[str, int]]:
        return _store.list_artifacts(self.engine, run_id)

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        return _store.metric_history(self.engine, run_id, key)

    def get_run(self, run_id: str) -> Run:
        return _store.get_run(self.engine, run_id)

    def search_runs(
        self, *, experiment: str | None, parent_id: str | None, max_results: int
    ) -> list[Run]:
        return _store.search_runs(
            self.engine, experiment=experiment, parent_id=parent_id, max_results=max_results
        )


@dataclass(frozen=True)
class RestTracking:
    api: RestClient

    def create_run(
        self,
        run_id: str,
        experiment: str,
        name: str | None,
        parent_id: str | None,
        tags: Mapping[str, str],
    ) -> int:
        body = {
            "id": run_id,
            "experiment": experiment,
            "name": name,
            "parent_id": parent_id,
            "tags": dict(tags),
        }
        return int(self.api.call("POST", "/runs", body)["start_time"])

    def end_run(self, run_id: str, status: str) -> None:
        self.api.call("PATCH", f"/runs/{q(run_id)}", {"status": status})

    def log_params(self, run_id: str, values: Mapping[str, str]) -> dict[str, str]:
        added = self.api.call("POST", f"/runs/{q(run_id)}/params", {"params": dict(values)})
        return dict(added["added"])

    def set_tags(self, run_id: str, values: Mapping[str, str]) -> None:
        self.api.call("POST", f"/runs/{q(run_id)}/tags", {"tags": dict(values)})

    def insert_metrics(self, rows: Sequence[MetricRow]) -> None:
        self.api.call("POST", "/metrics", {"metrics": list(rows)})

    def add_artifacts(
        self, run_id: str, files: Mapping[str, tuple[str, int]], replace: str | None
    ) -> None:
        body = {"files": {p: list(entry) for p, entry in files.items()}, "replace": replace}
        self.api.call("POST", f"/runs/{q(run_id)}/artifacts", body)

    def list_artifacts(self, run_id: str) -> dict[str, tuple[str, int]]:
        found = self.api.call("GET", f"/runs/{q(run_id)}/artifacts")["artifacts"]
        return {p: (e["sha256"], int(e["size"])) for p, e in found.items()}

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        found = self.api.call("GET", f"/runs/{q(run_id)}/metrics/{q(key)}")["metrics"]
        return [Metric(**m) for m in found]

    def get_run(self, run_id: str) -> Run:
        return _run(self.api.call("GET", f"/runs/{q(run_id)}"))

    def search_runs(
        self, *, experiment: str | None, parent_id: str | None, max_results: int
    ) -> list[Run]:
        query = {"experiment": experiment, "parent_id": parent_id, "max_results": max_results}
        return [_run(r) for r in self.api.call("GET", "/runs", query=query)["runs"]]


def _run(data: Mapping[str, Any]) -> Run:
    return Run(**data)


TrackingBackend = SqlTracking | RestTracking


def backend() -> TrackingBackend:
    """The backend for the current configuration (``MODELPACK_TRACKING_URI`` or the store)."""
    api = client()
    if api is not None:
        return RestTracking(api)
    from modelpack.store.db import get_engine

    return SqlTracking(get_engine())
