"""Adaptive micro-batching: a Predictor that merges concurrent requests into one predict call.

Requests queue up while the model is busy; the worker takes everything queued (up to
``max_batch_size`` rows), waits at most ``max_latency_ms`` after the first for more, predicts
once and hands each caller exactly its own rows back. It wraps a Predictor and never patches it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
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
    key: Any = None  # what it can be merged with: worked out by the worker, once


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
    """Wraps a Predictor; ``submit`` queues one request and returns a future of its output.

    The worker thread is woken only when it has something to do: the first request of a batch,
    enough rows queued to fill it, or the batch's deadline. Not once per request: each wake-up
    makes the worker take the GIL from the event loop that is still decoding the rest of the
    burst. (Closing a batch early once arrivals paused for 2 ms was tried: under load the pauses
    are the OS's, batches came out smaller, and the server spent more CPU per request.)
    """

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
        self.max_queue_size = max(1, max_queue_size)
        self._on_batch = on_batch
        self._items: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._queued_rows = 0  # rows in _items, an unmergeable request counting as a full batch
        self._wake_rows = 1  # the sleeping worker is woken once this many rows are queued
        self._sleeping = False
        self._stopping = False
        self._thread: threading.Thread | None = None

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
        with self._cond:
            if len(self._items) >= self.max_queue_size:
                raise ServiceUnavailableError(
                    f"the batching queue is full ({self.max_queue_size} requests waiting); "
                    "retry shortly or add replicas",
                    retry_after=1,
                )
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(
                    target=self._run, name="modelpack-batcher", daemon=True
                )
                self._thread.start()
            self._items.append(item)
            self._queued_rows += self._weight(item)
            if self._sleeping and self._queued_rows >= self._wake_rows:
                self._sleeping = False
                self._cond.notify()
        return item

    def close(self) -> None:
        """Answer what is queued, then stop the worker (a later request starts a new one)."""
        with self._cond:
            thread, self._stopping = self._thread, True
            self._cond.notify()
        if thread is not None:
            thread.join(timeout=30)

    def _weight(self, item: _Item) -> int:
        if item.rows < 0 or item.rows >= self.max_batch_size:
            return self.max_batch_size  # it goes alone: wake the worker at once
        return max(item.rows, 1)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._predict(batch)

    def _sleep(self, rows: int, timeout: float | None) -> None:
        # Called with the lock held; woken by _enqueue once ``rows`` rows are queued.
        self._wake_rows, self._sleeping = rows, True
        self._cond.wait(timeout)
        self._sleeping = False

    def _pop(self) -> _Item:
        item = self._items.popleft()
        self._queued_rows -= self._weight(item)
        return item

    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._items:
                if self._stopping:
                    self._thread = None  # under the lock: a request from now on starts a new one
                    return None
                self._sleep(1, None)
            first = self._pop()
            if first.rows < 0 or first.rows >= self.max_batch_size:
                return [first]  # alone: not mergeable, or already a full batch on its own
            batch, rows, key = [first], first.rows, _key(first.data)
            deadline = first.arrived + self.max_latency
            while True:
                while self._items and rows < self.max_batch_size:
                    head = self._items[0]
                    if head.rows < 0 or rows + head.rows > self.max_batch_size:
                        return batch  # never split a request: it starts the next batch
                    if head.key is None:
                        head.key = _key(head.data)
                    if head.key != key:
                        return batch
                    batch.append(self._pop())
                    rows += head.rows
                if rows >= self.max_batch_size or self._stopping:
                    return batch
                now = time.monotonic()
                if now >= deadline:
                    return batch
                self._sleep(self.max_batch_size - rows, deadline - now)

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
