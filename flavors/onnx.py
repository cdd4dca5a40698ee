"""The ONNX flavor: an ``onnx.ModelProto`` or a ``.onnx`` file, run with ONNX Runtime.

Weights go to one external data file (``model.onnx.data``) when the model would pass
protobuf's 2 GB limit, or on request. Saving never changes the caller's ModelProto. Loading
runs the graph on the load's device (``flavors/_onnxruntime.py``: execution providers, the
optimized-model cache, IOBinding on a GPU); ``modelpack convert --to onnx`` adds this flavor to
a model whose flavor exports ONNX.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import numpy as np

from modelpack.errors import InvalidInputError, InvalidModelError
from modelpack.flavors._onnx_predictor import OnnxPredictor, frame_feeds, tensor_spec
from modelpack.flavors._onnxruntime import (
    CPU,
    CUDA,
    GPU_PROVIDERS,
    TENSORRT,
    OnnxRuntimeFallbackWarning,
    OnnxRuntimePredictor,
    RuntimeSettings,
    load_predictor,
    parse_device,
    plain_session,
    provider_list,
    runtime_predictor,
)
from modelpack.model import load_native, save_with
from modelpack.plugins import LoadOptions
from modelpack.signature import Schema, Signature, TensorSpec

if TYPE_CHECKING:
    import onnx
    from google.protobuf.message import Message

    _M = TypeVar("_M", bound=Message)

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
# protobuf cannot serialize a message of 2 GiB or more; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26
_MIN_EXTERNAL_TENSOR = 1024  # bytes: smaller tensors stay inline, as in onnx.save
_ALIGN, _ALIGN_FROM = 64 * 1024, 1024 * 1024  # big tensors start where ORT can map them


class OnnxFlavor:
    name = "onnx"

    def accepts(self, obj: Any) -> bool:
        onnx = sys.modules.get("onnx")
        return onnx is not None and isinstance(obj, onnx.ModelProto)

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        return ["onnx", "onnxruntime", "numpy"]

    def save(
        self,
        obj: Any,
        path: Path,
        *,
        external_data: bool | None = None,
        conversion: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``conversion``: how ``modelpack convert`` made the graph (``converted_from``,
        ``converter``, ``parity``), recorded in the config as given."""
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
        config = {
            "file": MODEL_FILE,
            "external_data": DATA_FILE if external else None,
            "ir_version": model.ir_version,
            "opset_imports": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "inputs": [v.name for v in model.graph.input if v.name not in initialized],
            "outputs": [v.name for v in model.graph.output],
        }
        clash = sorted(set(conversion or {}) & set(config))
        if clash:
            raise InvalidInputError(f"conversion cannot set the flavor's own key {clash[0]!r}")
        return {**config, **dict(conversion or {})}

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        import onnx

        return onnx.load(str(path / config.get("file", MODEL_FILE)))

    def predictor(
        self, path: Path, config: Mapping[str, Any], options: LoadOptions
    ) -> OnnxRuntimePredictor:
        file = path / str(config.get("file", MODEL_FILE))
        return runtime_predictor(
            file,
            options.device,
            cacheable=not config.get("external_data"),
            settings=RuntimeSettings.from_mapping(options.settings),
        )

    def signature(self, path: Path, config: Mapping[str, Any]) -> Signature | None:
        import onnx

        graph = onnx.load(str(path / config.get("file", MODEL_FILE)), load_external_data=False)
        try:
            return graph_signature(graph)
        except InvalidModelError:  # a graph without a readable signature saves without one
            return None

    def wrap(self, obj: Any, config: Mapping[str, Any]) -> OnnxPredictor:
        if isinstance(obj, (str, os.PathLike)):  # ORT finds external data next to the file
            return OnnxPredictor(plain_session(os.fspath(obj)))
        if sum(map(_nbytes, obj.graph.initializer)) <= EXTERNAL_DATA_THRESHOLD:
            return OnnxPredictor(plain_session(obj.SerializeToString()))
        with tempfile.TemporaryDirectory(prefix="modelpack-onnx-") as tmp:
            _write_external(obj, None, Path(tmp))
            return OnnxPredictor(plain_session(str(Path(tmp) / MODEL_FILE)))


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
        return tensor_spec(value.name, zipmap.value_type.tensor_type.elem_type, (-1, -1))
    if kind != "tensor_type" or not tensor.HasField("shape"):
        return None
    dims = tensor.shape.dim
    shape = tuple(d.dim_value if d.WhichOneof("value") == "dim_value" else -1 for d in dims)
    return tensor_spec(value.name, tensor.elem_type, shape)


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


__all__ = [
    "CPU",
    "CUDA",
    "GPU_PROVIDERS",
    "TENSORRT",
    "OnnxFlavor",
    "OnnxPredictor",
    "OnnxRuntimeFallbackWarning",
    "OnnxRuntimePredictor",
    "frame_feeds",
    "graph_signature",
    "load",
    "load_predictor",
    "parse_device",
    "provider_list",
    "save",
]
