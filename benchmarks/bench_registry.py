"""modelpack's registry against MLflow's SQLite-backed registry, side by side in one run.

    .venv/bin/python benchmarks/bench_registry.py --mlflow-python /tmp/mlflow-bench/bin/python \
        [--n 1000] [--search-repeats 20] [--load-repeats 10] [--cold-repeats 3]

Both sides fit the same scikit-learn LogisticRegression on the same synthetic data, each in its
own fresh process and temp dir (modelpack: ``MODELPACK_HOME``; MLflow: ``sqlite:///.../mlflow.db``
tracking + registry URI, local artifact location), then: save/log the model once, register it
N times with a tag ``batch = i % 10``, set an alias, search by tag (N/10 hits), load
``models:/m@champion`` and predict in the same process (warm) and in a fresh one (cold, whole
process wall time). MLflow lives in its own venv (never in .venv):

    python3 -m venv /tmp/mlflow-bench && /tmp/mlflow-bench/bin/pip install uv
    /tmp/mlflow-bench/bin/uv pip install --python /tmp/mlflow-bench/bin/python mlflow scikit-learn
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NAME = "m"
ALIAS = "champion"
FILTER = "name = 'm' AND tags.batch = '3'"

COLD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import modelpack
t1 = time.perf_counter()
model = modelpack.load("models:/m@champion")
pred = model.predict(np.asarray(json.loads(sys.argv[1])))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load_predict": t2 - t1, "pred": [int(p) for p in pred]}))
"""

# Untimed: fills the bytecode cache for everything both sides import (loaders included).
WARM_MODELPACK = (
    "import numpy, sklearn.linear_model, skops.io, sqlalchemy, alembic, modelpack, "
    "modelpack.registry, modelpack.model, modelpack.flavors.sklearn"
)
WARM_MLFLOW = "import numpy, sklearn.linear_model, mlflow, mlflow.pyfunc, mlflow.sklearn"

# (key, label, compared against the 5x target)
ROWS = [
    ("import", "import (in-process, informational)", False),
    ("open_store", "open/create store (migrations)", False),
    ("save", "save / log_model once", False),
    ("register", "register N versions (total)", True),
    ("register_op", "  per register (mean)", True),
    ("set_alias", "set alias", False),
    ("search", "search by tag (median)", True),
    ("load_warm", "load @alias + predict, warm (median)", True),
    ("load_cold", "load @alias + predict, cold process (wall)", True),
    ("load_cold_import", "  of which: imports in that process", False),
    ("load_cold_inner", "  of which: load + predict after imports", False),
]


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    y = (x @ rng.normal(size=8) > 0).astype(int)
    return x, y


def modelpack_side(work: Path, n: int, search_repeats: int, load_repeats: int, cold: int) -> None:
    """The modelpack half, run in a fresh process with MODELPACK_HOME=work/home."""
    os.environ["MODELPACK_HOME"] = str(work / "home")
    os.chdir(work)
    t: dict[str, float] = {}

    start = time.perf_counter()
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import modelpack
    from modelpack import registry

    t["import"] = time.perf_counter() - start

    x, y = _data()
    sk = LogisticRegression(max_iter=200).fit(x, y)
    sample = x[:5]

    start = time.perf_counter()
    registry.search_models()  # creates and migrates the SQLite store
    t["open_store"] = time.perf_counter() - start

    start = time.perf_counter()
    path = modelpack.save(sk, work / "model", input_example=sample)
    t["save"] = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(n):
        last = registry.register(NAME, str(path), tags={"batch": str(i % 10)})
    t["register"] = time.perf_counter() - start

    start = time.perf_counter()
    registry.set_alias(NAME, ALIAS, last.version)
    t["set_alias"] = time.perf_counter() - start

    found = 0
    samples = []
    for _ in range(search_repeats):
        start = time.perf_counter()
        found = len(registry.search_versions(FILTER, max_results=min(n, 10_000)))
        samples.append(time.perf_counter() - start)
    t["search"] = statistics.median(samples)

    pred = None
    samples = []
    for _ in range(load_repeats):
        start = time.perf_counter()
        pred = modelpack.load(f"models:/{NAME}@{ALIAS}").predict(sample)
        samples.append(time.perf_counter() - start)
    t["load_warm"] = statistics.median(samples)

    walls, inners, imports = [], [], []
    arg = json.dumps(sample.tolist())
    for k in range(cold + 1):  # the first (untimed) run warms the OS file cache
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", COLD, arg], check=True, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        inner = json.loads(out.stdout.strip().splitlines()[-1])
        if inner["pred"] != [int(p) for p in np.asarray(pred)]:
            raise SystemExit("cold load predicted differently")
        if k > 0:
            walls.append(wall)
            imports.append(inner["import"])
            inners.append(inner["load_predict"])
    t["load_cold"] = statistics.median(walls)
    t["load_cold_import"] = statistics.median(imports)
    t["load_cold_inner"] = statistics.median(inners)

    result = {
        "timings": t,
        "found": found,
        "pred": [int(p) for p in np.asarray(pred)],
        "version": modelpack.__version__,
    }
    print(json.dumps(result))


def _run_side(label: str, cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    print(f"running {label} side ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        raise SystemExit(f"{label} side failed with exit code {out.returncode}")
    print(f"  done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlflow-python", default="/tmp/mlflow-bench/bin/python")
    parser.add_argument("--n", type=int, default=1000, help="versions to register")
    parser.add_argument("--search-repeats", type=int, default=20)
    parser.add_argument("--load-repeats", type=int, default=10)
    parser.add_argument("--cold-repeats", type=int, default=3)
    parser.add_argument("--target", type=float, default=5.0, help="ratio to flag")
    parser.add_argument(
        "--no-pycache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE from the environment (every start compiles)",
    )
    parser.add_argument(
        "--pycache",
        type=Path,
        default=Path(tempfile.gettempdir(), "bench-registry-pycache"),
        help="PYTHONPYCACHEPREFIX for both sides",
    )
    parser.add_argument("--json", type=Path, help="also write raw results here")
    parser.add_argument("--side", choices=["modelpack"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = [str(args.n), str(args.search_repeats), str(args.load_repeats)]
    repeats.append(str(args.cold_repeats))

    if args.side == "modelpack":
        modelpack_side(args.workdir, *(int(r) for r in repeats))
        return

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPACK_", "MLFLOW_"))}
    env["GIT_PYTHON_REFRESH"] = "quiet"
    if not args.no_pycache:
        # Real installs have bytecode; compiling every module on every start would swamp the
        # import and cold-load rows of both sides. Cache it outside the repo and the venvs.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(args.pycache)
        for python, code in ((sys.executable, WARM_MODELPACK), (args.mlflow_python, WARM_MLFLOW)):
            subprocess.run([python, "-c", code], check=True, env=env, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        mp_dir, ml_dir = Path(tmp, "modelpack"), Path(tmp, "mlflow")
        mp_dir.mkdir()
        ml_dir.mkdir()
        mp = _run_side(
            "modelpack",
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--side",
                "modelpack",
                "--workdir",
                str(mp_dir),
                "--n",
                repeats[0],
                "--search-repeats",
                repeats[1],
                "--load-repeats",
                repeats[2],
                "--cold-repeats",
                repeats[3],
            ],
            env,
        )
        ml = _run_side(
            "MLflow",
            [args.mlflow_python, str(HERE / "_mlflow_registry_side.py"), str(ml_dir), *repeats],
            env,
        )

    for side in (mp, ml):
        side["timings"]["register_op"] = side["timings"]["register"] / args.n
    expected = len([i for i in range(args.n) if i % 10 == 3])
    if not mp["found"] == ml["found"] == expected:
        raise SystemExit(f"search hits differ: modelpack {mp['found']}, MLflow {ml['found']}")
    if mp["pred"] != ml["pred"]:
        raise SystemExit(f"predictions differ: modelpack {mp['pred']}, MLflow {ml['pred']}")

    print(
        f"\nN = {args.n} versions; search finds {expected} on both sides; predictions equal. "
        f"modelpack {mp['version']}, MLflow {ml['version']}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs\n"
    )
    header = f"| {'phase':44} | {'modelpack':>10} | {'MLflow':>10} | {'MLflow/mp':>9} |"
    print(header)
    print(f"| {'-' * 44} | {'-' * 9}: | {'-' * 9}: | {'-' * 8}: |")
    missed = []
    for key, label, targeted in ROWS:
        a, b = mp["timings"].get(key), ml["timings"].get(key)
        ratio = b / a if a and b else None
        mark = ""
        if targeted and ratio is not None and ratio < args.target:
            mark = " *"
            missed.append(label.strip())
        shown = f"{ratio:.1f}x{mark}" if ratio is not None else "n/a"
        print(f"| {label:44} | {_fmt(a):>10} | {_fmt(b):>10} | {shown:>9} |")
    if missed:
        print(f"\n* below the {args.target:g}x target: {', '.join(missed)}")
    else:
        print(f"\nevery targeted phase is at least {args.target:g}x faster than MLflow")
    if args.json:
        args.json.write_text(json.dumps({"modelpack": mp, "mlflow": ml}, indent=2))


if __name__ == "__main__":
    main()
