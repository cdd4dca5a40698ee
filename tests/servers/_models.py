"""Python-flavor models for the server tests (importable, so saved by class path)."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pandas as pd


class RowEcho:
    """Answers each row with ``id * 10``, recording the size of every predict call."""

    calls: list[int] = []

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self._lock = threading.Lock()

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        with self._lock:
            type(self).calls.append(len(data))
        if self.delay:
            time.sleep(self.delay)
        if (data["x"] < 0).any():
            raise RuntimeError("negative x is not allowed")
        return data["id"].to_numpy() * 10


class Slow:
    """Sleeps ``delay`` seconds on load and on every predict; predicts x + param ``shift``."""

    def __init__(self, delay: float = 1.0, load_delay: float = 0.0) -> None:
        self.delay = delay
        self.load_delay = load_delay

    def load_context(self, artifacts: dict[str, str]) -> None:
        time.sleep(self.load_delay)

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        time.sleep(self.delay)
        shift = float((params or {}).get("shift", 0.0))
        return data["x"].to_numpy() + shift


class Words:
    """Takes a string column and answers the length of each string."""

    def predict(self, data: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"length": data["text"].str.len(), "upper": data["text"].str.upper()})


class Unencodable:
    """Answers something no response can carry: the server's own fault, a 500."""

    def predict(self, data: pd.DataFrame) -> Any:
        if (data["x"] < 0).any():
            return [object()] * len(data)
        return data["x"].to_numpy()


class RowCount:
    """Answers the number of rows it was given (cheap, whatever the body's size)."""

    def predict(self, data: pd.DataFrame) -> list[int]:
        return [len(data)]
