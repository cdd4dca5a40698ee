"""The team server against MLflow's tracking server: log_metric throughput and registry search.

    .venv/bin/python benchmarks/bench_team_server.py --mlflow-python /tmp/mlflow-bench/bin/python \
        [--metrics 1000000] [--rounds 1] [--mlflow-calls 150] [--mlflow-async 1000] \
        [--mlflow-batch 40000] [--versions 10000] [--repeats 50] [--warmup 5] [--json PATH]

Both servers run as subprocesses on free 127.0.0.1 ports over fresh temp dirs, one at a time:
``modelpack server`` (its own ``MODELPACK_HOME``, SQLite) and ``mlflow server`` (its default 4
uvicorn workers, ``--backend-store-uri sqlite:///.../mlflow.db``). Clients are fresh processes.

1. Metrics: ``with start_run(): log_metric("loss", x, step=i)`` N times, then ``flush()``,
   timed until every value is stored (counted with ``get_metric_history`` afterwards); modelpack
   does that in ``--rounds`` runs. MLflow: per-call ``mlflow.log_metric``, ``synchronous=False``
   then ``flush_async_logging()``, and ``MlflowClient.log_batch`` in chunks of 1,000 (its
   limit), one run each. Reported as metrics/s; the benchmark fails if any value is missing.
2. Registry: one model, one version registered through the API, the other versions inserted as
   rows (with tag ``bucket = version % 100``) straight into the server's database; then, through
   the server, search by tag (100 hits), search by name (1,000 rows), get one version, latest.

MLflow lives in its own venv (never in .venv):

    python3 -m venv /tmp/mlflow-bench && /tmp/mlflow-bench/bin/pip install uv
    /tmp/mlflow-bench/bin/uv pip install --python /tmp/mlflow-bench/bin/python mlflow scikit-learn
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _timing import timed

HERE = Path(__file__).resolve().parent
NAME = "big"
BY_TAG = f"name = '{NAME}' AND tags.bucket = '7'"
MLFLOW_MODES = {"per-call": "mlflow_calls", "async": "mlflow_async", "batch": "mlflow_batch"}
REGISTRY_ROWS = [
    ("search_tag", "search by tag, {search_tag:,} hits"),
    ("search_name", "search by name, {search_name:,} rows"),
    ("get", "get one version"),
    ("latest", "latest version"),
]


# -- modelpack client sides (fresh processes with MODELPACK_TRACKING_URI set) ---------------


def modelpack_metrics(n: int, rounds: int) -> dict[str, Any]:
    import modelpack

    log_metric = modelpack.log_metric
    result: dict[str, Any] = {"n": 0, "loop_s": 0.0, "total_s": 0.0, "stored": 0, "rates": []}
    for _ in range(rounds):  # one run each
        with modelpack.start_run(experiment="bench") as run:
            log_metric("warm", 0.0)
            modelpack.tracking.flush()
            start = time.perf_counter()
            for i in range(n):
                log_metric("loss", 1.0 / (i + 1), step=i)
            loop = time.perf_counter() - start
            modelpack.tracking.flush()
            total = time.perf_counter() - start
        result["n"] += n
        result["loop_s"] += loop
        result["total_s"] += total
        result["stored"] += len(modelpack.tracking.get_metric_history(run.id, "loss"))
        result["rates"].append(n / total)
    return result


def _fill(server_home: Path, work: Path, versions: int) -> float:
    """One version through the API, the rest as rows in the server's store (as the tests do)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sqlalchemy import insert, select, update

    import modelpack
    from modelpack import registry
    from modelpack.store.db import get_engine, write
    from modelpack.store.schema import model_versions, registered_models, version_tags

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    path = modelpack.save(model, work / "model")

    start = time.perf_counter()
    base = registry.register(NAME, path, tags={"bucket": "1"})
    engine = get_engine(f"sqlite:///{server_home / 'modelpack.db'}")
    mv, rm = model_versions, registered_models
    with write(engine) as conn:
        model_id = conn.execute(select(rm.c.id).where(rm.c.name == NAME)).scalar_one()
        first = conn.execute(select(mv).where(mv.c.model_id == model_id)).mappings().one()
        template = {k: v for k, v in first.items() if k not in ("id", "version")}
        rows = [
            {**template, "version": v, "created_at": v, "updated_at": v}
            for v in range(2, versions + 1)
        ]
        conn.execute(insert(mv), rows)
        ids = conn.execute(
            select(mv.c.id, mv.c.version).where(mv.c.model_id == model_id, mv.c.version > 1)
        ).all()
        tags = [{"version_id": i, "key": "bucket", "value": str(v % 100)} for i, v in ids]
        conn.execute(insert(version_tags), tags)
        conn.execute(update(rm).where(rm.c.id == model_id).values(last_version=versions))
    engine.dispose()
    assert base.version == 1
    return time.perf_counter() - start


def modelpack_registry(
    server_home: Path, work: Path, versions: int, repeats: int, warmup: int
) -> dict[str, Any]:
    from modelpack import registry

    fill_s = _fill(server_home, work, versions)
    middle = versions // 2
    calls: dict[str, Callable[[], Any]] = {
        "search_tag": lambda: registry.search_versions(BY_TAG, max_results=1000),
        "search_name": lambda: registry.search_versions(f"name = '{NAME}'", max_results=1000),
        "get": lambda: registry.get_version(NAME, middle),
        "latest": lambda: registry.latest_version(NAME),
    }
    timings, checks = {}, {}
    for key, call in calls.items():
        timings[key], result = timed(call, repeats, warmup)
        checks[key] = len(result) if key.startswith("search") else result.version
    checks["latest_version"] = checks.pop("latest")
    return {"fill_s": fill_s, "timings": timings, "checks": checks}


# -- servers -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _server(
    label: str, cmd: list[str], health: str, env: dict[str, str], log: Path
) -> Iterator[None]:
    """Run ``cmd`` in its own process group until the block ends; wait for ``health`` first."""
    print(f"starting {label} ...", file=sys.stderr, flush=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        start = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{label} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=2) as resp:
                if resp.status == 200:
                    break
            if time.monotonic() - start > 300:
                raise SystemExit(f"{label} did not answer within 300 s (log: {log})")
            time.sleep(0.2)
        up = time.monotonic() - start
        idle = _settle(proc.pid)
        print(f"  up in {up:.1f} s, idle after {idle:.1f} s", file=sys.stderr, flush=True)
        yield
    finally:
        # The whole group: `mlflow server` runs its uvicorn workers as children.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _group_cpu_s(pgid: int) -> float:
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; then utime and stime
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _settle(pgid: int, limit: float = 120.0) -> float:
    """Seconds until the server's processes are idle: a server answers while some of its
    workers still import, and they would take CPU from the first measurements."""
    start = time.monotonic()
    if not Path("/proc/self/stat").exists():
        return 0.0
    before = _group_cpu_s(pgid)
    while time.monotonic() - start < limit:
        time.sleep(2.0)
        now = _group_cpu_s(pgid)
        if now - before < 0.1:  # under 5% of one core
            break
        before = now
    return time.monotonic() - start


def _client(label: str, cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    print(f"  {label} ...", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-6000:])
        raise SystemExit(f"{label} failed with exit code {out.returncode}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["stderr_tail"] = out.stderr.strip().splitlines()[-1:]
    return result


def _check_stored(label: str, result: dict[str, Any]) -> None:
    if result["stored"] != result["n"]:
        raise SystemExit(
            f"{label}: only {result['stored']:,} of {result['n']:,} metrics were stored; "
            f"the client's last log line: {result['stderr_tail']}"
        )


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_modelpack(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    home, work = tmp / "mp-server", tmp / "mp-client"
    home.mkdir()
    work.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server_env = {**env, "MODELPACK_HOME": str(home)}
    client_env = {
        **env,
        "MODELPACK_HOME": str(work / "home"),
        "MODELPACK_TRACKING_URI": url,
    }
    cmd = [
        sys.executable,
        "-m",
        "modelpack",
        "server",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    side = [sys.executable, str(Path(__file__).resolve()), "--side"]
    result: dict[str, Any] = {"load": [_load()]}
    with _server("modelpack server", cmd, f"{url}/api/v1/whoami", server_env, tmp / "mp.log"):
        result["metrics"] = _client(
            f"modelpack log_metric x {args.metrics:,}, {_runs(args.rounds)}",
            [*side, "metrics", "--metrics", str(args.metrics), "--rounds", str(args.rounds)],
            client_env,
            work,
        )
        _check_stored("modelpack", result["metrics"])
        result["load"].append(_load())
        result["registry"] = _client(
            f"modelpack registry, {args.versions:,} versions",
            [
                *side,
                "registry",
                "--server-home",
                str(home),
                "--workdir",
                str(work),
                "--versions",
                str(args.versions),
                "--repeats",
                str(args.repeats),
                "--warmup",
                str(args.warmup),
            ],
            client_env,
            work,
        )
        result["load"].append(_load())
    import modelpack

    result["version"] = modelpack.__version__
    return result


def run_mlflow(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    work = tmp / "mlflow"
    work.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    db_uri = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [
        args.mlflow_python,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        db_uri,
        "--default-artifact-root",
        str(work / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    side = [args.mlflow_python, str(HERE / "_mlflow_server_side.py")]
    result: dict[str, Any] = {"load": [_load()], "metrics": {}}
    with _server("mlflow server", cmd, f"{url}/health", env, tmp / "mlflow.log"):
        for mode, attr in MLFLOW_MODES.items():
            n = getattr(args, attr)
            if n > 0:
                found = _client(
                    f"MLflow {mode} x {n:,}", [*side, "metrics", url, mode, str(n)], env, work
                )
                _check_stored(f"MLflow {mode}", found)
                result["metrics"][mode] = found
                result["load"].append(_load())
        result["registry"] = _client(
            f"MLflow registry, {args.versions:,} versions",
            [*side, "registry", url, db_uri, *map(str, (args.versions, args.repeats, args.warmup))],
            env,
            work,
        )
        result["load"].append(_load())
    result["version"] = result["registry"].pop("version")
    return result


# -- report ----------------------------------------------------------------------------------


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[-1]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def report(args: argparse.Namespace, mp: dict[str, Any], ml: dict[str, Any]) -> None:
    hits = sum(1 for v in range(1, args.versions + 1) if v % 100 == 7)
    want = {"search_tag": hits, "search_name": min(1000, args.versions), "get": args.versions // 2}
    want["latest_version"] = args.versions
    for label, side in (("modelpack", mp), ("MLflow", ml)):
        if side["registry"]["checks"] != want:
            raise SystemExit(f"{label} registry answered {side['registry']['checks']}, not {want}")

    print(
        f"\nmodelpack {mp['version']}, MLflow {ml['version']}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; load average (1/5/15 min) at each step: "
        f"modelpack {' | '.join(mp['load'])}; MLflow {' | '.join(ml['load'])}\n"
    )
    base = mp["metrics"]["n"] / mp["metrics"]["total_s"]
    print("| log_metric through the server | metrics | loop s | total s | metrics/s | mp/this |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    rounds = len(mp["metrics"]["rates"])
    rows = [(f"modelpack `log_metric` + `flush()`, {_runs(rounds)}", mp["metrics"])]
    names = {
        "per-call": "MLflow `log_metric` (per call)",
        "async": "MLflow `log_metric(synchronous=False)`",
        "batch": "MLflow `log_batch`, 1,000 per call",
    }
    rows += [(names[mode], r) for mode, r in ml["metrics"].items()]
    for label, r in rows:
        rate = r["n"] / r["total_s"]
        print(
            f"| {label} | {r['n']:,} | {r['loop_s']:.2f} | {r['total_s']:.2f} | {rate:,.0f} "
            f"| {base / rate:,.1f}x |"
        )
    rates = ", ".join(f"{r:,.0f}" for r in mp["metrics"]["rates"])
    print(f"\nmodelpack metrics/s per run: {rates}")

    print(
        f"\n| registry, {args.versions:,} versions | modelpack median ms | p95 | "
        "MLflow median ms | p95 | MLflow/mp (median) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for key, label in REGISTRY_ROWS:
        label = label.format(**want)
        a, b = mp["registry"]["timings"][key], ml["registry"]["timings"][key]
        ma, mb = statistics.median(a), statistics.median(b)
        print(
            f"| {label} | {_ms(ma)} | {_ms(_p95(a))} | {_ms(mb)} | {_ms(_p95(b))} "
            f"| {mb / ma:.1f}x |"
        )
    print(
        f"\nfill ({args.versions - 1:,} versions as rows + 1 through the API): "
        f"modelpack {mp['registry']['fill_s']:.1f} s, MLflow {ml['registry']['fill_s']:.1f} s; "
        f"{args.repeats} timed calls each after {args.warmup} warm-ups"
    )


def _mlflow_usable(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import mlflow"], capture_output=True, check=False)
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlflow-python", default="/tmp/mlflow-bench/bin/python")
    parser.add_argument("--metrics", type=int, default=1_000_000, help="modelpack calls per run")
    parser.add_argument("--rounds", type=int, default=1, help="modelpack runs of --metrics each")
    parser.add_argument("--mlflow-calls", type=int, default=150, help="per-call log_metric")
    parser.add_argument("--mlflow-async", type=int, default=1_000, help="synchronous=False")
    parser.add_argument("--mlflow-batch", type=int, default=40_000, help="metrics via log_batch")
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write raw results here")
    parser.add_argument("--side", choices=["metrics", "registry"], help=argparse.SUPPRESS)
    parser.add_argument("--server-home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side == "metrics":
        print(json.dumps(modelpack_metrics(args.metrics, args.rounds)))
        return
    if args.side == "registry":
        found = modelpack_registry(
            args.server_home, args.workdir, args.versions, args.repeats, args.warmup
        )
        print(json.dumps(found))
        return
    if not _mlflow_usable(args.mlflow_python):
        raise SystemExit(
            f"{args.mlflow_python} cannot import mlflow; create its venv (see this file's "
            "docstring) or pass --mlflow-python"
        )

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPACK_", "MLFLOW_"))}
    # No network here: MLflow's telemetry would only add noise to its side. Its server's job
    # runner (7 huey consumers polling the database, ~0.6 of a core here) serves no call made.
    env.update({"GIT_PYTHON_REFRESH": "quiet", "MLFLOW_DISABLE_TELEMETRY": "true"})
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    print(f"uptime: {_uptime()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-team-server-") as tmp:
        mp = run_modelpack(args, Path(tmp), env)
        ml = run_mlflow(args, Path(tmp), env)
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args), "modelpack": mp, "mlflow": ml}, default=str)
        )
    report(args, mp, ml)
    print(f"\nuptime: {_uptime()}")


if __name__ == "__main__":
    main()
