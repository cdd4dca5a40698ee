"""The main job on embedded defaults (SQLite and local artifacts under ~/.modelpack).

Train a small model while tracking the run, save and register it, give it an alias, and load it
back generically through the registry URI.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import modelpack
from modelpack import registry

MODEL_NAME = "quickstart-iris"


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


if __name__ == "__main__":
    main()
