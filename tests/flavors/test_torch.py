from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import modelpack
import modelpack.flavors.torch as mp_torch
from modelpack.descriptor import Descriptor
from modelpack.errors import InvalidModelError, ModelpackError, SignatureError, UntrustedModelError
from modelpack.testing import check_flavor
from tests.flavors.torch_models import (
    MLP,
    DictOutput,
    MetaHostile,
    Opaque,
    PlainTensorAttribute,
    TiedLM,
    TwoInputs,
    WithBuffers,
)

X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)


def native(module: Any, *args: np.ndarray) -> Any:
    with torch.no_grad():
        return module.eval()(*(torch.from_numpy(a) for a in args))


def mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(4, 8, 3)


def flavor_config(path: Path) -> dict[str, Any]:
    return Descriptor.read(path).flavors["torch"]


def test_round_trip_through_modelpack_save_picks_the_torch_flavor(tmp_path: Path) -> None:
    model = mlp()
    path = modelpack.save(model, tmp_path / "m")
    loaded = modelpack.load(path)
    assert loaded.descriptor.loader == "torch"
    np.testing.assert_array_equal(loaded.predict(X), native(model, X).numpy())


def test_flavor_save_and_native_load(tmp_path: Path) -> None:
    model = mlp()
    path = mp_torch.save(model, tmp_path / "m")
    module = mp_torch.load(path)
    assert isinstance(module, MLP)
    assert not module.training
    want = model.state_dict()
    assert list(module.state_dict()) == list(want)
    for name, got in module.state_dict().items():
        assert torch.equal(got, want[name]), name
    config = flavor_config(path)
    assert config["class"] == "tests.flavors.torch_models:MLP"
    assert config["dtypes"] == ["float32"]
    assert config["torch_version"] == torch.__version__
    reqs = (path / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") for r in reqs)
    assert any(r.startswith("safetensors==") for r in reqs)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's own imports warn
def test_a_compiled_module_saves_the_module_inside(tmp_path: Path) -> None:
    model = mlp()
    path = mp_torch.save(torch.compile(model), tmp_path / "m")
    assert flavor_config(path)["class"] == "tests.flavors.torch_models:MLP"
    np.testing.assert_array_equal(modelpack.load(path).predict(X), native(model, X).numpy())


def test_conformance(tmp_path: Path) -> None:
    check_flavor("torch", mlp(), X, tmp_path)


def test_input_example_infers_tensor_signature(tmp_path: Path) -> None:
    model = mlp().train()
    path = mp_torch.save(model, tmp_path / "m", input_example=X[:2])
    assert model.training  # inferring the output signature left the caller's model as it was
    sig = Descriptor.read(path).signature
    assert sig is not None
    assert sig["inputs"]["tensors"] == [{"name": None, "dtype": "float32", "shape": [-1, 4]}]
    assert sig["outputs"]["tensors"] == [{"name": None, "dtype": "float32", "shape": [-1, 3]}]
    loaded = modelpack.load(path)
    np.testing.assert_array_equal(loaded.predict(loaded.input_example()), native(model, X[:2]))


def test_the_structure_keeps_attributes_not_constructor_arguments(tmp_path: Path) -> None:
    path = mp_torch.save(mlp(), tmp_path / "m")
    config = flavor_config(path)
    assert config["format"] == "structure" and "init_args" not in config
    structure = json.loads((path / "model" / "structure.json").read_text())
    root = structure["nodes"][0]
    assert root["class"] == "tests.flavors.torch_models.MLP"
    assert {k: root["attributes"][k] for k in ("in_features", "hidden", "out_features")} == {
        "in_features": 4,
        "hidden": 8,
        "out_features": 3,
    }


def test_a_module_whose_arguments_are_not_attributes_saves_and_init_args_still_work(
    tmp_path: Path,
) -> None:
    model = Opaque(5)  # the width is not kept: no matter, no constructor runs at load
    x = X[:, :1].repeat(5, axis=1)
    path = mp_torch.save(model, tmp_path / "s")
    np.testing.assert_array_equal(modelpack.load(path).predict(x), native(model, x).numpy())
    path = mp_torch.save(model, tmp_path / "m", init_args={"width": 5})  # the first format
    x = X[:, :1].repeat(5, axis=1)
    np.testing.assert_array_equal(modelpack.load(path).predict(x), native(model, x).numpy())


def test_init_args_that_build_other_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="weights differ"):
        mp_torch.save(Opaque(5), tmp_path / "m", init_args={"width": 6})


def test_init_args_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="must map names to JSON values.*: width"):
        mp_torch.save(Opaque(5), tmp_path / "m", init_args={"width": object()})


def test_a_class_defined_in_a_function_is_refused(tmp_path: Path) -> None:
    class Local(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x

    with pytest.raises(InvalidModelError, match="inside a function"):
        mp_torch.save(Local(), tmp_path / "m")


def test_multi_input_module_takes_a_dict_of_arrays(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TwoInputs()
    data = {"a": X[:, :3].copy(), "b": X[:, 3:].repeat(2, axis=1)}
    path = modelpack.save(model, tmp_path / "m", input_example=data)
    sig = Descriptor.read(path).signature
    assert sig is not None
    assert [t["name"] for t in sig["inputs"]["tensors"]] == ["a", "b"]
    assert [t["name"] for t in sig["outputs"]["tensors"]] == ["output_0", "output_1"]
    out = modelpack.load(path).predict(data)
    want = native(model, data["a"], data["b"])
    np.testing.assert_array_equal(out["output_0"], want[0].numpy())
    np.testing.assert_array_equal(out["output_1"], want[1].numpy())
    with pytest.raises(SignatureError, match="'b'") as err:
        modelpack.load(path).predict({"a": data["a"], "b": X})
    assert err.value.field == "b"


def test_dict_output_becomes_a_dict_of_arrays(tmp_path: Path) -> None:
    model = DictOutput()
    path = modelpack.save(model, tmp_path / "m", input_example=X[:, :3])
    out = modelpack.load(path).predict(X[:, :3])
    assert sorted(out) == ["logits", "probabilities"]
    np.testing.assert_array_equal(out["logits"], native(model, X[:, :3])["logits"].numpy())


def test_tied_weights_are_stored_once_and_tied_again(tmp_path: Path) -> None:
    from safetensors import safe_open

    torch.manual_seed(0)
    model = TiedLM()
    path = mp_torch.save(model, tmp_path / "m")
    with safe_open(str(path / "model" / "weights.safetensors"), framework="pt") as fh:
        assert list(fh.keys()) == ["embed.weight"]
    structure = json.loads((path / "model" / "structure.json").read_text())
    head = structure["nodes"][structure["nodes"][0]["children"]["head"]]
    assert head["parameters"]["weight"] == "embed.weight"
    module = mp_torch.load(path)
    assert module.head.weight is module.embed.weight
    tokens = np.array([[1, 2, 3], [4, 5, 10]])
    np.testing.assert_array_equal(
        modelpack.load(path).predict(tokens), native(model, tokens).numpy()
    )


def test_large_weights_are_sharded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mp_torch, "SHARD_BYTES", 100)  # 4x8 + 8 floats, then 8x3 + 3 floats
    model = mlp()
    path = mp_torch.save(model, tmp_path / "m")
    files = [f"weights-{i:05d}-of-00004.safetensors" for i in range(1, 5)]
    assert flavor_config(path)["weights"] == files
    assert sorted(p.name for p in (path / "model").iterdir()) == ["structure.json", *files]
    np.testing.assert_array_equal(modelpack.load(path).predict(X), native(model, X).numpy())


def test_non_persistent_buffers_keep_their_values(tmp_path: Path) -> None:
    model = WithBuffers()
    model.scale.fill_(3.0)
    model.offset.fill_(0.5)
    path = mp_torch.save(model, tmp_path / "m")
    module = mp_torch.load(path)
    assert "scale" not in module.state_dict()
    assert torch.equal(module.scale, torch.full((4,), 3.0))
    assert not module.scale.is_meta
    np.testing.assert_array_equal(modelpack.load(path).predict(X), native(model, X).numpy())


@pytest.mark.parametrize("cls", [MetaHostile, PlainTensorAttribute])
def test_modules_the_meta_device_cannot_build_load_for_real(tmp_path: Path, cls: type) -> None:
    model = cls()
    path = mp_torch.save(model, tmp_path / "m")
    x = X[:, :3].copy()
    np.testing.assert_array_equal(modelpack.load(path).predict(x), native(model, x).numpy())


def test_loading_unpickles_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = mlp()
    path = modelpack.save(model, tmp_path / "m", input_example=X)
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert files == [
        "input_example.json",
        "model/structure.json",
        "model/weights.safetensors",
        "modelpack.yaml",
        "requirements.txt",
    ]
    raw = (path / "model" / "weights.safetensors").read_bytes()
    header = int.from_bytes(raw[:8], "little")
    json.loads(raw[8 : 8 + header])  # a safetensors header: JSON, then raw tensor bytes
    json.loads((path / "input_example.json").read_bytes())
    json.loads((path / "model" / "structure.json").read_bytes())

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("loading a torch model unpickled something")

    for target, name in [(pickle, "load"), (pickle, "loads"), (torch, "load")]:
        monkeypatch.setattr(target, name, refuse)
    np.testing.assert_array_equal(modelpack.load(path).predict(X), native(model, X).numpy())


def test_signature_errors_name_the_field(tmp_path: Path) -> None:
    path = mp_torch.save(mlp(), tmp_path / "m", input_example=X)
    loaded = modelpack.load(path)
    with pytest.raises(SignatureError, match="expected shape") as err:
        loaded.predict(np.zeros((2, 5), dtype=np.float32))
    assert err.value.field == "input"

    tokens = np.array([[1, 2], [3, 4]])
    lm = modelpack.load(mp_torch.save(TiedLM(), tmp_path / "lm", input_example=tokens))
    with pytest.raises(SignatureError, match="expected dtype int64, got float64") as err:
        lm.predict(tokens.astype(np.float64))
    assert err.value.field == "input"


def test_float64_data_feeds_a_float32_model(tmp_path: Path) -> None:
    model = mlp()
    path = mp_torch.save(model, tmp_path / "m")  # no signature: nothing casts the data first
    out = modelpack.load(path).predict(X.astype(np.float64))
    np.testing.assert_allclose(out, native(model, X).numpy(), rtol=1e-6)


def test_code_paths_ship_the_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "shipped_net.py").write_text(
        textwrap.dedent(
            """
            import torch

            class ShippedNet(torch.nn.Module):
                def __init__(self, n=4):
                    super().__init__()
                    self.n = n
                    self.layer = torch.nn.Linear(n, 1)

                def forward(self, x):
                    return self.layer(x)
            """
        )
    )
    monkeypatch.setattr(sys, "path", [str(src), *sys.path])
    import shipped_net

    model = shipped_net.ShippedNet()
    path = mp_torch.save(model, tmp_path / "m", code_paths=[src / "shipped_net.py"])
    assert (path / "model" / "code" / "shipped_net.py").is_file()
    assert Descriptor.read(path).trust == {
        "executes_code": True,
        "needs": [
            {"kind": "code", "name": "model/code/"},
            {"kind": "module", "name": "shipped_net.ShippedNet"},
        ],
    }

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(src)])
    monkeypatch.delitem(sys.modules, "shipped_net")
    with pytest.raises(UntrustedModelError, match=r"code model/code/.*--trust"):
        modelpack.load(path)
    assert "shipped_net" not in sys.modules  # refused before anything was imported
    for _ in range(2):  # importing the shipped code leaves no .pyc to break the manifest
        loaded = modelpack.load(path, trust=True)
        np.testing.assert_array_equal(loaded.predict(X), native(model, X).numpy())
    assert not list((path / "model" / "code").rglob("*.pyc"))


def test_a_class_in_main_needs_its_script_in_code_paths(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import torch
            import modelpack.flavors.torch as mp_torch
            from modelpack.errors import InvalidModelError

            class Net(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.layer = torch.nn.Linear(4, 2)

                def forward(self, x):
                    return self.layer(x)

            if __name__ == "__main__":
                try:
                    mp_torch.save(Net(), {str(tmp_path / "refused")!r})
                except InvalidModelError as exc:
                    print(exc)
                mp_torch.save(Net(), {str(tmp_path / "m")!r}, code_paths=[__file__])
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True
    ).stdout
    assert "defined in __main__" in out
    assert "code_paths=" in out
    assert flavor_config(tmp_path / "m")["class"] == "train:Net"
    try:
        loaded = modelpack.load(tmp_path / "m", trust=True)
        assert loaded.predict(X).shape == (5, 2)
    finally:
        sys.modules.pop("train", None)
        sys.path.remove(str(tmp_path / "m" / "model" / "code"))


def test_an_unavailable_device_is_a_clear_error(tmp_path: Path) -> None:
    path = mp_torch.save(mlp(), tmp_path / "m")
    with pytest.raises(ModelpackError, match="device 'nonsense' is not available"):
        mp_torch.load(path, device="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ModelpackError, match="device 'cuda' is not available"):
            modelpack.load(path, device="cuda")


def test_accepts_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from modelpack.flavors.torch import TorchFlavor\n"
        "assert TorchFlavor().accepts(object()) is False\n"
        "assert 'torch' not in sys.modules, 'accepts imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert mp_torch.TorchFlavor().accepts(mlp())
    assert not mp_torch.TorchFlavor().accepts(object())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_load_on_gpu(tmp_path: Path, device: str) -> None:
    model = mlp()
    path = mp_torch.save(model, tmp_path / "m", input_example=X)
    module = mp_torch.load(path, device=device)
    assert all(p.device.type == "cuda" for p in module.parameters())
    out = modelpack.load(path, device=device).predict(X)
    np.testing.assert_allclose(out, native(model, X).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelpackError, match="not available"):
        mp_torch.load(path, device=f"cuda:{torch.cuda.device_count()}")


def test_a_user_class_loads_only_when_trusted_and_torch_nn_needs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELPACK_TRUST")
    path = mp_torch.save(MLP(4, 8, 3), tmp_path / "mlp", input_example=X)
    with pytest.raises(UntrustedModelError, match=r"module tests\.flavors\.torch_models\.MLP"):
        modelpack.load(path)
    with pytest.raises(UntrustedModelError):
        mp_torch.load(path, trust=["tests.flavors.torch_models.Opaque"])  # another class
    loaded = modelpack.load(path, trust=["tests.flavors.torch_models.MLP"])
    assert loaded.predict(X).shape == (len(X), 3)
    assert mp_torch.load(path, trust=True) is not None

    # A torch.nn building block is on the reviewed list: it loads with no trust at all.
    linear = torch.nn.Linear(4, 2)
    plain = mp_torch.save(linear, tmp_path / "linear", input_example=X)
    assert Descriptor.read(plain).trust == {"executes_code": False, "needs": []}
    np.testing.assert_array_equal(modelpack.load(plain).predict(X), native(linear, X).numpy())


def test_a_transformers_model_is_a_save_pretrained_folder_and_loads_with_no_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transformers = pytest.importorskip("transformers")
    monkeypatch.delenv("MODELPACK_TRUST")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=50,
        max_position_embeddings=16,
    )
    model = transformers.BertModel(config).eval()
    ids = np.arange(12, dtype=np.int64).reshape(2, 6)
    example = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    path = modelpack.save(model, tmp_path / "bert", input_example=example)
    assert flavor_config(path)["format"] == "transformers"
    assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pkl"))
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in example.items()})
    # The folder is what save_pretrained writes: from_pretrained reads it as it is.
    again = transformers.BertModel.from_pretrained(str(path / "model")).eval()
    with torch.inference_mode():
        reread = again(**{k: torch.from_numpy(v) for k, v in example.items()})
    assert torch.equal(reread.last_hidden_state, expected.last_hidden_state)
    out = modelpack.load(path).predict(example)  # transformers classes: no trust needed
    assert sorted(out) == ["last_hidden_state", "pooler_output"]
    np.testing.assert_array_equal(out["last_hidden_state"], expected.last_hidden_state.numpy())


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            lambda node: node["attributes"].update(act={"$function": "os.system"}),
            "function os.system",
        ),
        (lambda node: node.update({"class": "http.server.HTTPServer"}), "http.server.HTTPServer"),
        (
            lambda node: node["attributes"].update(
                p={
                    "$partial": {
                        "func": {"$function": "subprocess.run"},
                        "args": [],
                        "keywords": {},
                    }
                }
            ),
            "function subprocess.run",
        ),
    ],
)
def test_a_structure_file_naming_untrusted_code_is_refused_before_any_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Any, named: str
) -> None:
    from modelpack.descriptor import build_manifest

    monkeypatch.delenv("MODELPACK_TRUST")
    monkeypatch.delitem(sys.modules, "http.server", raising=False)
    path = mp_torch.save(torch.nn.Sequential(torch.nn.Linear(4, 2)), tmp_path / "m")
    structure_file = path / "model" / "structure.json"
    structure = json.loads(structure_file.read_text())
    edit(structure["nodes"][0])
    structure_file.write_text(json.dumps(structure))
    descriptor = Descriptor.read(path)  # the attacker reseals every hash
    descriptor.files = build_manifest(path)
    descriptor.write(path)
    with pytest.raises(UntrustedModelError, match=named.replace(".", r"\.")):
        modelpack.load(path)
    assert "http.server" not in sys.modules
