"""HTTP serving side by side, in one run: modelpack serve vs MLflow vs BentoML (wrk).

    .venv/bin/python benchmarks/bench_serving.py [--duration 10] [--mlflow-python P]
        [--bentoml-python P] [--write-docs]

Same model in every server: an iris-like LogisticRegression fitted on a pandas DataFrame with the
four iris column names (seeded synthetic data, trained the same way in each venv), so every server
hands scikit-learn a DataFrame with those columns. Same 3-row ``dataframe_split`` body, same wrk
Lua POST script, wrk -t1 at 1, 16 and 64 connections, the servers taking turns at each level.
MLflow and BentoML run from their own venvs. Also: server overhead on a trivial python-flavor
model, adaptive batching on a small torch MLP at 64 connections, cold start to the first 200 on
/ping (median of 3). Every server gets its own free 127.0.0.1 port, in its own process group, and
is stopped (SIGTERM, then SIGKILL) however the run ends.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import re
import shlex
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
BODY = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}
MLP_BODY = {"inputs": [[0.1] * 64]}
CONNECTIONS = (1, 16, 64)
START_TIMEOUT_S = 120.0
MP1, MP2 = "modelpack serve (1 worker)", "modelpack serve --workers 2 (extra)"
MLFLOW, BENTO = "mlflow models serve (1 worker, its default)", "BentoML 1.4 service (1 worker)"

TRAIN = """
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(150, 4)) + 4, columns={columns!r})
y = rng.integers(0, 3, size=150)
clf = LogisticRegression(max_iter=500).fit(X, y)
"""

# What a BentoML user writes for this model: the same JSON body, a DataFrame for scikit-learn.
BENTO_SERVICE = """
import os
import pickle
from typing import Any

import bentoml
import pandas as pd


@bentoml.service(workers=1)
class Iris:
    def __init__(self) -> None:
        with open(os.environ["BENCH_MODEL_PKL"], "rb") as fh:
            self.model = pickle.load(fh)

    @bentoml.api(route="/invocations")
    def invocations(self, dataframe_split: dict) -> dict:
        frame = pd.DataFrame(dataframe_split["data"], columns=dataframe_split["columns"])
        return {"predictions": self.model.predict(frame).tolist()}
"""

# wrk reports through this Lua hook: exact numbers in microseconds, no text parsing.
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-JSON {\\"requests\\": %d, \\"duration_us\\": %d, "
    .. "\\"p50_us\\": %d, \\"p99_us\\": %d, \\"connect\\": %d, \\"read\\": %d, "
    .. "\\"write\\": %d, \\"status\\": %d, \\"timeout\\": %d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

_LIVE: dict[int, subprocess.Popen[bytes]] = {}  # process groups to stop, whatever happens


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a parent that exited
    _LIVE.pop(proc.pid, None)


def _stop_all() -> None:
    for proc in list(_LIVE.values()):
        _stop(proc)


def _on_signal(signum: int, frame: Any) -> None:
    _stop_all()
    sys.exit(128 + signum)


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


def post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/ping"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running(server: Server) -> Iterator[float]:
    """Start a server; yields seconds from process start to the first 200 on its ready path."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    env = {**os.environ, **server.env}
    env.pop("MLFLOW_MODELS_WORKERS", None)
    start = time.perf_counter()
    proc = subprocess.Popen(server.cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    _LIVE[proc.pid] = proc
    try:
        while get(server.url + server.ready_path) != 200:
            if proc.poll() is not None or time.perf_counter() - start > START_TIMEOUT_S:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"{server.name} did not start ({server.cmd}):\n{tail}")
            time.sleep(0.01)
        yield time.perf_counter() - start
    finally:
        _stop(proc)
        log.close()


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds; every round's req/s kept for the ratios."""
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")}
    out["non2xx"] = sum(r["non2xx"] for r in runs)
    out["socket_errors"] = sum(r["socket_errors"] for r in runs)
    out["rounds_rps"] = [r["rps"] for r in runs]
    return out


def write_wrk_script(directory: Path, body: dict[str, Any]) -> Path:
    script = directory / f"post-{abs(hash(json.dumps(body)))}.lua"
    payload = json.dumps(body)
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = [==[{payload}]==]\n"
        "wrk.headers['Content-Type'] = 'application/json'\n" + WRK_DONE
    )
    return script


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """wrk's numbers: from the Lua done() line, else from its text (--latency)."""
    line = re.search(r"^BENCH-JSON (\{.*\})\s*$", out, re.M)
    if line:
        raw = json.loads(line.group(1))
        seconds = raw["duration_us"] / 1e6
        return {
            "requests": raw["requests"],
            "rps": raw["requests"] / seconds if seconds else 0.0,
            "p50": raw["p50_us"] / 1e3,
            "p99": raw["p99_us"] / 1e3,
            "non2xx": raw["status"],
            "socket_errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        }
    pct = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if "50" not in pct or "99" not in pct or rps is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(total.group(1)) if total else 0,
        "rps": float(rps.group(1)),
        "p50": _ms(pct["50"]),
        "p99": _ms(pct["99"]),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, sock.groups())) if sock else 0,
    }


def wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "--latency"]
    proc = subprocess.run(
        [*cmd, "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return parse_wrk(proc.stdout)


def warm(server: Server, script: Path, body: dict[str, Any], expect: int) -> None:
    """Check the answer, then short wrk runs until one is clean, so every connection path (and
    every worker: with several, /ping may come from one while another still loads) is warm."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            answer = post(server.url + "/invocations", body)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != expect:
        raise RuntimeError(f"{server.name} answered {answer!r}")
    while True:
        result = wrk(server.url + "/invocations", script, 4, 2)
        if result["requests"] and not result["non2xx"] and not result["socket_errors"]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} failed its warm-up: {result}")
        time.sleep(0.5)


def prepare(work: Path, mlflow_python: str | None, bento_python: str | None) -> dict[str, Path]:
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
    models_py = ROOT / "benchmarks" / "_serving_models.py"
    example = pd.DataFrame(ROWS, columns=COLUMNS)
    paths["trivial"] = python_flavor.save(
        _serving_models.Trivial(), work / "trivial", input_example=example, code_paths=[models_py]
    )
    paths["mlp"] = torch_flavor.save(
        _serving_models.SmallMLP(),
        work / "mlp",
        input_example=np.zeros((1, 64), dtype=np.float32),
        code_paths=[models_py],
    )
    if mlflow_python:
        code = TRAIN.format(columns=COLUMNS) + textwrap.dedent(f"""
            import mlflow.sklearn
            mlflow.sklearn.save_model(clf, {str(work / "mlflow-iris")!r}, input_example=X.head(3))
        """)
        subprocess.run([mlflow_python, "-c", code], check=True, capture_output=True, timeout=300)
        paths["mlflow"] = work / "mlflow-iris"
    if bento_python:
        code = TRAIN.format(columns=COLUMNS) + textwrap.dedent(f"""
            import pickle
            with open({str(work / "iris.pkl")!r}, "wb") as fh:
                pickle.dump(clf, fh)
        """)
        subprocess.run([bento_python, "-c", code], check=True, capture_output=True, timeout=300)
        (work / "bento").mkdir()
        (work / "bento" / "service.py").write_text(BENTO_SERVICE)
        paths["bento"] = work / "bento"
    return paths


def in_process_p50_ms(path: Path) -> float:
    """The trivial model's predict alone, in this process, on the decoded and checked body."""
    import modelpack
    from modelpack.servers.http._codecs import InvocationDecoder

    model = modelpack.load(path)
    data, _ = InvocationDecoder(model.signature).decode_json(BODY)
    samples = []
    for _ in range(3000):
        start = time.perf_counter()
        model.predictor.predict(data)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples[500:]) * 1e3


def modelpack_server(name: str, path: Path, *extra: str) -> Server:
    port = free_port()
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "modelpack"), "serve", str(path), "--port", str(port), *extra]
    return Server(name, cmd, port)


def mlflow_server(mlflow_python: str, path: Path) -> Server:
    port = free_port()
    bin_dir = Path(mlflow_python).parent
    cmd = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(path), "--env-manager", "local"]
    # mlflow runs `uvicorn` from PATH: its own venv's
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return Server(MLFLOW, [*cmd, "-h", "127.0.0.1", "-p", str(port)], port, env)


def bento_server(bento_python: str, service_dir: Path, work: Path) -> Server:
    port = free_port()
    bin_dir = Path(bento_python).parent
    cmd = [str(bin_dir / "bentoml"), "serve", "service:Iris", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--working-dir", str(service_dir)]
    env = {
        "BENCH_MODEL_PKL": str(work / "iris.pkl"),
        "BENTOML_HOME": str(work / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "True",
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    return Server(BENTO, cmd, port, env, ready_path="/readyz")


def cold_start(make: Any, runs: int = 3) -> list[float]:
    times = []
    for _ in range(runs):
        with running(make()) as seconds:
            times.append(seconds)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk cell (<=60)")
    parser.add_argument("--mlflow-python", default="/tmp/mlflow-bench/bin/python")
    parser.add_argument("--bentoml-python", default="/tmp/bento-venv/bin/python")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=3, help="sweeps over the connection counts (median shown)"
    )
    parser.add_argument("--write-docs", action="store_true", help="replace docs' Serving section")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    args.duration = max(1, min(args.duration, 60))
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    mlflow_python = args.mlflow_python if Path(args.mlflow_python).exists() else None
    bento_python = args.bentoml_python if Path(args.bentoml_python).exists() else None
    atexit.register(_stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        results = run(args, work, mlflow_python, bento_python)
    finally:
        _stop_all()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    report = render(results, args.duration)
    print(report)
    if args.write_docs:
        write_docs(report)


def run(
    args: argparse.Namespace, work: Path, mlflow_python: str | None, bento_python: str | None
) -> dict[str, Any]:
    started = time.time()
    paths = prepare(work, mlflow_python, bento_python)
    iris_script = write_wrk_script(work, BODY)
    mlp_script = write_wrk_script(work, MLP_BODY)
    servers = [
        modelpack_server(MP1, paths["iris"]),
        modelpack_server(MP2, paths["iris"], "--workers", "2"),
    ]
    if mlflow_python:
        servers.append(mlflow_server(mlflow_python, paths["mlflow"]))
    if bento_python:
        servers.append(bento_server(bento_python, paths["bento"], work))

    results: dict[str, Any] = {"servers": {}, "load": os.getloadavg(), "command": _command()}
    with contextlib.ExitStack() as stack:
        for s in servers:  # one after the other, so each start-up has the machine to itself
            results["servers"][s.name] = {"first_start_s": stack.enter_context(running(s))}
            warm(s, iris_script, BODY, len(ROWS))
            print(f"{s.name}: up on :{s.port}", flush=True)
        rounds: dict[str, dict[int, list[dict[str, Any]]]] = {s.name: {} for s in servers}
        for n in range(max(1, args.rounds)):
            for c in CONNECTIONS:  # taking turns: background load drifts alike for all of them
                for s in servers:
                    r = wrk(s.url + "/invocations", iris_script, c, args.duration)
                    rounds[s.name].setdefault(c, []).append(r)
                    print(f"round {n + 1} {s.name} c={c}: {json.dumps(r)}", flush=True)
        for name, by_conns in rounds.items():
            for c, runs in by_conns.items():
                results["servers"][name][c] = _median_run(runs)
        results["rounds"] = max(1, args.rounds)

    trivial = modelpack_server("trivial", paths["trivial"])
    with running(trivial):
        warm(trivial, iris_script, BODY, len(ROWS))
        results["trivial"] = wrk(trivial.url + "/invocations", iris_script, 1, args.duration)
    results["in_process_ms"] = in_process_p50_ms(paths["trivial"])
    print("overhead:", results["trivial"], results["in_process_ms"], flush=True)

    results["batching"] = {}
    for label, extra in (("off", ()), ("on", ("--max-batch-size", "64", "--max-latency-ms", "2"))):
        # our own model, just saved: its class ships as code, which serving must be told to trust
        mlp = modelpack_server(f"mlp batching {label}", paths["mlp"], "--trust-pickle", *extra)
        with running(mlp):
            warm(mlp, mlp_script, MLP_BODY, 1)
            results["batching"][label] = wrk(
                mlp.url + "/invocations", mlp_script, 64, args.duration
            )
        print(f"batching {label}:", results["batching"][label], flush=True)

    results["cold"] = {"modelpack": cold_start(lambda: modelpack_server(MP1, paths["iris"]))}
    if mlflow_python:
        results["cold"]["mlflow"] = cold_start(
            lambda: mlflow_server(mlflow_python, paths["mlflow"])
        )
    print("cold:", results["cold"], flush=True)
    results["load"] = (results["load"], os.getloadavg())
    results["wall_s"] = time.time() - started
    return results


def _command() -> str:
    """This run's command line, as the docs show it (paths of the peers' venvs included)."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    args, skip = [], False
    for arg in sys.argv[1:]:  # --json names a scratch file of this run only
        if skip or arg == "--json" or arg.startswith("--json="):
            skip = arg == "--json"
            continue
        args.append(shlex.quote(arg))
    return " ".join([".venv/bin/python", str(shown), *args])


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def render(results: dict[str, Any], duration: int) -> str:
    servers = results["servers"]
    base = servers.get(MLFLOW)
    (load_before, load_after) = results["load"]
    lines = [
        "## Serving",
        "",
        "```",
        results.get("command", ".venv/bin/python benchmarks/bench_serving.py --write-docs"),
        "```",
        "",
        f"One run, {time.strftime('%Y-%m-%d')}, {results['wall_s'] / 60:.0f} min: {_machine()}. "
        "wrk (`-t1`, one Lua POST script, `--latency`) shares the **2 cores** with the server "
        "under test, and other work was running on the machine at the same time (load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after): compare only within this run.",
        "",
        "Same model everywhere: an iris-like `LogisticRegression` (4 features, 3 classes, seeded "
        "synthetic data) **fitted on a pandas DataFrame** with the iris column names, so every "
        "server has to check the request's column names. Same body: a "
        "3-row `dataframe_split`. Every server runs on its own free 127.0.0.1 port; all of them "
        f"are up together and take turns at each connection count ({duration} s per cell, after "
        f"a checked request and a 2 s warm-up), in {results.get('rounds', 1)} rounds over all "
        "connection counts; each cell shows the median over the rounds. MLflow 3.17.2 (`mlflow "
        "models serve "
        "--env-manager local`, its default of 1 uvicorn worker) and BentoML 1.4.40 (a "
        "`@bentoml.service(workers=1)` whose API builds a DataFrame and calls `predict`) each "
        "run from their own venv.",
        "",
        "| server | conns | req/s | p50 ms | p99 ms | req/s vs MLflow | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in CONNECTIONS:
        for name, res in servers.items():
            r = res[c]
            ratio = f"{r['rps'] / base[c]['rps']:.1f}x" if base else "-"
            errors = r["non2xx"] + r["socket_errors"]
            lines.append(
                f"| {name} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {ratio} "
                f"| {errors} |"
            )
    lines.append("")
    ours = servers[MP1][16]
    if base:
        m = base[16]
        ok_rps = ours["rps"] >= 10 * m["rps"]
        ok_p99 = ours["p99"] < m["p50"]
        lines.append(
            f"- Target at 16 connections, 1 worker: throughput {ours['rps'] / m['rps']:.1f}x "
            f"MLflow's (goal >= 10x: **{'met' if ok_rps else 'missed'}**); p99 "
            f"{ours['p99']:.2f} ms vs MLflow's p50 {m['p50']:.2f} ms (goal below: "
            f"**{'met' if ok_p99 else 'missed'}**)."
        )
        per_round = [
            a / b for a, b in zip(ours.get("rounds_rps", []), m.get("rounds_rps", []), strict=True)
        ]
        if len(per_round) > 1:
            lines.append(
                "- The same ratio in each round (the VM's noise moves both sides): "
                + ", ".join(f"{x:.1f}x" for x in per_round)
                + "."
            )
    if BENTO in servers:
        b = servers[BENTO][16]
        ahead = ours["rps"] > b["rps"]
        lines.append(
            f"- Against BentoML at 16 connections: {ours['rps']:.0f} vs {b['rps']:.0f} req/s "
            f"({ours['rps'] / b['rps']:.1f}x), p99 {ours['p99']:.2f} vs {b['p99']:.2f} ms "
            f"(goal ahead: **{'met' if ahead else 'missed'}**)."
        )
    trivial, in_process = results["trivial"], results["in_process_ms"]
    lines.append(
        f"- Server overhead (a python-flavor model that answers zeros, same body, 1 connection): "
        f"p50 {trivial['p50']:.3f} ms over HTTP, the model's in-process predict p50 "
        f"{in_process * 1e3:.1f} µs: **{trivial['p50'] - in_process:.2f} ms** of server (decode, "
        "signature check, routing, metrics, JSON answer; wrk's own turn on the shared cores "
        "included)."
    )
    off, on = results["batching"]["off"], results["batching"]["on"]
    lines.append(
        f"- Adaptive batching, small torch MLP (64-256-256-1, float32), 1-row `inputs` requests, "
        f"64 connections: off {off['rps']:.0f} req/s (p50 {off['p50']:.1f} ms, p99 "
        f"{off['p99']:.1f} ms); `--max-batch-size 64 --max-latency-ms 2` {on['rps']:.0f} req/s "
        f"(p50 {on['p50']:.1f} ms, p99 {on['p99']:.1f} ms): **{on['rps'] / off['rps']:.2f}x**."
    )
    cold = results["cold"]
    mp_cold = statistics.median(cold["modelpack"])
    text = (
        f"- Cold start, process start to the first 200 on `/ping` (median of "
        f"{len(cold['modelpack'])}, nothing else served meanwhile): modelpack "
        f"{mp_cold:.1f} s ({', '.join(f'{t:.1f}' for t in cold['modelpack'])})"
    )
    if "mlflow" in cold:
        ml_cold = statistics.median(cold["mlflow"])
        text += (
            f", MLflow {ml_cold:.1f} s ({', '.join(f'{t:.1f}' for t in cold['mlflow'])}): "
            f"{ml_cold / mp_cold:.1f}x"
        )
    lines.append(text + ".")
    lines.append(
        "- What modelpack does differently on this path: its `dataframe_split` fast path builds "
        "the DataFrame from one numpy array with a prebuilt column index after checking the "
        "column names against the signature; the scikit-learn predictor then hands a frame whose "
        "columns are exactly the fitted names, all plain numbers, to a copy of the estimator "
        "that checks only the column count (scikit-learn 1.9 spends ~0.4 ms a call on a "
        "DataFrame's columns and dtypes whatever the rows: 3 rows cost ~0.5 ms as a frame, "
        "~0.1 ms as an array; the first frame goes both ways and the shortcut stays only if the "
        "answers are identical); and a model whose recent predicts on the event loop took "
        "under 2 ms (median of 8) predicts a request of at most 256 rows there instead of "
        "hopping to a worker thread. MLflow and the BentoML service hand scikit-learn the "
        "DataFrame, as their users' code does."
    )
    firsts = ", ".join(f"{n} {r['first_start_s']:.1f} s" for n, r in servers.items())
    lines.append(f"- First start of each server in the side-by-side (informational): {firsts}.")
    return "\n".join(lines) + "\n"


def write_docs(report: str) -> None:
    """Replace the "## Serving" section of docs/benchmarks.md (or append it)."""
    docs = ROOT / "docs" / "benchmarks.md"
    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Serving\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: report.rstrip("\n") + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + report
    docs.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
