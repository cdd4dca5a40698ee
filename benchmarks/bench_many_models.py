"""Many models per server, side by side in one run: one ``modelpack serve --repository DIR`` vs
one ``mlflow models serve`` process per model.

    .venv/bin/python benchmarks/bench_many_models.py [--quick] [--models 50] [--duration 10]
        [--rounds 2] [--mlflow-python /tmp/mlflow-bench/bin/python] [--reserve-gb 4]
        [--markdown FILE] [--json FILE]

The default run takes ~6-10 minutes on 2 shared cores (most of it starting the MLflow
processes); ``--quick`` ~1 minute (6 models, one round of 3 s cells).

Models (``_many_models_side.py``, the same seeds in both venvs): half iris-like scikit-learn
LogisticRegressions fitted on a DataFrame (3-row ``dataframe_split`` body), half 64-256-256-1
torch MLPs of plain ``torch.nn`` parts (1-row ``inputs`` body); every model has its own weights.
Requests pick a model by a Zipf law (``--zipf``, rank 1 the most asked; the two kinds
interleaved in rank order), from a Python load generator in this process (asyncio, raw HTTP/1.1
keep-alive sockets, one connection per client and server port; its own CPU is reported).

1. Throughput and latency at 16 and 64 connections: one modelpack server holding all the models
   vs one MLflow process per model (``--env-manager local``, each on its own port; the generator
   picks the port by model). MLflow processes start in parallel batches while enough memory is
   left (``--reserve-gb`` kept free for the machine's other users); if not all fit, the MLflow
   side serves the most popular N that did, and modelpack is also measured on the same N.
   Memory: RSS, PSS and private (USS) summed over each side's processes and their children.
2. ``--lazy --max-memory`` at ``--budget`` of the models' files: loads (misses) vs requests,
   the latency of the request that triggered each load, the server's load times (its log), 503s,
   and the server's peak RSS against its base RSS (libraries imported) plus the budget.
3. Time to first answer for a cold model under ``--lazy``: the first of each library (which
   imports it) and the later ones.

Ratios are printed, never asserted. Every server runs in its own process group and is stopped
however the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import bisect
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _many_models_side as side
import bench_serving as serving

MLFLOW_PYTHONS = ("/tmp/mlflow-bench/bin/python", "/var/cache/modelpack/mlflow-venv/bin/python")
SK_BODY = {
    "dataframe_split": {
        "columns": side.COLUMNS,
        "data": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]],
    }
}
PT_BODY = {"inputs": [[round(0.01 * i, 2) for i in range(side.FEATURES)]]}
START_TIMEOUT_S = 300.0
READY = re.compile(r"model '([^']+)' version \S+ ready in ([\d.]+)s")
UNLOADING = re.compile(r"unloading model '([^']+)' \(least recently used\)")
MP, MP_SAME, ML = "modelpack (1 process, all models)", "modelpack, same models as MLflow", "MLflow"


# -- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    """A server started in its own process group; its stderr lines read with arrival times."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    ready_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        return "\n".join(line for _, line in self.lines[-30:])


def launch(name: str, cmd: list[str], port: int, env: dict[str, str] | None = None) -> Proc:
    environ = {**os.environ, **(env or {})}
    environ.pop("MLFLOW_MODELS_WORKERS", None)
    popen = subprocess.Popen(
        cmd,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    serving._LIVE[popen.pid] = popen
    proc = Proc(name, popen, port, time.perf_counter())
    threading.Thread(target=_read_lines, args=(popen.stderr, proc.lines), daemon=True).start()
    return proc


def _read_lines(stream: IO[bytes] | None, out: list[tuple[float, str]]) -> None:
    if stream is None:
        return
    for raw in stream:
        out.append((time.perf_counter(), raw.decode(errors="replace").rstrip()))


def wait_ready(procs: list[Proc], timeout: float = START_TIMEOUT_S) -> None:
    """Until every server answers 200 on /ping (each one's seconds to that in ``ready_s``)."""
    deadline = time.perf_counter() + timeout
    waiting = [p for p in procs if p.ready_s is None]
    while waiting:
        for p in list(waiting):
            if serving.get(p.url + "/ping") == 200:
                p.ready_s = time.perf_counter() - p.started
                waiting.remove(p)
            elif p.popen.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"{p.name} did not start:\n{p.tail()}")
        time.sleep(0.1)


def stop(procs: list[Proc]) -> None:
    for p in procs:  # SIGTERM to all first: they drain at the same time
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.popen.pid, signal.SIGTERM)
    for p in procs:
        serving._stop(p.popen)


def modelpack_cmd(port: int, *extra: str) -> list[str]:
    return [str(Path(sys.executable).parent / "modelpack"), "serve", "--port", str(port), *extra]


def mlflow_cmd(mlflow_python: str, path: Path, port: int) -> tuple[list[str], dict[str, str]]:
    bin_dir = Path(mlflow_python).parent
    cmd = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(path), "--env-manager", "local"]
    # mlflow runs `uvicorn` from PATH: its own venv's
    return [*cmd, "-h", "127.0.0.1", "-p", str(port)], {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


# -- memory ----------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    return kids


def memory(roots: list[int]) -> dict[str, float]:
    """RSS, PSS and private memory (MB) summed over ``roots`` and all their descendants."""
    kids = _children()
    pids, i = list(roots), 0
    while i < len(pids):
        pids += kids.get(pids[i], [])
        i += 1
    total = {"rss": 0.0, "pss": 0.0, "uss": 0.0, "anon": 0.0, "processes": 0.0}
    for pid in pids:
        fields: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    fields[parts[0][:-1]] = int(parts[1])
        if not fields:
            continue
        total["processes"] += 1
        total["rss"] += fields.get("Rss", 0) / 1024
        total["pss"] += fields.get("Pss", 0) / 1024
        total["uss"] += (fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024
        total["anon"] += fields.get("Anonymous", 0) / 1024  # the rest of RSS: mapped files
    return total


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def files_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -- the load generator ----------------------------------------------------------------------


@dataclass
class Target:
    port: int
    request: bytes


def target(port: int, path: str, body: dict[str, Any]) -> Target:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return Target(port, head.encode() + payload)


def zipf_cumulative(n: int, s: float) -> list[float]:
    weights = [1.0 / (rank**s) for rank in range(1, n + 1)]
    total, out, acc = sum(weights), [], 0.0
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


Conns = dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]]


async def _exchange(conns: Conns, t: Target, reopens: list[int]) -> int:
    conn = conns.get(t.port)
    if conn is not None:
        # A kept-alive connection the server closed while it was idle (uvicorn closes them after
        # 5 s, on either side: an unpopular model's port sits idle that long): reopened once and
        # sent again, as HTTP clients do; the reopen counts in the latency. Counted in reopens.
        reader, writer = conn
        writer.write(t.request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            writer.close()
            del conns[t.port]
            reopens.append(t.port)
            conn = None
    if conn is None:
        reader, writer = conns[t.port] = await asyncio.open_connection("127.0.0.1", t.port)
        writer.write(t.request)
        head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "content-length":
            length = int(value)
        elif key == "connection" and value.strip().lower() == "close":
            close = True
        elif key == "transfer-encoding":
            raise RuntimeError("chunked answer: this generator reads Content-Length only")
    await reader.readexactly(length)
    if close:
        writer.close()
        del conns[t.port]
    return status


async def _client(
    seed: int,
    targets: list[Target],
    cumulative: list[float],
    stop_at: float,
    out: list[tuple[int, float, float, int]],
    reopens: list[int],
) -> None:
    rng = random.Random(seed)
    conns: Conns = {}
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            index = bisect.bisect_left(cumulative, rng.random())
            start = clock()
            try:
                status = await _exchange(conns, targets[index], reopens)
            except (OSError, asyncio.IncompleteReadError, ValueError, RuntimeError):
                status = 0
                conn = conns.pop(targets[index].port, None)
                if conn is not None:
                    conn[1].close()
                await asyncio.sleep(0.01)
            out.append((index, start, clock(), status))
    finally:
        for _, writer in conns.values():
            writer.close()


def load(
    targets: list[Target], connections: int, seconds: float, zipf: float, seed: int = 0
) -> dict[str, Any]:
    """``connections`` clients for ``seconds``, each request to a Zipf-drawn target.

    Returns the raw samples (target index, start, end, status; perf_counter seconds), the
    throughput of 200s answered within the window, p50/p99 of those, and this process's CPU.
    """
    cumulative = zipf_cumulative(len(targets), zipf)
    samples: list[tuple[int, float, float, int]] = []
    reopens: list[int] = []

    async def main() -> None:
        stop_at = time.perf_counter() + seconds
        clients = [
            _client(seed * 1000 + i, targets, cumulative, stop_at, samples, reopens)
            for i in range(connections)
        ]
        await asyncio.wait_for(asyncio.gather(*clients), seconds + 60)

    cpu, wall = time.process_time(), time.perf_counter()
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {**summarize(samples, wall, cpu, connections), "reopens": len(reopens)}


def summarize(
    samples: list[tuple[int, float, float, int]], wall: float, cpu: float, connections: int
) -> dict[str, Any]:
    ok = sorted(end - start for _, start, end, status in samples if status == 200)
    return {
        "connections": connections,
        "requests": len(samples),
        "ok": len(ok),
        "errors": len(samples) - len(ok),
        "statuses": sorted({s for *_, s in samples}),
        "rps": len(ok) / wall if wall else 0.0,
        "p50": _pct(ok, 50) * 1e3,
        "p99": _pct(ok, 99) * 1e3,
        "wall_s": wall,
        "generator_cpu": cpu / wall if wall else 0.0,  # cores this process used
        "samples": samples,
    }


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# -- the models ------------------------------------------------------------------------------


def prepare(work: Path, n_sk: int, n_pt: int, mlflow_python: str | None) -> dict[str, Any]:
    import modelpack

    names = side.names(n_sk, n_pt)
    repo = work / "repo"
    started = time.perf_counter()
    for name in names:
        make = side.sklearn_model if name.startswith("sk-") else side.torch_model
        model, example = make(int(name[3:]))
        modelpack.save(model, repo / name, input_example=example)
    saved = {"names": names, "repo": repo, "modelpack_save_s": time.perf_counter() - started}
    if mlflow_python:
        started = time.perf_counter()
        script = Path(__file__).with_name("_many_models_side.py")
        proc = subprocess.run(
            [mlflow_python, str(script), str(work / "mlflow"), str(n_sk), str(n_pt)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"saving the MLflow models failed:\n{proc.stderr[-3000:]}")
        saved["mlflow"] = work / "mlflow"
        saved["mlflow_version"] = json.loads(proc.stdout.strip().splitlines()[-1])["mlflow"]
        saved["mlflow_save_s"] = time.perf_counter() - started
    return saved


def body_of(name: str) -> dict[str, Any]:
    return SK_BODY if name.startswith("sk-") else PT_BODY


def check_answers(urls: list[str], names: list[str]) -> None:
    """One request per model, each answer checked (3 labels, or 1 output row)."""
    for url, name in zip(urls, names, strict=True):
        answer = serving.post(url, body_of(name))
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        expect = 3 if name.startswith("sk-") else 1
        if not isinstance(predictions, list) or len(predictions) != expect:
            raise RuntimeError(f"{url} answered {answer!r}")


# -- 1. throughput, latency, memory ----------------------------------------------------------


def start_mlflow_fleet(
    mlflow_python: str, models: Path, names: list[str], batch: int, reserve_mb: float
) -> tuple[list[Proc], dict[str, Any]]:
    """Start one MLflow server per model, ``batch`` at a time, while memory allows.

    Before each batch, MemAvailable minus ``reserve_mb`` must cover the batch at the memory one
    server took so far (the drop in MemAvailable per server started, or its measured private
    memory, whichever is larger; 600 MB before the first batch): the most that fit are started.
    """
    fleet: list[Proc] = []
    per_server_mb, note = 600.0, ""
    started = time.perf_counter()
    for low in range(0, len(names), batch):
        available = mem_available_mb()
        room = int((available - reserve_mb) // per_server_mb)
        want = names[low : low + batch]
        if room < len(want):
            want = want[: max(0, room)]
            note = (
                f"memory: {available:.0f} MB available, {per_server_mb:.0f} MB per MLflow "
                f"server, {reserve_mb:.0f} MB kept free: {len(fleet) + len(want)} of "
                f"{len(names)} started"
            )
        if not want:
            break
        procs = []
        for name in want:
            port = serving.free_port()
            cmd, env = mlflow_cmd(mlflow_python, models / name, port)
            procs.append(launch(f"mlflow {name}", cmd, port, env))
        wait_ready(procs)
        fleet += procs
        check_answers([p.url + "/invocations" for p in procs], want)
        after = mem_available_mb()
        uss = memory([p.popen.pid for p in procs])["uss"] / len(procs)
        per_server_mb = max(per_server_mb if low == 0 else 0.0, (available - after) / len(procs))
        per_server_mb = max(per_server_mb, uss)
        print(
            f"mlflow: {len(fleet)} up ({time.perf_counter() - started:.0f} s), "
            f"{per_server_mb:.0f} MB each, {after:.0f} MB available",
            flush=True,
        )
        if len(want) < batch and low + batch < len(names):
            break
    info = {
        "started": len(fleet),
        "start_s": time.perf_counter() - started,
        "ready_s": [p.ready_s for p in fleet],
        "note": note,
    }
    return fleet, info


def part_throughput(
    args: argparse.Namespace, prepared: dict[str, Any], mlflow_python: str | None
) -> dict[str, Any]:
    names: list[str] = prepared["names"]
    port = serving.free_port()
    server = launch(MP, modelpack_cmd(port, "--repository", str(prepared["repo"])), port)
    wait_ready([server])
    mp_urls = [f"{server.url}/invocations/{n}" for n in names]
    check_answers(mp_urls, names)
    out: dict[str, Any] = {"mp_ready_s": server.ready_s, "cells": {}, "memory": {}}
    out["memory"][MP] = memory([server.popen.pid])
    print(f"modelpack: {len(names)} models ready in {server.ready_s:.1f} s", flush=True)
    fleet: list[Proc] = []
    try:
        servers: dict[str, list[Target]] = {
            MP: [target(port, f"/invocations/{n}", body_of(n)) for n in names]
        }
        if mlflow_python:
            fleet, out["mlflow"] = start_mlflow_fleet(
                mlflow_python,
                prepared["mlflow"],
                names,
                args.mlflow_batch,
                args.reserve_gb * 1024,
            )
            served = names[: len(fleet)]
            servers[ML] = [
                target(p.port, "/invocations", body_of(n))
                for p, n in zip(fleet, served, strict=True)
            ]
            if len(fleet) < len(names):
                servers[MP_SAME] = servers[MP][: len(fleet)]
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {}
        for n in range(args.rounds):
            for c in args.connections:
                order = list(servers.items())
                if n % 2:  # who goes first alternates: the machine's noise drifts
                    order.reverse()
                for label, targets in order:
                    load(targets, c, 2.0, args.zipf, seed=99)  # warm-up, not counted
                    result = load(targets, c, args.duration, args.zipf, seed=n * 1000 + c)
                    samples = result.pop("samples")
                    result["models"] = len(targets)
                    result["models_hit"] = len({s[0] for s in samples})
                    runs.setdefault(label, {}).setdefault(c, []).append(result)
                    print(f"round {n + 1} {label} c={c}: {json.dumps(result)}", flush=True)
        for label, by_c in runs.items():
            out["cells"][label] = {c: _median_cell(rs) for c, rs in by_c.items()}
        out["memory"][MP] = memory([server.popen.pid])
        if fleet:
            out["memory"][ML] = memory([p.popen.pid for p in fleet])
        out["load_after"] = os.getloadavg()
    finally:
        stop([server, *fleet])
    return out


def _median_cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds; errors and reopens summed; each round's req/s."""
    out = dict(runs[0])
    for key in ("rps", "p50", "p99", "generator_cpu"):
        out[key] = statistics.median(r[key] for r in runs)
    for key in ("requests", "ok", "errors", "reopens"):
        out[key] = sum(r[key] for r in runs)
    out["rounds_rps"] = [r["rps"] for r in runs]
    return out


# -- 2. a memory budget below the models' sum ------------------------------------------------


def _sample_rss(pid: int, stop_event: threading.Event, peaks: list[dict[str, float]]) -> None:
    while not stop_event.wait(0.2):
        peaks.append(memory([pid]))


def part_budget(args: argparse.Namespace, prepared: dict[str, Any]) -> dict[str, Any]:
    names: list[str] = prepared["names"]
    repo: Path = prepared["repo"]
    sizes = {n: files_bytes(repo / n) for n in names}
    total = sum(sizes.values())
    budget = int(total * args.budget)
    if budget < max(sizes.values()):  # a model larger than the whole budget is refused (503)
        raise SystemExit(f"--budget {args.budget}: {budget} bytes, less than the largest model")
    port = serving.free_port()
    cmd = modelpack_cmd(port, "--repository", str(repo), "--lazy", "--max-memory", str(budget))
    server = launch("modelpack --max-memory", cmd, port)
    try:
        wait_ready([server])
        lazy_rss = memory([server.popen.pid])["rss"]
        # Base: both libraries imported, the smallest model of each kind loaded.
        smallest = [
            min((n for n in names if n.startswith(kind)), key=sizes.__getitem__)
            for kind in ("sk-", "pt-")
        ]
        check_answers([f"{server.url}/invocations/{n}" for n in smallest], smallest)
        base = memory([server.popen.pid])
        base_rss = base["rss"]
        targets = [target(port, f"/invocations/{n}", body_of(n)) for n in names]
        load(targets, args.budget_connections, args.warmup, args.zipf, seed=7)  # fill the cache
        stop_event, peaks = threading.Event(), [base]
        sampler = threading.Thread(target=_sample_rss, args=(server.popen.pid, stop_event, peaks))
        sampler.start()
        first_line = len(server.lines)
        try:
            result = load(targets, args.budget_connections, args.duration, args.zipf, seed=11)
        finally:
            stop_event.set()
            sampler.join()
        time.sleep(0.3)  # the log lines of the last loads
        samples = result.pop("samples")
        window = (min(s[1] for s in samples), max(s[2] for s in samples))
        loads: list[tuple[float, str, float]] = []  # (when read, model, seconds)
        unloads = 0
        for when, line in server.lines[first_line:]:
            if window[0] <= when <= window[1] + 0.3:
                ready = READY.search(line)
                if ready:
                    loads.append((when, ready.group(1), float(ready.group(2))))
                elif UNLOADING.search(line):
                    unloads += 1
        trigger_latencies = _load_triggers(samples, names, loads)
        ok = result["ok"]
        out = {
            "files_total": total,
            "budget": budget,
            "lazy_rss": lazy_rss,
            "base_rss": base_rss,
            "peak_rss": max(p["rss"] for p in peaks),
            # Mapped files (safetensors weights are mapped) vs anonymous memory (numpy arrays,
            # the interpreter, per-thread allocator arenas).
            "base_file": base_rss - base["anon"],
            "peak_file": max(p["rss"] - p["anon"] for p in peaks),
            "base_anon": base["anon"],
            "peak_anon": max(p["anon"] for p in peaks),
            "loads": len(loads),
            "unloads": unloads,
            "requests": result["requests"],
            "ok": ok,
            "errors": result["errors"],
            "statuses": result["statuses"],
            "rps": result["rps"],
            "p50": result["p50"],
            "p99": result["p99"],
            "hit_rate": 1 - len(loads) / ok if ok else float("nan"),
            "load_s": sorted(s for *_, s in loads),
            "miss_latency_ms": [t * 1e3 for t in sorted(trigger_latencies)],
            "generator_cpu": result["generator_cpu"],
        }
        shown = {k: v for k, v in out.items() if not isinstance(v, list) or k == "statuses"}
        print("budget:", json.dumps(shown), flush=True)
        return out
    finally:
        stop([server])


def _load_triggers(
    samples: list[tuple[int, float, float, int]],
    names: list[str],
    loads: list[tuple[float, str, float]],
) -> list[float]:
    """The latency of the request that waited on each load: the earliest-sent request to that
    model in flight when the load's log line was read (read a few ms after the load ended)."""
    by_model: dict[str, list[tuple[float, float]]] = {}
    for index, start, end, _ in samples:
        by_model.setdefault(names[index], []).append((start, end))
    for spans in by_model.values():
        spans.sort()
    out = []
    for when, model, _ in loads:
        for start, end in by_model.get(model, []):
            if start <= when <= end + 0.05:
                out.append(end - start)
                break
    return out


# -- 3. cold models under --lazy -------------------------------------------------------------


def part_cold(args: argparse.Namespace, prepared: dict[str, Any]) -> dict[str, Any]:
    names: list[str] = prepared["names"]
    port = serving.free_port()
    server = launch(
        "modelpack --lazy",
        modelpack_cmd(port, "--repository", str(prepared["repo"]), "--lazy"),
        port,
    )
    out: dict[str, list[float]] = {"sk-": [], "pt-": []}
    try:
        wait_ready([server])
        out["ready_s"] = [server.ready_s or 0.0]
        for name in names[: 2 * args.cold_models]:
            started = time.perf_counter()
            check_answers([f"{server.url}/invocations/{name}"], [name])
            out[name[:3]].append(time.perf_counter() - started)
    finally:
        stop([server])
    print("cold:", json.dumps(out), flush=True)
    return out


# -- report ----------------------------------------------------------------------------------


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    tp = results["throughput"]
    n = len(results["names"])
    mlflow = tp.get("mlflow")
    load_before, load_after = results["load_before"], tp["load_after"]
    lines = [
        "## Many models per server",
        "",
        "```",
        results["command"],
        "```",
        "",
        f"One run, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(results['started']))}, "
        f"{results['wall_s'] / 60:.0f} min: {serving._machine()}, "
        f"{results['mem_total_gb']:.0f} GB of memory. The load generator (Python, asyncio on "
        "uvloop, raw HTTP/1.1 keep-alive sockets, this process) shares the **2 cores** with "
        "the servers, and other work was running on the machine (load average "
        f"{load_before[0]:.1f} before the side by side, {load_after[0]:.1f} after): compare "
        "only within this run.",
        "",
        f"{n} models, each with its own weights: {n // 2} iris-like scikit-learn "
        "`LogisticRegression`s fitted on a DataFrame (3-row `dataframe_split` body) and "
        f"{n - n // 2} 64-256-256-1 torch MLPs (1-row `inputs` body). Each request picks its "
        f"model by a Zipf law (s = {args.zipf}; the kinds interleaved by rank: the most asked "
        f"model gets {100 * zipf_cumulative(n, args.zipf)[0]:.0f}% of the requests). "
        f"{args.duration:.0f} s per cell after a 2 s warm-up, the servers taking turns, "
        f"{args.rounds} round(s) over all cells (who goes first alternates); each cell shows the "
        "median over the rounds. "
        "*reopened*: kept-alive connections the server had closed while idle (uvicorn's 5 s "
        "keep-alive, both sides), reopened and the request sent again, as HTTP clients do (the "
        "reopen is in that request's latency); *generator CPU*: the cores the load generator "
        "itself used.",
        "",
    ]
    if mlflow:
        lines.append(
            f"MLflow {results.get('mlflow_version', '')}: `mlflow models serve -m DIR "
            "--env-manager local`, one process per model, each on its own port (each is an "
            "`mlflow` CLI process plus the `uvicorn` worker it starts); started "
            f"{args.mlflow_batch} at a time: {mlflow['started']} servers up in "
            f"{mlflow['start_s']:.0f} s. "
            + (f"**Not all fit**: {mlflow['note']}. " if mlflow["note"] else "")
        )
        lines.append("")
    lines += [
        "| server | models | conns | req/s | p50 ms | p99 ms | req/s vs MLflow | errors "
        "| reopened | generator CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cells = tp["cells"]
    for c in args.connections:
        base = cells.get(ML, {}).get(c)
        for label, by_c in cells.items():
            r = by_c[c]
            ratio = f"{r['rps'] / base['rps']:.1f}x" if base and base["rps"] else "-"
            lines.append(
                f"| {label} | {r['models']} | {c} | {r['rps']:.0f} | {r['p50']:.1f} "
                f"| {r['p99']:.1f} | {ratio} | {r['errors']} | {r.get('reopens', 0)} "
                f"| {r['generator_cpu']:.2f} cores |"
            )
    lines += ["", "| memory (after the cells) | processes | RSS MB | PSS MB | private MB |"]
    lines.append("|---|---:|---:|---:|---:|")
    for label, m in tp["memory"].items():
        lines.append(
            f"| {label} | {m['processes']:.0f} | {m['rss']:.0f} | {m['pss']:.0f} | {m['uss']:.0f} |"
        )
    lines.append("")
    mem = tp["memory"]
    if ML in mem and mlflow:
        k = mlflow["started"]
        per = mem[ML]["rss"] / k
        lines.append(
            f"- Memory: modelpack holds all {n} models in {mem[MP]['rss']:.0f} MB RSS "
            f"({mem[MP]['uss']:.0f} MB private); MLflow's {k} servers take "
            f"{mem[ML]['rss']:.0f} MB RSS ({mem[ML]['uss']:.0f} MB private, "
            f"{per:.0f} MB RSS per model): **{mem[ML]['rss'] / mem[MP]['rss']:.0f}x**"
            + (
                f"; scaled to {n} models, ~{per * n / 1024:.1f} GB RSS "
                f"(~{mem[ML]['uss'] / k * n / 1024:.1f} GB private), "
                f"{per * n / mem[MP]['rss']:.0f}x"
                if k < n
                else ""
            )
            + "."
        )
        for c in args.connections:
            ours, theirs = cells[MP][c], cells[ML][c]
            same = cells.get(MP_SAME, {}).get(c, ours)
            per_round = ", ".join(
                f"{a / b:.1f}x"
                for a, b in zip(same["rounds_rps"], theirs["rounds_rps"], strict=True)
            )
            lines.append(
                f"- {c} connections: modelpack {same['rps']:.0f} req/s vs MLflow "
                f"{theirs['rps']:.0f} ({same['rps'] / theirs['rps']:.1f}x, same models), p99 "
                f"{same['p99']:.1f} vs {theirs['p99']:.1f} ms"
                + (f"; with all {n} models {ours['rps']:.0f} req/s" if MP_SAME in cells else "")
                + f" (throughput ratio in each round: {per_round})."
            )
    lines.append(
        f"- modelpack serve with all {n} models was ready in {tp['mp_ready_s']:.1f} s (every "
        "model loaded at start-up, one after the other)"
        + (
            f"; the MLflow servers took {statistics.median(mlflow['ready_s']):.0f} s each "
            f"(median, {args.mlflow_batch} starting at once)"
            if mlflow
            else ""
        )
        + "."
    )
    b = results["budget"]
    miss = b["miss_latency_ms"]
    lines += [
        "",
        f"**`--max-memory` at {100 * args.budget:.0f}% of the models' files** "
        f"({b['budget'] / 1e6:.2f} MB of {b['files_total'] / 1e6:.2f} MB; `--lazy`, "
        f"{args.budget_connections} connections, the same Zipf mix, {args.warmup:.0f} s to "
        f"fill the cache then {args.duration:.0f} s measured): {b['ok']} requests answered, "
        f"**{b['loads']} loads** ({b['unloads']} least-recently-used unloads): hit rate "
        f"**{100 * b['hit_rate']:.1f}%**; {b['rps']:.0f} req/s, p50 {b['p50']:.1f} ms, p99 "
        f"{b['p99']:.1f} ms; {b['errors']} errors (statuses {b['statuses']}).",
        f"- Latency of the request that triggered a load: p50 {_pct(miss, 50):.0f} ms, p99 "
        f"{_pct(miss, 99):.0f} ms ({len(miss)} matched); the server's own load times "
        f"(its log): p50 {1e3 * _pct(b['load_s'], 50):.0f} ms, p99 "
        f"{1e3 * _pct(b['load_s'], 99):.0f} ms.",
        f"- RSS: {b['lazy_rss']:.0f} MB with nothing loaded, {b['base_rss']:.0f} MB once "
        "scikit-learn and torch are imported (the smallest model of each loaded: the base), "
        f"peak {b['peak_rss']:.0f} MB during the run (sampled every 0.2 s): "
        f"{b['peak_rss'] - b['base_rss']:.1f} MB over the base for a "
        f"{b['budget'] / 2**20:.1f} MB budget ("
        + (
            "**under budget + base**"
            if b["peak_rss"] <= b["base_rss"] + b["budget"] / 2**20
            else "**over budget + base**: the budget counts the models' file sizes, not RSS "
            "(docs/serving.md)"
        )
        + f"); all {n} loaded: {mem[MP]['rss']:.0f} MB. Of the peak over the base, mapped "
        f"files (torch weights) {b['peak_file'] - b['base_file']:.1f} MB, anonymous memory "
        f"{b['peak_anon'] - b['base_anon']:.1f} MB (see bench_memory_budget.py).",
    ]
    cold = results["cold"]
    lines += [
        "",
        f"**Cold model under `--lazy`** (time to the first answer, a fresh server ready in "
        f"{cold['ready_s'][0]:.1f} s with nothing loaded): ",
    ]
    for kind, label in (("sk-", "scikit-learn"), ("pt-", "torch")):
        times = cold[kind]
        rest = times[1:]
        lines.append(
            f"- {label}: the first {1e3 * times[0]:.0f} ms (imports the library)"
            + (
                f", the next {len(rest)} median {1e3 * statistics.median(rest):.0f} ms "
                f"(max {1e3 * max(rest):.0f} ms)"
                if rest
                else ""
            )
            + "."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a ~1-minute smoke run")
    parser.add_argument("--models", type=int, default=50, help="half sklearn, half torch")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    parser.add_argument("--rounds", type=int, default=2, help="sweeps of the cells (median)")
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument(
        "--mlflow-python", help="default: the first of " + ", ".join(MLFLOW_PYTHONS)
    )
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument(
        "--mlflow-batch", type=int, default=6, help="MLflow servers started at once"
    )
    parser.add_argument("--reserve-gb", type=float, default=4.0, help="memory left to others")
    parser.add_argument("--budget", type=float, default=0.4, help="--max-memory / files' total")
    parser.add_argument("--budget-connections", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=5.0, help="cache fill before part 2")
    parser.add_argument("--cold-models", type=int, default=5, help="cold models of each kind")
    parser.add_argument("--markdown", type=Path, help="also write the section here")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    if args.quick:
        args.models, args.duration, args.warmup, args.cold_models = 6, 3.0, 2.0, 2
        args.rounds = 1
    mlflow_python = None
    if not args.no_mlflow:
        found = [args.mlflow_python] if args.mlflow_python else list(MLFLOW_PYTHONS)
        mlflow_python = next((p for p in found if Path(p).exists()), None)
        if mlflow_python is None:
            print(f"no MLflow venv at {found}: modelpack only", file=sys.stderr)
    atexit.register(serving._stop_all)
    signal.signal(signal.SIGTERM, serving._on_signal)
    signal.signal(signal.SIGINT, serving._on_signal)
    work = Path(tempfile.mkdtemp(prefix="bench-many-"))
    try:
        started = time.time()
        # --markdown names where this run's copy goes, not how to run it
        shown = re.sub(r" --markdown(=| )\S+", "", serving._command())
        results: dict[str, Any] = {"started": started, "command": shown}
        results["mem_total_gb"] = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
        prepared = prepare(work, args.models // 2, args.models - args.models // 2, mlflow_python)
        print(f"models saved: {json.dumps({k: str(v) for k, v in prepared.items()})}", flush=True)
        results["names"] = prepared["names"]
        results["mlflow_version"] = prepared.get("mlflow_version", "")
        results["load_before"] = os.getloadavg()
        results["throughput"] = part_throughput(args, prepared, mlflow_python)
        results["budget"] = part_budget(args, prepared)
        results["cold"] = part_cold(args, prepared)
        results["wall_s"] = time.time() - started
    finally:
        serving._stop_all()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    report = render(results, args)
    print(report)
    if args.markdown:
        args.markdown.write_text(report)


if __name__ == "__main__":
    main()
