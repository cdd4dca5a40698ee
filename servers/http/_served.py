"""One loaded model as the server sees it: decode, predict (batched or not), describe."""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from modelpack.errors import ModelpackError, PredictionError
from modelpack.plugins import Predictor
from modelpack.predictor import EnforcingPredictor
from modelpack.signature import Signature

from ._batching import BatchingPredictor, rows_of
from ._codecs import InvocationDecoder

log = logging.getLogger("modelpack.serve")

# A predict this quick (the median of recent ones timed on the event loop) on a request this
# small runs on the event loop: the hop to a worker thread and back costs about as much as the
# model, and one GIL means the thread would not run beside the loop anyway.
_INLINE_PREDICT_S = 0.002
_INLINE_ROWS = 256


class InlinePolicy:
    """Decides, per small request, whether its predict runs on the event loop or in a thread.

    Only predicts timed on the event loop (or at warm-up) count: one in a worker thread also
    waits for the GIL behind the loop, so its time says little about the model and would keep
    a quick model in threads for good. The median of the last few ignores the odd call the OS
    preempted; one call over 50 ms moves to threads at once. Once in threads, a request now and
    then (every 16th, backing off to every 1,024th while the probes stay slow) runs on the loop
    to time it again, unless the model is plainly slow (median over 50 ms).
    """

    WINDOW = 8
    FIRST_PROBE = 16
    MAX_GAP = 1024
    NEVER_INLINE_S = 0.05

    def __init__(self, limit_s: float = _INLINE_PREDICT_S) -> None:
        self.limit_s = limit_s
        self._samples: collections.deque[float] = collections.deque(maxlen=self.WINDOW)
        self.median_s: float | None = None
        self.threaded = True  # until a predict has been timed
        self._gap = 0
        self._countdown = self.FIRST_PROBE

    def record(self, seconds: float) -> None:
        self._samples.append(seconds)
        ordered = sorted(self._samples)
        self.median_s = ordered[(len(ordered) - 1) // 2]  # the lower one of an even count
        # One call past the never-inline bound is no preemption: off the loop at once.
        self.threaded = self.median_s >= self.limit_s or seconds >= self.NEVER_INLINE_S
        if self.threaded:
            slow = seconds >= self.limit_s  # a quick probe keeps the next one near
            self._gap = min(max(self._gap * 2, self.FIRST_PROBE), self.MAX_GAP) if slow else 0
            self._countdown = max(self._gap, self.FIRST_PROBE)

    def inline(self) -> bool:
        if not self.threaded:
            return True
        if self.median_s is not None and self.median_s >= self.NEVER_INLINE_S:
            return False
        self._countdown -= 1
        return self._countdown <= 0


@dataclass(frozen=True)
class ServeOptions:
    """How one server process serves its model (the CLI's options)."""

    name: str = "model"
    max_batch_size: int = 0  # 0: batching off
    max_latency_ms: float = 5.0
    max_queue_size: int = 1024
    max_body_bytes: int = 64 * 1024 * 1024
    # Request bytes being decoded at once (a 50 MB JSON table takes ~8x its size while pandas
    # builds it): past it, 503 with Retry-After. One body is always let through.
    max_decode_bytes: int = 128 * 1024 * 1024
    timeout_s: float = 60.0
    sagemaker: bool = False
    # The server owns its process (the CLI, a worker): torch's threads leave a core to the
    # event loop, and models import their libraries with SciPy's docstrings as written
    # (modelpack/_startup.py). Off for an app embedded in someone else's process.
    owns_process: bool = False
    # One model loaded once (the CLI's single-model server): the collector is paused while it
    # loads, then the start-up heap is frozen, so later full collections skip the millions of
    # objects that loading torch/pandas/scikit-learn left behind (~0.1-0.15 s pauses
    # otherwise, stalling every request in flight). Not where models come and go (their
    # cycles would stay frozen), nor in someone else's process unless they ask.
    freeze_heap: bool = False


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def leave_a_core_to_the_event_loop() -> int | None:
    """Cap torch's intra-op threads at the cores less one; the new count, or None if unchanged.

    The event loop parses, decodes and answers requests beside the model: with every core in
    torch's OpenMP team, the team's threads spin-wait on the loop's core after each parallel
    section (libgomp's default), and a team member the OS parks for the loop stalls the whole
    section at its barrier. Measured on 2 cores, a 64-row batch of a 2048-wide MLP took 15 ms
    on one thread and 40-80 ms on two while the server answered requests (bench_batching.py).
    Only for a server that owns its process, and never over a count the user chose
    (``OMP_NUM_THREADS``, or ``torch.set_num_threads`` below the default).
    """
    torch = sys.modules.get("torch")  # a model that never imported torch has no team to cap
    if torch is None or os.environ.get("OMP_NUM_THREADS"):
        return None
    want = max(1, _cores() - 1)
    if torch.get_num_threads() <= want:
        return None
    torch.set_num_threads(want)
    return want


@contextlib.contextmanager
def _model_failures(*, traceback: bool) -> Iterator[None]:
    """A model's own exception becomes ``PredictionError`` (a 500 that names it), logged."""
    try:
        yield
    except ModelpackError:
        raise
    except Exception as exc:
        if traceback:
            log.exception("the model failed to predict")
        else:
            log.error("the model failed to predict: %r", exc)
        raise PredictionError(f"the model failed: {type(exc).__name__}: {exc}") from exc


class ServedModel:
    def __init__(
        self,
        predictor: Predictor,
        signature: Signature | None,
        options: ServeOptions,
        *,
        info: Mapping[str, Any] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        # The decoder checks requests against the signature as it decodes them; the predictor
        # is then called with checked input (``call``), params only when it declares them.
        self.predictor = EnforcingPredictor(predictor, signature)
        self.signature = signature
        self.info = dict(info or {})
        self.decoder = InvocationDecoder(signature)
        self._on_batch = on_batch
        if options.owns_process:
            threads = leave_a_core_to_the_event_loop()
            if threads is not None:
                log.info("torch uses %d intra-op thread(s): one core is the event loop's", threads)
        self.inline_policy = InlinePolicy()
        # Where each request's predict ran (the event loop only ever touches this).
        self.placed = dict.fromkeys(("event_loop", "thread", "batcher"), 0)
        self.batcher = (
            BatchingPredictor(
                self.predictor.inner,  # merged requests were each checked when decoded
                max_batch_size=options.max_batch_size,
                max_latency_ms=options.max_latency_ms,
                max_queue_size=options.max_queue_size,
                on_batch=on_batch,
            )
            if options.max_batch_size > 1
            else None
        )

    def predict_now(
        self, data: Any, params: Mapping[str, Any] | None = None, *, timed: bool = True
    ) -> Any:
        """Predict in the calling thread (start-up warm-up, and the unbatched path).

        ``timed``: the call runs alone (warm-up) or on the event loop, so its time is the
        model's and feeds the inline policy.
        """
        if self._on_batch is not None:
            self._on_batch(rows_of(data) or 1)
        start = time.perf_counter()
        try:
            with _model_failures(traceback=True):
                return self.predictor.call(data, params)
        finally:
            if timed:
                self.inline_policy.record(time.perf_counter() - start)

    async def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Predict in the batcher's thread, a worker thread, or inline when quick and small."""
        if self.batcher is not None and not params:
            self.placed["batcher"] += 1
            with _model_failures(traceback=False):  # one batch failing fails all its requests
                return await self.batcher.predict_async(data)
        rows = rows_of(data)
        if rows is not None and rows <= _INLINE_ROWS and self.inline_policy.inline():
            self.placed["event_loop"] += 1
            return self.predict_now(data, params)
        self.placed["thread"] += 1
        return await anyio.to_thread.run_sync(
            functools.partial(self.predict_now, data, params, timed=False),
            abandon_on_cancel=True,
        )

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
