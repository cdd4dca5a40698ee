"""ONNX Runtime in a local process: the onnx target (the local target preset to runtime=onnx,
device=auto) and ``-t local -C runtime=onnx``, with conversion behind the parity gate."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelpack import deploy
from modelpack.deploy import Deployment, wait_until
from modelpack.deployers import _process
from modelpack.deployers.local import LocalDeployer
from modelpack.errors import ConversionError, ParityError
from modelpack.flavors.onnx import OnnxRuntimeFallbackWarning
from modelpack.payload import encode_example
from modelpack.plugins import get_plugin
from tests.deployers.conftest import READY_S

pytest.importorskip("onnxruntime")


@functools.cache
def cuda_provider() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def arrays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The conftest's two models on a plain float array (one ONNX input)."""
    from sklearn.linear_model import LogisticRegression

    import modelpack

    x = np.random.default_rng(1).normal(size=(40, 3))
    base = tmp_path_factory.mktemp("onnx-models")
    out: dict[str, Any] = {"x": x}
    for key, labels in (("a", x[:, 0] > 0), ("b", x[:, 0] <= 0)):
        clf = LogisticRegression().fit(x, labels.astype(int))
        out[key] = modelpack.save(clf, base / key, input_example=x[:3])
        out[f"{key}_clf"] = clf
    return out


@pytest.fixture
def onnx() -> LocalDeployer:
    deployer: LocalDeployer = get_plugin("deployer", "onnx")
    return deployer


def ready(deployer: LocalDeployer, name: str) -> Deployment:
    return wait_until(lambda: deployer.get(name, {}), timeout=READY_S, interval=0.2)


def test_the_onnx_target_is_the_local_target_preset(onnx: LocalDeployer) -> None:
    assert type(onnx) is LocalDeployer  # an instance with a preset, not a subclass
    assert (onnx.name, onnx.runtime, onnx.device) == ("onnx", "onnx", "auto")
    assert "runtime" not in onnx.options and {"device", "rtol", "atol"} <= set(onnx.options)
    assert onnx.local_state is True


def test_converts_serves_and_cleans_up(
    home: Path, onnx: LocalDeployer, arrays: dict[str, Any]
) -> None:
    rows = arrays["x"][:6]
    onnx.create("fast", str(arrays["a"]), {"device": "cpu"})
    converted = home / "deployments" / "onnx" / "fast" / "model"
    assert (converted / "model" / "model.onnx").is_file()
    deployment = ready(onnx, "fast")
    assert deployment.details["model_path"] == str(converted)
    assert deployment.details["provider"] == "CPUExecutionProvider"
    assert deployment.details["device"] == "cpu"
    assert deployment.endpoint is not None
    response = httpx.post(deployment.endpoint + "/invocations", json=encode_example(rows))
    expected = arrays["a_clf"].predict(rows).tolist()
    assert response.json()["predictions"] == expected
    assert onnx.predict("fast", rows, {}) == expected

    deploy.update(onnx, "fast", str(arrays["b"]), timeout=READY_S)
    assert onnx.predict("fast", rows, {}) == arrays["b_clf"].predict(rows).tolist()
    assert not converted.exists()  # the first conversion went with its server
    assert (home / "deployments" / "onnx" / "fast" / "model.2").is_dir()

    onnx.delete("fast", {})
    assert not (home / "deployments" / "onnx" / "fast").exists()
    assert onnx.list({}) == []


def test_a_plain_estimator_on_a_frame_takes_its_columns(
    home: Path, onnx: LocalDeployer, models: dict[str, Any]
) -> None:
    import modelpack

    # The conftest's models: a LogisticRegression fitted on a DataFrame of three float columns.
    frame = models["frame"].head(8)
    onnx.create("columns", str(models["a"]), {"device": "cpu"})
    deployment = ready(onnx, "columns")
    graph = modelpack.flavors.onnx.load(deployment.details["model_path"]).graph
    assert [i.name for i in graph.input] == list(frame.columns)
    assert deployment.endpoint is not None
    expected = models["a_clf"].predict(frame).tolist()
    response = httpx.post(deployment.endpoint + "/invocations", json=encode_example(frame))
    assert response.json()["predictions"] == expected
    assert onnx.predict("columns", frame, {}) == expected
    onnx.delete("columns", {})


def test_a_model_with_an_onnx_flavor_is_served_as_is(
    home: Path, onnx: LocalDeployer, arrays: dict[str, Any], tmp_path: Path
) -> None:
    from modelpack.convert import to_onnx

    already = to_onnx(arrays["a"], tmp_path / "a-onnx")
    onnx.create("as-is", str(already), {"device": "cpu"})
    assert ready(onnx, "as-is").details["model_path"] == str(already.resolve())
    assert not (home / "deployments" / "onnx" / "as-is").exists()
    onnx.delete("as-is", {})
    assert already.is_dir()  # the user's model is never removed


def test_plan_says_what_it_would_convert_and_converts_nothing(
    home: Path, onnx: LocalDeployer, arrays: dict[str, Any]
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = onnx.plan("p", str(arrays["a"]), {})
    text = "\n".join(plan.actions)
    assert "convert" in text and "parity gate" in text and "--runtime onnx" in text
    if cuda_provider():
        assert "--device cuda" in text
    else:
        assert "--device cpu" in text
        assert [w.category for w in caught] == [OnnxRuntimeFallbackWarning]
    assert not (home / "deployments").exists()
    assert _process._CHILDREN == {}


def test_a_model_that_cannot_convert_leaves_nothing(
    home: Path, onnx: LocalDeployer, tmp_path: Path
) -> None:
    import pandas as pd

    import modelpack
    from modelpack.flavors import python as python_flavor
    from tests.servers._models import RowEcho

    path = python_flavor.save(
        RowEcho(), tmp_path / "echo", input_example=pd.DataFrame({"id": [1], "x": [0.5]})
    )
    assert modelpack.load(path).descriptor.loader == "python"
    with pytest.raises(ConversionError, match="cannot convert a python model"):
        onnx.create("echo", str(path), {"device": "cpu"})
    assert not (home / "deployments" / "onnx" / "echo").exists()
    assert not (home / "deployments" / "onnx" / "echo.json").exists()


def test_the_parity_gate_refuses_and_leaves_nothing(
    home: Path, onnx: LocalDeployer, tmp_path: Path
) -> None:
    from sklearn.linear_model import Ridge

    import modelpack

    # float32 input: ONNX Runtime computes in float32, scikit-learn in float64.
    x = np.random.default_rng(2).normal(size=(50, 4)).astype(np.float32)
    path = modelpack.save(Ridge().fit(x, x[:, 0] * 1000), tmp_path / "r", input_example=x[:5])
    with pytest.raises(ParityError, match="rtol=0, atol=0"):
        onnx.create("exact", str(path), {"device": "cpu", "rtol": 0, "atol": 0})
    assert list((home / "deployments" / "onnx").iterdir()) == []
    assert _process._CHILDREN == {}


@pytest.mark.gpu
def test_serves_on_cuda_when_onnx_runtime_has_it(
    home: Path, onnx: LocalDeployer, arrays: dict[str, Any]
) -> None:
    if not cuda_provider():
        pytest.skip("this ONNX Runtime has no CUDA provider")
    rows = arrays["x"][:6]
    onnx.create("gpu", str(arrays["a"]), {})
    deployment = ready(onnx, "gpu")
    assert deployment.details["device"] == "cuda"
    assert deployment.details["provider"] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    predicted = np.asarray(onnx.predict("gpu", rows, {}))
    np.testing.assert_array_equal(predicted, arrays["a_clf"].predict(rows))


def test_the_local_target_converts_for_runtime_onnx(home: Path, arrays: dict[str, Any]) -> None:
    local: LocalDeployer = get_plugin("deployer", "local")
    rows = arrays["x"][:4]
    local.create("rt", str(arrays["a"]), {"runtime": "onnx", "device": "cpu"})
    deployment = ready(local, "rt")
    converted = home / "deployments" / "local" / "rt" / "model"
    assert deployment.details["model_path"] == str(converted)
    assert deployment.details["provider"] == "CPUExecutionProvider"
    assert local.predict("rt", rows, {}) == arrays["a_clf"].predict(rows).tolist()
    local.delete("rt", {})
    assert not (home / "deployments" / "local" / "rt").exists()
