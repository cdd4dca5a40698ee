import functools
import logging
import subprocess
import sys

import httpx
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack.convert import to_onnx
from modelpack.errors import InvalidInputError, InvalidModelError
from modelpack.servers import onnxruntime as ort_server
from modelpack.servers.onnxruntime import (
    CPU,
    CUDA,
    GPU_PROVIDERS,
    OnnxRuntimeFallbackWarning,
    load_predictor,
)
from tests.flavors.torch_models import MLP
from tests.servers.conftest import serve

RNG = np.random.default_rng(7)
X = RNG.normal(size=(300, 4))
Y = (X[:, 0] - X[:, 2] > 0).astype(np.int64)
LOGGER = "modelpack.onnxruntime"


@functools.cache
def cuda_runs() -> bool:
    """Whether a real session gets the CUDA provider (onnxruntime-gpu on a machine with a GPU)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if CUDA not in ort.get_available_providers():
        return False
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=[CUDA, CPU])
    return CUDA in session.get_providers()


gpu = pytest.mark.gpu


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def sklearn_onnx(tmp_path_factory):
    clf = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(X, Y)
    path = modelpack.save(clf, tmp_path_factory.mktemp("sk") / "forest", input_example=X[:10])
    return to_onnx(path), clf


@pytest.fixture(scope="module")
def torch_onnx(tmp_path_factory):
    mlp = MLP(4, 32, 3)
    example = X[:8].astype(np.float32)
    path = modelpack.save(mlp, tmp_path_factory.mktemp("torch") / "mlp", input_example=example)
    return to_onnx(path), mlp


def test_cpu_predictor_matches_the_source_and_logs_its_provider(sklearn_onnx, caplog):
    out, clf = sklearn_onnx
    with caplog.at_level(logging.INFO, logger=LOGGER):
        predictor = load_predictor(out, device="cpu")
    assert predictor.provider == CPU and predictor.providers == [CPU]
    assert not predictor.io_binding
    assert predictor.signature == modelpack.load(out).signature
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and f"on {CPU}" in lines[0]
    rows = RNG.normal(size=(64, 4))
    np.testing.assert_array_equal(predictor.predict(rows), clf.predict(rows))


@pytest.mark.skipif(cuda_runs(), reason="CUDA runs here: nothing falls back")
def test_cuda_request_falls_back_to_cpu_with_a_warning(sklearn_onnx, caplog):
    out, clf = sklearn_onnx
    with (
        caplog.at_level(logging.INFO, logger=LOGGER),
        pytest.warns(OnnxRuntimeFallbackWarning, match="running on CPUExecutionProvider"),
    ):
        predictor = load_predictor(out, device="cuda")
    assert predictor.provider == CPU and not predictor.io_binding
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and f"on {CPU}" in lines[0] and "device cuda" in lines[0]
    np.testing.assert_array_equal(predictor.predict(X[:20]), clf.predict(X[:20]))


def test_optimized_model_cache_is_created_then_reused(sklearn_onnx, home, caplog):
    out, clf = sklearn_onnx
    first = load_predictor(out)
    assert first.cache_file is not None and first.cache_file.is_file()
    assert first.cache_file.parent == home / "cache" / "ort"
    assert not first.cache_hit
    assert [p.name for p in first.cache_file.parent.iterdir()] == [first.cache_file.name]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        second = load_predictor(out)
    assert second.cache_hit and second.cache_file == first.cache_file
    assert "optimized model from cache" in caplog.text
    np.testing.assert_array_equal(second.predict(X), clf.predict(X))
    # Another optimization level is another entry; a damaged entry is rebuilt.
    basic = load_predictor(out, optimization="basic")
    assert basic.cache_file != first.cache_file
    first.cache_file.write_bytes(b"not a model")
    rebuilt = load_predictor(out)
    assert not rebuilt.cache_hit and rebuilt.cache_file == first.cache_file
    np.testing.assert_array_equal(rebuilt.predict(X), clf.predict(X))
    uncached = load_predictor(out, cache=False, intra_op_threads=1, inter_op_threads=1)
    assert uncached.cache_file is None


def test_torch_model_on_cpu(torch_onnx):
    out, _ = torch_onnx
    predictor = load_predictor(out, device="cpu")
    rows = RNG.normal(size=(33, 4)).astype(np.float32)
    expected = modelpack.load(out).predict(rows)
    np.testing.assert_allclose(predictor.predict(rows), expected, rtol=1e-5, atol=1e-6)


def test_warm_up_without_an_input_example(tmp_path):
    signature = {
        "inputs": {"type": "tensors", "tensors": [{"dtype": "float64", "shape": [-1, 4]}]},
    }
    clf = LogisticRegression().fit(X, Y)
    path = modelpack.save(clf, tmp_path / "bare", signature=signature)
    out = to_onnx(path)
    predictor = load_predictor(out)
    np.testing.assert_array_equal(predictor.predict(X[:5]), clf.predict(X[:5]))


def test_user_mistakes(sklearn_onnx, tmp_path):
    out, clf = sklearn_onnx
    with pytest.raises(InvalidInputError, match="unknown device"):
        load_predictor(out, device="tpu")
    with pytest.raises(InvalidInputError, match="optimization level"):
        load_predictor(out, optimization="max")
    plain = modelpack.save(clf, tmp_path / "plain", input_example=X[:2])
    with pytest.raises(InvalidModelError, match="modelpack convert"):
        load_predictor(plain)


def test_provider_priority():
    assert ort_server.provider_list("cpu") == [CPU]
    assert ort_server.provider_list("cuda")[-1] == CPU
    assert ort_server.parse_device("cuda:1") == ("cuda", 1)
    assert ort_server.parse_device("CPU") == ("cpu", 0)


# -- GPU: run with onnxruntime-gpu on a machine with an NVIDIA GPU ----------------------------


def _cuda_or_skip():
    if not cuda_runs():
        pytest.skip("CUDAExecutionProvider does not run here")


@gpu
@pytest.mark.parametrize("model", ["sklearn_onnx", "torch_onnx"])
def test_cuda_iobinding_matches_cpu(model, request, caplog):
    _cuda_or_skip()
    out, _ = request.getfixturevalue(model)
    cpu = load_predictor(out, device="cpu")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        cuda = load_predictor(out, device="cuda", tensorrt=False)
    assert cuda.provider == CUDA and cuda.io_binding
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and f"on {CUDA}" in lines[0] and "IOBinding" in lines[0]
    for n in (1, 1000):
        rows = RNG.normal(size=(n, 4))
        rows = rows.astype(np.float32) if model == "torch_onnx" else rows
        np.testing.assert_allclose(cuda.predict(rows), cpu.predict(rows), rtol=1e-4, atol=1e-5)


@gpu
def test_cuda_device_prefers_a_gpu_provider(sklearn_onnx):
    _cuda_or_skip()
    out, clf = sklearn_onnx
    predictor = load_predictor(out, device="cuda:0")
    assert predictor.provider in GPU_PROVIDERS
    np.testing.assert_array_equal(predictor.predict(X), clf.predict(X))


def test_http_server_serves_the_onnx_runtime(sklearn_onnx):
    out, clf = sklearn_onnx
    with serve(out, flavor="onnx", device="cpu") as url:
        answer = httpx.post(f"{url}/invocations", json={"instances": X[:5].tolist()})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == clf.predict(X[:5]).tolist()
        metadata = httpx.get(f"{url}/metadata").json()
        assert "onnxruntime" in str(metadata) and CPU in str(metadata)


def test_serve_cli_refuses_onnx_runtime_without_an_onnx_flavor(sklearn_onnx, tmp_path):
    _, clf = sklearn_onnx
    plain = modelpack.save(clf, tmp_path / "plain", input_example=X[:2])
    done = subprocess.run(
        [sys.executable, "-m", "modelpack", "serve", str(plain), "--runtime", "onnx"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error [invalid_model]") and "modelpack convert" in done.stderr
    assert done.stderr.count("\n") == 1
