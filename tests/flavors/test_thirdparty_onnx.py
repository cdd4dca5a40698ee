"""A third-party flavor that implements export_onnx converts like a built-in one.

The fixture distribution (tests/fixtures/thirdparty_flavor) is installed beside the built wheel
in a venv that also has ONNX Runtime; ``modelpack convert --to onnx`` finds its exporter through
the ExportsOnnx capability, runs the parity gate and writes the onnx flavor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _run, _uv, _uv_offline_first

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx_venv(thirdparty_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The third-party venv's wheel and fixtures, plus onnx and onnxruntime (not core deps)."""
    base = thirdparty_venv.parents[2]  # what build_thirdparty_venv built in
    [wheel] = (base / "dist").glob("modelpack-*.whl")
    venv = tmp_path_factory.mktemp("onnx_venv") / "venv"
    _run(_uv(), "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    constraints = base / "constraints.txt"
    packages: list[str | Path] = [wheel, base / "thirdparty", "onnx", "onnxruntime"]
    _uv_offline_first("pip", "install", "--quiet", "--python", python, "-c", constraints, *packages)
    return python


def test_a_thirdparty_model_converts_and_runs_on_onnx_runtime(
    onnx_venv: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "MODELPACK_HOME": str(tmp_path / "home")}
    env.pop("VIRTUAL_ENV", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(onnx_venv), *args],
            cwd=tmp_path,  # not the checkout: its modelpack/ must not shadow the wheel
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    saved = run(
        "-c",
        "import numpy, modelpack; from mp_thirdparty_flavor import ConstantModel;"
        "modelpack.save(ConstantModel(7.5), 'm', input_example=numpy.zeros((3, 2)))",
    )
    assert saved.returncode == 0, saved.stderr

    converted = run("-m", "modelpack", "convert", "m", "--to", "onnx", "-o", "m-onnx")
    assert converted.returncode == 0, converted.stderr
    assert converted.stdout.strip() == "m-onnx"

    predicted = run(
        "-c",
        """
import json, numpy, modelpack
from modelpack.flavors.onnx import OnnxRuntimePredictor
native, onnx = modelpack.load("m-onnx"), modelpack.load("m-onnx", flavor="onnx")
rows = numpy.random.default_rng(0).normal(size=(5, 2))
config = onnx.descriptor.flavors["onnx"]
print(json.dumps({
    "flavors": sorted(onnx.descriptor.flavors),
    "loader": onnx.descriptor.loader,
    "runtime": isinstance(onnx.predictor.inner, OnnxRuntimePredictor),
    "provider": onnx.predictor.inner.provider,
    "native": native.predict(rows).tolist(),
    "onnx": onnx.predict(rows).tolist(),
    "dtype": str(onnx.predict(rows).dtype),
    "converted_from": config["converted_from"],
    "converter": config["converter"],
    "parity": config["parity"]["outputs"]["constant"],
}))
""",
    )
    assert predicted.returncode == 0, predicted.stderr
    found = json.loads(predicted.stdout)
    assert found["flavors"] == ["constant", "onnx"] and found["loader"] == "constant"
    assert found["runtime"] and found["provider"] == "CPUExecutionProvider"
    assert found["onnx"] == found["native"] == [7.5] * 5 and found["dtype"] == "float64"
    assert found["converted_from"] == "constant"
    assert found["converter"] == {"tool": "mp-thirdparty-flavor", "version": "0.1.0"}
    assert found["parity"]["mismatched"] == 0 and found["parity"]["values"] >= 1000

    # It is listed with the built-ins that export ONNX (what a refusal names).
    listed = run("-c", "import json, modelpack.convert as c; print(json.dumps(c.convertible()))")
    assert listed.returncode == 0, listed.stderr
    convertible = json.loads(listed.stdout)
    assert {"constant", "sklearn", "torch"} <= set(convertible) and "python" not in convertible

    # What its exporter raises is a one-line conversion_failed naming the step.
    table = run(
        "-c",
        "import pandas, modelpack; from mp_thirdparty_flavor import ConstantModel;"
        "modelpack.save(ConstantModel(1.0), 't', input_example=pandas.DataFrame({'a': [1.0]}))",
    )
    assert table.returncode == 0, table.stderr
    refused = run("-m", "modelpack", "convert", "t", "--to", "onnx")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith(
        "error [conversion_failed]: the constant flavor's ONNX export failed: ValueError: "
        "the constant flavor converts models with a tensor signature"
    )
    assert not (tmp_path / "t-onnx").exists()
