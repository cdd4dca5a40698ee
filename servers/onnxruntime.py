"""Deprecated alias of the onnx flavor's runtime, kept for one release.

ONNX Runtime is the onnx flavor's runtime now: ``modelpack.load(uri, flavor="onnx",
device="cuda")`` picks the execution providers, and ``modelpack.flavors.onnx`` holds
``load_predictor`` (session settings), ``OnnxRuntimePredictor``, ``provider_list``,
``parse_device`` and ``OnnxRuntimeFallbackWarning``.
"""

from __future__ import annotations

import warnings

from modelpack.flavors.onnx import (
    CPU,
    CUDA,
    GPU_PROVIDERS,
    TENSORRT,
    OnnxRuntimeFallbackWarning,
    OnnxRuntimePredictor,
    load_predictor,
    parse_device,
    provider_list,
)

warnings.warn(
    "modelpack.servers.onnxruntime is deprecated: use modelpack.load(uri, flavor='onnx', "
    "device=...) or import from modelpack.flavors.onnx",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "CPU",
    "CUDA",
    "GPU_PROVIDERS",
    "TENSORRT",
    "OnnxRuntimeFallbackWarning",
    "OnnxRuntimePredictor",
    "load_predictor",
    "parse_device",
    "provider_list",
]
