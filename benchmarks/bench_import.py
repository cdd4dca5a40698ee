"""Time of `python -c "import modelpack"` against a bare interpreter start, in one run.

.venv/bin/python benchmarks/bench_import.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def _time(code: str, runs: int) -> float:
    # Users' imports read cached bytecode: allow writing it, and warm it up once.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    cases = {
        "python -c pass": "pass",
        "import modelpack": "import modelpack",
        "import modelpack; modelpack.load (core deps)": "import modelpack; modelpack.load",
        "import mlflow (if installed)": "import mlflow",
    }
    base = None
    print(f"{'case':48} {'median ms':>10} {'vs bare':>8}")
    for name, code in cases.items():
        try:
            seconds = _time(code, runs)
        except subprocess.CalledProcessError:  # e.g. mlflow not installed here
            print(f"{name:48} {'n/a':>10}")
            continue
        base = base or seconds
        print(f"{name:48} {seconds * 1000:10.1f} {seconds / base:8.2f}x")


if __name__ == "__main__":
    main()
