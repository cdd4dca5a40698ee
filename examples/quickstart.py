"""Train a small model, save it, load it generically, predict, print."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

import modelpack


def main() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    clf = LogisticRegression().fit(X, y)

    path = Path.home() / ".modelpack" / "demo" / "quickstart"
    modelpack.save(clf, path, input_example=X[:5], overwrite=True)

    model = modelpack.load(path)
    print(f"saved to:    {path}")
    print(f"signature:   {model.signature}")
    print(f"predictions: {model.predict(X[:3])}")


if __name__ == "__main__":
    main()
