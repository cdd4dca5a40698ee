"""Runs in the MLflow venv (never in .venv): saves models with real MLflow, and a SQLite store.

``python mlflow_side.py models OUT [FLAVOR...]``: one MLflow model directory per flavor under
OUT, each with ``expected.json``: MLflow's own pyfunc predictions on the saved input example.
``python mlflow_side.py store OUT``: ``OUT/mlflow.db`` and ``OUT/artifacts`` holding registered
models with several versions, aliases, tags and descriptions (and ``OUT/store.json``: the ids).
``python mlflow_side.py predict MODEL_DIR``: MLflow's pyfunc predictions on the example.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
os.environ.setdefault("KERAS_BACKEND", "torch")  # torch is in the venv; TensorFlow is not


def _iris() -> tuple[pd.DataFrame, np.ndarray]:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    return frame, data.target.to_numpy()


def _jsonable(pred: Any) -> Any:
    if isinstance(pred, pd.DataFrame):
        return pred.to_numpy().tolist()
    if isinstance(pred, pd.Series):
        return pred.tolist()
    if isinstance(pred, dict):
        return {k: _jsonable(v) for k, v in pred.items()}
    return np.asarray(pred).tolist()


def predict(model_dir: Path) -> Any:
    import mlflow.pyfunc
    from mlflow.models import Model

    model = mlflow.pyfunc.load_model(str(model_dir))
    example = Model.load(str(model_dir)).load_input_example(str(model_dir))
    return _jsonable(model.predict(example))


def sklearn_model(out: Path, serialization: str) -> None:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _iris()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    extra: dict[str, Any] = {"skops_trusted_types": []} if serialization == "skops" else {}
    mlflow.sklearn.save_model(
        model, str(out), serialization_format=serialization, input_example=x.head(5), **extra
    )


class TinyNet:  # built lazily: torch is imported only for the pytorch model
    @staticmethod
    def build() -> Any:
        import torch

        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
        ).eval()


def pytorch_model(out: Path, serialization: str) -> None:
    import mlflow.pytorch

    x, _ = _iris()
    example = x.head(5).to_numpy(dtype=np.float32)
    mlflow.pytorch.save_model(
        TinyNet.build(), str(out), input_example=example, serialization_format=serialization
    )


def onnx_model(out: Path) -> None:
    import mlflow.onnx
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    x, _ = _iris()
    mlflow.onnx.save_model(
        model, str(out), input_example={"x": x.head(5).to_numpy(dtype=np.float32)}
    )


def xgboost_model(out: Path) -> None:
    import mlflow.xgboost
    import xgboost

    x, y = _iris()
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(x, y)
    mlflow.xgboost.save_model(model, str(out), input_example=x.head(5), model_format="ubj")


def lightgbm_model(out: Path) -> None:
    import lightgbm
    import mlflow.lightgbm

    x, y = _iris()
    model = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(x, y)
    mlflow.lightgbm.save_model(model, str(out), input_example=x.head(5))


def catboost_model(out: Path) -> None:
    import catboost
    import mlflow.catboost

    x, y = _iris()
    model = catboost.CatBoostClassifier(iterations=10, verbose=False, allow_writing_files=False)
    model.fit(x, y)
    mlflow.catboost.save_model(model, str(out), input_example=x.head(5))


def keras_model(out: Path) -> None:
    import keras
    import mlflow.keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    x, _ = _iris()
    out.mkdir(parents=True)  # mlflow.keras writes the example before it creates the directory
    example = x.head(5).to_numpy(dtype=np.float32)
    mlflow.keras.save_model(model, str(out), input_example=example)


PYFUNC_CODE = """
import json

import pandas as pd


def scale(frame: pd.DataFrame, factor: float) -> pd.DataFrame:
    return frame * factor
"""


def pyfunc_model(out: Path) -> None:
    import mlflow.pyfunc

    work = out.parent / f"{out.name}-src"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pyfunc_helpers.py").write_text(PYFUNC_CODE)
    (work / "factor.json").write_text(json.dumps({"factor": 2.5}))
    sys.path.insert(0, str(work))

    class Scaler(mlflow.pyfunc.PythonModel):
        def load_context(self, context: Any) -> None:
            with open(context.artifacts["factor"]) as fh:
                self.factor = json.load(fh)["factor"]

        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
            import pyfunc_helpers

            shift = (params or {}).get("shift", 0.0)
            return pyfunc_helpers.scale(model_input, self.factor) + shift

    x, _ = _iris()
    from mlflow.models import infer_signature

    signature = infer_signature(x.head(5), x.head(5), params={"shift": 0.0})
    mlflow.pyfunc.save_model(
        str(out),
        python_model=Scaler(),
        artifacts={"factor": str(work / "factor.json")},
        code_paths=[str(work / "pyfunc_helpers.py")],
        input_example=x.head(5),
        signature=signature,
    )


WORDS = [
    "the",
    "a",
    "movie",
    "film",
    "was",
    "is",
    "great",
    "good",
    "fine",
    "bad",
    "awful",
    "boring",
    "loved",
    "hated",
    "it",
    "plot",
]


def tiny_text_classifier() -> Any:
    """A seeded two-layer BERT text classifier with a WordLevel tokenizer built here: no hub."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    roles = ("pad", "unk", "cls", "sep", "mask")  # ids 0..4, in this order
    specials = {f"{role}_token": f"[{role.upper()}]" for role in roles}
    vocab = {w: i for i, w in enumerate([*specials.values(), *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=64, **specials
    )
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.5,  # logits far enough apart for the labels to differ
        id2label={0: "NEGATIVE", 1: "POSITIVE"},  # two labels: num_labels 2
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    torch.manual_seed(5)  # labels of the example differ with this seed
    model = transformers.BertForSequenceClassification(config).eval()
    return transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)


def transformers_model(out: Path) -> None:
    import mlflow.transformers
    import tokenizers
    import torch
    import transformers

    example = ["the movie was great", "a boring plot", "it was fine"]
    # Given, as MLflow's default adds torchvision, which this venv does not have.
    reqs = [f"{m.__name__}=={m.__version__}" for m in (transformers, tokenizers, torch)]
    mlflow.transformers.save_model(
        tiny_text_classifier(),
        str(out),
        task="text-classification",
        input_example=example,
        pip_requirements=reqs,
    )


BUILDERS = {
    "sklearn_skops": lambda out: sklearn_model(out, "skops"),
    "sklearn_pickle": lambda out: sklearn_model(out, "cloudpickle"),
    "pytorch_pt2": lambda out: pytorch_model(out, "pt2"),
    "pytorch_pickle": lambda out: pytorch_model(out, "pickle"),
    "onnx": onnx_model,
    "xgboost": xgboost_model,
    "lightgbm": lightgbm_model,
    "catboost": catboost_model,
    "keras": keras_model,
    "pyfunc": pyfunc_model,
    "transformers": transformers_model,
}


def models(out: Path, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in names or list(BUILDERS):
        target = out / name
        BUILDERS[name](target)
        (target / "expected.json").write_text(json.dumps(predict(target)))
        print(f"saved {name}", flush=True)


def store(out: Path) -> None:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.create_experiment("iris", artifact_location=(out / "artifacts").as_uri())
    x, y = _iris()
    client = MlflowClient(uri, uri)
    ids: dict[str, Any] = {"runs": []}
    client.create_registered_model("iris", tags={"team": "ml"}, description="Iris classifier")
    for c in (0.1, 1.0, 10.0):
        with mlflow.start_run(experiment_id=exp) as run:
            model = LogisticRegression(C=c, max_iter=500).fit(x, y)
            mlflow.log_param("C", c)
            info = mlflow.sklearn.log_model(
                model, name="model", input_example=x.head(3), registered_model_name="iris"
            )
            ids["runs"].append({"run_id": run.info.run_id, "model_id": info.model_id, "C": c})
    client.set_registered_model_alias("iris", "champion", "2")
    client.set_registered_model_alias("iris", "previous", "1")
    client.set_model_version_tag("iris", "2", "validated", "true")
    client.update_model_version("iris", "2", description="C=1.0, the best")
    # A second model whose version 1 was deleted: numbers 2 and 3 remain.
    with mlflow.start_run(experiment_id=exp) as run:
        model = LogisticRegression(C=0.5, max_iter=500).fit(x, y)
        for _ in range(3):
            mlflow.sklearn.log_model(
                model, name="model", input_example=x.head(3), registered_model_name="gaps"
            )
    client.delete_model_version("gaps", "1")
    client.set_registered_model_alias("gaps", "latest-good", "3")
    (out / "store.json").write_text(json.dumps(ids))
    print(json.dumps(ids))


if __name__ == "__main__":
    command, target = sys.argv[1], Path(sys.argv[2])
    if command == "models":
        models(target, sys.argv[3:])
    elif command == "store":
        store(target)
    elif command == "predict":
        print(json.dumps(predict(target)))
    else:
        raise SystemExit(f"unknown command {command}")
