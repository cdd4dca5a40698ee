"""Scoring one chunk: signature-checked prediction, bad rows found by bisection on failure.

A chunk can fail at three steps, and each failure is narrowed down to the rows that cause it:

* a CSV cell that does not parse as the numeric type the signature gives its column (the
  reader hands such columns over as text): only the rows whose cells do not parse fail;
* the model's signature (an int64 value out of an int8 column's range...);
* the model itself (scikit-learn raising on a NaN...): the chunk is split in halves until the
  rows the model raises on are single rows; the halves that succeed keep their predictions.

With ``on_error="skip"`` the failed rows become entries of the errors file and the others are
scored; with ``"fail"`` the first failure stops the job in one line naming it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from modelpack.errors import InvalidInputError, ModelpackError, PredictionError, SignatureError
from modelpack.model import Model

ON_ERROR = ("fail", "skip")

# Signature types whose CSV columns are read as text and parsed here, cell by cell when a cell
# does not parse: the widest Arrow type of their kind (the signature narrows and range-checks).
TEXT_TARGETS: dict[str, pa.DataType] = {
    **{t: pa.int64() for t in ("int8", "int16", "int32", "int64")},
    **{t: pa.uint64() for t in ("uint8", "uint16", "uint32", "uint64")},
    **{t: pa.float64() for t in ("float16", "float32", "float64")},
}
# The cells pyarrow's CSV reader reads as null in a numeric column ("", "NA", "NaN", "null"...).
_NULL_TEXT = pa.array(pcsv.ConvertOptions().null_values, pa.string())
_SKIP_HINT = "; pass --on-error skip to skip bad rows"


@dataclass
class ChunkResult:
    start: int
    rows: int
    table: pa.Table | None
    errors: list[dict[str, Any]] = field(default_factory=list)


def describe(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class ChunkScorer:
    """Scores Arrow chunks with ``model.predict`` (which enforces the signature)."""

    def __init__(
        self,
        model: Model,
        features: Sequence[str] | None,
        passthrough: Sequence[str],
        on_error: str,
        text_types: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.features = list(features) if features is not None else None
        self.passthrough = list(passthrough)
        self.on_error = on_error
        self.text_types = dict(text_types or {})

    def score(self, chunk: pa.Table, start: int) -> ChunkResult:
        n = chunk.num_rows
        rows = np.arange(n)  # each row of ``chunk`` as a position in the chunk as read
        errors: list[tuple[int, str, str]] = []  # (position, code, message)
        chunk, unparsed = self._parse_text(chunk, start)
        if unparsed:
            errors += [(p, SignatureError.code, m) for p, m in unparsed.items()]
            keep = np.setdiff1d(rows, list(unparsed))
            chunk, rows = chunk.take(keep), rows[keep]
        inputs = chunk.select(self.features) if self.features is not None else chunk
        frame = inputs.to_pandas()
        table: pa.Table | None = None
        try:
            predictions = self.model.predict(frame) if len(frame) else None
        except SignatureError as exc:
            if self.on_error == "fail" or exc.got == "missing":
                raise SignatureError(
                    f"rows {start}-{start + n - 1} fail the model's signature: {exc.message}"
                    + ("" if exc.got == "missing" else _SKIP_HINT),
                    field=exc.field,
                    expected=exc.expected,
                    got=exc.got,
                ) from None
            bad = self._bad_rows(frame, 0, len(frame))
            if not bad:
                raise  # the predictor itself objects to the whole chunk: not a row problem
            errors += [(int(rows[i]), e.code, e.message) for i, e in bad]
            keep = np.setdiff1d(np.arange(len(frame)), [i for i, _ in bad])
            chunk, rows = chunk.take(keep), rows[keep]
            frame = frame.iloc[keep].reset_index(drop=True)
            table, failed = self._isolate(frame, start, rows)
        except Exception as exc:
            if not _row_level(exc):
                raise
            table, failed = self._isolate(frame, start, rows)
        else:
            failed = []
            if predictions is not None:
                table = predictions_table(predictions, chunk.num_rows)
        if failed:  # rows the model raised on: out of the chunk, into the errors
            errors += [(int(rows[i]), code, message) for i, code, message in failed]
            chunk = chunk.take(np.setdiff1d(np.arange(chunk.num_rows), [i for i, *_ in failed]))
        if table is not None and chunk.num_rows:
            table = _with_passthrough(table, chunk, self.passthrough)
        records = [
            {"row": start + p, "error": code, "message": message}
            for p, code, message in sorted(errors, key=lambda e: e[0])
        ]
        return ChunkResult(start, n, table if chunk.num_rows else None, records)

    # -- cells that do not parse ------------------------------------------------------------

    def _parse_text(self, chunk: pa.Table, start: int) -> tuple[pa.Table, dict[int, str]]:
        """Text columns (CSV, JSON Lines) parsed to their signature's type; cells that do not."""
        unparsed: dict[int, str] = {}
        for name, want in self.text_types.items():
            if name not in chunk.column_names:
                continue
            column = chunk.column(name)
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                continue
            text = column.combine_chunks().cast(pa.string())
            text = pc.if_else(pc.is_in(text, value_set=_NULL_TEXT), None, text)
            target = TEXT_TARGETS[want]
            try:
                parsed = pc.cast(text, target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                bad = _unparseable(text, target, 0, len(text))
                for p in bad:
                    message = f"column {name!r}: expected {want}, got {_cell(text[p].as_py())}"
                    if self.on_error == "fail":
                        raise SignatureError(
                            f"row {start + p} fails the model's signature: {message}" + _SKIP_HINT,
                            field=name,
                            expected=want,
                            got=text[p].as_py(),
                        ) from None
                    unparsed.setdefault(p, message)
                mask = np.zeros(len(text), dtype=bool)
                mask[bad] = True
                parsed = pc.cast(pc.if_else(pa.array(mask), None, text), target)
            chunk = chunk.set_column(chunk.column_names.index(name), name, parsed)
        return chunk, unparsed

    # -- rows the model raises on -----------------------------------------------------------

    def _isolate(
        self, frame: pd.DataFrame, start: int, rows: np.ndarray
    ) -> tuple[pa.Table | None, list[tuple[int, str, str]]]:
        """Predictions for the rows of ``frame`` the model takes; the rows it raises on.

        The failing range is halved until the failures are single rows; the ranges that succeed
        on the way keep their predictions, so a row is not predicted again once it succeeded.
        Failures are ``(index in frame, code, message)``. With ``on_error="fail"`` the first
        failing row (in input order) stops the job; ``rows`` maps indices to input rows.
        """
        parts: list[pa.Table] = []
        failed: list[tuple[int, str, str]] = []
        pending = [(0, len(frame))] if len(frame) else []  # a stack: ranges in input order
        while pending:
            lo, hi = pending.pop()
            try:
                predictions = self.model.predict(frame.iloc[lo:hi].reset_index(drop=True))
            except Exception as exc:
                if not _row_level(exc):
                    raise
                if hi - lo > 1:
                    mid = (lo + hi) // 2
                    pending += [(mid, hi), (lo, mid)]
                    continue
                if self.on_error == "fail":
                    raise PredictionError(
                        f"row {start + int(rows[lo])}: the model failed: {describe(exc)}"
                        + _SKIP_HINT
                    ) from exc
                code = exc.code if isinstance(exc, ModelpackError) else PredictionError.code
                failed.append((lo, code, describe(exc)))
                continue
            parts.append(predictions_table(predictions, hi - lo))
        if not parts:
            return None, failed
        try:
            return pa.concat_tables(parts, promote_options="permissive"), failed
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Ranges whose outputs do not share a type: predict the rows that succeeded at once.
            keep = np.setdiff1d(np.arange(len(frame)), [i for i, *_ in failed])
            predictions = self.model.predict(frame.iloc[keep].reset_index(drop=True))
            return predictions_table(predictions, len(keep)), failed

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


def _row_level(exc: Exception) -> bool:
    """Whether ``exc`` may come from some rows only (a model's own error), so worth isolating.

    modelpack's own errors (a missing dependency, a broken plugin...) are about the job, not
    its rows, except a :class:`PredictionError` or :class:`SignatureError` a predictor raises.
    """
    return not isinstance(exc, ModelpackError) or isinstance(exc, (PredictionError, SignatureError))


def _unparseable(text: pa.Array, target: pa.DataType, lo: int, hi: int) -> list[int]:
    """Positions in ``text[lo:hi]`` that do not cast to ``target``, by bisection."""
    try:
        pc.cast(text[lo:hi], target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if hi - lo == 1:
            return [lo]
        mid = (lo + hi) // 2
        return _unparseable(text, target, lo, mid) + _unparseable(text, target, mid, hi)
    return []


def _cell(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
