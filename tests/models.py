"""Small importable model classes shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


class Doubler:
    """A python-flavor model: multiplies by a factor read from an artifact file."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.factor = 2.0

    def load_context(self, artifacts: dict[str, str]) -> None:
        if "factor" in artifacts:
            self.factor = float(Path(artifacts["factor"]).read_text())

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        return data["x"].to_numpy() * self.factor + self.offset


def iris_like(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "length": rng.normal(5, 1, n),
            "width": rng.normal(3, 0.5, n),
            "count": rng.integers(0, 10, n),
            "colour": rng.choice(["red", "green", "blue"], n),
        }
    )
    target = (frame["length"] + (frame["colour"] == "red") > 5.3).astype(int).to_numpy()
    return frame, target
