"""The ONNX flavor: an ``onnx.ModelProto`` or a ``.onnx`` file, run with ONNX Runtime on CPU.

Weights go to one external data file (``model.onnx.data``) when the model would pass
protobuf's 2 GB limit, or on request. Saving never changes the caller's ModelProto.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import numpy as np

from modelpack.errors import InvalidModelError
from modelpack.model import load_native, save_with
from modelpack.plugins import LoadOptions
from modelpack.signature import Schema, Signature, TensorSpec

if TYPE_CHECKING:
    import onnx
    import onnxruntime
    from google.protobuf.message import Message

    _M = TypeVar("_M", bound=Message)

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
# protobuf cannot serialize a message of 2 GiB or more; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26
_MIN_EXTERNAL_TENSOR = 1024  # bytes: smaller tensors stay inline, as in onnx.save
_ALIGN, _ALIGN_FROM = 64 * 1024, 1024 * 1024  # big tensors start where ORT can map them


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


class OnnxFlavor:
    name = "onnx"

    def accepts(self, obj: Any) -> bool:
        onnx = sys.modules.get("onnx")
        return onnx is not None and isinstance(obj, onnx.ModelProto)

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        return ["onnx", "onnxruntime", "numpy"]

    def save(self, obj: Any, path: Path, *, external_data: bool | None = None) -> dict[str, Any]:
        import onnx

        model, source = _open(obj)
        on_disk = [t.name for t in model.graph.initializer if _is_external(t)]
        if on_disk and source is None:
            raise InvalidModelError(
                f"tensor {on_disk[0]!r} was loaded without its external data; load the model "
                "with onnx.load(path) or save the .onnx file by path"
            )
        big = sum(map(_nbytes, model.graph.initializer)) > EXTERNAL_DATA_THRESHOLD
        if external_data is False and big:
            raise InvalidModelError("the model is past protobuf's 2 GB limit for one file")
        external = (big or bool(on_disk)) if external_data is None else external_data
        if external:
            external = _write_external(model, source, path)
        elif source is not None and not on_disk:
            shutil.copyfile(source, path / MODEL_FILE)
        else:
            if source is not None:  # read from the file, so ours to change
                onnx.load_external_data_for_model(model, str(source.parent))
            (path / MODEL_FILE).write_bytes(model.SerializeToString())
        try:  # by path: it follows external data and has no 2 GB limit
            onnx.checker.check_model(str(path / MODEL_FILE))
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().split("\n", 1)[0]
            raise InvalidModelError(f"invalid ONNX model: {first}") from exc
        initialized = {t.name for t in model.graph.initializer}
        return {
            "file": MODEL_FILE,
            "external_data": DATA_FILE if external else None,
            "ir_version": model.ir_version,
            "opset_imports": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "inputs": [v.name for v in model.graph.input if v.name not in initialized],
            "outputs": [v.name for v in model.graph.output],
        }

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        import onnx

        return onnx.load(str(path / config.get("file", MODEL_FILE)))

    def predictor(
        self, path: Path, config: Mapping[str, Any], options: LoadOptions
    ) -> OnnxPredictor:
        return OnnxPredictor(_session(str(path / config.get("file", MODEL_FILE))))

    def signature(self, path: Path, config: Mapping[str, Any]) -> Signature | None:
        import onnx

        graph = onnx.load(str(path / config.get("file", MODEL_FILE)), load_external_data=False)
        try:
            return graph_signature(graph)
        except InvalidModelError:  # a graph without a readable signature saves without one
            return None

    def wrap(self, obj: Any, config: Mapping[str, Any]) -> OnnxPredictor:
        if isinstance(obj, (str, os.PathLike)):  # ORT finds external data next to the file
            return OnnxPredictor(_session(os.fspath(obj)))
        if sum(map(_nbytes, obj.graph.initializer)) <= EXTERNAL_DATA_THRESHOLD:
            return OnnxPredictor(_session(obj.SerializeToString()))
        with tempfile.TemporaryDirectory(prefix="modelpack-onnx-") as tmp:
            _write_external(obj, None, Path(tmp))
            return OnnxPredictor(_session(str(Path(tmp) / MODEL_FILE)))


def graph_signature(model: onnx.ModelProto) -> Signature:
    """The tensor signature the graph declares; symbolic or unknown dimensions become -1."""
    initialized = {t.name for t in model.graph.initializer}
    inputs = [_graph_spec(v) for v in model.graph.input if v.name not in initialized]
    outputs = [_graph_spec(v) for v in model.graph.output]
    if not inputs or None in inputs:
        raise InvalidModelError(
            "the ONNX graph's inputs are not all tensors of known rank and numpy dtype; "
            "give a signature or an input example"
        )
    return Signature(
        inputs=Schema(tensors=tuple(s for s in inputs if s is not None)),
        outputs=Schema(tensors=tuple(s for s in outputs if s is not None))
        if outputs and None not in outputs
        else None,
    )


def _graph_spec(value: onnx.ValueInfoProto) -> TensorSpec | None:
    kind, tensor = value.type.WhichOneof("value"), value.type.tensor_type
    zipmap = value.type.sequence_type.elem_type.map_type
    if kind == "sequence_type" and zipmap.HasField("value_type"):
        # ZipMap's list of {label: probability}: the predictor makes it a 2-D array.
        return _tensor_spec(value.name, zipmap.value_type.tensor_type.elem_type, (-1, -1))
    if kind != "tensor_type" or not tensor.HasField("shape"):
        return None
    dims = tensor.shape.dim
    shape = tuple(d.dim_value if d.WhichOneof("value") == "dim_value" else -1 for d in dims)
    return _tensor_spec(value.name, tensor.elem_type, shape)


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
    return _tensor_spec(arg.name, elem_type, shape)


def _tensor_spec(name: str, elem_type: int, shape: tuple[int, ...]) -> TensorSpec | None:
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


def _session(model: str | bytes) -> onnxruntime.InferenceSession:
    import onnxruntime

    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def _open(obj: Any) -> tuple[onnx.ModelProto, Path | None]:
    """The model (read without its external data from a file) and the file it came from."""
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(obj, onnx.ModelProto):
        return obj, None
    if not isinstance(obj, (str, os.PathLike)):
        raise InvalidModelError(
            f"the onnx flavor saves an onnx.ModelProto or the path of a .onnx file, "
            f"not a {type(obj).__name__}"
        )
    source = Path(obj)
    if not source.is_file():
        raise InvalidModelError(f"no ONNX file at {source}")
    try:
        return onnx.load(str(source), load_external_data=False), source
    except DecodeError as exc:
        raise InvalidModelError(f"{source} is not an ONNX model ({exc})") from exc


def _is_external(tensor: onnx.TensorProto) -> bool:
    from onnx.external_data_helper import uses_external_data

    return uses_external_data(tensor)


def _nbytes(tensor: onnx.TensorProto) -> int:
    # From the shape: reading raw_data copies it, and ByteSize fails past 2 GB.
    import onnx

    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 1
    return math.prod(tensor.dims) * itemsize


def _moves_out(tensor: onnx.TensorProto) -> bool:
    big = tensor.HasField("raw_data") and _nbytes(tensor) >= _MIN_EXTERNAL_TENSOR
    return big or _is_external(tensor)


def _write_external(model: onnx.ModelProto, source: Path | None, dest: Path) -> bool:
    """Write model.onnx and model.onnx.data; False when no tensor was big enough to move."""
    # A model read from a file is ours to change. The caller's is copied around its weights:
    # onnx.save would empty its tensors, and CopyFrom would hold its weights twice.
    shell = model if source is not None else _shell(model)
    pairs = zip(shell.graph.initializer, model.graph.initializer, strict=True)
    moves = [(tensor, original) for tensor, original in pairs if _moves_out(original)]
    if moves:
        with open(dest / DATA_FILE, "wb") as out:
            for tensor, original in moves:
                _move_out(tensor, original, source, out)
    (dest / MODEL_FILE).write_bytes(shell.SerializeToString())
    return bool(moves)


def _shell(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx

    shell = _copy_fields(model, onnx.ModelProto(), skip="graph")
    _copy_fields(model.graph, shell.graph, skip="initializer")
    for tensor in model.graph.initializer:
        skip = "raw_data" if _moves_out(tensor) else ""
        _copy_fields(tensor, shell.graph.initializer.add(), skip=skip)
    return shell


def _copy_fields(src: Message, dst: _M, *, skip: str) -> _M:
    from google.protobuf.message import Message

    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if isinstance(value, Message):
            getattr(dst, field.name).CopyFrom(value)
        elif isinstance(value, (int, float, str, bytes)):
            setattr(dst, field.name, value)
        else:  # a repeated field
            getattr(dst, field.name).extend(value)
    return dst


def _move_out(
    tensor: onnx.TensorProto, original: onnx.TensorProto, source: Path | None, out: IO[bytes]
) -> None:
    import onnx

    if out.tell() and _nbytes(original) >= _ALIGN_FROM:
        out.write(b"\0" * (-out.tell() % _ALIGN))
    offset = out.tell()
    if source is not None and _is_external(original):
        _copy_external(original, source.parent, out)
    else:
        out.write(original.raw_data)
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (
        ("location", DATA_FILE),
        ("offset", offset),
        ("length", out.tell() - offset),
    ):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)


def _copy_external(tensor: onnx.TensorProto, base: Path, out: IO[bytes]) -> None:
    # Streamed: loading it into the proto would keep it in the proto's arena until the end.
    from onnx.external_data_helper import ExternalDataInfo

    info = ExternalDataInfo(tensor)
    file = (base / info.location).resolve()
    if not file.is_relative_to(base.resolve()) or not file.is_file():
        raise InvalidModelError(f"tensor {tensor.name!r}: no external data file {file}")
    left = file.stat().st_size - (info.offset or 0) if info.length is None else info.length
    with open(file, "rb") as fh:
        fh.seek(info.offset or 0)
        while left > 0:
            chunk = fh.read(min(left, 16 * 1024 * 1024))
            if not chunk:
                raise InvalidModelError(f"tensor {tensor.name!r}: {file} is truncated")
            out.write(chunk)
            left -= len(chunk)


_FLAVOR = OnnxFlavor()


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
    signature: Signature | Mapping[str, Any] | None = None,
    input_example: Any = None,
    metadata: Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save an ``onnx.ModelProto``, or a ``.onnx`` file with its external data.

    Without a signature, the signature is the graph's (an input example is checked against it).
    """
    return save_with(
        _FLAVOR,
        model,
        path,
        signature=signature,
        input_example=input_example,
        metadata=metadata,
        requirements=requirements,
        overwrite=overwrite,
        external_data=external_data,
    )


def load(path: str | os.PathLike[str]) -> Any:
    """The ``onnx.ModelProto`` saved at ``path``, with its external data."""
    return load_native("onnx", path)
