"""Batch scoring throughput and memory: ``modelpack batch`` vs raw predict vs MLflow pyfunc.

    .venv/bin/python benchmarks/bench_batch.py --mlflow-python /tmp/mlflow-bench/bin/python \
        [--rows 10000000] [--batch-size 65536] [--trees 40] [--depth 8] [--repeat 3]

One run, one generated Parquet file (N rows: an int64 id and 8 float64 features, written in
1M-row row groups), one scikit-learn RandomForestClassifier (single-threaded predict):

- raw limit: ``modelpack.load(m).predict`` over the same rows already in memory (a pandas
  DataFrame), in chunks of --batch-size, in this process (signature enforcement included, model
  load and reading excluded);
- ``modelpack batch m in.parquet out.parquet --passthrough id`` with --workers 1 and 2, each a
  fresh CLI process (model load, read, score, write, rename included), with its peak RSS;
- MLflow (its own venv): ``mlflow.pyfunc.load_model(...).predict`` over pandas chunks read with
  ``ParquetFile.iter_batches`` and written with ``ParquetWriter`` (the same streaming job);
- model load alone: ``modelpack.load(m)`` in a fresh process, imports included (the part of
  the batch job's clock that the raw limit does not pay).

With --repeat N the jobs run N times in round robin (raw N times over the same frame) and the
table shows medians; "load" is the 1-minute load average before each run (min-max), since
other work on the machine slows every figure. Peak RSS is ``ru_maxrss`` of the job's largest
process (the CLI or one of its helpers), the largest over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = [f"f{i}" for i in range(8)]

MLFLOW_SIDE = r"""
import json, os, pickle, sys, time
t0 = time.perf_counter()
import mlflow.pyfunc, mlflow.sklearn
import pyarrow.parquet as pq
work, src, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(f"{work}/clf.pkl", "rb") as fh:
    clf = pickle.load(fh)
trusted = ["sklearn.tree._tree.Tree"]
if not os.path.exists(f"{work}/mlflow-model"):  # saved by the first of --repeat runs
    mlflow.sklearn.save_model(clf, f"{work}/mlflow-model", skops_trusted_types=trusted)
t1 = time.perf_counter()
model = mlflow.pyfunc.load_model(f"{work}/mlflow-model")
writer = None
rows = 0
for rb in pq.ParquetFile(src).iter_batches(batch_size=batch):
    frame = rb.to_pandas()
    pred = model.predict(frame[[f"f{i}" for i in range(8)]])
    import pyarrow as pa
    table = pa.table({"id": frame["id"].to_numpy(), "prediction": pred})
    writer = writer or pq.ParquetWriter(out, table.schema)
    writer.write_table(table)
    rows += len(frame)
writer.close()
t2 = time.perf_counter()
import resource
print(json.dumps({"rows": rows, "seconds": t2 - t1, "setup": t1 - t0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

MEASURE = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "print(p.stdout + p.stderr, file=sys.stderr); "
    "print(time.perf_counter() - t, p.returncode, "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def _env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "bench-batch-pycache")
    return env


def generate(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    step = 1_000_000
    schema = pa.schema([("id", pa.int64()), *[(f, pa.float64()) for f in FEATURES]])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, step):
            n = min(step, rows - start)
            cols = {"id": np.arange(start, start + n), **{f: rng.normal(size=n) for f in FEATURES}}
            writer.write_table(pa.table(cols, schema=schema))


def fit(work: Path, trees: int, depth: int) -> Path:
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    import modelpack

    rng = np.random.default_rng(1)
    x = pd.DataFrame(rng.normal(size=(5_000, len(FEATURES))), columns=FEATURES)
    y = (x["f0"] + x["f1"] * x["f2"] > 0).astype(int)
    clf = RandomForestClassifier(n_estimators=trees, max_depth=depth, random_state=0).fit(x, y)
    with open(work / "clf.pkl", "wb") as fh:
        pickle.dump(clf, fh)
    return modelpack.save(clf, work / "model", input_example=x.head(3))


def raw_limit(model_path: Path, src: Path, batch: int, repeat: int) -> list[dict[str, float]]:
    import pandas as pd

    import modelpack

    model = modelpack.load(model_path)
    frame = pd.read_parquet(src, columns=FEATURES)
    model.predict(frame.iloc[:batch])  # warm-up
    runs = []
    for _ in range(repeat):
        load = os.getloadavg()[0]
        start = time.perf_counter()
        for i in range(0, len(frame), batch):
            model.predict(frame.iloc[i : i + batch])
        seconds = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        runs.append({"rows": len(frame), "seconds": seconds, "rss_mb": rss, "load": load})
    return runs


def model_load(work: Path, model_path: Path) -> dict[str, float]:
    code = (
        "import sys, time; t = time.perf_counter(); import modelpack; "
        "modelpack.load(sys.argv[1]); print(time.perf_counter() - t)"
    )
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model_path)],
        capture_output=True, text=True, env=_env(work), check=True,
    )  # fmt: skip
    return {"seconds": float(proc.stdout.split()[-1]), "load": load}


def cli_run(work: Path, model: Path, src: Path, workers: int, batch: int) -> dict[str, float]:
    out = work / f"out-{workers}.parquet"
    load = os.getloadavg()[0]
    cmd = [
        sys.executable, "-c", MEASURE, sys.executable, "-m", "modelpack", "batch", str(model),
        str(src), str(out), "--passthrough", "id", "--workers", str(workers),
        "--batch-size", str(batch), "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(work), check=True)
    sys.stderr.write(proc.stderr)
    wall, rc, maxrss = proc.stdout.split()
    assert rc == "0", proc.stderr
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(out).metadata.num_rows
    # The job's own clock (model load included), from the summary line; wall adds start-up.
    seconds = float(re.search(r" rows in ([0-9.]+) s", proc.stderr).group(1))  # type: ignore[union-attr]
    wall_s, rss_mb = float(wall), int(maxrss) / 1024
    return {"rows": rows, "seconds": seconds, "wall": wall_s, "rss_mb": rss_mb, "load": load}


def mlflow_run(python: str, work: Path, src: Path, batch: int) -> dict[str, float]:
    out = work / "out-mlflow.parquet"
    env = _env(work)
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [python, "-c", MLFLOW_SIDE, str(work), str(src), str(out), str(batch)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "load": load}


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median run by seconds, with the largest RSS and the range of load averages."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    median = dict(ordered[len(ordered) // 2])
    median["rss_mb"] = max(r["rss_mb"] for r in runs)
    median["load_lo"] = min(r["load"] for r in runs)
    median["load_hi"] = max(r["load"] for r in runs)
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--batch-size", type=int, default=65_536)
    parser.add_argument("--trees", type=int, default=40)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--mlflow-python", default=None)
    parser.add_argument("--skip-raw", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        src = work / "in.parquet"
        t = time.perf_counter()
        generate(src, args.rows)
        print(f"generated {args.rows:,} rows ({src.stat().st_size / 2**20:,.0f} MiB) "
              f"in {time.perf_counter() - t:.1f} s", flush=True)  # fmt: skip
        model = fit(work, args.trees, args.depth)
        generate(work / "warm.parquet", 10_000)  # untimed: fills the bytecode cache
        cli_run(work, model, work / "warm.parquet", 2, args.batch_size)
        runs: dict[str, list[dict[str, float]]] = {}

        def record(name: str, run: dict[str, float]) -> None:
            runs.setdefault(name, []).append(run)
            print(f"  {name}: {run['seconds']:.1f} s, load {run['load']:.1f}", flush=True)

        for _ in range(args.repeat):  # round robin: a burst of load hits every job alike
            for workers in (1, 2):
                name = f"modelpack batch --workers {workers}"
                record(name, cli_run(work, model, src, workers, args.batch_size))
            if args.mlflow_python:
                record(
                    "MLflow pyfunc over pandas chunks",
                    mlflow_run(args.mlflow_python, work, src, args.batch_size),
                )
            record("model load alone", model_load(work, model))
        loads = runs.pop("model load alone")
        if not args.skip_raw:  # last: it holds every row in memory in this process
            for run in raw_limit(model, src, args.batch_size, args.repeat):
                record("raw model.predict, rows in memory", run)
        results = {name: summary(r) for name, r in runs.items()}
        raw = results.get("raw model.predict, rows in memory")
        one = results["modelpack batch --workers 1"]
        print(f"\n{args.repeat} run(s) each, medians\n")
        print("| job | rows | seconds | rows/s | vs raw | vs 1 worker | process wall s "
              "| peak RSS MiB | load |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in results.items():
            rate = r["rows"] / r["seconds"]
            vs = f"{rate / (raw['rows'] / raw['seconds']):.0%}" if raw else "-"
            gain = f"{one['seconds'] / r['seconds']:.2f}x"
            wall = f"{r['wall']:.1f}" if "wall" in r else "-"
            print(f"| {name} | {int(r['rows']):,} | {r['seconds']:.1f} | {rate:,.0f} | {vs} "
                  f"| {gain} | {wall} | {r['rss_mb']:,.0f} "
                  f"| {r['load_lo']:.1f}-{r['load_hi']:.1f} |")  # fmt: skip
        seconds = sorted(r["seconds"] for r in loads)
        print(f"\nmodel load alone (fresh process, imports included): median "
              f"{seconds[len(seconds) // 2]:.1f} s, load {min(r['load'] for r in loads):.1f}"
              f"-{max(r['load'] for r in loads):.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
