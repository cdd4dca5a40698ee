"""The ONNX Runtime server: a model's ``onnx`` flavor on TensorRT, CUDA or the CPU.

``load_predictor(uri, device="cuda")`` picks execution providers in priority (TensorRT when its
libraries load, then CUDA, then CPU), caches the optimized graph per model, ORT version, device
and providers, binds inputs and outputs to device buffers on a GPU, warms the session up, and
logs once which provider actually runs. A GPU asked for where none runs is a warning, not an
error: the model is served on the CPU.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack.descriptor import Descriptor, verify_manifest
from modelpack.errors import InvalidInputError, InvalidModelError, MissingDependencyError
from modelpack.flavors.onnx import MODEL_FILE, OnnxPredictor
from modelpack.model import EXAMPLE_FILE, MODEL_SUBDIR
from modelpack.signature import Signature
from modelpack.uris import resolve

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger("modelpack.onnxruntime")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
DEVICES = ("cpu", "cuda")
HOME_ENV = "MODELPACK_HOME"
_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_NVINFER = ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so")


class OnnxRuntimeFallbackWarning(RuntimeWarning):
    """A GPU was asked for, and ONNX Runtime runs the model on the CPU."""


class OnnxRuntimePredictor(OnnxPredictor):
    """An ONNX Runtime session of a model's ``onnx`` flavor; IOBinding on a GPU provider.

    ``signature`` is the model's own (for a model converted from scikit-learn, the source's
    columns); ``provider`` is the provider that runs it, as the session reports it.
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        *,
        signature: Signature | None = None,
        device_id: int = 0,
        cache_file: Path | None = None,
        cache_hit: bool = False,
    ) -> None:
        super().__init__(session)
        self.signature = signature if signature is not None else self._signature
        self.providers: list[str] = list(session.get_providers())
        self.provider = self.providers[0]
        self.device_id = device_id
        self.cache_file = cache_file
        self.cache_hit = cache_hit
        tensors_out = all(o.type.startswith("tensor(") for o in session.get_outputs())
        self.io_binding = self.provider in GPU_PROVIDERS and tensors_out

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        if not self.io_binding:
            return super().run(feeds)
        import onnxruntime as ort

        binding = self.native.io_binding()
        for name, value in feeds.items():
            arr = np.ascontiguousarray(value)
            if arr.dtype.kind in "OSU":  # strings live on the host, whatever the provider
                binding.bind_cpu_input(name, arr)
            else:
                on_device = ort.OrtValue.ortvalue_from_numpy(arr, "cuda", self.device_id)
                binding.bind_ortvalue_input(name, on_device)
        for name, spec in self._outputs:
            if spec is not None and spec.dtype != "object":
                binding.bind_output(name, "cuda", self.device_id)
            else:
                binding.bind_output(name)
        self.native.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())


def load_predictor(
    uri: str | os.PathLike[str],
    device: str = "cpu",
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    optimization: str = "all",
    cache: bool = True,
    tensorrt: bool | None = None,
    warm_up: bool = True,
) -> OnnxRuntimePredictor:
    """The ``onnx`` flavor of the model at ``uri`` in an ONNX Runtime session on ``device``.

    ``device``: ``cpu``, ``cuda`` or ``cuda:N``. Threads 0 let ONNX Runtime choose.
    ``optimization``: disable, basic, extended or all. ``cache``: keep the optimized graph under
    ``$MODELPACK_HOME/cache/ort/``. ``tensorrt``: None uses TensorRT when its libraries load.
    """
    kind, device_id = parse_device(device)
    if optimization not in _LEVELS:
        raise InvalidInputError(
            f"unknown optimization level {optimization!r}; choose one of {', '.join(_LEVELS)}"
        )
    path = resolve(Path(uri) if isinstance(uri, os.PathLike) else str(uri))
    descriptor = Descriptor.read(path)
    config = descriptor.flavors.get("onnx")
    if config is None:
        raise InvalidModelError(
            f"{uri} has no onnx flavor (it has: {', '.join(descriptor.flavors)}); "
            f"convert it first: modelpack convert {uri} --to onnx"
        )
    verify_manifest(path, descriptor.files, cached=True)
    model_file = path / MODEL_SUBDIR / str(config.get("file", MODEL_FILE))
    providers = provider_list(kind, device_id, tensorrt=tensorrt)
    digest = [descriptor.files[r].sha256 for r in sorted(descriptor.files) if "onnx" in r]
    key = _cache_key(digest, kind, providers, optimization) if cache else None
    cacheable = key is not None and not config.get("external_data") and TENSORRT not in providers
    session, cache_file, hit = _session(
        model_file,
        providers,
        device_id=device_id,
        threads=(intra_op_threads, inter_op_threads),
        optimization=optimization,
        cache_file=_cache_dir() / f"{key}.onnx" if cacheable else None,
    )
    signature = Signature.from_dict(descriptor.signature) if descriptor.signature else None
    predictor = OnnxRuntimePredictor(
        session, signature=signature, device_id=device_id, cache_file=cache_file, cache_hit=hit
    )
    _report(predictor, descriptor, device, providers)
    if warm_up:
        predictor.predict(_warm_up_input(path, descriptor, signature, session))
    return predictor


def parse_device(device: str) -> tuple[str, int]:
    kind, _, index = device.strip().lower().partition(":")
    if kind not in DEVICES or (index and (kind == "cpu" or not index.isdigit())):
        raise InvalidInputError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    return kind, int(index or 0)


def provider_list(kind: str, device_id: int = 0, *, tensorrt: bool | None = None) -> list[str]:
    """Providers in priority for a device kind, among those this onnxruntime build has."""
    available = set(_ort().get_available_providers())
    if kind == "cpu":
        return [CPU]
    _preload_cuda_libraries()
    wanted = []
    if TENSORRT in available and (tensorrt or (tensorrt is None and _tensorrt_loads())):
        wanted.append(TENSORRT)
    if CUDA in available:
        wanted.append(CUDA)
    return [*wanted, CPU]


def _provider_options(providers: Sequence[str], device_id: int) -> list[dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {
        TENSORRT: {
            "device_id": device_id,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(_cache_dir() / "tensorrt"),
        },
        CUDA: {"device_id": device_id},
    }
    return [options.get(p, {}) for p in providers]


@functools.cache
def _preload_cuda_libraries() -> None:
    # onnxruntime-gpu finds CUDA and cuDNN from the nvidia-* wheels (as torch installs them)
    # only once they are loaded; preload_dlls does that, where this build has it.
    preload = getattr(_ort(), "preload_dlls", None)
    if preload is not None and CUDA in _ort().get_available_providers():
        try:
            preload()
        except Exception as exc:  # a missing library shows later as a CPU fallback, with a warning
            log.debug("onnxruntime.preload_dlls failed: %s", exc)


def _tensorrt_loads() -> bool:
    import ctypes

    for name in _NVINFER:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "ONNX Runtime is not installed; pip install 'modelpack[onnx]' (CPU) "
            "or 'modelpack[gpu]' (CUDA)"
        ) from exc
    return onnxruntime


def _cache_dir() -> Path:
    home = Path(os.environ.get(HOME_ENV) or Path.home() / ".modelpack").expanduser()
    return home / "cache" / "ort"


def _cache_key(digest: list[str], kind: str, providers: list[str], optimization: str) -> str:
    ort = _ort()
    parts = {"model": digest, "ort": ort.__version__, "device": kind, "providers": providers}
    # An optimized graph may hold kernels for this CPU's instruction set (NCHWc layouts...).
    parts.update(optimization=optimization, machine=platform.machine())
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _session(
    model_file: Path,
    providers: list[str],
    *,
    device_id: int,
    threads: tuple[int, int],
    optimization: str,
    cache_file: Path | None,
) -> tuple[onnxruntime.InferenceSession, Path | None, bool]:
    """A session, from the cached optimized graph when there is one (then not optimized again)."""
    ort = _ort()
    levels = ort.GraphOptimizationLevel
    level = getattr(levels, _LEVELS[optimization])

    def build(source: Path, level: Any, save_to: Path | None) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads
        options.graph_optimization_level = level
        if save_to is not None:
            options.optimized_model_filepath = str(save_to)
            if providers == [CPU]:  # its "hardware-specific graph" notice is what the key is for
                options.log_severity_level = 3
        return ort.InferenceSession(
            str(source),
            sess_options=options,
            providers=providers,
            provider_options=_provider_options(providers, device_id),
        )

    if cache_file is None:
        return build(model_file, level, None), None, False
    if cache_file.is_file():
        try:
            return build(cache_file, levels.ORT_DISABLE_ALL, None), cache_file, True
        except Exception as exc:  # a damaged cache entry is rebuilt, never fatal
            log.warning("ignoring the unreadable optimized model %s: %s", cache_file, exc)
            cache_file.unlink(missing_ok=True)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_name(f".{cache_file.stem}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        session = build(model_file, level, partial)
        if list(session.get_providers()) == providers and partial.is_file():
            os.replace(partial, cache_file)  # whole or absent, for concurrent workers
            return session, cache_file, False
        return session, None, False  # a fallback session is not what the key says
    finally:
        partial.unlink(missing_ok=True)


def _report(
    predictor: OnnxRuntimePredictor, descriptor: Descriptor, device: str, wanted: list[str]
) -> None:
    on_gpu = predictor.provider in GPU_PROVIDERS
    if device.startswith("cuda") and not on_gpu:
        why = (
            "its CUDA provider failed to load (no GPU or CUDA libraries; see ONNX Runtime's log)"
            if CUDA in wanted
            else "this onnxruntime has no CUDA provider (install modelpack[gpu])"
        )
        warnings.warn(
            f"device {device!r} was requested, but {why}; running on {CPU}",
            OnnxRuntimeFallbackWarning,
            stacklevel=3,
        )
    log.info(
        "ONNX Runtime runs model %s on %s (device %s, providers %s%s%s)",
        descriptor.model_id,
        predictor.provider,
        device,
        ", ".join(predictor.providers),
        ", IOBinding" if predictor.io_binding else "",
        ", optimized model from cache" if predictor.cache_hit else "",
    )


def _warm_up_input(
    path: Path, descriptor: Descriptor, signature: Signature | None, session: Any
) -> Any:
    info = descriptor.input_example
    if info and info.get("file") == EXAMPLE_FILE and (path / EXAMPLE_FILE).is_file():
        import orjson

        from modelpack.payload import decode

        data, _ = decode(orjson.loads((path / EXAMPLE_FILE).read_bytes()))
        return signature.enforce(data) if signature is not None else data
    return {i.name: _zeros(i) for i in session.get_inputs()}


def _zeros(arg: Any) -> np.ndarray:
    import onnx

    shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
    elem = onnx.TensorProto.DataType.Value(arg.type.removeprefix("tensor(")[:-1].upper())
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    return np.full(shape, "" if dtype.kind == "O" else 0, dtype=dtype)
