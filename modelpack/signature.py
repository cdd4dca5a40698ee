"""Model signatures: what a model takes and returns, inferred and enforced.

Two kinds of schema: column-based (a pandas DataFrame: names, dtypes, required,
allow_missing) and tensor-based (numpy arrays or a dict of them: dtype, shape with
-1 for variable dimensions).

Missing values (None, NaN, NA, NaT) are decided per column by ``allow_missing``, the
same whatever the input's format (JSON, CSV, Parquet, v2): a column that does not
allow them refuses a missing value with a :class:`SignatureError` naming the column
and the first row. Inference records ``allow_missing=False`` for a numeric or boolean
column whose example had no missing value, ``True`` when it had one; a signature
saved without the flag (before it existed) allows missing values, as it always did.
Input with no rows is refused ("no rows") rather than handed to the model.

A scipy.sparse matrix (say, a one-hot encoder's output) is a tensor of its dtype and
shape ``[-1, n_columns]``; it is recognised without importing scipy.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from modelpack.errors import InvalidInputError, InvalidModelError, SignatureError

COLUMN_TYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "string",
    "datetime",
    "binary",
    "object",
)


class ExtraColumnsWarning(UserWarning):
    """Input had columns the signature does not name; they were dropped."""


@dataclass(frozen=True)
class ColSpec:
    """One column: ``required``, the column must be present; ``allow_missing``, its values
    may be missing (None/NaN). A descriptor without ``allow_missing`` reads as True."""

    name: str
    dtype: str
    required: bool = True
    allow_missing: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.dtype,
            "required": self.required,
            "allow_missing": self.allow_missing,
        }


@dataclass(frozen=True)
class TensorSpec:
    dtype: str
    shape: tuple[int, ...]
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Schema:
    columns: tuple[ColSpec, ...] = ()
    tensors: tuple[TensorSpec, ...] = ()

    @property
    def is_tensor(self) -> bool:
        return bool(self.tensors)

    def names(self) -> list[str]:
        if self.is_tensor:
            return [t.name or f"input_{i}" for i, t in enumerate(self.tensors)]
        return [c.name for c in self.columns]

    def to_dict(self) -> dict[str, Any]:
        if self.is_tensor:
            return {"type": "tensors", "tensors": [t.to_dict() for t in self.tensors]}
        return {"type": "columns", "columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        try:
            if data["type"] == "tensors":
                return cls(
                    tensors=tuple(
                        TensorSpec(
                            dtype=str(np.dtype(t["dtype"])),
                            shape=tuple(int(d) for d in t["shape"]),
                            name=t.get("name"),
                        )
                        for t in data["tensors"]
                    )
                )
            if data["type"] == "columns":
                cols = tuple(
                    ColSpec(
                        name=str(c["name"]),
                        dtype=c["type"],
                        required=bool(c.get("required", True)),
                        allow_missing=bool(c.get("allow_missing", True)),
                    )
                    for c in data["columns"]
                )
                bad = [c.dtype for c in cols if c.dtype not in COLUMN_TYPES]
                if bad:
                    raise InvalidModelError(f"unknown column type(s) in signature: {bad}")
                return cls(columns=cols)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidModelError(f"malformed schema in signature: {exc!r}") from exc
        raise InvalidModelError(f"unknown schema type {data.get('type')!r} in signature")


@dataclass(frozen=True)
class Signature:
    """What a model takes (``inputs``), returns (``outputs``) and accepts as ``params``."""

    inputs: Schema
    outputs: Schema | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs.to_dict(),
            "outputs": self.outputs.to_dict() if self.outputs else None,
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        if not isinstance(data, Mapping) or "inputs" not in data:
            raise InvalidModelError("malformed signature: 'inputs' is missing")
        outputs = data.get("outputs")
        return cls(
            inputs=Schema.from_dict(data["inputs"]),
            outputs=Schema.from_dict(outputs) if outputs else None,
            params=dict(data.get("params") or {}),
        )

    def enforce(self, data: Any) -> Any:
        """Check and convert ``data`` to the input schema, or raise :class:`SignatureError`."""
        if self.inputs.is_tensor:
            return _enforce_tensors(data, self.inputs.tensors)
        return _enforce_columns(data, self.inputs.columns)


# -- inference -------------------------------------------------------------------------------


def infer_signature(model_input: Any, model_output: Any = None) -> Signature:
    """Infer a signature from an input example and, optionally, the model's output on it."""
    outputs = infer_schema(model_output) if model_output is not None else None
    return Signature(inputs=infer_schema(model_input), outputs=outputs)


def infer_schema(data: Any) -> Schema:
    """The schema of ``data``: columns for a table, tensors for arrays (scipy.sparse too)."""
    if isinstance(data, pd.Series):
        data = data.to_frame(name=data.name if data.name is not None else "prediction")
    if isinstance(data, pd.DataFrame):
        return Schema(
            columns=tuple(_col_spec(str(n), data.iloc[:, i]) for i, n in enumerate(data.columns))
        )
    if is_sparse(data):
        return Schema(tensors=(_sparse_spec(data, None),))
    if isinstance(data, Mapping):
        if all(isinstance(v, np.ndarray) for v in data.values()):
            return Schema(tensors=tuple(_tensor_spec(v, str(k)) for k, v in data.items()))
        return infer_schema(pd.DataFrame(_as_columns(data)))
    if isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
        return infer_schema(pd.DataFrame.from_records(data))
    arr = _as_array(data)
    return Schema(tensors=(_tensor_spec(arr, None),))


def is_sparse(data: Any) -> bool:
    """A scipy.sparse matrix or array, told by duck typing (scipy is never imported here)."""
    return hasattr(data, "toarray") and hasattr(data, "nnz") and hasattr(data, "shape")


def _sparse_spec(data: Any, name: str | None) -> TensorSpec:
    shape = tuple(int(d) for d in data.shape)
    return TensorSpec(dtype=str(np.dtype(data.dtype)), shape=(-1, *shape[1:]), name=name)


# Column types whose missing values reach the model as NaN: inference records whether the
# example had any. Text, dates and objects keep allowing them (a missing text is often valid).
_MISSING_CHECKED = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
    | {"float16", "float32", "float64"}
)


def _col_spec(name: str, col: pd.Series) -> ColSpec:
    dtype = _column_type(col)
    allow = dtype not in _MISSING_CHECKED or bool(col.isna().any())
    return ColSpec(name, dtype, allow_missing=allow)


def _as_columns(data: Mapping[str, Any]) -> dict[str, Any]:
    if all(np.isscalar(v) or v is None for v in data.values()):
        return {k: [v] for k, v in data.items()}
    return dict(data)


def _as_array(data: Any) -> np.ndarray:
    if hasattr(data, "detach") and hasattr(data, "numpy"):  # a torch tensor, without torch
        data = data.detach().cpu().numpy()
    try:
        return np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"cannot read the data as an array: {exc}") from exc


def _tensor_spec(arr: np.ndarray, name: str | None) -> TensorSpec:
    shape = (-1, *arr.shape[1:]) if arr.ndim else ()
    return TensorSpec(dtype=str(arr.dtype), shape=shape, name=name)


def _column_type(col: pd.Series) -> str:
    dtype = col.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return str(getattr(dtype, "numpy_dtype", dtype))
    if pd.api.types.is_float_dtype(dtype):
        return str(getattr(dtype, "numpy_dtype", dtype))
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    kind = pd.api.types.infer_dtype(col, skipna=True)
    if kind in ("string", "categorical"):
        return "string"
    if kind == "bytes":
        return "binary"
    if kind == "empty":
        return "object"
    if kind == "boolean":
        return "bool"
    return "object"


# -- enforcement -----------------------------------------------------------------------------


def to_frame(data: Any, columns: tuple[ColSpec, ...] = ()) -> pd.DataFrame:
    """Read a DataFrame, dict of columns, list of records or 2-D array as a DataFrame."""
    if isinstance(data, pd.DataFrame):
        return data.copy(deep=False)
    if isinstance(data, pd.Series):
        return data.to_frame()
    if isinstance(data, Mapping):
        try:
            return pd.DataFrame(_as_columns(data))
        except ValueError as exc:
            raise InvalidInputError(f"cannot read the columns as a table: {exc}") from exc
    if isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
        return pd.DataFrame.from_records(data)
    arr = _as_array(data)
    if arr.ndim and arr.shape[0] == 0:
        raise _no_rows(list(arr.shape))
    if arr.ndim == 1 and len(columns) == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or (columns and arr.shape[1] != len(columns)):
        raise SignatureError(
            f"expected a table with {len(columns)} columns, got an array of shape {arr.shape}",
            field=None,
            expected=len(columns),
            got=arr.shape,
        )
    frame = pd.DataFrame(arr, columns=[c.name for c in columns] if columns else None)
    return frame.infer_objects()


_NUMPY_COLUMN_TYPES = frozenset(
    t for t in COLUMN_TYPES if t not in ("string", "datetime", "binary")
)


def _already_conforms(frame: pd.DataFrame, specs: tuple[ColSpec, ...]) -> bool:
    # The hot path of a server: the right columns in order, each already of its exact numpy type.
    if len(frame.columns) != len(specs):
        return False
    for name, dtype, spec in zip(frame.columns, frame.dtypes, specs, strict=True):
        if name != spec.name or spec.dtype not in _NUMPY_COLUMN_TYPES or dtype != spec.dtype:
            return False
    return True


def _no_rows(got: Any) -> SignatureError:
    return SignatureError(
        "no rows: the input is empty; send at least one row",
        field=None,
        expected="at least one row",
        got=got,
    )


def _check_missing_conforming(frame: pd.DataFrame, specs: tuple[ColSpec, ...]) -> None:
    # The serving hot path: one look at the whole block (~3 us on a small frame) where column
    # by column costs ~15 us each; only a frame with a missing value goes column by column.
    values = frame.to_numpy()
    if values.dtype.kind in "iub":
        return
    if values.dtype.kind == "f" and np.isfinite(values).all():
        return
    for spec, name in zip(specs, frame.columns, strict=True):
        if not spec.allow_missing:
            _check_missing(frame[name], spec)


def _check_missing(col: pd.Series, spec: ColSpec) -> None:
    """Refuse a missing value in a column that does not allow them, naming the first row."""
    if spec.allow_missing:
        return
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "iub":
        return  # plain numpy integers and booleans cannot hold a missing value
    if isinstance(col.dtype, np.dtype) and col.dtype.kind == "f":
        # An example of finite numbers: an infinity is as foreign to the model as a NaN.
        mask = ~np.isfinite(col.to_numpy())
    else:
        mask = col.isna().to_numpy(dtype=bool)
    if not mask.any():
        return
    row = int(np.argmax(mask))
    raise SignatureError(
        f"column {spec.name!r}: missing or infinite value at row {row}; the signature does not "
        "allow them in this column (allow_missing is false: its example had none)",
        field=spec.name,
        expected=spec.dtype,
        got="missing value",
    )


def _enforce_columns(data: Any, specs: tuple[ColSpec, ...]) -> pd.DataFrame:
    frame = to_frame(data, specs)
    if len(frame) == 0:
        raise _no_rows(f"0 rows of {len(frame.columns)} column(s)")
    if _already_conforms(frame, specs):
        if not all(spec.allow_missing for spec in specs):
            _check_missing_conforming(frame, specs)
        return frame
    frame.columns = [str(c) for c in frame.columns]
    names = [c.name for c in specs]
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in frame.columns:
            if spec.required:
                raise SignatureError(
                    f"missing required column {spec.name!r} (type {spec.dtype})",
                    field=spec.name,
                    expected=spec.dtype,
                    got="missing",
                )
            out[spec.name] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
            continue
        _check_missing(frame[spec.name], spec)
        out[spec.name] = _coerce_column(frame[spec.name], spec)
    extra = [c for c in frame.columns if c not in names]
    if extra:
        warnings.warn(
            f"dropping column(s) not in the signature: {', '.join(extra)}",
            ExtraColumnsWarning,
            stacklevel=3,
        )
    return pd.DataFrame(out, index=frame.index)


def _fail(spec_name: str, expected: str, got: Any, why: str = "") -> SignatureError:
    msg = f"column {spec_name!r}: expected {expected}, got {got}"
    return SignatureError(
        msg + (f" ({why})" if why else ""), field=spec_name, expected=expected, got=str(got)
    )


def _coerce_column(col: pd.Series, spec: ColSpec) -> pd.Series:
    want, dtype = spec.dtype, col.dtype
    if want == "object":
        return col
    if want in ("string", "binary"):
        kind = pd.api.types.infer_dtype(col, skipna=True)
        ok = ("string", "categorical", "empty") if want == "string" else ("bytes", "empty")
        if kind not in ok:
            raise _fail(spec.name, want, kind)
        return col
    if want == "datetime":
        if pd.api.types.is_datetime64_any_dtype(dtype):
            return col
        try:
            return pd.to_datetime(col)
        except (ValueError, TypeError) as exc:
            raise _fail(spec.name, want, dtype, "not parseable as datetime") from exc
    if pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype):
        inferred = col.infer_objects()
        if inferred.dtype == object:
            kind = pd.api.types.infer_dtype(col, skipna=True)
            if kind == "empty" and len(col):  # nothing but missing values (JSON nulls)
                return pd.Series(np.full(len(col), np.nan), index=col.index, name=col.name)
            raise _fail(spec.name, want, kind)
        col, dtype = inferred, inferred.dtype
    has_na = bool(col.isna().any())
    target = np.dtype(want)
    if want == "bool":
        if not pd.api.types.is_bool_dtype(dtype):
            raise _fail(spec.name, want, dtype)
        return col.astype("float64") if has_na else col.astype(bool)
    is_int = pd.api.types.is_integer_dtype(dtype)
    is_float = pd.api.types.is_float_dtype(dtype)
    if target.kind == "f":
        if not (is_int or is_float):
            raise _fail(spec.name, want, dtype)
        return pd.Series(
            col.to_numpy(dtype=target, na_value=np.nan), index=col.index, name=col.name
        )
    # integer target
    if is_float and has_na:
        # Integers with missing values (a CSV's empty cell, a JSON null, Parquet's null) read
        # as floats: kept as float64 with NaN, as a nullable integer column is.
        values = col.to_numpy(dtype="float64", na_value=np.nan)
        known = values[~np.isnan(values)]
        if np.array_equal(known, np.round(known)):
            return pd.Series(values, index=col.index, name=col.name)
    if not is_int:
        raise _fail(spec.name, want, dtype, "only integer data casts safely to an integer type")
    if has_na:
        return pd.Series(
            col.to_numpy(dtype="float64", na_value=np.nan), index=col.index, name=col.name
        )
    values = col.to_numpy()
    if values.size and not np.can_cast(values.dtype, target):
        info = np.iinfo(target)
        if values.min() < info.min or values.max() > info.max:
            raise _fail(spec.name, want, dtype, "values out of range")
    return pd.Series(values.astype(target, copy=False), index=col.index, name=col.name)


def _enforce_tensors(data: Any, specs: tuple[TensorSpec, ...]) -> Any:
    if len(specs) == 1 and is_sparse(data):
        return _coerce_sparse(data, specs[0], specs[0].name or "input")
    if len(specs) == 1 and not isinstance(data, Mapping):
        return _coerce_tensor(_tensor_input(data), specs[0], specs[0].name or "input")
    if not isinstance(data, Mapping):
        names = [s.name for s in specs]
        raise SignatureError(
            f"this model takes {len(specs)} named tensors {names}; send a mapping of them",
            field=None,
            expected=names,
            got=type(data).__name__,
        )
    if len(specs) == 1 and specs[0].name not in data and len(data) == 1:
        # one tensor under another name (e.g. v2 "input-0"): unambiguous, take it.
        (value,) = data.values()
        return _coerce_tensor(_tensor_input(value), specs[0], specs[0].name or "input")
    out = {}
    for i, spec in enumerate(specs):
        key = spec.name or f"input_{i}"
        if key not in data:
            raise SignatureError(
                f"missing input tensor {key!r}", field=key, expected=spec.dtype, got="missing"
            )
        out[key] = _coerce_tensor(_tensor_input(data[key]), spec, key)
    return out[specs[0].name or "input_0"] if len(specs) == 1 else out


def _tensor_input(value: Any) -> np.ndarray:
    if isinstance(value, pd.DataFrame):
        return value.to_numpy()
    if is_sparse(value):
        return np.asarray(value.toarray())
    return _as_array(value)


def _coerce_sparse(matrix: Any, spec: TensorSpec, name: str) -> Any:
    """A sparse input stays sparse: its dtype and shape are checked as a dense one's would be."""
    shape = tuple(int(d) for d in matrix.shape)
    if shape and shape[0] == 0 and spec.shape and spec.shape[0] == -1:
        raise _no_rows(list(shape))
    if len(spec.shape) != len(shape) or any(
        w != -1 and w != g for w, g in zip(spec.shape, shape, strict=False)
    ):
        raise SignatureError(
            f"tensor {name!r}: expected shape {list(spec.shape)}, got {list(shape)}",
            field=name,
            expected=list(spec.shape),
            got=list(shape),
        )
    want, got = np.dtype(spec.dtype), np.dtype(matrix.dtype)
    if got == want:
        return matrix
    if not (np.can_cast(got, want, "safe") or (got.kind in "iuf" and want.kind == "f")):
        raise SignatureError(
            f"tensor {name!r}: expected dtype {want}, got {got}, which does not cast safely",
            field=name,
            expected=str(want),
            got=str(got),
        )
    return matrix.astype(want)


def _coerce_tensor(arr: np.ndarray, spec: TensorSpec, name: str) -> np.ndarray:
    if arr.ndim and arr.shape[0] == 0 and spec.shape and spec.shape[0] == -1:
        raise _no_rows(list(arr.shape))
    want = np.dtype(spec.dtype)
    got = arr.dtype
    if got != want:
        safe = (
            np.can_cast(got, want, "safe")
            or (got.kind in "iu" and want.kind == "f")
            or (got.kind == "f" and want.kind == "f")
        )
        if got.kind in "iu" and want.kind in "iu" and not safe and arr.size:
            info = np.iinfo(want)
            safe = bool(arr.min() >= info.min and arr.max() <= info.max)
        if not safe:
            raise SignatureError(
                f"tensor {name!r}: expected dtype {want}, got {got}, which does not cast safely",
                field=name,
                expected=str(want),
                got=str(got),
            )
        arr = arr.astype(want)
    if len(spec.shape) != arr.ndim or any(
        w != -1 and w != g for w, g in zip(spec.shape, arr.shape, strict=False)
    ):
        raise SignatureError(
            f"tensor {name!r}: expected shape {list(spec.shape)}, got {list(arr.shape)}",
            field=name,
            expected=list(spec.shape),
            got=list(arr.shape),
        )
    return arr
