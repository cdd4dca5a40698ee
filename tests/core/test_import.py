"""`import modelpack` stays light: it imports no optional library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "torch",
    "sklearn",
    "onnxruntime",
    "onnx",
    "boto3",
    "kubernetes",
    "skops",
    "safetensors",
    "sqlalchemy",
    "starlette",
    "pandas",
    "xgboost",
    "lightgbm",
    "catboost",
    "keras",
    "transformers",
    "pyarrow",
)


@pytest.mark.parametrize("statement", ["import modelpack", "import modelpack.errors"])
def test_import_loads_no_optional_library(statement: str) -> None:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(HEAVY)


def test_version_is_set() -> None:
    import modelpack

    assert isinstance(modelpack.__version__, str)
    assert modelpack.__version__
