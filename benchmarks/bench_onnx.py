"""ONNX Runtime vs the native flavor: single-row and 1,000-row predict latency, same models.

    python benchmarks/bench_onnx.py                 # CPU: sklearn and torch, native vs ORT CPU
    python benchmarks/bench_onnx.py --device cuda   # adds torch on the GPU vs ORT CUDA

Models: a StandardScaler+LogisticRegression pipeline and a RandomForest (scikit-learn), and an
MLP (torch), each saved with modelpack and converted with ``modelpack.convert.to_onnx``. Both
sides get the same signature-checked batch and are timed on ``Predictor.predict`` alone (p50,
p99 over many calls after a warm-up). Needs only modelpack's dependencies with the sklearn,
torch and onnx (or gpu) extras; runs from a checkout without installing modelpack.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

try:
    import modelpack
except ImportError:  # run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import modelpack

FEATURES = 32


class BenchMLP(nn.Module):
    def __init__(self, features: int = FEATURES, hidden: int = 256, out: int = 10) -> None:
        super().__init__()
        self.features, self.hidden, self.out = features, hidden, out
        self.net = nn.Sequential(
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def latency(
    fn: Callable[[], Any], iterations: int, sync: Callable[[], None]
) -> tuple[float, float]:
    for _ in range(max(5, iterations // 20)):
        fn()
    sync()
    times = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        fn()
        sync()
        times.append((time.perf_counter_ns() - start) / 1e6)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def build(tmp: Path) -> list[tuple[str, Path, str]]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, FEATURES))
    y = (x[:, :4].sum(axis=1) > 0).astype(np.int64)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    forest = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0).fit(x, y)
    models = [
        ("sklearn scaler+logreg", modelpack.save(pipeline, tmp / "logreg", input_example=x[:8])),
        ("sklearn random forest", modelpack.save(forest, tmp / "forest", input_example=x[:8])),
    ]
    mlp = modelpack.save(
        BenchMLP(),
        tmp / "mlp",
        input_example=x[:8].astype(np.float32),
        code_paths=[__file__],
    )
    models.append(("torch MLP 32-256-256-10", mlp))
    return [(name, path, name.split()[0]) for name, path in models]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--iterations", type=int, default=2000, help="calls per single-row cell")
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING, format="# %(message)s")
    logging.getLogger("modelpack.onnxruntime").setLevel(logging.INFO)
    from modelpack.convert import to_onnx
    from modelpack.flavors.onnx import load_predictor

    rows: list[tuple[str, int, str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        for name, path, flavor in build(Path(tmp)):
            converted = to_onnx(path, Path(tmp) / f"{path.name}-onnx", trust=True)
            native = modelpack.load(path, trust=True)
            signature = native.signature
            assert signature is not None
            rng = np.random.default_rng(1)
            cpu_sync: Callable[[], None] = lambda: None  # noqa: E731
            contenders: list[tuple[str, Any, Callable[[], None]]] = [
                (f"{flavor} (native)", native.predictor.inner, cpu_sync),  # checked data
                ("onnxruntime cpu", load_predictor(converted, device="cpu"), cpu_sync),
            ]
            if args.device == "cuda" and flavor == "torch":
                gpu = modelpack.load(path, device="cuda", trust=True)
                gpu_native = gpu.predictor.inner
                contenders.append(("torch cuda (native)", gpu_native, torch.cuda.synchronize))
            if args.device == "cuda":
                ort_gpu = load_predictor(converted, device="cuda")
                contenders.append((f"onnxruntime {ort_gpu.provider}", ort_gpu, cpu_sync))
            for n in (1, args.batch):
                data = signature.enforce(rng.normal(size=(n, FEATURES)))
                iterations = args.iterations if n == 1 else max(50, args.iterations // 10)
                for label, predictor, sync in contenders:
                    call = lambda p=predictor, d=data: p.predict(d)  # noqa: E731
                    p50, p99 = latency(call, iterations, sync)
                    rows.append((name, n, label, p50, p99))
    print_table(rows)


def print_table(rows: list[tuple[str, int, str, float, float]]) -> None:
    print("| model | rows | runtime | p50 ms | p99 ms | p50 vs native |")
    print("|---|---:|---|---:|---:|---:|")
    native: dict[tuple[str, int], float] = {}
    for name, n, label, p50, p99 in rows:
        base = native.setdefault((name, n), p50)
        print(f"| {name} | {n} | {label} | {p50:.3f} | {p99:.3f} | {base / p50:.2f}x |")


if __name__ == "__main__":
    main()
