"""MLflow-compatible JSON payloads: reading request bodies and writing predictions.

One module for every place that turns JSON into model input or predictions into
JSON: input examples, the CLI's ``predict`` and the HTTP server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pandas as pd

from modelpack.errors import InvalidInputError

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def encode_example(data: Any) -> dict[str, Any]:
    """The JSON body of an input example, in a format ``/invocations`` accepts as is."""
    if isinstance(data, pd.Series):
        data = data.to_frame()
    if isinstance(data, pd.DataFrame):
        return {"dataframe_split": _split(data)}
    if isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
        return {"dataframe_records": to_jsonable(data)}
    if isinstance(data, Mapping):
        if all(isinstance(v, np.ndarray) for v in data.values()):
            return {"inputs": {str(k): v.tolist() for k, v in data.items()}}
        return {"dataframe_split": _split(pd.DataFrame(_columns(data)))}
    if hasattr(data, "detach") and hasattr(data, "numpy"):
        data = data.detach().cpu().numpy()
    return {"inputs": np.asarray(data).tolist()}


def _columns(data: Mapping[str, Any]) -> dict[str, Any]:
    if all(np.isscalar(v) or v is None for v in data.values()):
        return {k: [v] for k, v in data.items()}
    return dict(data)


def _split(frame: pd.DataFrame) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(
        frame.to_json(orient="split", index=False, date_format="iso")
    )
    return {"columns": parsed["columns"], "data": parsed["data"]}


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
    """Predictions as plain JSON types (lists, dicts, numbers, strings)."""
    if isinstance(predictions, pd.DataFrame):
        records: Any = orjson.loads(predictions.to_json(orient="records", date_format="iso"))
        return records
    if isinstance(predictions, pd.Series):
        return [row[0] for row in _split(predictions.to_frame())["data"]]
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
