"""Runs in the MLflow venv: ``python mlflow_remote.py URI`` logs and registers a model through a
running ``mlflow server`` (artifacts proxied: ``mlflow-artifacts:/``) and prints the run id and
MLflow's predictions on the input example, as JSON on its last line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mlflow_side import _iris, _jsonable


def remote(server: str) -> None:
    import mlflow
    import mlflow.pyfunc
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(server)
    # A new experiment takes the server's artifact root (proxied, under its --artifacts-
    # destination); the default one's location was fixed when the store was made, elsewhere.
    mlflow.set_experiment("remote")
    x, y = _iris()
    with mlflow.start_run() as run:
        model = LogisticRegression(C=3.0, max_iter=500).fit(x, y)
        mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=x.head(3),
            registered_model_name="remote",
            serialization_format="cloudpickle",
        )
    client = MlflowClient(server)
    client.set_registered_model_alias("remote", "prod", "1")
    client.update_registered_model("remote", description="logged through the server")
    served = mlflow.pyfunc.load_model("models:/remote@prod")
    print(json.dumps({"run_id": run.info.run_id, "expected": _jsonable(served.predict(x.head(3)))}))


if __name__ == "__main__":
    remote(sys.argv[1])
