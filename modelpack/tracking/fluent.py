"""The tracking API: ``with start_run(...)``, ``log_param``, ``log_metric``, ``log_model``...

The active runs form a stack per thread (a context variable): ``start_run(nested=True)`` pushes
a child of the innermost run, and leaving its ``with`` block ends it FINISHED, FAILED on an
exception, or KILLED on KeyboardInterrupt.
"""

from __future__ import annotations

import atexit
import contextvars
import math
import os
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from modelpack.errors import InvalidInputError, RunStateError
from modelpack.store.db import now_ms
from modelpack.tracking import _store, hooks
from modelpack.tracking._backend import TrackingBackend, backend
from modelpack.tracking._batcher import batcher
from modelpack.tracking._store import Metric, Run

EXPERIMENT_ENV = "MODELPACK_EXPERIMENT"
DEFAULT_EXPERIMENT = "Default"

_stack: contextvars.ContextVar[tuple[ActiveRun, ...]] = contextvars.ContextVar(
    "modelpack_active_runs", default=()
)
_warned_nan: set[tuple[str, str]] = set()


class ActiveRun:
    """A run being tracked; a context manager that ends it. ``data`` reads it back."""

    def __init__(
        self,
        store: TrackingBackend,
        run_id: str,
        experiment: str,
        name: str | None,
        parent_id: str | None,
    ) -> None:
        self.store = store
        self.id = run_id
        self.experiment = experiment
        self.name = name
        self.parent_id = parent_id
        self.status = "RUNNING"

    @property
    def uri(self) -> str:
        return f"runs:/{self.id}"

    @property
    def data(self) -> Run:
        return get_run(self.id)

    def end(self, status: str = "FINISHED") -> None:
        """End this run (and any run nested in it that is still active)."""
        stack = _stack.get()
        if self in stack:
            inner = stack[stack.index(self) :]
            _stack.set(stack[: stack.index(self)])
            for run in reversed(inner[1:]):
                run._finish(status)
        self._finish(status)

    def _finish(self, status: str) -> None:
        if self.status != "RUNNING":
            return
        if status not in _store.STATUSES[1:]:
            raise InvalidInputError(
                f"invalid run status {status!r}: use FINISHED, FAILED or KILLED"
            )
        self.status = status
        try:
            batcher.flush()
        finally:
            self.store.end_run(self.id, status)
            hooks.emit("run_ended", {"run_id": self.id, "status": status, "end_time": now_ms()})

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED")
        else:
            self.end("FAILED")

    def __repr__(self) -> str:
        return f"<ActiveRun {self.id} experiment={self.experiment!r} status={self.status}>"


def start_run(
    experiment: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    tags: Mapping[str, Any] | None = None,
) -> ActiveRun:
    """Start a run in ``experiment`` (created if needed) and make it the active run."""
    stack = _stack.get()
    parent = stack[-1] if stack else None
    if parent is not None and not nested:
        raise RunStateError(
            f"run {parent.id} is already active: pass nested=True to start a child run, "
            "or end it first"
        )
    name = experiment or (parent.experiment if parent else None)
    name = _store.check_name(
        name or os.environ.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT, "experiment name"
    )
    if run_name is not None:
        _store.check_name(run_name, "run name")
    tag_values = {_store.check_key(k, "tag key"): str(v) for k, v in (tags or {}).items()}
    store = backend()
    run_id = uuid.uuid4().hex
    parent_id = parent.id if parent else None
    start = store.create_run(run_id, name, run_name, parent_id, tag_values)
    run = ActiveRun(store, run_id, name, run_name, parent_id)
    _stack.set((*stack, run))
    hooks.emit(
        "run_started",
        {
            "run_id": run_id,
            "experiment": name,
            "name": run_name,
            "parent_id": parent_id,
            "tags": tag_values,
            "start_time": start,
        },
    )
    return run


def active_run() -> ActiveRun | None:
    stack = _stack.get()
    return stack[-1] if stack else None


def end_run(status: str = "FINISHED") -> None:
    """End the innermost active run; without one, do nothing."""
    run = active_run()
    if run is not None:
        run.end(status)


def _require() -> ActiveRun:
    stack = _stack.get()
    if not stack:
        raise RunStateError(
            "no active run: wrap the code in `with modelpack.start_run():` (or call autolog())"
        )
    return stack[-1]


def log_param(key: str, value: Any) -> None:
    log_params({key: value})


def log_params(values: Mapping[str, Any]) -> None:
    """Log params once each: the same value again is fine, another value is a ParamConflictError."""
    run = _require()
    checked = {_store.check_key(k, "param key"): str(v) for k, v in values.items()}
    if not checked:
        return
    added = run.store.log_params(run.id, checked)
    if added:
        hooks.emit("param_logged", {"run_id": run.id, "params": added})


def set_tag(key: str, value: Any) -> None:
    set_tags({key: value})


def set_tags(values: Mapping[str, Any]) -> None:
    run = _require()
    checked = {_store.check_key(k, "tag key"): str(v) for k, v in values.items()}
    if checked:
        run.store.set_tags(run.id, checked)
        hooks.emit("tag_set", {"run_id": run.id, "tags": checked})


def log_metric(
    key: str, value: float, step: int | None = None, timestamp: int | None = None
) -> None:
    """Buffer one metric value; it is written with others in a batch (see ``flush``)."""
    stack = _stack.get()
    if not stack:
        _require()
    run = stack[-1]
    if key.__class__ is not str or not key or len(key) > _store.KEY_MAX:
        _store.check_key(key, "metric key")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"metric {key!r}: {value!r} is not a number") from None
    if math.isnan(number):
        _skip_nan(run.id, key)
        return
    batcher.add(
        (
            run.store,
            run.id,
            key,
            number,
            0 if step is None else _int64(step, key, "step"),
            time.time_ns() // 1_000_000
            if timestamp is None
            else _int64(timestamp, key, "timestamp"),
        )
    )


def _int64(value: Any, key: str, what: str) -> int:
    # Checked here, in the caller's frame: past int64 the store's batcher would fail later,
    # in another thread, with the whole batch.
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"metric {key!r}: {what} {value!r} is not an integer") from None
    if not -(2**63) <= number < 2**63:
        raise InvalidInputError(f"metric {key!r}: {what} {number} is outside the 64-bit range")
    return number


def log_metrics(values: Mapping[str, float], step: int | None = None) -> None:
    timestamp = now_ms()
    for key, value in values.items():
        log_metric(key, value, step, timestamp)


def _skip_nan(run_id: str, key: str) -> None:
    # A diverging loss must not kill hours of training: NaN is dropped, and said so once.
    if (run_id, key) not in _warned_nan:
        _warned_nan.add((run_id, key))
        hooks.log.warning("metric %r of run %s is NaN: NaN values are not stored", key, run_id)


def flush() -> None:
    """Write every buffered metric now."""
    batcher.flush()


def get_run(run_id: str) -> Run:
    batcher.flush()
    return backend().get_run(run_id)


def search_runs(
    experiment: str | None = None, *, parent_id: str | None = None, max_results: int = 1000
) -> list[Run]:
    """Runs newest first, optionally of one experiment or children of one run."""
    batcher.flush()
    return backend().search_runs(
        experiment=experiment, parent_id=parent_id, max_results=max_results
    )


def get_metric_history(run_id: str, key: str) -> list[Metric]:
    batcher.flush()
    return backend().metric_history(run_id, key)


def list_artifacts(run_id: str) -> dict[str, tuple[str, int]]:
    return backend().list_artifacts(run_id)


def log_artifact(local_path: str | os.PathLike[str], artifact_path: str | None = None) -> str:
    """Store a file (or a directory's files) under ``artifact_path``; return its ``runs:/`` URI."""
    from modelpack.artifacts import safe_relpath

    run = _require()
    source = Path(local_path)
    if not source.exists():
        raise InvalidInputError(f"cannot log artifact {source}: no such file or directory")
    base = safe_relpath(artifact_path) if artifact_path else ""
    name = source.resolve().name
    dest = f"{base}/{name}" if base else name
    files = _put(run, source, dest)
    hooks.emit("artifact_logged", {"run_id": run.id, "path": dest, "files": _digests(files)})
    return f"runs:/{run.id}/{dest}"


def log_model(obj: Any, artifact_path: str = "model", **save_kwargs: Any) -> str:
    """Save ``obj`` with ``modelpack.save`` into the run; return ``runs:/RUN_ID/artifact_path``."""
    from modelpack.artifacts import safe_relpath
    from modelpack.descriptor import Descriptor
    from modelpack.model import save

    run = _require()
    dest = safe_relpath(artifact_path)
    with tempfile.TemporaryDirectory(prefix="modelpack-log-model-") as tmp:
        model_dir = save(obj, Path(tmp) / "model", **save_kwargs)
        flavors = sorted(Descriptor.read(model_dir).flavors)
        files = _put(run, model_dir, dest, replace=True)
    uri = f"runs:/{run.id}/{dest}"
    hooks.emit(
        "model_logged",
        {"run_id": run.id, "path": dest, "uri": uri, "flavors": flavors, "files": _digests(files)},
    )
    return uri


def _put(
    run: ActiveRun, source: Path, dest: str, *, replace: bool = False
) -> dict[str, tuple[str, int]]:
    from modelpack.artifacts import default_store, put_tree, safe_relpath

    store = default_store()
    if source.is_dir():
        tree = put_tree(store, source)
        files = {safe_relpath(f"{dest}/{rel}"): entry for rel, entry in tree.items()}
    else:
        files = {dest: (store.put_file(source), source.stat().st_size)}
    run.store.add_artifacts(run.id, files, dest if replace else None)
    return files


def _digests(files: Mapping[str, tuple[str, int]]) -> dict[str, str]:
    return {path: sha for path, (sha, _size) in files.items()}


def _end_runs_at_exit() -> None:
    for run in reversed(_stack.get()):
        try:
            run._finish("FINISHED")
        except Exception:
            hooks.log.exception("ending run %s at exit failed", run.id)


atexit.register(_end_runs_at_exit)
