"""``log_metric`` throughput: modelpack's batched writes against one INSERT per call (and MLflow).

    .venv/bin/python benchmarks/bench_tracking.py [--calls 100000] [--naive-calls 100000]
        [--mlflow-python /path/to/venv/bin/python] [--mlflow-calls 2000]

Each case logs ``--calls`` values of one metric (step = i) into a fresh SQLite store under a
temporary MODELPACK_HOME and reports calls/s measured until every value is in the database.
"naive" is the same SQL as modelpack's but one write transaction per call, which is what an
unbatched tracker does. MLflow (SQLite tracking store) runs only when ``--mlflow-python`` names
an interpreter that can import mlflow, in its own process; it is never installed in the dev venv.
Both of its modes are timed on ``--mlflow-calls`` calls (it is slow) and reported as rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MLFLOW_SCRIPT = """
import json, sys, time, mlflow
calls, synchronous = int(sys.argv[1]), sys.argv[2] == "sync"
mlflow.set_tracking_uri(sys.argv[3])
mlflow.set_experiment("bench")
with mlflow.start_run():
    mlflow.log_metric("warm", 0.0)
    start = time.perf_counter()
    for i in range(calls):
        mlflow.log_metric("loss", 1.0 / (i + 1), step=i, synchronous=synchronous)
    loop = time.perf_counter() - start
    if not synchronous:
        mlflow.flush_async_logging()
total = time.perf_counter() - start
print(json.dumps({"calls": calls, "loop_s": loop, "total_s": total}))
"""


def _fresh_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="modelpack-bench-"))
    os.environ["MODELPACK_HOME"] = str(home)
    os.environ.pop("MODELPACK_STORE_URI", None)
    return home


def bench_batched(calls: int) -> dict[str, float]:
    import modelpack
    from modelpack.store import db

    _fresh_home()
    log_metric = modelpack.log_metric
    with modelpack.start_run(experiment="bench") as run:
        log_metric("warm", 0.0)
        start = time.perf_counter()
        for i in range(calls):
            log_metric("loss", 1.0 / (i + 1), step=i)
        loop = time.perf_counter() - start
    total = time.perf_counter() - start
    assert len(modelpack.tracking.get_metric_history(run.id, "loss")) == calls
    db.dispose_all()
    return {"calls": calls, "loop_s": loop, "total_s": total}


def bench_naive(calls: int) -> dict[str, float]:
    from sqlalchemy import insert

    import modelpack
    from modelpack.store import db
    from modelpack.store.schema import metrics

    _fresh_home()
    with modelpack.start_run(experiment="bench") as run:
        engine = db.get_engine()
        start = time.perf_counter()
        for i in range(calls):
            row = {
                "run_id": run.id,
                "key": "loss",
                "value": 1.0 / (i + 1),
                "step": i,
                "timestamp": db.now_ms(),
            }
            with db.write(engine) as conn:
                conn.execute(insert(metrics).values(row))
        loop = time.perf_counter() - start
    db.dispose_all()
    return {"calls": calls, "loop_s": loop, "total_s": loop}


def bench_mlflow(python: str, calls: int, mode: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        out = subprocess.run(
            [python, "-c", MLFLOW_SCRIPT, str(calls), mode, uri],
            check=True,
            capture_output=True,
            text=True,
            cwd=tmp,
        ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def _mlflow_usable(python: str | None) -> bool:
    if not python:
        return False
    probe = subprocess.run([python, "-c", "import mlflow"], capture_output=True, check=False)
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--naive-calls", type=int, default=100_000)
    parser.add_argument("--mlflow-python", default=None)
    parser.add_argument("--mlflow-calls", type=int, default=2_000)
    args = parser.parse_args()

    results = {
        "modelpack batched": bench_batched(args.calls),
        "naive INSERT per call": bench_naive(args.naive_calls),
    }
    if _mlflow_usable(args.mlflow_python):
        python = args.mlflow_python
        results["mlflow sync"] = bench_mlflow(python, args.mlflow_calls, "sync")
        results["mlflow synchronous=False"] = bench_mlflow(python, args.mlflow_calls, "async")
    else:
        print("mlflow: skipped (give --mlflow-python of a venv where mlflow imports)")
    base = results["modelpack batched"]["calls"] / results["modelpack batched"]["total_s"]
    print(f"python {sys.version.split()[0]}")
    print(f"{'case':<26}{'calls':>9}{'loop s':>10}{'total s':>10}{'calls/s':>12}{'vs batched':>12}")
    for name, r in results.items():
        rate = r["calls"] / r["total_s"]
        print(
            f"{name:<26}{int(r['calls']):>9}{r['loop_s']:>10.2f}{r['total_s']:>10.2f}"
            f"{rate:>12,.0f}{base / rate:>11.1f}x"
        )


if __name__ == "__main__":
    main()
