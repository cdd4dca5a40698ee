"""What the local target needs for ``runtime=onnx``: the device to serve on (the CUDA check
and the CPU warning) and the conversion of a model without an ``onnx`` flavor
(``modelpack.convert.to_onnx``, with its parity gate)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from modelpack import trust
from modelpack.errors import MissingDependencyError

CUDA = "CUDAExecutionProvider"


def has_onnx(path: Path) -> bool:
    from modelpack.descriptor import Descriptor

    return "onnx" in Descriptor.read(path).flavors


def convert(path: Path, target: Path, *, rtol: float, atol: float, granted: trust.TrustArg) -> Path:
    """The model at ``path`` with an onnx flavor, in ``target`` (the parity gate decides)."""
    from modelpack.convert import to_onnx

    shutil.rmtree(target, ignore_errors=True)  # left by a crash: never served
    return to_onnx(path, target, rtol=rtol, atol=atol, trust=granted).resolve()


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when ONNX Runtime has CUDA, else ``cpu`` with a warning; a CUDA
    device asked for where there is none warns (the server falls back to the CPU)."""
    if requested == "cpu":
        return requested
    if requested != "auto":
        if not _cuda_available():
            _warn_cpu(f"device {requested} was asked for, but")
        return requested
    if _cuda_available():
        return "cuda"
    _warn_cpu("")
    return "cpu"


def _warn_cpu(prefix: str) -> None:
    from modelpack.flavors.onnx import OnnxRuntimeFallbackWarning

    why = "this ONNX Runtime has no CUDA provider (install modelpack[gpu] on a GPU machine)"
    warnings.warn(
        f"{prefix} {why}; serving on CPU".strip(), OnnxRuntimeFallbackWarning, stacklevel=3
    )


def _cuda_available() -> bool:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "runtime onnx needs ONNX Runtime: pip install 'modelpack[onnx]' (CPU) "
            "or 'modelpack[gpu]' (CUDA)"
        ) from exc
    return CUDA in onnxruntime.get_available_providers()
