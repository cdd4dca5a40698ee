"""MLflow's signature specs and MLmodel files read as documented (no MLflow needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelpack.errors import InvalidModelError, ModelNotFoundError
from modelpack.mlflow_import import import_mlflow
from modelpack.mlflow_import.mlmodel import convert_signature, read, read_requirements


def _sig(inputs: list[dict[str, Any]], **rest: object) -> dict[str, object]:
    return {"inputs": json.dumps(inputs), **{k: json.dumps(v) for k, v in rest.items()}}


def test_column_spec_types_optional_and_nested() -> None:
    sig = convert_signature(
        _sig(
            [
                {"type": "long", "name": "a", "required": True},
                {"type": "string", "name": "b", "required": False},
                {"type": "array", "items": {"type": "double"}, "name": "c"},
                {"type": "boolean", "name": "d"},
                {"type": "float"},
            ],
            outputs=[{"type": "double", "required": True}],
        )
    )
    cols = sig.inputs.columns
    assert [(c.name, c.dtype, c.required) for c in cols] == [
        ("a", "int64", True),
        ("b", "string", False),
        ("c", "object", True),
        ("d", "bool", True),
        ("4", "float32", True),
    ]
    assert sig.outputs is not None and sig.outputs.columns[0].dtype == "float64"


def test_tensor_specs_with_names_and_params() -> None:
    sig = convert_signature(
        _sig(
            [
                {
                    "type": "tensor",
                    "name": "ids",
                    "tensor-spec": {"dtype": "int64", "shape": [-1, 8]},
                },
                {
                    "type": "tensor",
                    "name": "mask",
                    "tensor-spec": {"dtype": "bool", "shape": [-1, 8]},
                },
            ],
            params=[
                {"name": "temperature", "type": "double", "default": 0.7, "shape": None},
                {"name": "stop", "type": "string", "default": ["\n"], "shape": [-1]},
            ],
        )
    )
    assert [(t.name, t.dtype, t.shape) for t in sig.inputs.tensors] == [
        ("ids", "int64", (-1, 8)),
        ("mask", "bool", (-1, 8)),
    ]
    assert sig.params == {"temperature": 0.7, "stop": ["\n"]}


def test_mixed_or_malformed_specs_are_one_line_errors() -> None:
    tensor = {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1]}}
    with pytest.raises(InvalidModelError, match="mix tensors and columns"):
        convert_signature(_sig([tensor, {"type": "long", "name": "a"}]))
    with pytest.raises(InvalidModelError, match="not JSON"):
        convert_signature({"inputs": "[{"})


def test_requirements_drop_mlflow_and_pip_options(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "-c constraints.txt\nmlflow==3.17.2\nmlflow-skinny\nscikit-learn==1.9.1\n"
        "# a comment\ntorch==2.13.0+cpu ; python_version >= '3.10'\n"
    )
    assert read_requirements(tmp_path) == [
        "scikit-learn==1.9.1",
        "torch==2.13.0+cpu ; python_version >= '3.10'",
    ]
    (tmp_path / "requirements.txt").unlink()
    (tmp_path / "conda.yaml").write_text(
        "dependencies:\n- python=3.11\n- pip:\n  - mlflow==3.17.2\n  - xgboost==3.2.0\n"
    )
    assert read_requirements(tmp_path) == ["xgboost==3.2.0"]


def test_not_an_mlflow_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no MLflow model"):
        import_mlflow(tmp_path, tmp_path / "out")
    (tmp_path / "MLmodel").write_text("flavors: [1, 2]\n")
    with pytest.raises(InvalidModelError, match="'flavors' mapping"):
        read(tmp_path)


def test_unknown_flavor_names_what_is_supported(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  spark:\n    model_data: sparkml\n"
        "  python_function:\n    loader_module: mlflow.spark\n"
    )
    with pytest.raises(InvalidModelError, match=r"spark.*pyfunc loader mlflow\.spark.*supported"):
        import_mlflow(tmp_path, tmp_path / "out")


def test_a_file_outside_the_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text("flavors:\n  onnx:\n    data: ../../etc/passwd\n")
    with pytest.raises(InvalidModelError, match="which the model lacks"):
        import_mlflow(tmp_path, tmp_path / "out")
