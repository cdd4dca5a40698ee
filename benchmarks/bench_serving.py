"""HTTP serving side by side, in one run: modelpack serve vs MLflow vs BentoML (wrk).

    .venv/bin/python benchmarks/bench_serving.py [--duration 10] [--mlflow-python P]
        [--bentoml-python P] [--append-docs]

Same model (an iris-like LogisticRegression trained on the same seeded data in each venv), same
3-row ``dataframe_split`` body, wrk -t1 at 1, 16 and 64 connections. MLflow and BentoML run from
their own venvs (see docs/benchmarks.md for how they were made). Also: server overhead on a
trivial model, adaptive batching on a small torch MLP at 64 connections, cold start to /ping.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
BODY = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}
CONNECTIONS = (1, 16, 64)

TRAIN = """
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(150, 4)) + 4, columns={columns!r})
y = rng.integers(0, 3, size=150)
clf = LogisticRegression(max_iter=500).fit(X, y)
"""

BENTO_SERVICE = """
import pickle, os
import pandas as pd
import bentoml

@bentoml.service(workers=1)
class Iris:
    def __init__(self) -> None:
        with open(os.environ["BENCH_MODEL_PKL"], "rb") as fh:
            self.model = pickle.load(fh)

    @bentoml.api(route="/invocations")
    def invocations(self, dataframe_split: dict) -> dict[str, Any]:
        frame = pd.DataFrame(dataframe_split["data"], columns=dataframe_split["columns"])
        return {"predictions": self.model.predict(frame).tolist()}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except OSError:
        return 0


@contextlib.contextmanager
def server(cmd: list[str], url: str, ready_path: str, env: dict[str, str]) -> Iterator[float]:
    """Start a server; yields seconds from process start to the first 200 on ready_path."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=log, stderr=log, start_new_session=True
    )
    try:
        while get(url + ready_path) != 200:
            if proc.poll() is not None or time.perf_counter() - start > 180:
                log.seek(0)
                raise RuntimeError(f"{cmd[0]} did not start:\n{log.read().decode()[-3000:]}")
            time.sleep(0.02)
        yield time.perf_counter() - start
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(
    url: str, body: dict[str, Any], connections: int, duration: int, lua_dir: Path
) -> dict[str, Any]:
    script = lua_dir / "post.lua"
    payload = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{payload}'\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.M))
    if "50" not in percentiles:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(percentiles["50"]),
        "p99": _ms(percentiles["99"]),
        "errors": int(errors.group(1)) if errors else 0,
    }


def prepare(work: Path, mlflow_python: str | None, bento_python: str | None) -> dict[str, Any]:
    import modelpack
    from modelpack.flavors import python as python_flavor
    from modelpack.flavors import torch as torch_flavor

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _serving_models
    import numpy as np
    import pandas as pd

    scope: dict[str, Any] = {}
    exec(TRAIN.format(columns=COLUMNS), scope)
    paths = {"iris": modelpack.save(scope["clf"], work / "iris", input_example=scope["X"].head(3))}
    example = pd.DataFrame(ROWS, columns=COLUMNS)
    models_py = ROOT / "benchmarks" / "_serving_models.py"
    paths["trivial"] = python_flavor.save(
        _serving_models.Trivial(), work / "trivial", input_example=example, code_paths=[models_py]
    )
    mlp = _serving_models.SmallMLP()
    paths["mlp"] = torch_flavor.save(
        mlp,
        work / "mlp",
        input_example=np.zeros((1, 64), dtype=np.float32),
        code_paths=[models_py],
    )
    if mlflow_python:
        code = TRAIN.format(columns=COLUMNS) + textwrap.dedent(f"""
            import mlflow.sklearn
            mlflow.sklearn.save_model(clf, {str(work / "mlflow-iris")!r}, input_example=X.head(3))
        """)
        subprocess.run([mlflow_python, "-c", code], check=True, capture_output=True)
        paths["mlflow"] = work / "mlflow-iris"
    if bento_python:
        code = TRAIN.format(columns=COLUMNS) + textwrap.dedent(f"""
            import pickle
            pickle.dump(clf, open({str(work / "iris.pkl")!r}, "wb"))
        """)
        subprocess.run([bento_python, "-c", code], check=True, capture_output=True)
        (work / "bento").mkdir()
        (work / "bento" / "service.py").write_text(BENTO_SERVICE)
        paths["bento"] = work / "bento"
    return paths


def in_process_p50_ms(path: Path) -> float:
    import modelpack
    from modelpack.payload import decode

    model = modelpack.load(path)
    data = model.signature.enforce(decode(BODY)[0]) if model.signature else decode(BODY)[0]
    samples = []
    for _ in range(2000):
        start = time.perf_counter()
        model.predictor.predict(data)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def modelpack_cmd(path: Path, port: int, *extra: str) -> list[str]:
    bin_dir = Path(sys.executable).parent
    return [str(bin_dir / "modelpack"), "serve", str(path), "--port", str(port), *extra]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--mlflow-python", default="/tmp/mlflow-venv/bin/python")
    parser.add_argument("--bentoml-python", default="/tmp/bento-venv/bin/python")
    parser.add_argument("--append-docs", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    mlflow_python = args.mlflow_python if Path(args.mlflow_python).exists() else None
    bento_python = args.bentoml_python if Path(args.bentoml_python).exists() else None
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    paths = prepare(work, mlflow_python, bento_python)
    mlflow_bin = str(Path(mlflow_python or "").parent)
    # mlflow runs `uvicorn` from PATH: its venv's
    env = {"PATH": f"{mlflow_bin}:{os.environ['PATH']}"}

    servers: dict[str, tuple[list[str], str, dict[str, str]]] = {}
    port = free_port()
    servers["modelpack serve"] = (
        modelpack_cmd(paths["iris"], port),
        f"http://127.0.0.1:{port}",
        {},
    )
    if mlflow_python:
        port = free_port()
        mlflow = str(Path(mlflow_python).parent / "mlflow")
        cmd = [mlflow, "models", "serve", "-m", str(paths["mlflow"]), "--env-manager", "local"]
        servers["mlflow models serve"] = (
            [*cmd, "-h", "127.0.0.1", "-p", str(port)],
            f"http://127.0.0.1:{port}",
            env,
        )
    if bento_python:
        port = free_port()
        bentoml = str(Path(bento_python).parent / "bentoml")
        servers["BentoML 1.4 service"] = (
            [
                bentoml,
                "serve",
                "service:Iris",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--working-dir",
                str(paths["bento"]),
            ],
            f"http://127.0.0.1:{port}",
            {"BENCH_MODEL_PKL": str(work / "iris.pkl"), "BENTOML_HOME": str(work / "bentoml-home")},
        )

    results: dict[str, dict[Any, Any]] = {}
    for name, (cmd, url, extra_env) in servers.items():
        ready_path = "/readyz" if "BentoML" in name else "/ping"
        with server(cmd, url, ready_path, extra_env) as cold:
            wrk(url + "/invocations", BODY, 4, 2, work)  # warm the connection paths
            results[name] = {"cold": cold}
            for c in CONNECTIONS:
                results[name][c] = wrk(url + "/invocations", BODY, c, args.duration, work)
        print(name, json.dumps(results[name]), flush=True)

    port = free_port()
    with server(modelpack_cmd(paths["trivial"], port), f"http://127.0.0.1:{port}", "/ping", {}):
        trivial = wrk(f"http://127.0.0.1:{port}/invocations", BODY, 1, args.duration, work)
    in_process = in_process_p50_ms(paths["trivial"])

    mlp_body = {"inputs": [[0.1] * 64]}
    batching: dict[str, Any] = {}
    for label, extra in (("off", ()), ("on", ("--max-batch-size", "64", "--max-latency-ms", "2"))):
        port = free_port()
        cmd = modelpack_cmd(paths["mlp"], port, *extra)
        with server(cmd, f"http://127.0.0.1:{port}", "/ping", {}):
            url = f"http://127.0.0.1:{port}/invocations"
            wrk(url, mlp_body, 8, 2, work)
            batching[label] = wrk(url, mlp_body, 64, args.duration, work)
    report = render(results, trivial, in_process, batching, args.duration)
    print(report)
    if args.append_docs:
        docs = ROOT / "docs" / "benchmarks.md"
        existing = docs.read_text() if docs.exists() else "# Benchmarks\n"
        docs.write_text(existing.rstrip("\n") + "\n\n" + report)
    shutil.rmtree(work, ignore_errors=True)


def render(
    results: dict[str, Any],
    trivial: dict[str, Any],
    in_process: float,
    batching: dict[str, Any],
    duration: int,
) -> str:
    lines = [
        "## Serving",
        "",
        f"`.venv/bin/python benchmarks/bench_serving.py --duration {duration} --append-docs` on "
        f"this machine ({os.cpu_count()} cores; wrk -t1 shares them with the server), one run, "
        f"{time.strftime('%Y-%m-%d')}. Iris-like LogisticRegression, 3-row `dataframe_split` "
        "body, one server process each.",
        "",
        "| server | conns | req/s | p50 ms | p99 ms | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        for c in CONNECTIONS:
            r = res[c]
            cells = f"{r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']}"
            lines.append(f"| {name} | {c} | {cells} |")
    ours = results["modelpack serve"]
    lines += [
        "",
        "| cold start (process start to first 200 on /ping; BentoML: /readyz) | s |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {res['cold']:.1f} |" for name, res in results.items()]
    lines.append("")
    for other in ("mlflow models serve", "BentoML 1.4 service"):
        if other in results:
            o = results[other][16]
            lines.append(
                f"- at 16 connections modelpack does **{ours[16]['rps'] / o['rps']:.1f}x** the "
                f"throughput of {other}; modelpack p99 {ours[16]['p99']:.2f} ms vs its p50 "
                f"{o['p50']:.2f} ms"
            )
    lines.append(
        f"- server overhead (trivial python model, 1 connection): p50 {trivial['p50']:.2f} ms "
        f"over the wire, in-process predict p50 {in_process:.3f} ms: overhead "
        f"**{trivial['p50'] - in_process:.2f} ms** (includes wrk's own loop on the shared cores)"
    )
    off, on = batching["off"], batching["on"]
    lines.append(
        f"- adaptive batching, small torch MLP (64->256->256->1), 1-row requests, 64 connections: "
        f"off {off['rps']:.0f} req/s (p99 {off['p99']:.1f} ms), on (--max-batch-size 64 "
        f"--max-latency-ms 2) {on['rps']:.0f} req/s (p99 {on['p99']:.1f} ms): "
        f"**{on['rps'] / off['rps']:.2f}x**"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
