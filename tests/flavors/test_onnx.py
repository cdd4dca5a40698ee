import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import modelpack
from modelpack.descriptor import Descriptor
from modelpack.errors import IntegrityError, InvalidModelError, SignatureError
from modelpack.flavors import onnx as onnx_flavor


def _linear(features=4, outputs=3, seed=0):
    """y = x @ W + b with a symbolic batch dimension."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(features, outputs)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(outputs,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _two_inputs():
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Mul", ["a", "b"], ["prod"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, ["n", 2]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _tensors(path, part):
    signature = Descriptor.read(path).signature
    assert signature is not None
    return signature[part]["tensors"]


def _run_direct(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.fixture(scope="module")
def logistic():
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    clf = LogisticRegression().fit(x, y)
    plain = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    zipped = to_onnx(clf, x[:1], target_opset=17)
    return clf, plain, zipped, x


def test_auto_pick_round_trip_matches_onnxruntime(tmp_path):
    model = _linear()
    before = model.SerializeToString()
    path = modelpack.save(model, tmp_path / "m")
    descriptor = Descriptor.read(path)
    assert descriptor.loader == "onnx"
    config = descriptor.flavors["onnx"]
    assert config["opset_imports"] == {"ai.onnx": 17}
    assert config["ir_version"] == 8
    assert (config["inputs"], config["outputs"]) == (["x"], ["y"])
    assert config["external_data"] is None
    assert set(descriptor.files) == {"model/model.onnx", "requirements.txt"}
    assert "onnxruntime==" in (path / "requirements.txt").read_text()

    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    loaded = modelpack.load(path)
    np.testing.assert_array_equal(loaded.predict(x), _run_direct(model, {"x": x})[0])
    assert isinstance(loaded.unwrap(), ort.InferenceSession)
    native = onnx_flavor.load(path)
    assert isinstance(native, onnx.ModelProto)
    assert native.SerializeToString() == before == model.SerializeToString()


def test_module_save_reads_the_signature_from_the_graph(tmp_path):
    path = onnx_flavor.save(_linear(), tmp_path / "m")
    assert _tensors(path, "inputs") == [{"name": "x", "dtype": "float32", "shape": [-1, 4]}]
    assert _tensors(path, "outputs") == [{"name": "y", "dtype": "float32", "shape": [-1, 3]}]
    # float64 data casts to the graph's float32
    out = modelpack.load(path).predict(np.ones((2, 4)))
    assert out.dtype == np.float32 and out.shape == (2, 3)


def test_an_input_example_infers_outputs_through_wrap(tmp_path):
    model = _linear()
    example = np.ones((2, 4))  # float64: the predictor casts it for the float32 graph
    path = modelpack.save(model, tmp_path / "m", input_example=example)
    assert _tensors(path, "outputs")[0]["shape"] == [-1, 3]
    loaded = modelpack.load(path)
    expected = _run_direct(model, {"x": example.astype(np.float32)})[0]
    np.testing.assert_array_equal(loaded.predict(loaded.input_example()), expected)


def test_two_inputs_and_two_outputs(tmp_path):
    model = _two_inputs()
    path = onnx_flavor.save(model, tmp_path / "m")
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    b = np.full((3, 2), 2.0, dtype=np.float32)
    out = modelpack.load(path).predict({"a": a, "b": b})
    expected = _run_direct(model, {"a": a, "b": b})
    assert set(out) == {"sum", "prod"}
    np.testing.assert_array_equal(out["sum"], expected[0])
    np.testing.assert_array_equal(out["prod"], expected[1])


@pytest.mark.parametrize("save", [modelpack.save, onnx_flavor.save])
def test_signature_mismatch_names_the_field(tmp_path, save):
    # modelpack.save records no signature: the predictor checks against the session's inputs.
    loaded = modelpack.load(save(_two_inputs(), tmp_path / "m"))
    a = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(SignatureError, match="'b'") as missing:
        loaded.predict({"a": a})
    assert missing.value.field == "b"
    with pytest.raises(SignatureError, match="shape") as shape:
        loaded.predict({"a": np.ones((3, 5), dtype=np.float32), "b": a})
    assert shape.value.field == "a"


def test_sklearn_logistic_regression_via_skl2onnx(tmp_path, logistic):
    clf, plain, _, x = logistic
    path = modelpack.save(plain, tmp_path / "m", input_example=x[:3])
    out = modelpack.load(path).predict(x)
    direct = _run_direct(plain, {"X": x})
    assert set(out) == {"label", "probabilities"}
    np.testing.assert_array_equal(out["label"], direct[0])
    np.testing.assert_array_equal(out["probabilities"], direct[1])
    np.testing.assert_array_equal(out["label"], clf.predict(x))
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(x), rtol=1e-4, atol=1e-5)
    outputs = _tensors(path, "outputs")
    assert [(t["name"], t["shape"]) for t in outputs] == [
        ("label", [-1]),
        ("probabilities", [-1, 2]),
    ]


def test_zipmap_probabilities_become_a_2d_array(tmp_path, logistic):
    clf, _, zipped, x = logistic
    path = onnx_flavor.save(zipped, tmp_path / "m")
    tensors = _tensors(path, "outputs")
    assert tensors[1] == {"name": "output_probability", "dtype": "float32", "shape": [-1, -1]}
    out = modelpack.load(path).predict(x)
    assert out["output_probability"].dtype == np.float32
    assert out["output_probability"].shape == (len(x), 2)
    np.testing.assert_allclose(out["output_probability"], clf.predict_proba(x), atol=1e-5)


def test_forced_external_data_round_trips_and_leaves_the_model_alone(tmp_path):
    model = _linear(features=64, outputs=32)  # W is 8 KiB: big enough to move out
    before = model.SerializeToString()
    path = onnx_flavor.save(model, tmp_path / "m", external_data=True)
    assert model.SerializeToString() == before
    descriptor = Descriptor.read(path)
    assert descriptor.flavors["onnx"]["external_data"] == "model.onnx.data"
    assert "model/model.onnx.data" in descriptor.files
    assert (path / "model" / "model.onnx").stat().st_size < 8 * 1024
    x = np.random.default_rng(2).normal(size=(3, 64)).astype(np.float32)
    np.testing.assert_array_equal(modelpack.load(path).predict(x), _run_direct(model, {"x": x})[0])
    native = onnx_flavor.load(path)
    weights = {t.name: numpy_helper.to_array(t) for t in native.graph.initializer}
    np.testing.assert_array_equal(weights["W"], numpy_helper.to_array(model.graph.initializer[0]))


def test_external_data_is_chosen_past_the_protobuf_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_flavor, "EXTERNAL_DATA_THRESHOLD", 1000)
    path = modelpack.save(_linear(features=64, outputs=32), tmp_path / "m")
    assert (path / "model" / "model.onnx.data").is_file()
    with pytest.raises(InvalidModelError, match="2 GB"):
        modelpack.save(_linear(features=64, outputs=32), tmp_path / "n", external_data=False)


def test_a_changed_byte_of_external_data_is_an_integrity_error(tmp_path):
    path = onnx_flavor.save(_linear(features=64, outputs=32), tmp_path / "m", external_data=True)
    data = path / "model" / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=r"model/model\.onnx\.data"):
        modelpack.load(path)


def test_saving_a_file_by_path(tmp_path):
    model = _linear(features=64, outputs=32)
    plain = tmp_path / "plain.onnx"
    onnx.save_model(model, plain)
    path = onnx_flavor.save(plain, tmp_path / "a")
    assert (path / "model" / "model.onnx").read_bytes() == plain.read_bytes()
    assert _tensors(path, "inputs")[0]["shape"] == [-1, 64]

    source = tmp_path / "src" / "net.onnx"
    source.parent.mkdir()
    # onnx.save_model moves the weights out of the proto it is given: give it a copy
    onnx.save_model(_linear(64, 32), source, save_as_external_data=True, location="weights.bin")
    path = onnx_flavor.save(str(source), tmp_path / "b", input_example=np.ones((2, 64)))
    assert sorted(p.name for p in (path / "model").iterdir()) == ["model.onnx", "model.onnx.data"]
    x = np.random.default_rng(3).normal(size=(4, 64)).astype(np.float32)
    np.testing.assert_array_equal(modelpack.load(path).predict(x), _run_direct(model, {"x": x})[0])

    inline = onnx_flavor.save(source, tmp_path / "c", external_data=False)
    assert not (inline / "model" / "model.onnx.data").exists()
    np.testing.assert_array_equal(
        modelpack.load(inline).predict(x), _run_direct(model, {"x": x})[0]
    )


def test_invalid_models_are_refused(tmp_path):
    broken = _linear()
    broken.graph.node[0].input[1] = "nowhere"
    with pytest.raises(InvalidModelError, match="invalid ONNX model: ") as exc:
        modelpack.save(broken, tmp_path / "m")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "m").exists()

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(InvalidModelError):
        onnx_flavor.save(junk, tmp_path / "j")
    with pytest.raises(InvalidModelError, match="no ONNX file"):
        onnx_flavor.save(tmp_path / "missing.onnx", tmp_path / "k")
    with pytest.raises(InvalidModelError, match="ModelProto"):
        onnx_flavor.save(42, tmp_path / "l")


def test_a_model_loaded_without_its_external_data_is_refused(tmp_path):
    source = tmp_path / "net.onnx"
    onnx.save_model(_linear(64, 32), source, save_as_external_data=True, location="w.bin")
    with pytest.raises(InvalidModelError, match="external data"):
        modelpack.save(onnx.load(source, load_external_data=False), tmp_path / "m")


def test_accepts_does_not_import_onnx():
    code = (
        "import sys; from modelpack.flavors.onnx import OnnxFlavor; "
        "assert OnnxFlavor().accepts(object()) is False; assert 'onnx' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert onnx_flavor.OnnxFlavor().accepts(_linear())
    assert not onnx_flavor.OnnxFlavor().accepts("model.onnx")
