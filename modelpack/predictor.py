"""``EnforcingPredictor``: any Predictor behind its model's signature.

The one place where a model's input is checked and its inference parameters are passed on:
``modelpack.load``, the HTTP server, batch scoring, Spark and the ONNX runtime all predict
through it, so a flavor's predictor sees only data that matches the signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelpack.plugins import HasNative, Predictor, takes_params

if TYPE_CHECKING:
    from modelpack.signature import Signature


class EnforcingPredictor:
    """Wraps ``inner`` with ``signature`` enforcement (none when the model has no signature).

    ``predict`` checks and converts the input (``SignatureError`` naming the column or
    tensor), then calls ``inner``; ``call`` is for input already checked by ``enforce`` (a
    server that decodes and checks in one step, a batch scorer that checks before it
    bisects). ``params`` reach ``inner`` only when its ``predict`` declares them.
    """

    def __init__(self, inner: Predictor, signature: Signature | None) -> None:
        self.inner: Predictor = inner.inner if isinstance(inner, EnforcingPredictor) else inner
        self.signature = signature
        self.takes_params = takes_params(self.inner)

    @property
    def native(self) -> Any:
        """The library object ``inner`` wraps, if it exposes one."""
        return self.inner.native if isinstance(self.inner, HasNative) else None

    def enforce(self, data: Any) -> Any:
        return self.signature.enforce(data) if self.signature is not None else data

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        return self.call(self.enforce(data), params)

    def call(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        if params and self.takes_params:
            return self.inner.predict(data, params=dict(params))
        return self.inner.predict(data)

    def __repr__(self) -> str:
        return f"EnforcingPredictor({self.inner!r})"


__all__ = ["EnforcingPredictor"]
