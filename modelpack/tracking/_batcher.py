"""Metric batching: ``log_metric`` appends to a buffer; a daemon thread writes it in batches.

The buffer is flushed every ``INTERVAL_S``, as soon as it holds ``BATCH`` rows, when a run ends,
when a run is read, and at interpreter exit. Past ``MAX_PENDING`` rows the caller writes inline,
so memory stays bounded when the store is slower than the training loop.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any

from modelpack.tracking import hooks
from modelpack.tracking._backend import TrackingBackend

INTERVAL_S = 1.0
BATCH = 5_000
MAX_PENDING = 200_000

log = logging.getLogger("modelpack.tracking")
# (backend, run_id, key, value, step, timestamp): a tuple is the cheapest thing to append.
Pending = tuple[TrackingBackend, str, str, float, int, int]
Row = tuple[str, str, float, int, int]


class MetricBatcher:
    def __init__(self) -> None:
        self._pending: list[Pending] = []
        self._lock = threading.Lock()  # guards _pending
        self._flush_lock = threading.Lock()  # one writer at a time keeps rows in logged order
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, item: Pending) -> None:
        with self._lock:
            pending = self._pending
            pending.append(item)
            size = len(pending)
        if self._thread is None:
            self._start()
        if size >= MAX_PENDING:
            self.flush()
        elif size >= BATCH:
            self._wake.set()

    def flush(self) -> None:
        """Write every pending row now; raises if the store refuses them."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            if not pending:
                return
            groups: dict[TrackingBackend, list[Row]] = {}
            for item in pending:
                groups.setdefault(item[0], []).append(item[1:])
            for store, rows in groups.items():
                # BATCH rows per call: a backlog built while the store was slow must not become
                # one request the team server refuses (MAX_METRICS_PER_CALL), losing all of it.
                for start in range(0, len(rows), BATCH):
                    chunk = rows[start : start + BATCH]
                    store.insert_metrics(chunk)
                    _emit(chunk)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._loop, name="modelpack-metrics", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wake.wait(INTERVAL_S)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("writing a batch of metrics failed; those metrics are lost")

    def _after_fork(self) -> None:
        # The parent flushes what it buffered; the child starts empty with its own thread.
        self._pending = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None


def _emit(rows: list[Row]) -> None:
    if not hooks.active():
        return
    by_run: dict[str, list[dict[str, Any]]] = {}
    for run_id, key, value, step, timestamp in rows:
        item = {"key": key, "value": value, "step": step, "timestamp": timestamp}
        by_run.setdefault(run_id, []).append(item)
    for run_id, metrics in by_run.items():
        hooks.emit("metric_logged", {"run_id": run_id, "metrics": metrics})


def _flush_at_exit() -> None:
    try:
        batcher.flush()
    except Exception:
        log.exception("writing the last metrics at exit failed")


batcher = MetricBatcher()
atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=batcher._after_fork)
