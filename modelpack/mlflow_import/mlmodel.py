"""Reading an MLflow model directory: its ``MLmodel`` file, signature, input example, environment.

Everything here follows MLflow's documented file layout and needs no ``mlflow``: the MLmodel
YAML, the signature's JSON specs (column-based, tensor-based, the params schema), the saved
input example (``saved_input_example_info``) and the requirements (``requirements.txt``, else
``python_env.yaml``, else ``conda.yaml``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelpack.errors import InvalidModelError, ModelNotFoundError
from modelpack.signature import ColSpec, Schema, Signature, TensorSpec

MLMODEL = "MLmodel"
# MLflow's column types -> modelpack's (docs: mlflow.types.DataType).
_COLUMN_TYPES = {
    "boolean": "bool",
    "integer": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
    "string": "string",
    "binary": "binary",
    "datetime": "datetime",
}
# Distributions the imported model no longer needs: MLflow itself.
_MLFLOW_DISTS = {"mlflow", "mlflow-skinny", "mlflow-tracing"}


@dataclass(frozen=True)
class MlflowModel:
    """What an MLflow model directory holds, read without MLflow."""

    path: Path
    flavors: dict[str, dict[str, Any]]
    signature: Signature | None
    input_example: Any
    requirements: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # mlflow_version, model_uuid, run_id...

    def flavor(self, name: str) -> dict[str, Any]:
        return dict(self.flavors.get(name) or {})


def read(path: Path) -> MlflowModel:
    file = path / MLMODEL
    if not file.is_file():
        raise ModelNotFoundError(f"no MLflow model at {path}: it has no {MLMODEL} file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidModelError(f"{file}: not a readable MLmodel YAML file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
        raise InvalidModelError(f"{file}: an MLmodel file needs a 'flavors' mapping")
    signature = convert_signature(data["signature"]) if data.get("signature") else None
    info = {
        k: data[k]
        for k in ("mlflow_version", "model_uuid", "run_id", "model_id", "utc_time_created")
        if data.get(k) is not None
    }
    return MlflowModel(
        path=path,
        flavors={str(k): dict(v or {}) for k, v in data["flavors"].items()},
        signature=signature,
        input_example=read_example(path, data.get("saved_input_example_info"), signature),
        requirements=read_requirements(path),
        info=info,
    )


# -- signature ------------------------------------------------------------------------------


def convert_signature(data: Mapping[str, Any]) -> Signature:
    """MLflow's signature (JSON strings of specs) as modelpack's :class:`Signature`."""
    inputs = _schema(data.get("inputs"), "inputs")
    if inputs is None:
        raise InvalidModelError("the MLmodel signature has no inputs")
    return Signature(
        inputs=inputs,
        outputs=_schema(data.get("outputs"), "outputs"),
        params=_params(data.get("params")),
    )


def _specs(value: Any, part: str) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    try:
        specs = json.loads(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise InvalidModelError(f"the MLmodel signature's {part} are not JSON: {exc}") from exc
    if specs is None:
        return None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise InvalidModelError(f"the MLmodel signature's {part} must be a list of specs")
    return specs


def _schema(value: Any, part: str) -> Schema | None:
    specs = _specs(value, part)
    if not specs:
        return None
    if all(s.get("type") == "tensor" for s in specs):
        return Schema(tensors=tuple(_tensor(s, part) for s in specs))
    if any(s.get("type") == "tensor" for s in specs):
        raise InvalidModelError(f"the MLmodel signature's {part} mix tensors and columns")
    return Schema(columns=tuple(_column(s, i) for i, s in enumerate(specs)))


def _tensor(spec: Mapping[str, Any], part: str) -> TensorSpec:
    import numpy as np

    tensor = spec.get("tensor-spec") or {}
    try:
        return TensorSpec(
            dtype=str(np.dtype(tensor["dtype"])),
            shape=tuple(int(d) for d in tensor["shape"]),
            name=spec.get("name"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidModelError(f"malformed tensor spec in the signature's {part}: {spec}") from exc


def _column(spec: Mapping[str, Any], index: int) -> ColSpec:
    kind = spec.get("type")
    # Array, Object, Map and AnyType columns hold nested values: modelpack types them "object".
    dtype = _COLUMN_TYPES.get(kind, "object") if isinstance(kind, str) else "object"
    return ColSpec(
        name=str(spec.get("name", index)),
        dtype=dtype,
        required=bool(spec.get("required", True)),
        allow_missing=True,  # MLflow enforces presence, never non-missing values
    )


def _params(value: Any) -> dict[str, Any]:
    specs = _specs(value, "params") or []
    return {str(s["name"]): s.get("default") for s in specs if "name" in s}


# -- input example --------------------------------------------------------------------------


def read_example(path: Path, info: Any, signature: Signature | None) -> Any:
    """The saved input example as MLflow's pyfunc would hand it to the model, or None."""
    if not isinstance(info, dict) or not info.get("artifact_path"):
        return None
    file = path / str(info["artifact_path"])
    if not file.is_file():
        return None
    try:
        body = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InvalidModelError(f"{file}: the input example is not JSON ({exc})") from exc
    kind = info.get("type")
    if kind == "dataframe":
        return _frame(body, str(info.get("pandas_orient", "split")))
    if kind == "ndarray":
        return _arrays(body.get("inputs", body) if isinstance(body, dict) else body, signature)
    return body  # json_object and the like: the value as saved


def _frame(body: Any, orient: str) -> Any:
    import pandas as pd

    if orient == "split" and isinstance(body, dict):
        return pd.DataFrame(body.get("data", []), columns=body.get("columns"))
    return pd.DataFrame(body)


def _arrays(body: Any, signature: Signature | None) -> Any:
    import numpy as np

    tensors = signature.inputs.tensors if signature else ()
    if isinstance(body, dict):
        dtypes = {t.name: t.dtype for t in tensors}
        return {k: np.asarray(v, dtype=dtypes.get(k)) for k, v in body.items()}
    dtype = tensors[0].dtype if len(tensors) == 1 else None
    return np.asarray(body, dtype=dtype)


# -- environment ----------------------------------------------------------------------------


def read_requirements(path: Path) -> list[str]:
    """The pip requirements MLflow recorded, less MLflow itself and pip's own options."""
    lines: list[str] = []
    if (path / "requirements.txt").is_file():
        lines = (path / "requirements.txt").read_text(encoding="utf-8").splitlines()
    else:
        lines = _conda_pip(path / "conda.yaml")
    out = []
    for line in lines:
        spec = line.split("#", 1)[0].strip()
        if not spec or spec.startswith("-"):
            continue
        name = spec.split(";", 1)[0]
        for sep in ("==", ">=", "<=", "~=", "!=", ">", "<", "[", " ", "@"):
            name = name.split(sep, 1)[0]
        if name.strip().lower().replace("_", "-") not in _MLFLOW_DISTS:
            out.append(spec)
    return out


def _conda_pip(file: Path) -> list[str]:
    if not file.is_file():
        return []
    try:
        env = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return []
    for dep in env.get("dependencies") or []:
        if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            return [str(d) for d in dep["pip"]]
    return []


def python_version(model: MlflowModel) -> str | None:
    pyfunc = model.flavors.get("python_function") or {}
    version = pyfunc.get("python_version")
    return str(version) if version else None
