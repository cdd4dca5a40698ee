"""The Open Inference Protocol v2 (KServe, Triton): tensors in and out, JSON or binary.

Inputs are mapped to the signature: for a column signature each input is one column (or one
``[N, columns]`` input is the whole table); for a tensor signature inputs are tensors by name.
The binary tensor extension (``Inference-Header-Content-Length``) is read and written, so
``tritonclient`` works with its defaults.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd

from modelpack.errors import InvalidInputError
from modelpack.signature import Signature, is_sparse

HEADER_LENGTH = "inference-header-content-length"

_TO_NUMPY = {
    "BOOL": np.dtype(bool),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_FROM_NUMPY = {v.str: k for k, v in _TO_NUMPY.items()}


def datatype_of(dtype: np.dtype[Any] | str) -> str:
    """The v2 datatype of a numpy dtype or a signature column type."""
    if dtype in ("string", "binary", "datetime", "object"):
        return "BYTES"
    return _FROM_NUMPY.get(np.dtype(dtype).str, "BYTES")


def model_metadata(name: str, platform: str, signature: Signature | None) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [],
        "platform": platform,
        "inputs": _tensors_of(signature.inputs if signature else None, "input"),
        "outputs": _tensors_of(signature.outputs if signature else None, "output"),
    }


def tensor_name(name: str | None, index: int, count: int, role: str) -> str:
    """The v2 name of a signature tensor: its own, else the name infer answers with."""
    if name:
        return name
    if role == "output":
        return "predict" if count == 1 else f"output-{index}"
    return f"input-{index}"


def _tensors_of(schema: Any, role: str) -> list[dict[str, Any]]:
    if schema is None:
        return []
    if schema.is_tensor:
        count = len(schema.tensors)
        return [
            {
                "name": tensor_name(t.name, i, count, role),
                "datatype": datatype_of(t.dtype),
                "shape": t.shape,
            }
            for i, t in enumerate(schema.tensors)
        ]
    return [
        {"name": c.name, "datatype": datatype_of(c.dtype), "shape": [-1]} for c in schema.columns
    ]


# -- requests --------------------------------------------------------------------------------


# Request parameters that belong to the protocol (Triton's, MLServer's), not to the model.
_PROTOCOL_PARAMETERS = frozenset(
    {
        "binary_data_output",
        "content_type",
        "headers",
        "priority",
        "sequence_end",
        "sequence_id",
        "sequence_start",
        "timeout",
    }
)


class InferRequest:
    def __init__(self, header: Mapping[str, Any], tensors: dict[str, np.ndarray]) -> None:
        self.id = header.get("id")
        self.tensors = tensors
        params = _parameters(header, "the inference request")
        self.binary_output = bool(params.get("binary_data_output", False))
        # The rest are the model's inference parameters (MLflow's ``params``).
        self.params = {k: v for k, v in params.items() if k not in _PROTOCOL_PARAMETERS}
        self.outputs: list[Mapping[str, Any]] | None = _requested_outputs(header.get("outputs"))


def _parameters(holder: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    params = holder.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInputError(f"{what}: 'parameters' must be an object")
    return params


def _requested_outputs(outputs: Any) -> list[Mapping[str, Any]] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidInputError("'outputs' must be a list of objects, each with a string 'name'")
    for o in outputs:
        _parameters(o, f"output {o['name']!r}")
    return outputs


def parse_infer(raw: bytes, header_length: str | None) -> InferRequest:
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise InvalidInputError(
                f"bad Inference-Header-Content-Length {header_length!r}"
            ) from None
        if not 0 <= size <= len(raw):
            raise InvalidInputError("Inference-Header-Content-Length exceeds the body")
        head_raw, blob = raw[:size], memoryview(raw)[size:]
    else:
        head_raw, blob = raw, memoryview(b"")
    try:
        header = orjson.loads(head_raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the inference request is not valid JSON: {exc}") from exc
    inputs = header.get("inputs") if isinstance(header, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError("the inference request needs a non-empty 'inputs' list")
    tensors, offset = {}, 0
    for spec in inputs:
        if not isinstance(spec, dict) or not {"name", "shape", "datatype"} <= set(spec):
            raise InvalidInputError("each input needs 'name', 'shape' and 'datatype'")
        name = str(spec["name"])
        if name in tensors:
            raise InvalidInputError(f"input {name!r} is given more than once")
        binary_size = _parameters(spec, f"input {name!r}").get("binary_data_size")
        if binary_size is not None:
            if type(binary_size) is not int or not 0 <= binary_size <= len(blob) - offset:
                raise InvalidInputError(
                    f"input {name!r}: 'binary_data_size' must be a whole number of bytes "
                    "within the body"
                )
            chunk = blob[offset : offset + binary_size]
            offset += binary_size
            tensors[name] = _from_binary(spec, bytes(chunk))
        elif "data" in spec:
            tensors[name] = _from_json(spec)
        else:
            raise InvalidInputError(f"input {spec['name']!r} has neither 'data' nor binary data")
    return InferRequest(header, tensors)


def _shape(spec: Mapping[str, Any]) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in spec["shape"])
    except (TypeError, ValueError):
        raise InvalidInputError(f"input {spec['name']!r}: 'shape' must be a list of ints") from None


def _from_json(spec: Mapping[str, Any]) -> np.ndarray:
    name, datatype, shape = spec["name"], str(spec["datatype"]).upper(), _shape(spec)
    try:
        if datatype == "BYTES":
            arr = np.array(spec["data"], dtype=object).reshape(shape)
        elif datatype in _TO_NUMPY:
            arr = np.asarray(spec["data"], dtype=_TO_NUMPY[datatype]).reshape(shape)
        else:
            raise InvalidInputError(f"input {name!r}: unknown datatype {datatype!r}")
    except OverflowError as exc:
        raise InvalidInputError(f"input {name!r}: a value is out of range for {datatype}") from exc
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"input {name!r}: data does not fit shape {list(shape)}") from exc
    return arr


def _from_binary(spec: Mapping[str, Any], chunk: bytes) -> np.ndarray:
    name, datatype, shape = spec["name"], str(spec["datatype"]).upper(), _shape(spec)
    try:
        if datatype == "BYTES":
            items, pos = [], 0
            while pos < len(chunk):
                (length,) = struct.unpack_from("<I", chunk, pos)
                items.append(chunk[pos + 4 : pos + 4 + length])
                pos += 4 + length
            return np.array(items, dtype=object).reshape(shape)
        if datatype not in _TO_NUMPY:
            raise InvalidInputError(f"input {name!r}: unknown datatype {datatype!r}")
        return np.frombuffer(chunk, dtype=_TO_NUMPY[datatype]).reshape(shape)
    except (ValueError, struct.error) as exc:
        raise InvalidInputError(f"input {name!r}: binary data does not fit {list(shape)}") from exc


def to_model_input(tensors: dict[str, np.ndarray], signature: Signature | None) -> Any:
    """The inputs as the model takes them (a table for a column signature), before enforcing."""
    if signature is None or signature.inputs.is_tensor:
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        return tensors
    columns = signature.inputs.columns
    names = [c.name for c in columns]
    if len(tensors) == 1:
        ((key, arr),) = tensors.items()
        if key not in names and arr.ndim == 2 and arr.shape[1] == len(names):
            return pd.DataFrame(_texts(arr, "string"), columns=names).infer_objects()
    kinds = {c.name: c.dtype for c in columns}
    table = {}
    for key, arr in tensors.items():
        flat = arr.reshape(-1) if arr.ndim == 2 and arr.shape[1] == 1 else arr
        if flat.ndim != 1:
            raise InvalidInputError(
                f"input {key!r}: a column takes shape [N] or [N, 1], got {list(arr.shape)}"
            )
        table[key] = _texts(flat, kinds.get(key, "string"))
    try:
        return pd.DataFrame(table)
    except ValueError as exc:
        raise InvalidInputError(f"the inputs are not columns of one length: {exc}") from exc


def _texts(arr: np.ndarray, kind: str) -> np.ndarray:
    if arr.dtype != object or kind == "binary":
        return arr
    return np.array(
        [v.decode("utf-8") if isinstance(v, bytes) else v for v in arr.reshape(-1)], dtype=object
    ).reshape(arr.shape)


# -- responses -------------------------------------------------------------------------------


def output_tensors(predictions: Any, signature: Signature | None) -> list[tuple[str, np.ndarray]]:
    if isinstance(predictions, pd.Series):
        predictions = predictions.to_frame(predictions.name or "predict")
    if isinstance(predictions, pd.DataFrame):
        return [(str(c), predictions[c].to_numpy()) for c in predictions.columns]
    if isinstance(predictions, Mapping):
        return [(str(k), np.asarray(v)) for k, v in predictions.items()]
    outputs = signature.outputs if signature else None
    declared = outputs.tensors[0].name if outputs is not None and outputs.is_tensor else None
    name = tensor_name(declared, 0, 1, "output")
    if hasattr(predictions, "detach") and hasattr(predictions, "numpy"):
        predictions = predictions.detach().cpu().numpy()
    if is_sparse(predictions):  # dense on the wire, as in every other format
        predictions = predictions.toarray()
    return [(name, np.asarray(predictions))]


def encode_infer(
    model_name: str, request: InferRequest, outputs: Sequence[tuple[str, np.ndarray]]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    wanted = {str(o.get("name")): o for o in request.outputs or []}
    unknown = sorted(set(wanted) - {n for n, _ in outputs})
    if unknown:
        have = ", ".join(n for n, _ in outputs)
        raise InvalidInputError(f"unknown output(s) {', '.join(unknown)}; the model has {have}")
    body: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in outputs:
        if wanted and name not in wanted:
            continue
        params = (wanted.get(name) or {}).get("parameters") or {}
        binary = bool(params.get("binary_data", request.binary_output))
        datatype = datatype_of(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            blob = _to_binary(arr, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _to_json(arr, datatype)
        body.append(entry)
    head: dict[str, Any] = {"model_name": model_name, "outputs": body}
    if request.id is not None:
        head["id"] = request.id
    header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def _to_json(arr: np.ndarray, datatype: str) -> Any:
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return np.ascontiguousarray(flat)


def _to_binary(arr: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(arr).tobytes()
    parts = []
    for v in arr.reshape(-1):
        raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)
