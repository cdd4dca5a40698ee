"""The main job on embedded defaults (SQLite and local artifacts under ~/.modelpack).

Train a small model while tracking the run, save and register it, give it an alias, load it
back generically through the registry URI, then deploy it to a local server, predict through the
deployment and delete it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import modelpack
from modelpack import deploy, registry
from modelpack.errors import DeploymentError

MODEL_NAME = "quickstart-iris"
DEPLOYMENT = "quickstart"


def make_data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "sepal_length": rng.normal(5.8, 0.8, 300),
            "sepal_width": rng.normal(3.0, 0.4, 300),
            "petal_length": rng.normal(3.7, 1.7, 300),
        }
    )
    target = (frame["petal_length"] + 0.5 * frame["sepal_width"] > 5.2).astype(np.int64)
    return frame, target.to_numpy()


def main() -> None:
    X, y = make_data()
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)

    with modelpack.start_run(experiment="quickstart") as run:
        clf = LogisticRegression(C=0.5, max_iter=200)
        modelpack.log_params({"C": 0.5, "max_iter": 200})
        clf.fit(X_train, y_train)
        modelpack.log_metric("train_accuracy", clf.score(X_train, y_train))
        modelpack.log_metric("test_accuracy", clf.score(X_test, y_test))
        run_uri = modelpack.log_model(clf, "model", input_example=X_test.head(5))

    version = registry.register(MODEL_NAME, run_uri, tags={"task": "demo"})
    registry.set_alias(MODEL_NAME, "champion", version.version)

    model = modelpack.load(f"models:/{MODEL_NAME}@champion")
    print(f"run:         {run.id} ({run_uri})")
    print(f"registered:  {MODEL_NAME} version {version.version}, alias @champion")
    print(
        f"signature:   {[c.name for c in model.signature.inputs.columns]}"
        if model.signature
        else ""
    )
    print(f"predictions: {model.predict(X_test.head(3)).tolist()}")
    print(f"expected:    {y_test[:3].tolist()}")

    serve_and_deploy(X_test.head(3))
    score_a_file()


def score_a_file() -> None:
    """Score a generated 200,000-row Parquet file with `modelpack batch`; print the summary."""
    rng = np.random.default_rng(1)
    n = 200_000
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "sepal_length": rng.normal(5.8, 0.8, n),
            "sepal_width": rng.normal(3.0, 0.4, n),
            "petal_length": rng.normal(3.7, 1.7, n),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        source, scored = Path(tmp) / "flowers.parquet", Path(tmp) / "scored.parquet"
        frame.to_parquet(source)
        cli = [sys.executable, "-m", "modelpack", "batch", f"models:/{MODEL_NAME}@champion"]
        cli += [str(source), str(scored), "--passthrough", "id", "--no-progress"]
        summary = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
        print(f"batch:       {summary.strip()}")
        result = pd.read_parquet(scored)
        print(f"scored rows: {len(result)}, first: {result.head(2).to_dict('records')}")


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def serve_and_deploy(rows: pd.DataFrame) -> None:
    """Deploy to the local target (a detached `modelpack serve`), ask it in MLflow's format and
    in the Open Inference Protocol v2, predict through `modelpack deploy predict`, delete it."""
    with contextlib.suppress(DeploymentError):  # left by an interrupted earlier run
        deploy.delete("local", DEPLOYMENT)
    # Waits until the server answers; one that never does is removed again.
    deployment = deploy.create("local", DEPLOYMENT, f"models:/{MODEL_NAME}@champion", timeout=300)
    try:
        url = deployment.endpoint
        print(f"deployed:    {deployment.name} on {deployment.target} at {url}")
        split = json.loads(rows.to_json(orient="split", index=False))
        mlflow_answer = _post(f"{url}/invocations", {"dataframe_split": split})
        print(f"MLflow fmt:  {mlflow_answer}")
        v2_inputs = [
            {"name": c, "shape": [len(rows)], "datatype": "FP64", "data": rows[c].tolist()}
            for c in rows.columns
        ]
        v2_answer = _post(f"{url}/v2/models/{DEPLOYMENT}/infer", {"inputs": v2_inputs})
        print(f"v2 outputs:  {[(o['name'], o['data']) for o in v2_answer['outputs']]}")
        with tempfile.TemporaryDirectory() as tmp:
            request_file = Path(tmp) / "rows.json"
            request_file.write_text(json.dumps({"dataframe_split": split}))
            cli = [sys.executable, "-m", "modelpack", "deploy", "predict", "-t", "local"]
            cli += ["--name", DEPLOYMENT, "-i", str(request_file)]
            answer = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
            print(f"deploy predict: {json.loads(answer)}")
    finally:
        deploy.delete("local", DEPLOYMENT)
    print(f"deleted:     {DEPLOYMENT}")


if __name__ == "__main__":
    main()
