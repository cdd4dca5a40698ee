"""The models of bench_many_models.py, built the same way in both venvs.

    /tmp/mlflow-bench/bin/python benchmarks/_many_models_side.py DIR N_SKLEARN N_TORCH

Run so, it saves the MLflow half: ``mlflow.sklearn`` and ``mlflow.pytorch`` models in
DIR/<name> and prints one JSON line. bench_many_models.py imports ``sklearn_model`` and
``torch_model`` for the modelpack half, so model ``i`` of a kind has the same weights on both
sides (same seeds, same library versions). Standard library at import; the libraries inside the
functions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
FEATURES, HIDDEN = 64, 256  # the torch MLP: 64-256-256-1, ~83k float32 parameters (~330 KB)


def names(n_sklearn: int, n_torch: int) -> list[str]:
    """Model names in popularity order (Zipf rank 1 first): the two kinds interleaved."""
    sk = [f"sk-{i:02d}" for i in range(n_sklearn)]
    pt = [f"pt-{i:02d}" for i in range(n_torch)]
    out: list[str] = []
    for i in range(max(n_sklearn, n_torch)):
        out += sk[i : i + 1] + pt[i : i + 1]
    return out


def sklearn_model(seed: int) -> tuple[Any, Any]:
    """An iris-like LogisticRegression fitted on a DataFrame (the seed moves data and labels)."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(150, 4)) + 4, columns=COLUMNS)
    y = rng.integers(0, 3, size=150)
    return LogisticRegression(max_iter=500).fit(x, y), x.head(3)


def torch_model(seed: int) -> tuple[Any, Any]:
    """A 64-256-256-1 MLP of plain torch.nn parts (nothing to import from a code path)."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, 1),
    ).eval()
    return net, np.zeros((1, FEATURES), dtype=np.float32)


def save_mlflow(directory: Path, n_sklearn: int, n_torch: int) -> dict[str, Any]:
    # pip_requirements given: MLflow would otherwise infer them in a subprocess per model (~20 s)
    import mlflow
    import mlflow.pytorch
    import mlflow.sklearn

    for name in names(n_sklearn, n_torch):
        seed = int(name[3:])
        if name.startswith("sk-"):
            clf, example = sklearn_model(seed)
            mlflow.sklearn.save_model(
                clf, str(directory / name), input_example=example, pip_requirements=["scikit-learn"]
            )
        else:
            net, example = torch_model(seed)
            mlflow.pytorch.save_model(
                net, str(directory / name), input_example=example, pip_requirements=["torch"]
            )
    return {"mlflow": mlflow.__version__, "saved": n_sklearn + n_torch}


if __name__ == "__main__":
    print(json.dumps(save_mlflow(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
