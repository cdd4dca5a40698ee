"""MLflow half of bench_team_server.py; run by it with the MLflow venv's interpreter.

    /tmp/mlflow-bench/bin/python benchmarks/_mlflow_server_side.py metrics URL MODE N
    /tmp/mlflow-bench/bin/python benchmarks/_mlflow_server_side.py registry URL DB_URI VERSIONS \
        REPEATS WARMUP

``metrics`` logs N values of one metric to the tracking server at URL (MODE: ``per-call``,
``async`` or ``batch``); ``registry`` registers one version through the server, inserts the
others with MLflow's own SQLAlchemy models straight into the server's database (DB_URI), then
times searches and gets through the server. Uses only MLflow (never modelpack); prints one JSON
line.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from _timing import timed

NAME = "big"
BATCH = 1000  # MLflow's own limit of metrics per log_batch call
SOURCE = "s3://bench/big/model"  # only a string: MLflow refuses local paths without a run


def metrics(url: str, mode: str, n: int) -> dict[str, Any]:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    mlflow.set_tracking_uri(url)
    mlflow.set_experiment("bench")
    client = MlflowClient()
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        mlflow.log_metric("warm", 0.0)
        start = time.perf_counter()
        if mode == "per-call":
            for i in range(n):
                mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
        elif mode == "async":
            for i in range(n):
                mlflow.log_metric("loss", 1.0 / (i + 1), step=i, synchronous=False)
        elif mode == "batch":
            for low in range(0, n, BATCH):
                batch = [
                    Metric("loss", 1.0 / (i + 1), int(time.time() * 1000), i)
                    for i in range(low, min(n, low + BATCH))
                ]
                client.log_batch(run_id, metrics=batch)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        loop = time.perf_counter() - start
        if mode == "async":
            mlflow.flush_async_logging()
        total = time.perf_counter() - start
    stored = len(client.get_metric_history(run_id, "loss"))
    return {"n": n, "loop_s": loop, "total_s": total, "stored": stored}


def _fill(url: str, db_uri: str, versions: int) -> float:
    """One version through the server, the rest as rows; returns the seconds it took."""
    from mlflow import MlflowClient
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlModelVersionTag
    from sqlalchemy import create_engine, insert

    start = time.perf_counter()
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    client.create_registered_model(NAME)
    client.create_model_version(NAME, SOURCE, tags={"bucket": "1"})
    now = int(time.time() * 1000)
    rows = [
        {
            "name": NAME,
            "version": v,
            "creation_time": now + v,
            "last_updated_time": now + v,
            "current_stage": "None",
            "source": SOURCE,
            "status": "READY",
        }
        for v in range(2, versions + 1)
    ]
    tags = [
        {"name": NAME, "version": v, "key": "bucket", "value": str(v % 100)}
        for v in range(2, versions + 1)
    ]
    engine = create_engine(db_uri)
    with engine.begin() as conn:
        conn.execute(insert(SqlModelVersion.__table__), rows)
        conn.execute(insert(SqlModelVersionTag.__table__), tags)
    engine.dispose()
    return time.perf_counter() - start


def registry(url: str, db_uri: str, versions: int, repeats: int, warmup: int) -> dict[str, Any]:
    from mlflow import MlflowClient

    fill_s = _fill(url, db_uri, versions)
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    by_tag = f"name='{NAME}' AND tags.bucket='7'"
    middle = str(versions // 2)
    calls: dict[str, Callable[[], Any]] = {
        "search_tag": lambda: client.search_model_versions(by_tag, max_results=1000),
        "search_name": lambda: client.search_model_versions(f"name='{NAME}'", max_results=1000),
        "get": lambda: client.get_model_version(NAME, middle),
        # What MLflow recommends instead of the deprecated, stage-based get_latest_versions.
        "latest": lambda: client.search_model_versions(
            f"name='{NAME}'", max_results=1, order_by=["version_number DESC"]
        )[0],
    }
    timings, checks = {}, {}
    for key, call in calls.items():
        timings[key], result = timed(call, repeats, warmup)
        checks[key] = len(result) if key.startswith("search") else int(result.version)
    checks["latest_version"] = checks.pop("latest")
    return {"fill_s": fill_s, "timings": timings, "checks": checks}


def main() -> None:
    import mlflow

    command, args = sys.argv[1], sys.argv[2:]
    if command == "metrics":
        result = metrics(args[0], args[1], int(args[2]))
    elif command == "registry":
        result = registry(args[0], args[1], *(int(a) for a in args[2:5]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    result["version"] = mlflow.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
