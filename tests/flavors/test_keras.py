"""Keras 3 models (torch backend) saved as ``.keras`` load in a fresh process and answer exactly
as their own ``model.predict``.

Every case is built and saved once per module; ONE fresh interpreter, started without
``KERAS_BACKEND`` (the flavor picks torch), loads them all with ``modelpack.load`` and predicts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # set before keras' first import: no TensorFlow
keras = pytest.importorskip("keras")
pytest.importorskip("torch")

import httpx  # noqa: E402

import modelpack  # noqa: E402
from modelpack.descriptor import Descriptor, build_manifest  # noqa: E402
from modelpack.errors import InvalidModelError, SignatureError, UntrustedModelError  # noqa: E402
from modelpack.flavors import keras as keras_flavor  # noqa: E402
from modelpack.testing import check_flavor  # noqa: E402
from modelpack.trust import TrustNeededWarning  # noqa: E402
from tests.flavors import keras_layers  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)
N_ROWS = 70  # three of model.predict's 32-row batches, the last one short
CUSTOM_TRUST = ["tests.flavors.keras_layers.Scale", "tests.flavors.keras_layers.double_relu"]


def _own_predict(model: Any, data: Any) -> Any:
    # keras' torch backend converts outputs with np.array(tensor), which numpy 2 warns about on
    # torch tensors (Tensor.__array__ takes no copy=): the user's own call, not modelpack's.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"__array__ implementation doesn't accept a copy keyword"
        )
        return model.predict(data, verbose=0)


def _floats(*shape: int) -> np.ndarray:
    return RNG.normal(size=(N_ROWS, *shape)).astype(np.float32)


def _sequential() -> Any:
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )


def _multi_io() -> Any:
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    h = keras.layers.Dense(6, activation="tanh")(keras.layers.Concatenate()([a, b]))
    price = keras.layers.Dense(1, name="price")(h)
    kind = keras.layers.Dense(3, activation="softmax", name="kind")(h)
    return keras.Model({"a": a, "b": b}, [price, kind])


def _normalized() -> Any:
    norm = keras.layers.Normalization()
    norm.adapt(_floats(5) * 3.0 + 1.0)
    return keras.Sequential([keras.Input((5,)), norm, keras.layers.Dense(2)])


def _rnn() -> Any:
    return keras.Sequential(
        [
            keras.Input((7, 3)),
            keras.layers.LSTM(5, return_sequences=True),
            keras.layers.GRU(4),
            keras.layers.Dense(1),
        ]
    )


def _conv1d() -> Any:
    return keras.Sequential(
        [
            keras.Input((12, 2)),
            keras.layers.Conv1D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )


def _conv2d() -> Any:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )


def _custom() -> Any:
    x = keras.Input((4,), name="x")
    h = keras_layers.Scale(3.0)(x)
    return keras.Model(x, keras.layers.Dense(3, activation=keras_layers.double_relu)(h))


@dataclass
class Case:
    id: str
    build: Callable[[], Any]
    inputs: Any
    trust: list[str] | None = None
    expected: Any = None
    path: Path = Path()
    got: dict[str, np.ndarray] = field(default_factory=dict)


CASES = [
    Case("sequential", _sequential, _floats(4)),
    Case("multi-io", _multi_io, {"a": _floats(3), "b": _floats(2)}),
    Case("normalization", _normalized, _floats(5)),
    Case("lstm-gru", _rnn, _floats(7, 3)),
    Case("conv1d", _conv1d, _floats(12, 2)),
    Case("conv2d", _conv2d, _floats(8, 8, 1)),
    Case("custom-layer", _custom, _floats(4), trust=CUSTOM_TRUST),
]

_LOADER = """
import json, sys
from pathlib import Path
import numpy as np
import modelpack

root = Path(sys.argv[1])
for entry in json.loads((root / "manifest.json").read_text()):
    with np.load(root / entry["inputs"]) as z:
        data = dict(z) if entry["dict"] else z["x"]
    out = modelpack.load(entry["path"], trust=entry["trust"]).predict(data)
    out = out if isinstance(out, dict) else {"output": out}
    np.savez(root / f"{entry['id']}.out.npz", **out)
import keras
print(json.dumps({"backend": keras.backend.backend()}))
"""


def _as_outputs(value: Any) -> dict[str, np.ndarray]:
    if isinstance(value, dict):
        return {str(k): np.asarray(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return {f"output_{i}": np.asarray(v) for i, v in enumerate(value)}
    return {"output": np.asarray(value)}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("keras-zoo")
    manifest = []
    for case in CASES:
        model = case.build()
        case.expected = _as_outputs(_own_predict(model, case.inputs))
        example = (
            {k: v[:3] for k, v in case.inputs.items()}
            if isinstance(case.inputs, dict)
            else case.inputs[:3]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TrustNeededWarning)  # the custom case: tested below
            case.path = keras_flavor.save(model, root / case.id, input_example=example)
        data = case.inputs if isinstance(case.inputs, dict) else {"x": case.inputs}
        np.savez(root / f"{case.id}.in.npz", **data)
        manifest.append(
            {
                "id": case.id,
                "path": str(case.path),
                "inputs": f"{case.id}.in.npz",
                "dict": isinstance(case.inputs, dict),
                "trust": case.trust,
            }
        )
    (root / "manifest.json").write_text(json.dumps(manifest))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MODELPACK_TRUST") and k != "KERAS_BACKEND"
    }
    done = subprocess.run(
        [sys.executable, "-c", _LOADER, str(root)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"backend": "torch"}
    for case in CASES:
        with np.load(root / f"{case.id}.out.npz") as z:
            case.got = dict(z)
    return {c.id: c for c in CASES}


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_fresh_process_answers_exactly_as_model_predict(zoo: dict[str, Case], case_id: str) -> None:
    case = zoo[case_id]
    assert sorted(case.got) == sorted(case.expected)
    for name, want in case.expected.items():
        assert case.got[name].shape == want.shape, name
        assert np.array_equal(case.got[name], want), f"{case_id}: {name}"


def test_in_process_predictor_matches_model_predict(zoo: dict[str, Case]) -> None:
    case = zoo["lstm-gru"]
    got = modelpack.load(case.path).predict(case.inputs)
    assert np.array_equal(got, case.expected["output"])


def test_config_records_format_backend_and_custom_objects(zoo: dict[str, Case]) -> None:
    config = Descriptor.read(zoo["multi-io"].path).flavors["keras"]
    assert config["file"] == "model.keras" and config["format"] == "keras"
    assert config["backend"] == "torch" and config["keras_version"] == keras.__version__
    assert sorted(config["inputs"]) == ["a", "b"]
    assert config["outputs"] == ["price", "kind"]
    assert config["custom_objects"] == {}
    custom = Descriptor.read(zoo["custom-layer"].path).flavors["keras"]["custom_objects"]
    assert custom == {
        "modelpack_tests>Scale": "tests.flavors.keras_layers.Scale",
        "modelpack_tests>double_relu": "tests.flavors.keras_layers.double_relu",
    }


def test_saved_files_are_the_keras_archive(zoo: dict[str, Case]) -> None:
    for case in zoo.values():
        files = sorted(Descriptor.read(case.path).files)
        assert "model/model.keras" in files
        assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".joblib"))]
        with zipfile.ZipFile(case.path / "model" / "model.keras") as archive:
            assert {"config.json", "model.weights.h5"} <= set(archive.namelist())


def test_multiple_outputs_are_named_for_clients(zoo: dict[str, Case]) -> None:
    case = zoo["multi-io"]
    out = modelpack.load(case.path).predict(case.inputs)
    assert sorted(out) == ["output_0", "output_1"]
    assert out["output_1"].shape == (N_ROWS, 3)


def test_custom_layer_is_refused_without_trust(zoo: dict[str, Case]) -> None:
    path = zoo["custom-layer"].path
    with pytest.raises(UntrustedModelError, match=r"tests\.flavors\.keras_layers\.Scale"):
        modelpack.load(path)
    with pytest.raises(UntrustedModelError, match="double_relu"):
        modelpack.load(path, trust=["tests.flavors.keras_layers.Scale"])
    loaded = modelpack.load(path, trust=CUSTOM_TRUST)
    assert isinstance(loaded.unwrap().layers[1], keras_layers.Scale)


def test_save_tells_which_names_need_trust(tmp_path: Path) -> None:
    with pytest.warns(TrustNeededWarning, match="keras_layers.Scale"):
        keras_flavor.save(_custom(), tmp_path / "m")


def _edit_archive(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """What an attacker does: rewrite config.json in the archive, then reseal the manifest."""
    file = path / "model" / "model.keras"
    with zipfile.ZipFile(file) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(file, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    descriptor = Descriptor.read(path)
    descriptor.files = build_manifest(path)
    descriptor.write(path)


def _copy(case: Case, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(case.path, tmp_path / case.id))


def test_archive_naming_os_system_is_refused_before_any_import(
    zoo: dict[str, Case], tmp_path: Path
) -> None:
    path = _copy(zoo["sequential"], tmp_path)

    def name_os_system(config: dict[str, Any]) -> None:
        layer = config["config"]["layers"][1]
        layer.update(module="os", class_name="system", registered_name="system")

    _edit_archive(path, name_os_system)
    with pytest.raises(UntrustedModelError, match=r"class os\.system"):
        modelpack.load(path)
    with pytest.raises(InvalidModelError, match=r"os\.system is not a Keras class"):
        modelpack.load(path, trust=["os.system"])


def test_archive_with_a_lambda_is_refused(zoo: dict[str, Case], tmp_path: Path) -> None:
    path = _copy(zoo["sequential"], tmp_path)
    lam = keras.layers.Lambda(lambda x: x * 2)
    bytecode = keras.saving.serialize_keras_object(lam)["config"]["function"]

    def add_lambda(config: dict[str, Any]) -> None:
        layer = config["config"]["layers"][1]
        layer.update(module="keras.layers", class_name="Lambda", registered_name=None)
        layer["config"] = {"name": "dense", "function": bytecode, "arguments": {}}

    _edit_archive(path, add_lambda)
    with pytest.raises(UntrustedModelError, match="lambda's Python bytecode"):
        modelpack.load(path)
    with pytest.raises(InvalidModelError, match="keras cannot load"):  # safe mode, even so
        modelpack.load(path, trust=True)


def test_saving_a_lambda_is_refused(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    with pytest.raises(InvalidModelError, match="safe mode refuses"):
        keras_flavor.save(model, tmp_path / "m")


def test_bad_input_is_a_signature_error(zoo: dict[str, Case]) -> None:
    model = modelpack.load(zoo["sequential"].path)
    with pytest.raises(SignatureError):
        model.predict(np.zeros((3, 5), dtype=np.float32))
    multi = modelpack.load(zoo["multi-io"].path)
    with pytest.raises(SignatureError, match="'b'"):
        multi.predict({"a": np.zeros((3, 3), dtype=np.float32)})


def test_save_picks_the_keras_flavor_over_torch(tmp_path: Path) -> None:
    import torch

    model = _sequential()
    assert isinstance(model, torch.nn.Module)
    path = modelpack.save(model, tmp_path / "m", input_example=_floats(4)[:2])
    assert Descriptor.read(path).loader == "keras"


def test_check_flavor(tmp_path: Path) -> None:
    check_flavor("keras", _sequential(), _floats(4)[:8], tmp_path)


def test_accepts_tells_keras_models_by_name() -> None:
    flavor = keras_flavor.KerasFlavor()
    assert flavor.accepts(_sequential()) and flavor.accepts(_multi_io())
    assert not flavor.accepts(keras.layers.Dense(2)) and not flavor.accepts(np.zeros(2))


def test_served_over_http_answers_the_same(zoo: dict[str, Case]) -> None:
    from tests.servers.conftest import serve

    case = zoo["sequential"]
    rows = case.inputs[:12]
    with serve(case.path) as url:
        response = httpx.post(url + "/invocations", json={"inputs": rows.tolist()}, timeout=30)
    assert response.status_code == 200, response.text
    got = np.asarray(response.json()["predictions"], dtype=np.float32)
    assert np.array_equal(got, case.expected["output"][:12])


@pytest.mark.parametrize("case_id", ["sequential", "multi-io", "lstm-gru", "conv2d"])
def test_converts_to_onnx_through_the_parity_gate(
    zoo: dict[str, Case], case_id: str, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from modelpack.convert import to_onnx

    case = zoo[case_id]
    out = to_onnx(case.path, tmp_path / "onnx")  # raises ParityError unless outputs match
    assert "onnx" in Descriptor.read(out).flavors
    got = modelpack.load(out, flavor="onnx").predict(case.inputs)
    got = got if isinstance(got, dict) else {"output": got}
    for name, want in case.expected.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)
