"""Models for bench_serving.py, importable so they save by class path (copied with code_paths)."""

from __future__ import annotations

import numpy as np
import torch


class Trivial:
    """Answers zeros: the predict time is next to nothing, so latency is the server's."""

    def predict(self, data: object) -> np.ndarray:
        return np.zeros(len(data))  # type: ignore[arg-type]


class SmallMLP(torch.nn.Module):
    def __init__(self, features: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(features, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
