"""Adaptive batching on a model whose predict dominates: batching off vs on, interleaved (wrk).

    .venv/bin/python benchmarks/bench_batching.py [--duration 5] [--rounds 3]
        [--connections 64] [--max-batch-size 64] [--max-latency-ms 25] [--baseline DIR]

The model: a torch MLP 256-2048-2048-2048-1 (float32, seeded, a plain ``torch.nn.Sequential``
saved with the torch flavor, so the server imports no model code), one-row ``inputs`` requests
(256 floats). One 1-row predict reads all ~48 MB of weights; 64 rows cost a few times that, so
merging requests pays when the server lets it. Both servers (``modelpack serve`` in their own
processes: batching off, and ``--max-batch-size/--max-latency-ms``) start once and are warmed;
then wrk -t1 at ``--connections`` alternates between them for ``--rounds`` rounds, so both see
the same machine load. Prints each round, the medians, the on/off ratio of each round (and its
spread), and whether p99 stays within twice the latency budget (``--max-latency-ms``).

``--baseline DIR``: also serve the model, off and on, from another modelpack tree (DIR holds an
importable ``modelpack`` package, e.g. an older checkout with flavors/, servers/ and deployers/
copied into it as the installed layout has them), in the same rounds: before/after in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import (
    modelpack_server,
    running,
    warm,
    write_wrk_script,
    wrk,
)

FEATURES, WIDTH = 256, 2048
BODY = {"inputs": [[round(0.01 * (i % 100), 2) for i in range(FEATURES)]]}


def build(work: Path) -> Path:
    import numpy as np
    import torch

    from modelpack.flavors import torch as torch_flavor

    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for a, b in itertools.pairwise([FEATURES, WIDTH, WIDTH, WIDTH]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(WIDTH, 1))
    example = np.zeros((1, FEATURES), dtype=np.float32)
    return torch_flavor.save(model, work / "mlp2048", input_example=example)


def in_process_ms(path: Path, rows: int) -> float:
    """The model's own predict (median of 30), ``rows`` rows, in this process."""
    import numpy as np

    import modelpack
    from modelpack.servers.http._served import leave_a_core_to_the_event_loop

    leave_a_core_to_the_event_loop()  # the torch threads the server's predicts run with
    predictor = modelpack.load(path).predictor
    data = np.full((rows, FEATURES), 0.5, dtype=np.float32)
    samples = []
    for _ in range(35):
        start = time.perf_counter()
        predictor.predict(data)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples[5:]) * 1e3


def server_pid(port: int) -> int:
    """The process serving on ``port`` (one worker: the ``modelpack serve`` process itself)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if b"serve" in argv and b"--port" in argv and str(port).encode() in argv:
                    return int(entry.name)
    raise RuntimeError(f"no server process on port {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: CPU per request holds up under load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-latency-ms", type=float, default=25.0)
    parser.add_argument("--baseline", type=Path, help="another modelpack tree to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        run(Path(tmp), args)


def run(work: Path, args: argparse.Namespace) -> None:
    path = build(work)
    one, full = in_process_ms(path, 1), in_process_ms(path, args.max_batch_size)
    print(f"in-process predict: 1 row {one:.2f} ms, {args.max_batch_size} rows {full:.2f} ms")
    script = write_wrk_script(work, BODY)
    batching = ("--max-batch-size", str(args.max_batch_size))
    latency = ("--max-latency-ms", f"{args.max_latency_ms:g}")
    servers = {
        "off": modelpack_server("batching off", path),
        "on": modelpack_server("batching on", path, *batching, *latency),
    }
    if args.baseline is not None:
        for label, extra in (("off", ()), ("on", (*batching, *latency))):
            server = modelpack_server(f"baseline {label}", path, *extra)
            server.env = {"PYTHONPATH": str(args.baseline.resolve())}
            servers[f"baseline {label}"] = server
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in servers}
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(running(server))
            warm(server, script, BODY, 1)
        pids = {label: server_pid(server.port) for label, server in servers.items()}
        for round_ in range(args.rounds):
            for label, server in servers.items():
                before = cpu_seconds(pids[label])
                result = wrk(server.url + "/invocations", script, args.connections, args.duration)
                used = cpu_seconds(pids[label]) - before
                result["cpu_ms"] = used / max(1, result["requests"]) * 1e3
                results[label].append(result)
                print(
                    f"round {round_ + 1} {label:12}: {result['rps']:7.0f} req/s, "
                    f"p50 {result['p50']:6.1f} ms, p99 {result['p99']:6.1f} ms, "
                    f"server CPU {result['cpu_ms']:.2f} ms/request, "
                    f"non-2xx {result['non2xx']}, socket errors {result['socket_errors']}",
                    flush=True,
                )
    report(results, args)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print()
    for label, runs in results.items():
        rps = [r["rps"] for r in runs]
        p99s = ", ".join(f"{r['p99']:.0f}" for r in runs)
        p50 = statistics.median(r["p50"] for r in runs)
        p99 = statistics.median(r["p99"] for r in runs)
        cpu = statistics.median(r["cpu_ms"] for r in runs)
        print(
            f"{label:12} (median of {len(rps)}): {statistics.median(rps):.0f} req/s "
            f"(runs {', '.join(f'{x:.0f}' for x in rps)}), p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            f"(runs {p99s}), server CPU {cpu:.2f} ms/request"
        )
    budget = args.max_latency_ms
    for prefix in ("", "baseline "):
        if f"{prefix}on" not in results:
            continue
        off, on = results[f"{prefix}off"], results[f"{prefix}on"]
        ratios = [b["rps"] / a["rps"] for a, b in zip(off, on, strict=True)]
        p99 = statistics.median(r["p99"] for r in on)
        print(
            f"{prefix or 'this tree: '}on/off per round: {', '.join(f'{x:.2f}x' for x in ratios)}"
            f" (median {statistics.median(ratios):.2f}x); p99 on: median {p99:.1f} ms, worst "
            f"{max(r['p99'] for r in on):.1f} ms vs 2x the {budget:g} ms budget "
            f"({'within' if p99 <= 2 * budget else 'OVER'} at the median); server CPU per "
            f"request off/on {statistics.median(r['cpu_ms'] for r in off):.2f}/"
            f"{statistics.median(r['cpu_ms'] for r in on):.2f} ms"
        )


if __name__ == "__main__":
    main()
