"""Loaders: what a server process runs once at start-up to get a warmed ServedModel."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from modelpack.plugins import Predictor
from modelpack.predictor import EnforcingPredictor
from modelpack.signature import Signature

from ._served import ServedModel, ServeOptions

log = logging.getLogger("modelpack.serve")

Loader = Callable[[ServeOptions, Callable[[int], None]], ServedModel]


def predictor_loader(predictor: Predictor, signature: Signature | None) -> Loader:
    def load(options: ServeOptions, on_batch: Callable[[int], None]) -> ServedModel:
        return ServedModel(predictor, signature, options, on_batch=on_batch)

    return load


def uri_loader(
    uri: str,
    *,
    trust: bool | list[str] | None = None,
    flavor: str | None = None,
    device: str = "cpu",
) -> Loader:
    """The model at ``uri`` with ``flavor`` (default: its loader) on ``device``.

    ``flavor="onnx"`` is the model's onnx flavor, whose predictor runs ONNX Runtime with the
    execution providers for ``device``; a predictor that reports its ``runtime`` (that one)
    has it in the model's metadata.
    """

    def load(options: ServeOptions, on_batch: Callable[[int], None]) -> ServedModel:
        import modelpack

        model = modelpack.load(uri, trust=trust, device=device, flavor=flavor)
        d = model.descriptor
        info = {
            "model_id": d.model_id,
            "loader": model.flavor.name,
            "flavors": sorted(d.flavors),
            "created_at": d.created_at,
            "modelpack_version": d.modelpack_version,
            "metadata": d.metadata,
        }
        runtime = getattr(_flavor_predictor(model.predictor), "runtime", None)
        if isinstance(runtime, Mapping):
            info["runtime"] = dict(runtime)
        served = ServedModel(
            model.predictor, model.signature, options, info=info, on_batch=on_batch
        )
        warm_up(served, model.input_example())
        return served

    return load


def _flavor_predictor(predictor: Predictor) -> Predictor:
    return predictor.inner if isinstance(predictor, EnforcingPredictor) else predictor


# A first predict this slow is the model's own pace, not a cold start: no more warm-up calls.
_SLOW_FIRST_PREDICT_S = 0.5


def warm_up(served: ServedModel, example: Any) -> None:
    """Predicts before ready: lazy imports, allocations and JITs are paid here, not by a user.

    The first call is cold, so it is not what the inline policy should go by; a few more are
    timed for it (the first alone when it was plainly slow).
    """
    if example is None:
        return
    start = time.perf_counter()
    served.predict_now(example, timed=False)
    cold = time.perf_counter() - start
    if cold >= _SLOW_FIRST_PREDICT_S:
        served.inline_policy.record(cold)
        return
    for _ in range(3):
        served.predict_now(example)
