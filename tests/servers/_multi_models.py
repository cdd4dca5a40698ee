"""Python-flavor models for the many-models tests (importable, so saved by class path)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd


class CountedLoad:
    """Takes ``load_delay`` seconds to load, counting every load; answers ``x * 2``."""

    loads: list[float] = []
    _lock = threading.Lock()

    def __init__(self, load_delay: float = 0.0) -> None:
        self.load_delay = load_delay

    def load_context(self, artifacts: dict[str, str]) -> None:
        with type(self)._lock:
            type(self).loads.append(time.monotonic())
        time.sleep(self.load_delay)

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        return data["x"].to_numpy() * 2


class Constant:
    """Answers ``value`` for every row: which version answered is visible in the answer."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        return np.full(len(data), self.value)
