"""One loaded model as the server sees it: decode, predict (batched or not), describe."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from modelpack.errors import ModelpackError, PredictionError
from modelpack.plugins import Predictor
from modelpack.signature import Signature

from ._batching import BatchingPredictor, rows_of
from ._codecs import InvocationDecoder

log = logging.getLogger("modelpack.serve")

# A predict this quick (recent calls, slow ones weighing in at once) on a request this small runs
# on the event loop: the hop to a worker thread and back costs about as much as the model, and
# one GIL means the thread would not run beside the loop anyway.
_INLINE_PREDICT_S = 0.002
_INLINE_ROWS = 256


@dataclass(frozen=True)
class ServeOptions:
    """How one server process serves its model (the CLI's options)."""

    name: str = "model"
    max_batch_size: int = 0  # 0: batching off
    max_latency_ms: float = 5.0
    max_queue_size: int = 1024
    max_body_bytes: int = 64 * 1024 * 1024
    timeout_s: float = 60.0
    sagemaker: bool = False


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
        self.predictor = predictor
        self.signature = signature
        self.info = dict(info or {})
        self.decoder = InvocationDecoder(signature)
        self._on_batch = on_batch
        self._takes_params = "params" in inspect.signature(predictor.predict).parameters
        self._predict_s: float | None = None  # None until a predict (the warm-up) is timed
        self.batcher = (
            BatchingPredictor(
                predictor,
                max_batch_size=options.max_batch_size,
                max_latency_ms=options.max_latency_ms,
                max_queue_size=options.max_queue_size,
                on_batch=on_batch,
            )
            if options.max_batch_size > 1
            else None
        )

    def predict_now(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Predict in the calling thread (start-up warm-up, and the unbatched path)."""
        if self._on_batch is not None:
            self._on_batch(rows_of(data) or 1)
        start = time.perf_counter()
        try:
            if params and self._takes_params:
                return self.predictor.predict(data, params=dict(params))  # type: ignore[call-arg]
            return self.predictor.predict(data)
        except ModelpackError:
            raise
        except Exception as exc:
            log.exception("the model failed to predict")
            raise PredictionError(f"the model failed: {type(exc).__name__}: {exc}") from exc
        finally:
            took, prev = time.perf_counter() - start, self._predict_s
            self._predict_s = took if prev is None or took > prev else 0.9 * prev + 0.1 * took

    async def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Predict in the batcher's thread, a worker thread, or inline when quick and small."""
        if self.batcher is not None and not params:
            future = self.batcher.submit(data)
            try:
                return await asyncio.wrap_future(future)
            except ModelpackError:
                raise
            except Exception as exc:
                log.error("the model failed to predict: %r", exc)
                raise PredictionError(f"the model failed: {type(exc).__name__}: {exc}") from exc
        recent = self._predict_s
        if recent is not None and recent < _INLINE_PREDICT_S:
            rows = rows_of(data)
            if rows is not None and rows <= _INLINE_ROWS:
                return self.predict_now(data, params)
        return await anyio.to_thread.run_sync(
            self.predict_now, data, params, abandon_on_cancel=True
        )

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
