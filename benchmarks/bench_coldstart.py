"""Cold start side by side, in one run: process start to the first 200 on /ping.

    .venv/bin/python benchmarks/bench_coldstart.py [--runs 7]
        [--mlflow-python /var/cache/modelpack/mlflow-venv/bin/python]
        [--bentoml-python .venv/bin/python] [--no-peers] [--json FILE]

The model is bench_serving.py's iris-like LogisticRegression, trained the same way in each venv:
``modelpack serve`` (skops file, integrity check and trust policy as always), ``mlflow models
serve --env-manager local`` from its own venv, and ``bentoml serve`` of the same one-route
service bench_serving.py uses (its /readyz). The servers take turns, ``--runs`` rounds; each
figure is the median. Every server runs in its own process group and is stopped however the run
ends. A peer whose venv is missing is skipped with a note.

Also, each in fresh interpreters (median of ``--runs``): what a scikit-learn model pays before
modelpack does anything (``import sklearn.linear_model``), ``import skops.io`` as it comes vs
the sklearn flavor's import of skops, and ``modelpack.load`` from a bare interpreter (every
import included) of the iris model and of a ~700 KB random forest. The CPU seconds the
modelpack server used until ready are printed beside its wall time: on a shared machine they
move less than the wall clock.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import pickle
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving as serving

MLFLOW_PYTHONS = ("/var/cache/modelpack/mlflow-venv/bin/python", "/tmp/mlflow-bench/bin/python")
MP, MLFLOW, BENTO = "modelpack serve", "mlflow models serve", "bentoml serve"

# Fresh-interpreter timings: each prints seconds as one JSON line.
SKLEARN_IMPORT = """
import json, time
t = time.perf_counter()
import sklearn.linear_model
print(json.dumps(time.perf_counter() - t))
"""
SKOPS_AS_IT_COMES = """
import json, time
import sklearn.linear_model
t = time.perf_counter()
import skops.io
print(json.dumps(time.perf_counter() - t))
"""
SKOPS_BY_THE_FLAVOR = """
import json, time
import sklearn.linear_model
from modelpack.flavors import sklearn as flavor
t = time.perf_counter()
flavor._skops.skops_io()
print(json.dumps(time.perf_counter() - t))
"""
LOAD = """
import json, sys, time
t = time.perf_counter()
import modelpack
model = modelpack.load(sys.argv[1])
print(json.dumps(time.perf_counter() - t))
"""
FOREST = """
import numpy as np
from sklearn.ensemble import RandomForestClassifier
rng = np.random.default_rng(0)
X = rng.normal(size=(400, 4))
forest = RandomForestClassifier(n_estimators=40, random_state=0).fit(X, X[:, 0] > 0)
"""


def prepare(work: Path, mlflow_python: str | None, bento: bool) -> dict[str, Path]:
    import modelpack

    scope: dict[str, Any] = {}
    exec(serving.TRAIN.format(columns=serving.COLUMNS), scope)
    paths = {"iris": modelpack.save(scope["clf"], work / "iris", input_example=scope["X"].head(3))}
    exec(FOREST, scope)
    paths["forest"] = modelpack.save(scope["forest"], work / "forest")
    if mlflow_python:
        target = str(work / "mlflow-iris")
        save = f"mlflow.sklearn.save_model(clf, {target!r}, input_example=X.head(3))"
        code = serving.TRAIN.format(columns=serving.COLUMNS) + f"import mlflow.sklearn\n{save}\n"
        subprocess.run([mlflow_python, "-c", code], check=True, capture_output=True, timeout=300)
        paths["mlflow"] = work / "mlflow-iris"
    if bento:
        with open(work / "iris.pkl", "wb") as fh:
            pickle.dump(scope["clf"], fh)
        (work / "bento").mkdir()
        (work / "bento" / "service.py").write_text(serving.BENTO_SERVICE)
        paths["bento"] = work / "bento"
    return paths


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a running process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cold_starts(
    servers: dict[str, Callable[[], serving.Server]], runs: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds to the first 200 of each server, the servers taking turns, ``runs`` rounds."""
    out: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in servers}
    for _ in range(runs):
        for name, make in servers.items():
            with serving.running(make()) as seconds:
                out[name]["wall"].append(seconds)
                (pid,) = serving._LIVE  # the one server running now: its process group leader
                cpu = _cpu_seconds(pid) if name == MP else None
                if cpu is not None:
                    out[name]["cpu"].append(cpu)
    return out


def fresh(code: str, runs: int, *args: str) -> list[float]:
    samples = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            check=True,
            capture_output=True,
            text=True,
            cwd=serving.ROOT,
            timeout=300,
        )
        samples.append(float(json.loads(done.stdout.strip().splitlines()[-1])))
    return samples


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    mlflow_python = next(
        (p for p in (args.mlflow_python, *MLFLOW_PYTHONS) if p and Path(p).exists()), None
    )
    bento_python = args.bentoml_python if Path(args.bentoml_python).exists() else None
    notes = []
    if args.no_peers:
        mlflow_python = bento_python = None
        notes.append("MLflow and BentoML skipped (--no-peers)")
    elif mlflow_python is None:
        notes.append(f"MLflow skipped: no venv at {', '.join(MLFLOW_PYTHONS)} (--mlflow-python)")
    if bento_python is None and not args.no_peers:
        notes.append(f"BentoML skipped: no {args.bentoml_python} (--bentoml-python)")
    paths = prepare(work, mlflow_python, bento_python is not None)
    servers: dict[str, Callable[[], serving.Server]] = {
        MP: lambda: serving.modelpack_server(MP, paths["iris"])
    }
    if mlflow_python:
        servers[MLFLOW] = lambda: serving.mlflow_server(mlflow_python, paths["mlflow"])
    if bento_python:
        servers[BENTO] = lambda: serving.bento_server(bento_python, paths["bento"], work)
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {
        "cold": cold_starts(servers, args.runs),
        "fresh": {
            "import sklearn.linear_model": fresh(SKLEARN_IMPORT, args.runs),
            "import skops.io as it comes (after sklearn)": fresh(SKOPS_AS_IT_COMES, args.runs),
            "the sklearn flavor's skops import (after sklearn)": fresh(
                SKOPS_BY_THE_FLAVOR, args.runs
            ),
            "import modelpack + modelpack.load(iris)": fresh(LOAD, args.runs, str(paths["iris"])),
            "import modelpack + modelpack.load(forest)": fresh(
                LOAD, args.runs, str(paths["forest"])
            ),
        },
        "forest_kb": sum(f.stat().st_size for f in paths["forest"].rglob("*") if f.is_file())
        / 1024,
        "load_average": [load_before, os.getloadavg()[0]],
        "notes": notes,
        "peers": {"mlflow": mlflow_python, "bentoml": bento_python},
    }
    return results


def render(results: dict[str, Any], runs: int) -> str:
    cold = results["cold"]
    base = statistics.median(cold[MP]["wall"])
    lines = [
        f"Process start to the first 200 on /ping (BentoML: /readyz), median of {runs}:",
        "",
        "| server | median s | min s | runs (s) | vs modelpack |",
        "|---|---|---|---|---|",
    ]
    for name, figures in cold.items():
        walls = figures["wall"]
        median = statistics.median(walls)
        shown = ", ".join(f"{w:.2f}" for w in walls)
        lines.append(
            f"| {name} | {median:.2f} | {min(walls):.2f} | {shown} | {median / base:.2f}x |"
        )
    if cold[MP]["cpu"]:
        lines += [
            "",
            f"modelpack serve CPU until ready: {statistics.median(cold[MP]['cpu']):.2f} s",
        ]
    lines += [
        "",
        f"Fresh interpreters, median of {runs} (forest: {results['forest_kb']:.0f} KB on disk):",
        "",
        "| step | median s |",
        "|---|---|",
    ]
    lines += [f"| {k} | {statistics.median(v):.3f} |" for k, v in results["fresh"].items()]
    low, high = results["load_average"]
    lines += ["", f"Load average (1 min) at start / end: {low:.2f} / {high:.2f}"]
    lines += [f"Note: {n}" for n in results["notes"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--mlflow-python", default=None)
    parser.add_argument("--bentoml-python", default=str(Path(sys.executable).parent / "python"))
    parser.add_argument("--no-peers", action="store_true", help="modelpack alone")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    atexit.register(serving._stop_all)
    signal.signal(signal.SIGTERM, serving._on_signal)
    signal.signal(signal.SIGINT, serving._on_signal)
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as tmp:
        try:
            results = run(args, Path(tmp))
        finally:
            serving._stop_all()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(render(results, args.runs))


if __name__ == "__main__":
    main()
