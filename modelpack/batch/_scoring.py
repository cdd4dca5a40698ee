"""Scoring one chunk: signature-checked prediction, bad rows found by bisection on failure."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from modelpack.errors import InvalidInputError, PredictionError, SignatureError
from modelpack.model import Model

ON_ERROR = ("fail", "skip")


@dataclass
class ChunkResult:
    start: int
    rows: int
    table: pa.Table | None
    errors: list[dict[str, Any]] = field(default_factory=list)


class ChunkScorer:
    """Scores Arrow chunks with ``model.predict`` (which enforces the signature)."""

    def __init__(
        self,
        model: Model,
        features: Sequence[str] | None,
        passthrough: Sequence[str],
        on_error: str,
    ) -> None:
        self.model = model
        self.features = list(features) if features is not None else None
        self.passthrough = list(passthrough)
        self.on_error = on_error

    def score(self, chunk: pa.Table, start: int) -> ChunkResult:
        n = chunk.num_rows
        inputs = chunk.select(self.features) if self.features is not None else chunk
        frame = inputs.to_pandas()
        errors: list[dict[str, Any]] = []
        try:
            predictions = self.model.predict(frame)
        except SignatureError as exc:
            if self.on_error == "fail" or exc.got == "missing":
                raise SignatureError(
                    f"rows {start}-{start + n - 1} fail the model's signature: {exc.message}"
                    + ("" if exc.got == "missing" else "; pass --on-error skip to skip bad rows"),
                    field=exc.field,
                    expected=exc.expected,
                    got=exc.got,
                ) from None
            bad = self._bad_rows(frame, 0, n)
            if not bad:
                raise  # the predictor itself objects to the whole chunk: not a row problem
            errors = [{"row": start + i, "error": e.code, "message": e.message} for i, e in bad]
            keep = np.setdiff1d(np.arange(n), [i for i, _ in bad])
            chunk = chunk.take(keep)
            frame = frame.iloc[keep].reset_index(drop=True)
            predictions = self.model.predict(frame) if len(keep) else None
        table = None
        if chunk.num_rows:
            table = _with_passthrough(
                predictions_table(predictions, chunk.num_rows), chunk, self.passthrough
            )
        return ChunkResult(start, n, table, errors)

    def _bad_rows(self, frame: pd.DataFrame, lo: int, hi: int) -> list[tuple[int, SignatureError]]:
        signature = self.model.signature
        if signature is None:
            return []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                signature.enforce(frame.iloc[lo:hi])
        except SignatureError as exc:
            if hi - lo == 1:
                return [(lo, exc)]
            mid = (lo + hi) // 2
            return self._bad_rows(frame, lo, mid) + self._bad_rows(frame, mid, hi)
        return []


def predictions_table(predictions: Any, rows: int) -> pa.Table:
    """Predictions as columns: ``prediction`` for one output, named columns for several."""
    columns = _columns(predictions)
    for name, values in columns.items():
        if len(values) != rows:
            raise PredictionError(
                f"the model returned {len(values)} values in {name!r} for {rows} input rows; "
                "batch scoring needs exactly one prediction per row"
            )
    return pa.table(columns)


def _columns(predictions: Any) -> dict[str, Any]:
    if isinstance(predictions, pd.DataFrame):
        return {str(c): _arrow(predictions[c].to_numpy()) for c in predictions.columns}
    if isinstance(predictions, pd.Series):
        name = "prediction" if predictions.name is None else str(predictions.name)
        return {name: _arrow(predictions.to_numpy())}
    if isinstance(predictions, Mapping):
        out: dict[str, Any] = {}
        for key, value in predictions.items():
            out.update(_array_columns(str(key), value))
        return out
    return _array_columns("prediction", predictions)


def _array_columns(name: str, value: Any) -> dict[str, Any]:
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor, without torch
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim == 1:
        return {name: _arrow(arr)}
    if arr.ndim == 2 and arr.shape[1] == 1:
        return {name: _arrow(arr[:, 0])}
    if arr.ndim == 2:
        return {f"{name}_{i}": _arrow(arr[:, i]) for i in range(arr.shape[1])}
    flat = arr.reshape(arr.shape[0], -1)
    return {name: pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])}


def _arrow(values: np.ndarray) -> pa.Array:
    return pa.array(values, from_pandas=True)


def _with_passthrough(
    predictions: pa.Table, chunk: pa.Table, passthrough: Sequence[str]
) -> pa.Table:
    clash = [c for c in passthrough if c in predictions.column_names]
    if clash:
        raise InvalidInputError(
            f"passthrough column(s) {', '.join(map(repr, clash))} clash with the model's "
            "output names; rename them in the input or pass fewer --passthrough columns"
        )
    arrays = [chunk.column(c) for c in passthrough] + list(predictions.columns)
    return pa.table(arrays, names=[*passthrough, *predictions.column_names])
