"""Loaders: what a server process runs once at start-up to get a warmed ServedModel."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from modelpack.plugins import Predictor
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
    def load(options: ServeOptions, on_batch: Callable[[int], None]) -> ServedModel:
        import modelpack

        if flavor == "onnx":
            return _onnx_served(uri, device, options, on_batch)
        model = modelpack.load(uri, trust=trust, device=device, flavor=flavor)
        d = model.descriptor
        info = {
            "model_id": d.model_id,
            "loader": d.loader,
            "flavors": sorted(d.flavors),
            "created_at": d.created_at,
            "modelpack_version": d.modelpack_version,
            "metadata": d.metadata,
        }
        served = ServedModel(
            model.predictor, model.signature, options, info=info, on_batch=on_batch
        )
        warm_up(served, model.input_example())
        return served

    return load


def _onnx_served(
    uri: str, device: str, options: ServeOptions, on_batch: Callable[[int], None]
) -> ServedModel:
    # The model's onnx flavor on ONNX Runtime (`modelpack convert --to onnx` adds it); the
    # predictor picks providers for the device, and is warmed up when it loads.
    from modelpack.descriptor import Descriptor
    from modelpack.servers.onnxruntime import load_predictor
    from modelpack.uris import resolve

    predictor = load_predictor(uri, device=device)
    d = Descriptor.read(resolve(uri))
    info = {
        "model_id": d.model_id,
        "loader": "onnx",
        "flavors": sorted(d.flavors),
        "created_at": d.created_at,
        "modelpack_version": d.modelpack_version,
        "metadata": d.metadata,
        "runtime": {"name": "onnxruntime", "provider": predictor.provider},
    }
    return ServedModel(predictor, predictor.signature, options, info=info, on_batch=on_batch)


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


SPEC_ENV = "MODELPACK_SERVE_SPEC"


def app_from_env() -> Any:
    """The app of one worker process when ``--workers`` > 1 (uvicorn imports it by name)."""
    import os

    import orjson

    from . import HttpServer

    spec = orjson.loads(os.environ[SPEC_ENV])
    return HttpServer().app_for_uri(
        spec["uri"],
        trust=spec.get("trust"),
        flavor=spec.get("flavor"),
        device=spec.get("device", "cpu"),
        **spec["options"],
    )
