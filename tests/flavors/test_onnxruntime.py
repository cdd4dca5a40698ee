"""The onnx flavor's runtime (flavors/_onnxruntime.py): providers per device, the optimized-model
cache, warm-up, IOBinding on a GPU, through ``modelpack.load(uri, flavor="onnx")``."""

import functools
import logging

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack.convert import to_onnx
from modelpack.errors import InvalidInputError, InvalidModelError
from modelpack.flavors import onnx as onnx_flavor
from modelpack.flavors.onnx import (
    CPU,
    CUDA,
    GPU_PROVIDERS,
    OnnxRuntimeFallbackWarning,
    OnnxRuntimePredictor,
    load_predictor,
)
from tests.flavors.torch_models import MLP

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


def runtime(model: modelpack.Model) -> OnnxRuntimePredictor:
    predictor = model.predictor.inner
    assert isinstance(predictor, OnnxRuntimePredictor)
    return predictor


def test_load_runs_the_onnx_flavor_on_the_runtime_and_logs_its_provider(sklearn_onnx, caplog):
    out, clf = sklearn_onnx
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = modelpack.load(out, flavor="onnx", device="cpu")
    predictor = runtime(model)
    assert predictor.provider == CPU and predictor.providers == [CPU]
    assert predictor.runtime == {"name": "onnxruntime", "provider": CPU}
    assert not predictor.io_binding
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and f"on {CPU}" in lines[0] and str(out) in lines[0]
    rows = RNG.normal(size=(64, 4))
    np.testing.assert_array_equal(model.predict(rows), clf.predict(rows))


def test_load_predictor_has_the_model_signature(sklearn_onnx):
    out, clf = sklearn_onnx
    predictor = load_predictor(out, device="cpu")
    assert predictor.signature == modelpack.load(out).signature
    np.testing.assert_array_equal(predictor.predict(X[:20]), clf.predict(X[:20]))


@pytest.mark.skipif(cuda_runs(), reason="CUDA runs here: nothing falls back")
def test_cuda_request_falls_back_to_cpu_with_a_warning(sklearn_onnx, caplog):
    out, clf = sklearn_onnx
    with (
        caplog.at_level(logging.INFO, logger=LOGGER),
        pytest.warns(OnnxRuntimeFallbackWarning, match="running on CPUExecutionProvider"),
    ):
        model = modelpack.load(out, flavor="onnx", device="cuda")
    predictor = runtime(model)
    assert predictor.provider == CPU and not predictor.io_binding
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and f"on {CPU}" in lines[0] and "device cuda" in lines[0]
    np.testing.assert_array_equal(model.predict(X[:20]), clf.predict(X[:20]))


def test_optimized_model_cache_is_created_then_reused(sklearn_onnx, home, caplog):
    out, clf = sklearn_onnx
    first = runtime(modelpack.load(out, flavor="onnx"))
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


def test_an_unwritable_cache_directory_loads_without_the_cache(sklearn_onnx, home):
    out, clf = sklearn_onnx
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "ort").write_text("a file where the cache directory would be")
    predictor = runtime(modelpack.load(out, flavor="onnx"))
    assert predictor.cache_file is None
    np.testing.assert_array_equal(predictor.predict(X), clf.predict(X))


def test_torch_model_on_cpu(torch_onnx):
    out, _ = torch_onnx
    model = modelpack.load(out, flavor="onnx", device="cpu")
    rows = RNG.normal(size=(33, 4)).astype(np.float32)
    expected = modelpack.load(out).predict(rows)
    np.testing.assert_allclose(model.predict(rows), expected, rtol=1e-5, atol=1e-6)


def test_warm_up_without_an_input_example(tmp_path):
    signature = {
        "inputs": {"type": "tensors", "tensors": [{"dtype": "float64", "shape": [-1, 4]}]},
    }
    clf = LogisticRegression().fit(X, Y)
    path = modelpack.save(clf, tmp_path / "bare", signature=signature)
    out = to_onnx(path)
    predictor = load_predictor(out)
    np.testing.assert_array_equal(predictor.predict(X[:5]), clf.predict(X[:5]))


def test_a_model_saved_with_the_onnx_flavor_runs_on_the_runtime(tmp_path, sklearn_onnx):
    out, clf = sklearn_onnx
    graph = onnx_flavor.load(out)
    path = modelpack.save(graph, tmp_path / "graph")
    predictor = runtime(modelpack.load(path))
    assert predictor.provider == CPU and predictor.cache_file is not None
    np.testing.assert_array_equal(predictor.predict(X), clf.predict(X))


def test_user_mistakes(sklearn_onnx, tmp_path):
    out, clf = sklearn_onnx
    with pytest.raises(InvalidInputError, match="unknown device 'tpu'"):
        modelpack.load(out, flavor="onnx", device="tpu")
    with pytest.raises(InvalidInputError, match="unknown device"):
        load_predictor(out, device="tpu")
    with pytest.raises(InvalidInputError, match="optimization level"):
        load_predictor(out, optimization="max")
    plain = modelpack.save(clf, tmp_path / "plain", input_example=X[:2])
    with pytest.raises(InvalidModelError, match="no 'onnx' flavor"):
        load_predictor(plain)


def test_provider_priority():
    assert onnx_flavor.provider_list("cpu") == [CPU]
    assert onnx_flavor.provider_list("cuda")[-1] == CPU
    assert onnx_flavor.parse_device("cuda:1") == ("cuda", 1)
    assert onnx_flavor.parse_device("CPU") == ("cpu", 0)


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
    model = modelpack.load(out, flavor="onnx", device="cuda:0")
    assert runtime(model).provider in GPU_PROVIDERS
    np.testing.assert_array_equal(model.predict(X), clf.predict(X))


def test_session_settings_reach_the_flavor_through_load(sklearn_onnx):
    out, clf = sklearn_onnx
    model = modelpack.load(
        out, flavor="onnx", settings={"intra_op_threads": 1, "optimization": "basic"}
    )
    assert runtime(model).settings.intra_op_threads == 1
    assert runtime(model).settings.optimization == "basic"
    rows = RNG.normal(size=(8, 4))
    np.testing.assert_array_equal(model.predict(rows), clf.predict(rows))
    with pytest.raises(InvalidInputError, match="no load setting 'threads'.*intra_op_threads"):
        modelpack.load(out, flavor="onnx", settings={"threads": 1})
