"""Timing shared by the benchmark scripts and their peers' halves (standard library only, so
an MLflow venv can import it: each script runs with ``benchmarks/`` first on ``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def timed(call: Callable[[], Any], repeats: int, warmup: int) -> tuple[list[float], Any]:
    """Seconds of each of ``repeats`` calls after ``warmup`` untimed ones, and the last result."""
    result = None
    for _ in range(warmup):
        result = call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        samples.append(time.perf_counter() - start)
    return samples, result
