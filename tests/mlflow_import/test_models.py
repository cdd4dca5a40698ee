"""Models saved by real MLflow, imported, loaded with modelpack.load: MLflow's predictions back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import modelpack
from modelpack.errors import InvalidModelError, UnsupportedModelError, UntrustedModelError
from modelpack.mlflow_import import import_mlflow

# MLflow model -> (modelpack flavor, trust the import needs, trust the imported model needs)
CASES = {
    "sklearn_skops": ("sklearn", None, False),
    "sklearn_pickle": ("sklearn", True, False),  # re-saved with skops: loads with no trust
    "pytorch_pickle": ("torch", True, False),  # re-saved pickle-free (safetensors + structure)
    "pytorch_pt2": ("torch", True, True),  # a torch.export program stays one: its loader unpickles
    "onnx": ("onnx", None, False),
    "xgboost": ("xgboost", None, False),
    "lightgbm": ("lightgbm", True, False),  # MLflow's skops of LGBMClassifier names lightgbm types
    "catboost": ("catboost", None, False),
    "keras": ("keras", None, False),
    "pyfunc": ("python", True, True),  # a cloudpickled PythonModel stays one
}


def _as_array(pred: Any) -> np.ndarray:
    if isinstance(pred, (pd.DataFrame, pd.Series)):
        return pred.to_numpy()
    if isinstance(pred, dict):
        return np.concatenate([np.asarray(v).ravel() for _, v in sorted(pred.items())])
    return np.asarray(pred)


def _expected(model_dir: Path) -> np.ndarray:
    return _as_array(json.loads((model_dir / "expected.json").read_text()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_predicts_as_mlflow(case: str, mlflow_models: Path, tmp_path: Path) -> None:
    flavor, import_trust, load_trust = CASES[case]
    src = mlflow_models / case
    path = import_mlflow(src, tmp_path / "model", trust=import_trust)
    model = modelpack.load(path, trust=bool(load_trust))
    assert model.descriptor.loader == flavor
    assert model.descriptor.trust is not None
    assert model.descriptor.trust["executes_code"] is load_trust
    expected = _expected(src)
    got = _as_array(model.predict(model.input_example()))
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-6)
    meta = model.metadata["mlflow"]
    assert meta["mlflow_version"].startswith("3.17")
    assert meta["source"] == str(src.resolve())


def test_untrusted_pickle_is_refused_with_the_option(mlflow_models: Path, tmp_path: Path) -> None:
    with pytest.raises(UntrustedModelError, match=r"model\.pkl.*--trust"):
        import_mlflow(mlflow_models / "sklearn_pickle", tmp_path / "m", trust=False)
    assert not (tmp_path / "m").exists()


def test_skops_stays_skops_and_needs_no_trust(mlflow_models: Path, tmp_path: Path) -> None:
    path = import_mlflow(mlflow_models / "sklearn_skops", tmp_path / "m", trust=False)
    descriptor = yaml.safe_load((path / "modelpack.yaml").read_text())
    assert descriptor["flavors"]["sklearn"]["serialization"] == "skops"
    assert descriptor["trust"] == {"executes_code": False, "needs": []}


def test_signature_example_and_requirements(mlflow_models: Path, tmp_path: Path) -> None:
    model = modelpack.load(
        import_mlflow(mlflow_models / "pyfunc", tmp_path / "m", trust=True), trust=True
    )
    sig = model.signature
    assert sig is not None
    assert sig.inputs.names() == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert {c.dtype for c in sig.inputs.columns} == {"float64"}
    assert sig.params == {"shift": 0.0}
    shifted = model.predict(model.input_example(), params={"shift": 1.0})
    np.testing.assert_allclose(shifted.to_numpy(), _expected(mlflow_models / "pyfunc") + 1.0)
    reqs = (model.path / "requirements.txt").read_text().splitlines()
    assert not [r for r in reqs if r.startswith("mlflow")]
    assert "cloudpickle==3.1.3" in reqs
    assert (model.path / "model" / "code" / "pyfunc_helpers.py").is_file()  # code paths carried


def test_tensor_signature(mlflow_models: Path, tmp_path: Path) -> None:
    path = import_mlflow(mlflow_models / "pytorch_pickle", tmp_path / "m", trust=True)
    sig = modelpack.load(path).signature
    assert sig is not None and sig.outputs is not None
    assert [(t.dtype, t.shape) for t in sig.inputs.tensors] == [("float32", (-1, 4))]
    assert [(t.dtype, t.shape) for t in sig.outputs.tensors] == [("float32", (-1, 3))]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelpack", *args],
        input="[[1, 2, 3, 4]]",
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_import_and_refusal(mlflow_models: Path, tmp_path: Path) -> None:
    src = str(mlflow_models / "sklearn_pickle")
    refused = _cli("import", "mlflow", src, "-o", str(tmp_path / "a"))
    assert refused.returncode != 0
    assert refused.stderr.startswith("error [untrusted_model]: ")
    assert len(refused.stderr.strip().splitlines()) == 1 and "--trust" in refused.stderr
    done = _cli("import", "mlflow", src, "-o", str(tmp_path / "a"), "--trust")
    assert done.returncode == 0, done.stderr
    assert "(flavor sklearn)" in done.stdout
    assert _cli("verify", str(tmp_path / "a")).returncode == 0


def test_cli_on_an_mlflow_directory_names_the_import(mlflow_models: Path) -> None:
    src = str(mlflow_models / "xgboost")
    for args in (("inspect", src), ("predict", "-m", src, "--input", "-")):
        proc = _cli(*args)
        assert proc.returncode != 0
        assert "error [model_not_found]" in proc.stderr
        assert f"modelpack import mlflow {src} -o DIR" in proc.stderr


def test_skops_types_are_granted_by_exact_name(mlflow_models: Path, tmp_path: Path) -> None:
    src = mlflow_models / "lightgbm"  # MLflow's skops of an LGBMClassifier
    with pytest.raises(UntrustedModelError, match="--trust-type lightgbm.basic.Booster"):
        import_mlflow(src, tmp_path / "a", trust=False)
    names = ["collections.OrderedDict", "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier"]
    path = import_mlflow(src, tmp_path / "b", trust=names)
    assert modelpack.load(path).descriptor.trust == {"executes_code": False, "needs": []}


def _pipeline_rows(model: modelpack.Model) -> list[tuple[str, float]]:
    got = model.predict(model.input_example())
    return list(zip(got["label"].tolist(), got["score"].tolist(), strict=True))


def test_transformers_pipeline_predicts_as_mlflow(mlflow_models: Path, tmp_path: Path) -> None:
    src = mlflow_models / "transformers"  # a tiny BERT text-classification pipeline
    path = import_mlflow(src, tmp_path / "m", trust=False)
    model = modelpack.load(path)
    assert model.descriptor.loader == "transformers"
    assert model.descriptor.trust is not None and model.descriptor.trust["executes_code"] is False
    descriptor = yaml.safe_load((path / "modelpack.yaml").read_text())
    assert descriptor["flavors"]["transformers"]["task"] == "text-classification"
    assert (path / "model" / "model.safetensors").is_file()
    expected = json.loads((src / "expected.json").read_text())
    got = _pipeline_rows(model)
    assert [label for label, _ in got] == [label for label, _ in expected]
    assert len({label for label, _ in got}) == 2  # the example is not one label throughout
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=0, atol=1e-5)
    assert model.signature is not None and model.signature.outputs is not None
    assert model.signature.outputs.names() == ["label", "score"]
    assert "transformers==5.25.0" in (path / "requirements.txt").read_text().splitlines()


def _edited_copy(src: Path, dst: Path, edit: Any) -> Path:
    shutil.copytree(src, dst)
    mlmodel = yaml.safe_load((dst / "MLmodel").read_text())
    edit(mlmodel["flavors"]["transformers"], dst)
    (dst / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return dst


def test_transformers_pickled_weights_need_trust(mlflow_models: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    def to_bin(conf: dict[str, Any], root: Path) -> None:  # as older transformers saved them
        weights = root / conf["model_binary"]
        torch.save(load_file(weights / "model.safetensors"), weights / "pytorch_model.bin")
        (weights / "model.safetensors").unlink()

    src = _edited_copy(mlflow_models / "transformers", tmp_path / "src", to_bin)
    with pytest.raises(UntrustedModelError, match=r"pytorch_model\.bin.*--trust"):
        import_mlflow(src, tmp_path / "a", trust=False)
    assert not (tmp_path / "a").exists()
    model = modelpack.load(import_mlflow(src, tmp_path / "b", trust=True))
    assert model.descriptor.trust == {"executes_code": False, "needs": []}  # safetensors now
    assert not list((model.path / "model").glob("*.bin"))
    assert _pipeline_rows(model) == _pipeline_rows(
        modelpack.load(import_mlflow(mlflow_models / "transformers", tmp_path / "c"))
    )


def test_transformers_remote_code_is_refused(mlflow_models: Path, tmp_path: Path) -> None:
    def remote(conf: dict[str, Any], root: Path) -> None:
        file = root / conf["model_binary"] / "config.json"
        config = json.loads(file.read_text())
        config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_x.XModel"}
        file.write_text(json.dumps(config))

    src = _edited_copy(mlflow_models / "transformers", tmp_path / "src", remote)
    with pytest.raises(UntrustedModelError, match=r"auto_map.*modeling_x\.XModel"):
        import_mlflow(src, tmp_path / "a", trust=False)


def test_transformers_hub_reference_is_refused(mlflow_models: Path, tmp_path: Path) -> None:
    def reference(conf: dict[str, Any], root: Path) -> None:  # as save_pretrained=False writes
        del conf["model_binary"]
        conf["source_model_name"] = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
        conf["source_model_revision"] = "714eb0fa89d2f80546fda750413ed43d93601a13"
        shutil.rmtree(root / "model")

    src = _edited_copy(mlflow_models / "transformers", tmp_path / "src", reference)
    with pytest.raises(UnsupportedModelError, match="save_pretrained=False.*offline") as info:
        import_mlflow(src, tmp_path / "a")
    assert "distilbert/distilbert-base-uncased-finetuned-sst-2-english" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("task", "error", "message"),
    [
        ("image-classification", InvalidModelError, "unknown transformers task .image-class"),
        ("llm/v1/nope", UnsupportedModelError, "'llm/v1/nope' is not a transformers pipeline"),
    ],
)
def test_transformers_task_not_served_is_refused(
    task: str, error: type[Exception], message: str, mlflow_models: Path, tmp_path: Path
) -> None:
    def retask(conf: dict[str, Any], root: Path) -> None:
        conf["task"] = task

    src = _edited_copy(mlflow_models / "transformers", tmp_path / "src", retask)
    with pytest.raises(error, match=f"^the MLflow model {src}.*{message}"):
        import_mlflow(src, tmp_path / "a")
