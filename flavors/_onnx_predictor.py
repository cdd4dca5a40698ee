"""Running an ONNX Runtime session on modelpack data: feeds checked against the graph, outputs
as arrays (a ZipMap's list of dicts as a 2-D array)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack.signature import Schema, Signature, TensorSpec

if TYPE_CHECKING:
    import onnxruntime


class OnnxPredictor:
    """Runs an ONNX Runtime session on an array (one input) or a mapping of named arrays."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.native = session
        inputs = session.get_inputs()
        self._input_names = [i.name for i in inputs]
        self._outputs = [(o.name, _ort_spec(o)) for o in session.get_outputs()]
        specs = [_ort_spec(i) if i.type.startswith("tensor(") and i.shape else None for i in inputs]
        # ORT shows a scalar and an unknown shape alike ([]): with such an input, or one of a
        # type a signature cannot hold, the data goes to the session unchecked.
        tensors = tuple(s for s in specs if s is not None)
        checked = bool(specs) and len(tensors) == len(specs)
        self._signature = Signature(inputs=Schema(tensors=tensors)) if checked else None

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        return self.outputs(self.run(self.feeds(data)))

    def feeds(self, data: Any) -> dict[str, Any]:
        """The session's feeds for ``data``, checked against the graph's inputs."""
        data = frame_feeds(data, self._input_names)
        feeds = self._signature.enforce(data) if self._signature is not None else data
        if not isinstance(feeds, Mapping):
            feeds = {self._input_names[0]: np.asarray(feeds)}
        return dict(feeds)

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        return list(self.native.run(None, feeds))

    def outputs(self, results: Sequence[Any]) -> Any:
        """One array for a single-output graph, else a mapping of output name to array."""
        outputs = {
            name: _as_output(value, spec)
            for (name, spec), value in zip(self._outputs, results, strict=True)
        }
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs


def frame_feeds(data: Any, input_names: Sequence[str]) -> Any:
    """A DataFrame whose columns name every graph input as one ``(n, 1)`` array per input.

    Graphs converted from column-based models (skl2onnx, one input per column) take tables this
    way; any other data, or a frame whose columns do not name the inputs, comes back unchanged.
    """
    columns = getattr(data, "columns", None)
    if columns is None or isinstance(data, Mapping) or not hasattr(data, "to_numpy"):
        return data
    names = {str(c): c for c in columns}
    if len(input_names) < 2 or any(n not in names for n in input_names):
        return data
    return {n: data[names[n]].to_numpy().reshape(-1, 1) for n in input_names}


def _ort_spec(arg: Any) -> TensorSpec | None:
    """The spec of an ORT NodeArg: a tensor, or a ZipMap's sequence of maps as a 2-D array."""
    import onnx

    found = re.fullmatch(r"tensor\((\w+)\)|seq\(map\(\w+,\s*tensor\((\w+)\)\)\)", arg.type)
    if found is None:
        return None
    try:
        elem_type = onnx.TensorProto.DataType.Value((found[1] or found[2]).upper())
    except ValueError:
        return None
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape) if found[1] else (-1, -1)
    return tensor_spec(arg.name, elem_type, shape)


def tensor_spec(name: str, elem_type: int, shape: tuple[int, ...]) -> TensorSpec | None:
    import onnx

    try:  # a signature holds the dtypes plain numpy knows (not bfloat16, float8...)
        dtype = str(np.dtype(str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))))
    except (KeyError, TypeError, ValueError):
        return None
    return TensorSpec(dtype=dtype, shape=shape, name=name)


def _as_output(value: Any, spec: TensorSpec | None) -> Any:
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        labels = list(value[0])  # ZipMap gives every row the classes in one order
        rows = [[row[k] for k in labels] for row in value]
        return np.array(rows, dtype=spec.dtype if spec is not None else None)
    return value
