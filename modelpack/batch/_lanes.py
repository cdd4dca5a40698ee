"""Scoring lanes: chunks scored in a thread of this process and in spawned helper processes.

The job's own process is always one lane: a scoring thread, while the main thread reads the
next chunks and writes finished ones (pyarrow and most predict calls release the GIL, so the
three overlap). ``--workers N`` adds N - 1 spawned processes as a second lane. Results come back
in input order whichever lane scored them, so the output does not depend on N.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, field

import pyarrow as pa

from modelpack.batch._scoring import ChunkResult, ChunkScorer

Results = Generator[ChunkResult, None, None]

# Chunks queued per scoring process (one being scored, one waiting), so that a scorer never
# waits for the reader; and scored chunks that may wait for an earlier one to be written, so
# that a faster lane runs ahead of a slower one without memory growing with the input.
DEPTH = 2
AHEAD = 2


@dataclass(frozen=True)
class Plan:
    model_path: str
    features: list[str] | None
    passthrough: list[str]
    on_error: str
    trust: bool | list[str] | None
    # Columns read as text (CSV) and their signature types, parsed by the scorer.
    text_types: dict[str, str] = field(default_factory=dict)


@dataclass
class _Lane:
    executor: Executor
    depth: int
    score: Callable[[pa.Table, int], ChunkResult]


_Window = deque[tuple[_Lane, "Future[ChunkResult]"]]


def scored_chunks(plan: Plan, chunks: Iterator[pa.Table], workers: int) -> Results:
    """Results for ``chunks``, in order, from this process and ``workers - 1`` helpers."""
    helpers = _spawn_helpers(plan, workers - 1) if workers > 1 else None
    local = ThreadPoolExecutor(1, thread_name_prefix="modelpack-batch-score")
    try:
        # The model loads here, while the helpers (already started) load theirs.
        lanes = [_Lane(local, DEPTH, scorer_for(plan).score)]
        if helpers is not None:
            lanes.append(_Lane(helpers, DEPTH * (workers - 1), _score_in_helper))
        yield from _in_order(lanes, chunks)
    finally:
        local.shutdown(wait=True, cancel_futures=True)
        if helpers is not None:
            helpers.shutdown(wait=True, cancel_futures=True)


def _in_order(lanes: list[_Lane], chunks: Iterator[pa.Table]) -> Results:
    window: _Window = deque()  # in input order
    most = AHEAD * sum(lane.depth for lane in lanes)
    try:
        start = 0
        for chunk in chunks:
            while True:
                while window and window[0][1].done():  # write what is ready before reading more
                    yield _hand_back(window)
                lane = _free_lane(lanes, window) if len(window) < most else None
                if lane is not None:
                    break
                wait([f for _, f in window if not f.done()], return_when=FIRST_COMPLETED)
            window.append((lane, lane.executor.submit(lane.score, chunk, start)))
            start += chunk.num_rows
        while window:
            yield _hand_back(window)
    finally:
        for _, pending in window:
            pending.cancel()


def _free_lane(lanes: list[_Lane], window: _Window) -> _Lane | None:
    busy = {id(lane): 0 for lane in lanes}
    for lane, future in window:
        busy[id(lane)] += not future.done()
    free = [lane for lane in lanes if busy[id(lane)] < lane.depth]
    return min(free, key=lambda lane: busy[id(lane)] / lane.depth) if free else None


def _hand_back(window: _Window) -> ChunkResult:
    return window.popleft()[1].result()


def scorer_for(plan: Plan) -> ChunkScorer:
    from modelpack.model import load

    model = load(plan.model_path, trust=plan.trust)
    return ChunkScorer(model, plan.features, plan.passthrough, plan.on_error, plan.text_types)


def _spawn_helpers(plan: Plan, count: int) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(
        count,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_helper,
        initargs=(plan,),
    )
    for _ in range(count):  # each submit starts one process: they all load the model from now
        pool.submit(_ready)
    return pool


_HELPER_SCORER: ChunkScorer | None = None


def _init_helper(plan: Plan) -> None:
    global _HELPER_SCORER
    # The parent owns Ctrl-C: it stops feeding chunks and removes the staged output.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _HELPER_SCORER = scorer_for(plan)


def _ready() -> None:
    return None


def _score_in_helper(chunk: pa.Table, start: int) -> ChunkResult:
    assert _HELPER_SCORER is not None
    return _HELPER_SCORER.score(chunk, start)
