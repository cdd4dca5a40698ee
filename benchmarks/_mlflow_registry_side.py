"""MLflow half of bench_registry.py; run by it with the MLflow venv's interpreter.

    /tmp/mlflow-bench/bin/python benchmarks/_mlflow_registry_side.py WORKDIR N SEARCH_REPEATS
        LOAD_REPEATS COLD_REPEATS

Uses only MLflow, numpy and scikit-learn (never modelpack). Prints one JSON line of timings.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

NAME = "m"
ALIAS = "champion"
FILTER = "name = 'm' AND tags.batch = '3'"

COLD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import mlflow.pyfunc
t1 = time.perf_counter()
model = mlflow.pyfunc.load_model("models:/m@champion")
pred = model.predict(np.asarray(json.loads(sys.argv[1])))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load_predict": t2 - t1, "pred": [int(p) for p in pred]}))
"""


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    y = (x @ rng.normal(size=8) > 0).astype(int)
    return x, y


def main() -> None:
    work = Path(sys.argv[1])
    n, search_repeats, load_repeats, cold_repeats = (int(a) for a in sys.argv[2:6])
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_REGISTRY_URI"] = uri
    os.chdir(work)
    t = {}

    start = time.perf_counter()
    import mlflow
    import mlflow.pyfunc
    import mlflow.sklearn
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    t["import"] = time.perf_counter() - start

    x, y = _data()
    sk = LogisticRegression(max_iter=200).fit(x, y)
    sample = x[:5]

    start = time.perf_counter()
    client = MlflowClient()
    exp_id = client.create_experiment("bench", artifact_location=(work / "artifacts").as_uri())
    t["open_store"] = time.perf_counter() - start

    start = time.perf_counter()
    with mlflow.start_run(experiment_id=exp_id) as run:
        info = mlflow.sklearn.log_model(
            sk, name="model", input_example=sample, pip_requirements=["scikit-learn"]
        )
    t["save"] = time.perf_counter() - start

    start = time.perf_counter()
    client.create_registered_model(NAME)
    for i in range(n):
        client.create_model_version(
            NAME,
            info.model_uri,
            run_id=run.info.run_id,
            tags={"batch": str(i % 10)},
            model_id=info.model_id,
        )
    t["register"] = time.perf_counter() - start

    start = time.perf_counter()
    client.set_registered_model_alias(NAME, ALIAS, str(n))
    t["set_alias"] = time.perf_counter() - start

    found = 0
    samples = []
    for _ in range(search_repeats):
        start = time.perf_counter()
        found = len(client.search_model_versions(FILTER))
        samples.append(time.perf_counter() - start)
    t["search"] = statistics.median(samples)

    pred = None
    samples = []
    for _ in range(load_repeats):
        start = time.perf_counter()
        pred = mlflow.pyfunc.load_model(f"models:/{NAME}@{ALIAS}").predict(sample)
        samples.append(time.perf_counter() - start)
    t["load_warm"] = statistics.median(samples)

    cold, cold_inner, cold_import = [], [], []
    arg = json.dumps(sample.tolist())
    for k in range(cold_repeats + 1):  # the first (untimed) run warms the OS file cache
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", COLD, arg], check=True, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        inner = json.loads(out.stdout.strip().splitlines()[-1])
        if inner["pred"] != [int(p) for p in np.asarray(pred)]:
            raise SystemExit("cold load predicted differently")
        if k > 0:
            cold.append(wall)
            cold_import.append(inner["import"])
            cold_inner.append(inner["load_predict"])
    t["load_cold"] = statistics.median(cold)
    t["load_cold_import"] = statistics.median(cold_import)
    t["load_cold_inner"] = statistics.median(cold_inner)

    print(
        json.dumps(
            {
                "timings": t,
                "found": found,
                "pred": [int(p) for p in np.asarray(pred)],
                "version": mlflow.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
