"""The ``onnx`` target: the model on ONNX Runtime, on a GPU when one runs, as a local process.

A model without an ``onnx`` flavor is converted first (``modelpack.convert.to_onnx``, with its
parity gate); the converted copy lives in ``$MODELPACK_HOME/deployments/onnx/NAME/``. Processes,
state, update without downtime and delete are the local target's.
"""

from __future__ import annotations

import builtins
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelpack import trust
from modelpack.deployers import _process
from modelpack.deployers.local import LocalDeployer
from modelpack.errors import InvalidInputError, MissingDependencyError

CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")


class OnnxDeployer(LocalDeployer):
    """Serves a model's ``onnx`` flavor with ONNX Runtime (``modelpack serve --runtime onnx``)."""

    name = "onnx"
    options: dict[str, str] = {
        **{k: v for k, v in LocalDeployer.options.items() if k not in ("runtime", "device")},
        "device": "auto (cuda when ONNX Runtime has CUDA, else cpu), cpu, cuda or cuda:N "
        "[default: auto]",
        "rtol": "relative tolerance of the conversion's parity gate [default: 1e-4]",
        "atol": "absolute tolerance of the conversion's parity gate [default: 1e-5]",
    }

    def _options(self, name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        options = super()._options(name, {**config, "device": "cpu"})
        device = str(config.get("device", "auto")).lower()
        if device.partition(":")[0] not in DEVICES or (device.startswith("auto:")):
            raise InvalidInputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        options["device"] = device
        options.pop("runtime")  # always onnx here
        for key in ("rtol", "atol"):
            if key in options:
                try:
                    options[key] = float(options[key])
                except (TypeError, ValueError):
                    raise InvalidInputError(f"option {key} must be a number") from None
        return options

    def _serve_options(self, options: Mapping[str, Any]) -> builtins.list[str]:
        device = str(options["device"])  # resolved by _start; "auto" only in a plan
        return [
            "--runtime",
            "onnx",
            "--device",
            _device(device) if device == "auto" else device,
        ]

    def _start(
        self, name: str, model_uri: str, options: dict[str, Any], generation: int
    ) -> dict[str, Any]:
        # Decided once per server: the state records the device it was started with.
        options = {**options, "device": _device(str(options["device"]))}
        return super()._start(name, model_uri, options, generation)

    def _plan_model(self, name: str, model_uri: str, generation: int) -> builtins.list[str]:
        path = self._resolve(model_uri)
        if _has_onnx(path):
            return [f"serve the onnx flavor of the model at {path}"]
        return [
            f"convert {model_uri} to ONNX (parity gate) into {self._model_dir(name, generation)}",
            "serve the converted model",
        ]

    def _prepare_model(
        self, name: str, model_uri: str, generation: int, options: Mapping[str, Any]
    ) -> Path:
        path = self._resolve(model_uri)
        if _has_onnx(path):
            return path
        from modelpack.convert import to_onnx

        target = self._model_dir(name, generation)
        shutil.rmtree(target, ignore_errors=True)  # left by a crash: never served
        rtol, atol = float(options.get("rtol", 1e-4)), float(options.get("atol", 1e-5))
        granted = trust.parse(options.get("trust"))  # converting loads the source model
        return to_onnx(path, target, rtol=rtol, atol=atol, trust=granted).resolve()

    def _model_dir(self, name: str, generation: int) -> Path:
        return self._dir() / name / ("model" if generation == 1 else f"model.{generation}")

    def _remove_model(self, state: Mapping[str, Any]) -> None:
        model = Path(state["model_path"])
        home = self._dir() / state["name"]
        if model.parent == home:  # a copy we converted, not the user's model
            shutil.rmtree(model, ignore_errors=True)
            if home.is_dir() and not any(home.iterdir()):
                home.rmdir()

    def _details(self, state: Mapping[str, Any], ready: bool) -> dict[str, Any]:
        details: dict[str, Any] = {"device": state["options"]["device"]}
        if ready:
            metadata = _process.get_json(self._endpoint(state) + "/metadata")
            runtime = (metadata or {}).get("runtime") or {}
            if runtime.get("provider"):
                details["provider"] = runtime["provider"]
        return details


def _has_onnx(path: Path) -> bool:
    from modelpack.descriptor import Descriptor

    return "onnx" in Descriptor.read(path).flavors


def _device(requested: str) -> str:
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
    from modelpack.servers.onnxruntime import OnnxRuntimeFallbackWarning

    why = "this ONNX Runtime has no CUDA provider (install modelpack[gpu] on a GPU machine)"
    warnings.warn(
        f"{prefix} {why}; serving on CPU".strip(), OnnxRuntimeFallbackWarning, stacklevel=2
    )


def _cuda_available() -> bool:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "the onnx target needs ONNX Runtime: pip install 'modelpack[onnx]' (CPU) "
            "or 'modelpack[gpu]' (CUDA)"
        ) from exc
    return CUDA in onnxruntime.get_available_providers()
