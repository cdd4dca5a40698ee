"""Adaptive micro-batching: a Predictor that merges concurrent requests into one predict call.

Requests queue up while the model is busy; the worker takes everything queued (up to
``max_batch_size`` rows), waits at most ``max_latency_ms`` after the first for more, predicts
once and hands each caller exactly its own rows back. It wraps a Predictor and never patches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from modelpack.errors import ServiceUnavailableError
from modelpack.plugins import Predictor

log = logging.getLogger("modelpack.serve")


@dataclass
class _Item:
    data: Any
    rows: int
    future: Future[Any] = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)
    # Submitted from an event loop: the answer goes to this asyncio future, set on its loop,
    # one loop callback per batch (not one cross-thread wake-up per request).
    waiter: asyncio.Future[Any] | None = None


def rows_of(data: Any) -> int | None:
    """Rows in one batch of input, or None when it cannot be merged with others."""
    if isinstance(data, (pd.DataFrame, pd.Series)):
        return len(data)
    if isinstance(data, np.ndarray):
        return int(data.shape[0]) if data.ndim else None
    if isinstance(data, dict) and data and all(isinstance(v, np.ndarray) for v in data.values()):
        lengths = {int(v.shape[0]) if v.ndim else -1 for v in data.values()}
        return lengths.pop() if len(lengths) == 1 and -1 not in lengths else None
    return None


def _key(data: Any) -> Any:
    # Only inputs of one structure can be concatenated.
    if isinstance(data, pd.DataFrame):
        return ("frame", tuple(data.columns), tuple(map(str, data.dtypes)))
    if isinstance(data, np.ndarray):
        return ("array", data.shape[1:], data.dtype.str)
    if isinstance(data, dict):
        return ("dict", tuple((k, v.shape[1:], v.dtype.str) for k, v in data.items()))
    return ("other", type(data))


def _concat(parts: Sequence[Any]) -> Any:
    first = parts[0]
    if isinstance(first, pd.DataFrame):
        return pd.concat(parts, ignore_index=True)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    return {k: np.concatenate([p[k] for p in parts]) for k in first}


def _split(output: Any, sizes: Sequence[int]) -> list[Any] | None:
    total = sum(sizes)
    bounds = np.cumsum([0, *sizes]).tolist()
    spans = list(itertools.pairwise(bounds))
    if isinstance(output, (pd.DataFrame, pd.Series)):
        if len(output) != total:
            return None
        return [output.iloc[a:b].reset_index(drop=True) for a, b in spans]
    if isinstance(output, np.ndarray) and output.ndim and output.shape[0] == total:
        return [output[a:b] for a, b in spans]
    if isinstance(output, list) and len(output) == total:
        return [output[a:b] for a, b in spans]
    if isinstance(output, dict) and all(
        isinstance(v, np.ndarray) and v.ndim and v.shape[0] == total for v in output.values()
    ):
        return [{k: v[a:b] for k, v in output.items()} for a, b in spans]
    return None  # an output without one row per input row cannot be split safely


class BatchingPredictor:
    """Wraps a Predictor; ``submit`` queues one request and returns a future of its output."""

    def __init__(
        self,
        inner: Predictor,
        *,
        max_batch_size: int,
        max_latency_ms: float = 5.0,
        max_queue_size: int = 1024,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.inner = inner
        self.signature = getattr(inner, "signature", None)
        self.max_batch_size = max(1, max_batch_size)
        self.max_latency = max(0.0, max_latency_ms) / 1000.0
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max(1, max_queue_size))
        self._on_batch = on_batch
        self._carry: _Item | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        if params:  # a request with its own parameters is not merged with others
            return self.inner.predict(data, params=dict(params))
        return self.submit(data).result()

    def submit(self, data: Any) -> Future[Any]:
        return self._enqueue(_Item(data, _rows(data))).future

    async def predict_async(self, data: Any) -> Any:
        """``predict`` for a caller on an event loop, which is not blocked meanwhile."""
        waiter = asyncio.get_running_loop().create_future()
        self._enqueue(_Item(data, _rows(data), waiter=waiter))
        return await waiter

    def _enqueue(self, item: _Item) -> _Item:
        self._ensure_started()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise ServiceUnavailableError(
                f"the batching queue is full ({self._queue.maxsize} requests waiting); "
                "retry shortly or add replicas",
                retry_after=1,
            ) from None
        return item

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    thread = threading.Thread(
                        target=self._run, name="modelpack-batcher", daemon=True
                    )
                    thread.start()
                    self._thread = thread

    def _run(self) -> None:
        while True:
            first = self._carry or self._queue.get()
            self._carry = None
            if first is None:
                return
            self._predict(self._collect(first))
            if self._stopping:
                return

    def _collect(self, first: _Item) -> list[_Item]:
        if first.rows < 0 or first.rows >= self.max_batch_size:
            return [first]  # alone: not mergeable, or already a full batch on its own
        batch, rows, key = [first], first.rows, _key(first.data)
        deadline = first.arrived + self.max_latency
        while rows < self.max_batch_size:
            timeout = deadline - time.monotonic()
            try:
                item = self._queue.get_nowait() if timeout <= 0 else self._queue.get(True, timeout)
            except queue.Empty:
                break
            if item is None:
                self._stopping = True
                break
            if item.rows < 0 or rows + item.rows > self.max_batch_size:
                self._carry = item  # never split a request: it starts the next batch
                break
            if _key(item.data) != key:
                self._carry = item
                break
            batch.append(item)
            rows += item.rows
        return batch

    def _predict(self, batch: list[_Item]) -> None:
        live = [i for i in batch if i.waiter is not None or i.future.set_running_or_notify_cancel()]
        if not live:
            return
        answers: list[tuple[_Item, Any, BaseException | None]] = []
        if len(live) > 1:
            try:
                merged = self.inner.predict(_concat([i.data for i in live]))
                parts = _split(merged, [i.rows for i in live])
            except Exception:
                parts = None  # one bad request must not fail its neighbours: retry alone
            if parts is not None:
                self._record(sum(i.rows for i in live))
                answers = [(item, part, None) for item, part in zip(live, parts, strict=True)]
        if not answers:
            for item in live:
                try:
                    self._record(max(item.rows, 1))
                    answers.append((item, self.inner.predict(item.data), None))
                except BaseException as exc:
                    answers.append((item, None, exc))
        _deliver(answers)

    def _record(self, rows: int) -> None:
        if self._on_batch is not None:
            self._on_batch(rows)


def _rows(data: Any) -> int:
    rows = rows_of(data)
    return rows if rows is not None else -1


_Answer = tuple["Future[Any] | asyncio.Future[Any]", Any, "BaseException | None"]


def _deliver(answers: list[tuple[_Item, Any, BaseException | None]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
    for item, result, exc in answers:
        if item.waiter is None:
            _settle([(item.future, result, exc)])
        else:
            by_loop.setdefault(item.waiter.get_loop(), []).append((item.waiter, result, exc))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[_Answer]) -> None:
    for future, result, exc in settled:
        if future.done():  # an asyncio request that was cancelled (timeout, client gone)
            continue
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)
