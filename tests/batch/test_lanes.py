from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pytest

from modelpack.batch._lanes import AHEAD, _in_order, _Lane
from modelpack.batch._scoring import ChunkResult


class _Counting(ThreadPoolExecutor):
    """A one-thread executor that scores with a delay and records what it was given."""

    def __init__(self, delay: float, fail_at: int | None = None) -> None:
        super().__init__(1)
        self.delay, self.fail_at = delay, fail_at
        self.starts: list[int] = []
        self.submitted = 0
        self.most_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self.submitted += 1
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future[Any]) -> None:
        with self._lock:
            self._in_flight -= 1

    def score(self, chunk: pa.Table, start: int) -> ChunkResult:
        self.starts.append(start)
        time.sleep(self.delay)
        if start == self.fail_at:
            raise ValueError(f"chunk at {start}")
        return ChunkResult(start, chunk.num_rows, chunk)


def _chunks(count: int, rows: int = 3) -> list[pa.Table]:
    return [pa.table({"id": list(range(i * rows, (i + 1) * rows))}) for i in range(count)]


def test_results_come_back_in_order_while_a_faster_lane_takes_more_chunks():
    with _Counting(0.02) as slow, _Counting(0.0) as fast:
        lanes = [_Lane(slow, 2, slow.score), _Lane(fast, 2, fast.score)]
        results, most_held = [], 0
        for result in _in_order(lanes, iter(_chunks(60))):
            results.append(result)  # chunks submitted and not yet handed back: bounded
            most_held = max(most_held, slow.submitted + fast.submitted - len(results) + 1)
    assert [r.start for r in results] == list(range(0, 180, 3))
    assert pa.concat_tables([r.table for r in results]).column("id").to_pylist() == list(range(180))
    assert most_held <= AHEAD * 4
    assert slow.most_in_flight <= 2 and fast.most_in_flight <= 2
    assert len(fast.starts) > 2 * len(slow.starts)


def test_the_first_failing_chunk_in_input_order_is_the_one_reported():
    # Chunk 0 fails late in a slow lane, chunk 3 at once in a fast one: chunk 0 is reported.
    with _Counting(0.2, fail_at=0) as slow, _Counting(0.0, fail_at=9) as fast:
        lanes = [_Lane(slow, 2, slow.score), _Lane(fast, 2, fast.score)]
        with pytest.raises(ValueError, match="chunk at 0$"):
            list(_in_order(lanes, iter(_chunks(6))))


def test_closing_early_cancels_what_is_still_queued():
    with _Counting(0.01) as lane_pool:
        results = _in_order([_Lane(lane_pool, 2, lane_pool.score)], iter(_chunks(10)))
        assert next(results).start == 0
        results.close()
    # chunk 0, and at most the two chunks the lane held when the consumer stopped
    assert len(lane_pool.starts) <= 3
