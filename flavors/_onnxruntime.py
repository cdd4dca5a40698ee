"""The onnx flavor's runtime: ONNX Runtime sessions on TensorRT, CUDA or the CPU.

``runtime_predictor`` picks execution providers in priority for the load's device (TensorRT
when its libraries load, then CUDA, then CPU), caches the optimized graph per model content, ORT
version, device and providers, binds inputs and outputs to device buffers on a GPU, warms the
session up, and logs once which provider actually runs. A GPU asked for where none runs is a
warning, not an error: the model runs on the CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack._fs import sha256_file
from modelpack.errors import InvalidInputError, InvalidModelError, MissingDependencyError
from modelpack.flavors._onnx_predictor import OnnxPredictor
from modelpack.plugins import check_keys
from modelpack.signature import Signature
from modelpack.trust import TrustArg

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger("modelpack.onnxruntime")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
DEVICES = ("cpu", "cuda")
HOME_ENV = "MODELPACK_HOME"
OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_NVINFER = ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so")


class OnnxRuntimeFallbackWarning(RuntimeWarning):
    """A GPU was asked for, and ONNX Runtime runs the model on the CPU."""


class OnnxRuntimePredictor(OnnxPredictor):
    """What the onnx flavor loads: a session on the load's device; IOBinding on a GPU provider.

    ``provider`` is the provider that runs it, as the session reports it; ``runtime`` is what a
    server reports of it. ``signature`` is the graph's (``load_predictor`` gives the model's).
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        *,
        device_id: int = 0,
        cache_file: Path | None = None,
        cache_hit: bool = False,
        settings: RuntimeSettings | None = None,
    ) -> None:
        super().__init__(session)
        self.signature: Signature | None = self._signature
        self.providers: list[str] = list(session.get_providers())
        self.provider = self.providers[0]
        self.device_id = device_id
        self.cache_file = cache_file
        self.cache_hit = cache_hit
        self.settings = settings or RuntimeSettings()
        tensors_out = all(o.type.startswith("tensor(") for o in session.get_outputs())
        self.io_binding = self.provider in GPU_PROVIDERS and tensors_out

    @property
    def runtime(self) -> dict[str, Any]:
        return {"name": "onnxruntime", "provider": self.provider}

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        if not self.io_binding:
            return super().run(feeds)
        ort = _ort()
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


@dataclass(frozen=True)
class RuntimeSettings:
    """How the onnx flavor builds its sessions: ``modelpack.load(uri, flavor="onnx",
    settings={...})`` with these keys, or ``load_predictor``'s keywords.

    Threads 0 let ONNX Runtime choose. ``optimization``: disable, basic, extended or all.
    ``cache``: keep the optimized graph under ``$MODELPACK_HOME/cache/ort/``. ``tensorrt``:
    None uses TensorRT when its libraries load. ``warm_up``: one predict on zeros at load.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    optimization: str = "all"
    cache: bool = True
    tensorrt: bool | None = None
    warm_up: bool = True

    def __post_init__(self) -> None:
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise InvalidInputError(
                f"unknown optimization level {self.optimization!r}; choose one of "
                f"{', '.join(OPTIMIZATION_LEVELS)}"
            )

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any]) -> RuntimeSettings:
        """The settings ``modelpack.load(uri, flavor="onnx", settings={...})`` was given."""
        known = [f.name for f in dataclasses.fields(cls)]
        check_keys(given, known, "the onnx flavor has no load setting")
        return cls(**given)


def load_predictor(
    uri: str | os.PathLike[str],
    device: str = "cpu",
    *,
    trust: TrustArg = None,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    optimization: str = "all",
    cache: bool = True,
    tensorrt: bool | None = None,
    warm_up: bool = True,
) -> OnnxRuntimePredictor:
    """The ``onnx`` flavor of the model at ``uri`` on ONNX Runtime, with its session settings.

    What ``modelpack.load(uri, flavor="onnx", device=device)`` runs, tuned (``RuntimeSettings``
    says how); ``warm_up`` also predicts on the input example when the model has one. The
    predictor's ``signature`` is the model's.
    """
    from modelpack.model import load
    from modelpack.predictor import EnforcingPredictor

    settings = RuntimeSettings(
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        optimization=optimization,
        cache=cache,
        tensorrt=tensorrt,
        warm_up=warm_up,
    )
    model = load(
        uri, device=device, trust=trust, flavor="onnx", settings=dataclasses.asdict(settings)
    )
    predictor: Any = model.predictor
    if isinstance(predictor, EnforcingPredictor):
        predictor = predictor.inner
    if not isinstance(predictor, OnnxRuntimePredictor):
        raise InvalidModelError(f"{uri}: the onnx flavor did not load on ONNX Runtime")
    predictor.signature = model.signature or predictor.signature
    example = model.input_example() if warm_up else None
    if example is not None:
        model.predict(example)
    return predictor


def runtime_predictor(
    model_file: Path,
    device: str,
    *,
    cacheable: bool = True,
    settings: RuntimeSettings | None = None,
) -> OnnxRuntimePredictor:
    """An ONNX Runtime session of ``model_file`` (verified by the caller) on ``device``.

    ``device``: ``cpu``, ``cuda`` or ``cuda:N``. ``cacheable``: False for a model whose weights
    are in external data (its optimized graph would hold them all again).
    """
    settings = settings or RuntimeSettings()
    kind, device_id = parse_device(device)
    providers = provider_list(kind, device_id, tensorrt=settings.tensorrt)
    cache_file = None
    if settings.cache and cacheable and TENSORRT not in providers:
        key = _cache_key(sha256_file(model_file), kind, providers, settings.optimization)
        cache_file = _cache_dir() / f"{key}.onnx"
    session, cache_file, hit = _session(
        model_file,
        providers,
        device_id=device_id,
        threads=(settings.intra_op_threads, settings.inter_op_threads),
        optimization=settings.optimization,
        cache_file=cache_file,
    )
    predictor = OnnxRuntimePredictor(
        session, device_id=device_id, cache_file=cache_file, cache_hit=hit, settings=settings
    )
    _report(predictor, model_file.parent.parent, device, providers)
    if settings.warm_up:
        _warm_up(predictor, session)
    return predictor


def plain_session(model: str | bytes) -> onnxruntime.InferenceSession:
    """A CPU session with ONNX Runtime's defaults (what ``OnnxFlavor.wrap`` runs)."""
    return _ort().InferenceSession(model, providers=[CPU])


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


def _cache_key(digest: str, kind: str, providers: list[str], optimization: str) -> str:
    # The digest is of the bytes this load reads (the manifest is checked beside the load, not
    # before it): an entry always holds the graph of the content its key names.
    parts = {"model": digest, "ort": _ort().__version__, "device": kind, "providers": providers}
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
    level = getattr(levels, OPTIMIZATION_LEVELS[optimization])

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

    if cache_file is not None and cache_file.is_file():
        try:
            return build(cache_file, levels.ORT_DISABLE_ALL, None), cache_file, True
        except Exception as exc:  # a damaged cache entry is rebuilt, never fatal
            log.warning("ignoring the unreadable optimized model %s: %s", cache_file, exc)
            cache_file.unlink(missing_ok=True)
    if cache_file is not None and not _writable(cache_file.parent):
        cache_file = None  # a read-only home: the cache only ever saves work
    if cache_file is None:
        return build(model_file, level, None), None, False
    partial = cache_file.with_name(f".{cache_file.stem}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        session = build(model_file, level, partial)
        if list(session.get_providers()) == providers and partial.is_file():
            os.replace(partial, cache_file)  # whole or absent, for concurrent workers
            return session, cache_file, False
        return session, None, False  # a fallback session is not what the key says
    finally:
        partial.unlink(missing_ok=True)


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.debug("no optimized-model cache: %s", exc)
        return False
    return os.access(directory, os.W_OK)


def _report(predictor: OnnxRuntimePredictor, model: Path, device: str, wanted: list[str]) -> None:
    on_gpu = predictor.provider in GPU_PROVIDERS
    if device.strip().lower().startswith("cuda") and not on_gpu:
        why = (
            "its CUDA provider failed to load (no GPU or CUDA libraries; see ONNX Runtime's log)"
            if CUDA in wanted
            else "this onnxruntime has no CUDA provider (install modelpack[gpu])"
        )
        warnings.warn(
            f"device {device!r} was requested, but {why}; running on {CPU}",
            OnnxRuntimeFallbackWarning,
            stacklevel=2,
        )
    log.info(
        "ONNX Runtime runs model %s on %s (device %s, providers %s%s%s)",
        model,
        predictor.provider,
        device,
        ", ".join(predictor.providers),
        ", IOBinding" if predictor.io_binding else "",
        ", optimized model from cache" if predictor.cache_hit else "",
    )


def _warm_up(predictor: OnnxRuntimePredictor, session: Any) -> None:
    # Zeros of the graph's input shapes: the session allocates (and a GPU compiles) before the
    # first request. Zeros are not valid input for every model (a category it refuses): then
    # the first predict pays instead; servers warm up on the input example as well.
    try:
        predictor.predict({i.name: _zeros(i) for i in session.get_inputs()})
    except Exception as exc:
        log.debug("ONNX Runtime warm-up on zeros failed: %s", exc)


def _zeros(arg: Any) -> np.ndarray:
    import onnx

    shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
    elem = onnx.TensorProto.DataType.Value(arg.type.removeprefix("tensor(")[:-1].upper())
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    return np.full(shape, "" if dtype.kind == "O" else 0, dtype=dtype)
