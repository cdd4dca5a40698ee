"""Request bodies of ``/invocations`` (MLflow's scoring protocol) into model input.

JSON goes through :func:`modelpack.payload.decode`; a ``dataframe_split`` of plain numbers for
an all-numeric column signature takes a fast path that builds the checked DataFrame straight
from one numpy array (no per-cell pandas inference, no second enforcement), and so does an
``inputs`` list of numbers for a signature of one numeric tensor (the batched torch model's
request: a third of its decode time).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pandas as pd

from modelpack.errors import InvalidInputError, UnsupportedMediaTypeError
from modelpack.payload import decode
from modelpack.signature import Signature

JSON_TYPES = ("application/json", "")
CSV_TYPES = ("text/csv", "application/csv")
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet")
_NUMERIC = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_FLOATS = ("float16", "float32", "float64")


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the body is not valid JSON: {exc}") from exc


class InvocationDecoder:
    """Turns one ``/invocations`` body into (checked model input, params)."""

    def __init__(self, signature: Signature | None) -> None:
        self.signature = signature
        self._fast: tuple[list[str], list[np.dtype[Any]]] | None = None
        self._index: pd.Index | None = None
        if signature is not None and not signature.inputs.is_tensor:
            cols = signature.inputs.columns
            if cols and all(c.required and c.dtype in _NUMERIC + _FLOATS for c in cols):
                self._fast = ([c.name for c in cols], [np.dtype(c.dtype) for c in cols])
                # An object-dtype column index, built once: pandas 3 would otherwise make an
                # Arrow-backed string index per request, and every consumer that lists the
                # columns (scikit-learn's feature-name check: ~0.5 ms a call) pays to convert it.
                self._index = pd.Index(self._fast[0], dtype=object)
        self._tensor: tuple[np.dtype[Any], tuple[int, ...]] | None = None
        if signature is not None and signature.inputs.is_tensor:
            specs = signature.inputs.tensors
            if len(specs) == 1 and specs[0].dtype in _NUMERIC + _FLOATS:
                self._tensor = (np.dtype(specs[0].dtype), tuple(specs[0].shape))

    def decode(self, raw: bytes, content_type: str) -> tuple[Any, dict[str, Any]]:
        kind = media_type(content_type)
        if kind in JSON_TYPES:
            return self.decode_json(parse_json(raw))
        if kind in CSV_TYPES:
            return self.enforce(_read_csv(raw)), {}
        if kind in PARQUET_TYPES:
            return self.enforce(_read_parquet(raw)), {}
        raise UnsupportedMediaTypeError(
            f"unsupported content type {kind!r}; send application/json, text/csv or "
            f"{PARQUET_TYPES[0]}"
        )

    def decode_json(self, body: Any) -> tuple[Any, dict[str, Any]]:
        if self._fast is not None and isinstance(body, dict) and len(body) == 1:
            split = body.get("dataframe_split")
            if isinstance(split, dict):
                frame = self._fast_frame(split)
                if frame is not None:
                    return frame, {}
        if self._tensor is not None and isinstance(body, dict) and len(body) == 1:
            tensor = self._fast_tensor(body.get("inputs"))
            if tensor is not None:
                return tensor, {}
        data, params = decode(body)
        return self.enforce(data), params

    def enforce(self, data: Any) -> Any:
        if self.signature is None:
            return data
        if isinstance(data, pd.DataFrame) and not self.signature.inputs.is_tensor:
            # A server drops extra columns silently (the warning is for interactive use).
            known = set(self.signature.inputs.names())
            extra = [c for c in data.columns if str(c) not in known]
            if extra:
                data = data.drop(columns=extra)
        return self.signature.enforce(data)

    def _fast_frame(self, split: Mapping[str, Any]) -> pd.DataFrame | None:
        assert self._fast is not None
        names, dtypes = self._fast
        columns, rows = split.get("columns"), split.get("data")
        if columns != names or not isinstance(rows, list) or not rows:
            return None
        try:
            arr = np.asarray(rows)
        except ValueError:
            return None
        if arr.ndim != 2 or arr.shape[1] != len(names) or arr.dtype.kind not in "iuf":
            return None  # ragged, null or text cells: the slow path explains what is wrong
        if len(set(dtypes)) == 1:
            want = dtypes[0]
            if want.kind in "iu" and arr.dtype.kind == "f":
                return None
            if want.kind in "iu" and not np.can_cast(arr.dtype, want):
                return None
            return pd.DataFrame(arr.astype(want, copy=False), columns=self._index, copy=False)
        out: dict[str, np.ndarray] = {}
        for i, (name, want) in enumerate(zip(names, dtypes, strict=True)):
            col = arr[:, i]
            if want.kind in "iu" and (arr.dtype.kind == "f" or not np.can_cast(arr.dtype, want)):
                return None
            out[name] = col.astype(want)
        return pd.DataFrame(out, columns=self._index)

    def _fast_tensor(self, value: Any) -> np.ndarray | None:
        """``inputs`` as the checked array, or None for the general path (which explains)."""
        assert self._tensor is not None
        if not isinstance(value, list) or not value:
            return None
        want, shape = self._tensor
        try:
            arr = np.asarray(value)
        except ValueError:
            return None
        if arr.dtype.kind not in "iuf" or arr.ndim != len(shape) or not arr.shape[0]:
            return None
        if any(w != -1 and w != g for w, g in zip(shape, arr.shape, strict=True)):
            return None
        if want.kind in "iu" and not np.can_cast(arr.dtype, want, "safe"):
            return None  # the general path checks the values' range
        return arr.astype(want, copy=False)


def _read_csv(raw: bytes) -> pd.DataFrame:
    try:
        return pd.read_csv(io.BytesIO(raw))
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"the body is not valid CSV: {exc}") from exc


def _read_parquet(raw: bytes) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInputError(f"the body is not a valid Parquet file: {exc}") from exc
    try:
        return table.to_pandas()
    except Exception as exc:  # the file's own "pandas" metadata (index, column types) is broken
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise InvalidInputError(
            f"the Parquet file's pandas metadata is malformed ({type(exc).__name__}: {reason}); "
            "write it with pandas or pyarrow, or without that metadata"
        ) from exc
