"""MLflow-compatible JSON payloads: reading request bodies and writing predictions.

One module for every place that turns JSON into model input or predictions into
JSON: input examples, the CLI's ``predict`` and the HTTP server.

JSON has no NaN or Infinity (orjson writes them as null). An input example keeps them:
in a float column or tensor they are written as the strings ``"NaN"``, ``"Infinity"``
and ``"-Infinity"``, and the body names those columns (or tensors) under ``"non_finite"``
(``true`` for a single unnamed tensor); :func:`decode` reads them back as floats. A
request without ``"non_finite"`` reads exactly as before.

Predictions that are scipy.sparse matrices are written densely (``.toarray()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pandas as pd

from modelpack.errors import InvalidInputError
from modelpack.signature import is_sparse

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
NON_FINITE = "non_finite"
_NON_FINITE_VALUES = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def encode_example(data: Any) -> dict[str, Any]:
    """The JSON body of an input example, in a format ``/invocations`` accepts as is.

    Non-finite floats (NaN, Infinity) are kept as strings named under ``"non_finite"``;
    a sparse matrix is written densely.
    """
    if isinstance(data, pd.Series):
        data = data.to_frame()
    if isinstance(data, pd.DataFrame):
        return _frame_body(data)
    if isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
        records = to_jsonable(data)
        return _with_marker({"dataframe_records": records}, _mark_records(data, records))
    if isinstance(data, Mapping):
        if all(isinstance(v, np.ndarray) for v in data.values()):
            tensors, marked = {}, []
            for k, v in data.items():
                tensors[str(k)], non_finite = _tensor_list(v)
                if non_finite:
                    marked.append(str(k))
            return _with_marker({"inputs": tensors}, marked)
        return _frame_body(pd.DataFrame(_columns(data)))
    if hasattr(data, "detach") and hasattr(data, "numpy"):
        data = data.detach().cpu().numpy()
    if is_sparse(data):
        data = data.toarray()
    values, non_finite = _tensor_list(np.asarray(data))
    return _with_marker({"inputs": values}, non_finite)


def _with_marker(body: dict[str, Any], marked: list[str] | bool) -> dict[str, Any]:
    if marked:
        body[NON_FINITE] = marked  # after the format's key: the first key names the format
    return body


def _non_finite_text(value: float) -> str:
    return "NaN" if np.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _frame_body(frame: pd.DataFrame) -> dict[str, Any]:
    split = _split(frame)
    marked = []
    for j in range(frame.shape[1]):
        col = frame.iloc[:, j]
        if not pd.api.types.is_float_dtype(col.dtype):
            continue
        values = col.to_numpy(dtype="float64", na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            for i in bad.tolist():
                split["data"][i][j] = _non_finite_text(values[i])
            marked.append(split["columns"][j])
    return _with_marker({"dataframe_split": split}, marked)


def _mark_records(data: list[Any], records: list[dict[str, Any]]) -> list[str]:
    """Columns of only numbers (or None) with a non-finite float: written as strings."""
    numbers: dict[str, bool] = {}
    non_finite: set[str] = set()
    for record in data:
        for key, value in record.items():
            name = str(key)
            number = value is None or (
                isinstance(value, (int, float, np.integer, np.floating))
                and not isinstance(value, (bool, np.bool_))
            )
            numbers[name] = numbers.get(name, True) and number
            if isinstance(value, (float, np.floating)) and not np.isfinite(value):
                non_finite.add(name)
    marked = [n for n in numbers if numbers[n] and n in non_finite]
    for original, record in zip(data, records, strict=True):
        for key, value in original.items():
            finite = not isinstance(value, (float, np.floating)) or np.isfinite(value)
            if str(key) in marked and not finite:
                record[str(key)] = _non_finite_text(float(value))
    return marked


def _tensor_list(arr: np.ndarray) -> tuple[Any, bool]:
    """``arr.tolist()``, with NaN and Infinity as strings in a float tensor (and True then)."""
    if arr.dtype.kind != "f" or bool(np.isfinite(arr).all()):
        return arr.tolist(), False
    out = arr.astype(object)
    out[np.isnan(arr)] = "NaN"
    out[np.isposinf(arr)] = "Infinity"
    out[np.isneginf(arr)] = "-Infinity"
    return out.tolist(), True


def _columns(data: Mapping[str, Any]) -> dict[str, Any]:
    if all(np.isscalar(v) or v is None for v in data.values()):
        return {k: [v] for k, v in data.items()}
    return dict(data)


def _split(frame: pd.DataFrame) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(
        frame.to_json(orient="split", index=False, date_format="iso")
    )
    for i, values in _exact_floats(frame):
        for row, value in zip(parsed["data"], values, strict=True):
            row[i] = value
    return {"columns": parsed["columns"], "data": parsed["data"]}


def _exact_floats(frame: pd.DataFrame) -> list[tuple[int, list[Any]]]:
    """Each float column's values as Python floats (None for NaN and infinities, as pandas'
    JSON has them): ``to_json`` keeps only 10 significant digits (15 at most), which changes
    a model's scores on the way to the client; ``repr`` of a float round-trips exactly."""
    found = []
    for i, (_, column) in enumerate(frame.items()):
        if column.dtype.kind == "f":
            values = column.to_numpy()
            if values.dtype.itemsize < 8:
                # float32's shortest text (0.1, not 0.10000000149011612) reads back the same.
                values = values.astype(str).astype(np.float64)
            values = values.astype(np.float64, copy=False)
            finite = np.isfinite(values)
            exact: list[Any] = values.tolist()
            if not finite.all():
                exact = [v if ok else None for v, ok in zip(exact, finite.tolist(), strict=True)]
            found.append((i, exact))
    return found


def decode(body: Any) -> tuple[Any, dict[str, Any]]:
    """Model input and params from a parsed JSON body in one of MLflow's formats."""
    if not isinstance(body, Mapping):
        raise InvalidInputError(f"the JSON body must be an object with one of {', '.join(FORMATS)}")
    present = [k for k in FORMATS if k in body]
    if len(present) != 1:
        unknown = sorted(set(body) - {*FORMATS, "params"})
        hint = f" (unknown keys: {', '.join(unknown)})" if unknown else ""
        raise InvalidInputError(
            f"the JSON body must have exactly one of {', '.join(FORMATS)}, "
            f"got {', '.join(present) or 'none'}{hint}"
        )
    key = present[0]
    params = body.get("params") or {}
    if not isinstance(params, Mapping):
        raise InvalidInputError("'params' must be a JSON object")
    value = body[key]
    if body.get(NON_FINITE) is not None:
        value = _restore_non_finite(key, value, body[NON_FINITE])
    try:
        if key == "dataframe_split":
            if not isinstance(value, Mapping) or "data" not in value:
                raise InvalidInputError("'dataframe_split' needs 'columns' and 'data'")
            columns = value.get("columns")
            if isinstance(columns, list):
                repeated = sorted({str(c) for c in columns if columns.count(c) > 1})
                if repeated:
                    raise InvalidInputError(
                        f"'dataframe_split': column(s) {', '.join(map(repr, repeated))} "
                        "appear more than once"
                    )
            frame = pd.DataFrame(value["data"], columns=columns)
            return frame.infer_objects(), dict(params)
        if key == "dataframe_records":
            if not isinstance(value, list):
                raise InvalidInputError("'dataframe_records' must be a list of objects")
            return pd.DataFrame.from_records(value), dict(params)
    except InvalidInputError:
        raise
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"cannot read {key!r} as a table: {exc}") from exc
    return _tensors(value, key), dict(params)


def _restore_non_finite(key: str, value: Any, marker: Any) -> Any:
    """The value with "NaN", "Infinity" and "-Infinity" read back as floats where marked."""
    if marker is True:
        return _floats_back(value)
    if not isinstance(marker, list) or not all(isinstance(n, str) for n in marker):
        raise InvalidInputError(f"{NON_FINITE!r} must be true or a list of column/tensor names")
    names = set(marker)
    if key == "dataframe_split" and isinstance(value, Mapping):
        columns, rows = value.get("columns"), value.get("data")
        if not isinstance(columns, list) or not isinstance(rows, list):
            return value
        marked = {j for j, c in enumerate(columns) if c in names}
        data = [
            [_float_back(v) if j in marked else v for j, v in enumerate(row)]
            if isinstance(row, list)
            else row
            for row in rows
        ]
        return {**value, "data": data}
    if isinstance(value, Mapping):
        return {k: _floats_back(v) if k in names else v for k, v in value.items()}
    if isinstance(value, list):
        return [
            {k: _floats_back(v) if k in names else v for k, v in r.items()}
            if isinstance(r, Mapping)
            else r
            for r in value
        ]
    return value


def _float_back(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE_VALUES.get(value, value)
    return value


def _floats_back(value: Any) -> Any:
    if isinstance(value, list):
        return [_floats_back(v) for v in value]
    return _float_back(value)


def _tensors(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _array(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(r, Mapping) for r in value):
        # instances as a list of records of named tensors
        names = list(value[0])
        return {n: _array([r.get(n) for r in value], f"{key}.{n}") for n in names}
    return _array(value, key)


def _array(value: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError as exc:
        raise InvalidInputError(f"{where}: ragged or malformed array ({exc})") from exc
    if arr.dtype == object:
        raise InvalidInputError(f"{where}: values are not a rectangular array of numbers")
    return arr


def to_jsonable(predictions: Any) -> Any:
    """Predictions as plain JSON types (lists, dicts, numbers, strings).

    A scipy.sparse matrix (a one-hot encoder's or TF-IDF's output) is written densely, as
    the nested list of ``.toarray()``: one list per row, every column in it.
    """
    if isinstance(predictions, pd.DataFrame):
        records: Any = orjson.loads(predictions.to_json(orient="records", date_format="iso"))
        names = [str(c) for c in predictions.columns]
        for i, values in _exact_floats(predictions):
            for record, value in zip(records, values, strict=True):
                record[names[i]] = value
        return records
    if isinstance(predictions, pd.Series):
        return [row[0] for row in _split(predictions.to_frame())["data"]]
    if is_sparse(predictions):
        return np.asarray(predictions.toarray()).tolist()
    if isinstance(predictions, Mapping):
        return {str(k): to_jsonable(v) for k, v in predictions.items()}
    if hasattr(predictions, "detach") and hasattr(predictions, "numpy"):
        predictions = predictions.detach().cpu().numpy()
    if isinstance(predictions, np.ndarray):
        return predictions.tolist()
    if isinstance(predictions, np.generic):
        return predictions.item()
    if isinstance(predictions, (list, tuple)):
        return [to_jsonable(p) for p in predictions]
    return predictions


def dumps(obj: Any) -> bytes:
    return orjson.dumps(
        obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=_default
    )


def _default(obj: Any) -> Any:
    converted = to_jsonable(obj)
    if converted is obj:
        raise TypeError(f"cannot serialize {type(obj).__name__}")
    return converted
