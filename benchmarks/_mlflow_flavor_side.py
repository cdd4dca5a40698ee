"""MLflow half of bench_flavors.py; run by it with the MLflow venv's interpreter.

    /tmp/mlflow-bench/bin/python benchmarks/_mlflow_flavor_side.py SPEC.json

SPEC names the flavor, the native file modelpack saved (the same model every side measures),
where to save the MLflow model, and the inputs (JSON files) with the calls to time for each.
This side loads the native file with the library, saves it with ``mlflow.<flavor>.save_model``
(with a signature, as modelpack's model has one; explicit pip requirements, so MLflow does not
infer them in a subprocess), then times ``mlflow.pyfunc.load_model`` (median of repeated loads
after a first one) and pyfunc ``predict`` (median after a warm-up). Uses only MLflow and the
model's library (never modelpack). Prints one JSON line; ``{"skip": reason}`` when MLflow's
flavor cannot run here.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import timed


def _data(file: str) -> Any:
    import numpy as np
    import pandas as pd

    raw = json.loads(Path(file).read_text(encoding="utf-8"))
    if "columns" in raw:
        return pd.DataFrame(raw["data"], columns=raw["columns"])
    return np.asarray(raw["array"], dtype=raw["dtype"])


def _save(flavor: str, native: str, task: str, path: str, example: Any) -> None:
    import mlflow
    from mlflow.models import infer_signature

    if flavor == "xgboost":
        import mlflow.xgboost
        import xgboost

        model = xgboost.XGBClassifier()
        model.load_model(native)
        signature = infer_signature(example, model.predict(example))
        mlflow.xgboost.save_model(
            model, path, signature=signature, pip_requirements=["xgboost-cpu"]
        )
    elif flavor == "lightgbm":
        import lightgbm
        import mlflow.lightgbm

        booster = lightgbm.Booster(model_file=native)
        signature = infer_signature(example, booster.predict(example))
        mlflow.lightgbm.save_model(
            booster, path, signature=signature, pip_requirements=["lightgbm"]
        )
    elif flavor == "catboost":
        import catboost
        import mlflow.catboost

        model = catboost.CatBoostClassifier()
        model.load_model(native)
        signature = infer_signature(example, model.predict(example))
        mlflow.catboost.save_model(model, path, signature=signature, pip_requirements=["catboost"])
    elif flavor == "keras":
        import keras
        import mlflow.keras

        model = keras.saving.load_model(native, compile=False, safe_mode=True)
        signature = infer_signature(example, model.predict(example, verbose=0))
        mlflow.keras.save_model(
            model, path, signature=signature, pip_requirements=["keras", "torch"]
        )
    elif flavor == "transformers":
        import mlflow.transformers
        import transformers

        pipe = transformers.pipeline(task, model=native)
        mlflow.transformers.save_model(
            transformers_model=pipe,
            path=path,
            pip_requirements=["transformers", "torch"],
        )
    else:
        raise SystemExit(f"unknown flavor {flavor!r}")
    del mlflow


def main() -> None:
    warnings.simplefilter("ignore")
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    flavor = spec["flavor"]
    if flavor == "keras":
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import mlflow
        import mlflow.pyfunc
    except ImportError as exc:
        print(json.dumps({"skip": f"mlflow cannot be imported: {exc}"}))
        return
    inputs = {n: _data(item["file"]) for n, item in spec["inputs"].items()}
    example = inputs[min(inputs, key=int)]
    path = spec["save_to"]
    try:
        _save(flavor, spec["native"], spec["task"], path, example)
    except ImportError as exc:  # e.g. a flavor that needs a library this venv lacks
        print(json.dumps({"skip": f"mlflow.{flavor} cannot save here: {exc}"}))
        return

    model = mlflow.pyfunc.load_model(path)  # the first load, untimed
    times = []
    for _ in range(max(1, int(spec["load_repeats"]))):
        start = time.perf_counter()
        model = mlflow.pyfunc.load_model(path)
        times.append(time.perf_counter() - start)

    predict = {}
    for n, data in inputs.items():
        iterations = int(spec["inputs"][n]["iterations"])
        samples, _ = timed(lambda d=data: model.predict(d), iterations, max(3, iterations // 10))
        predict[n] = statistics.median(samples)
    print(
        json.dumps(
            {
                "version": mlflow.__version__,
                "load": statistics.median(times),
                "predict": predict,
                "path": path,
            }
        )
    )


if __name__ == "__main__":
    main()
