"""Python-flavor models for the batch tests (importable by spawned workers and subprocesses)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd


class SlowScaler:
    """Multiplies ``a`` by 3, sleeping per chunk so that a job can be interrupted mid-way."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        time.sleep(self.delay)
        return data["a"].to_numpy() * 3.0


class TwoOutputs:
    def predict(self, data: pd.DataFrame) -> np.ndarray:
        a = data["a"].to_numpy()
        return np.stack([a, -a], axis=1)
