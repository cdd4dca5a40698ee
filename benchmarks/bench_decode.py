"""Decoding large ``dataframe_split`` bodies: time and peak RSS, in process and through a server.

    .venv/bin/python benchmarks/bench_decode.py [--mb 50] [--clients 4]

In process (a fresh subprocess per case, reading the body from a file, so the growth of
``ru_maxrss`` is the decode's own peak): one body of about ``--mb`` MB, numeric columns only (the
all-numeric fast path) and numeric plus one string column (the general path), decoded by the
server's ``InvocationDecoder``. Through the server: ``modelpack serve`` on 127.0.0.1 with a
python-flavor model that returns the row count, ``--clients`` such bodies sent at once; the
server's growth of peak RSS (VmHWM minus VmRSS once ready) and the wall time of the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = 10


def body(mb: float, text: bool) -> bytes:
    import numpy as np
    import orjson

    rows = int(mb * 1e6 / (COLUMNS * 20.5))
    rng = np.random.default_rng(0)
    values = rng.normal(size=(rows, COLUMNS))
    names = [f"f{i}" for i in range(COLUMNS)]
    if not text:
        return orjson.dumps({"dataframe_split": {"columns": names, "data": values.tolist()}})
    data = [[*row, f"tag{i % 7}"] for i, row in enumerate(values.tolist())]
    return orjson.dumps({"dataframe_split": {"columns": [*names, "tag"], "data": data}})


def signature(text: bool) -> Any:
    from modelpack.signature import Signature

    columns = [{"name": f"f{i}", "type": "float64"} for i in range(COLUMNS)]
    if text:
        columns.append({"name": "tag", "type": "string"})
    return Signature.from_dict({"inputs": {"type": "columns", "columns": columns}})


def one_case(path: str, text: bool) -> dict[str, Any]:
    """Run in a child: decode the body in ``path``, report seconds and the peak RSS growth."""
    from modelpack.servers.http import _codecs

    raw = Path(path).read_bytes()
    decoder = _codecs.InvocationDecoder(signature(text))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    frame, _ = decoder.decode(raw, "application/json")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "body_mb": round(len(raw) / 1e6, 1),
        "rows": len(frame),
        "seconds": round(seconds, 2),
        "peak_growth_mb": round((peak - before) / 1024, 0),
    }


def in_process(mb: float) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for text in (False, True):
            path = Path(tmp) / "body.json"
            path.write_bytes(body(mb, text))
            code = (
                "import json, sys; sys.path.insert(0, 'benchmarks'); import bench_decode as b; "
                f"print(json.dumps(b.one_case({str(path)!r}, {text})))"
            )
            out = subprocess.run(
                [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout
            row = json.loads(out.splitlines()[-1])
            row["columns"] = "numeric + string" if text else "numeric"
            results.append(row)
    return results


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def through_server(mb: float, clients: int, max_decode_mb: int) -> dict[str, Any]:
    import httpx
    import pandas as pd

    sys.path.insert(0, str(ROOT))
    from tests.servers import _models
    from tests.servers.conftest import cli_server, free_port, save_python

    raw = body(mb, False)
    example = pd.DataFrame({f"f{i}": [0.5] for i in range(COLUMNS)})
    with tempfile.TemporaryDirectory() as tmp:
        path = save_python(Path(tmp) / "m", _models.RowCount(), example)
        port = free_port()
        args = (str(path), "--port", str(port), "--max-decode-mb", str(max_decode_mb))
        args += ("--max-body-mb", str(int(mb * 2)), "--trust")
        with cli_server(*args, port=port) as (proc, url, _):
            base = status_kb(proc.pid, "VmRSS")

            def send(_: int) -> int:
                response = httpx.post(
                    url + "/invocations",
                    content=raw,
                    headers={"content-type": "application/json"},
                    timeout=300,
                )
                return response.status_code

            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                codes = list(pool.map(send, range(clients)))
            seconds = time.perf_counter() - started
            peak = status_kb(proc.pid, "VmHWM")
    return {
        "clients": clients,
        "body_mb": round(len(raw) / 1e6, 1),
        "statuses": codes,
        "seconds": round(seconds, 2),
        "rss_growth_mb": round((peak - base) / 1024),
        "max_decode_mb": max_decode_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-decode-mb", type=int, default=128)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    for row in in_process(args.mb):
        print(json.dumps(row))
    print(json.dumps(through_server(args.mb, args.clients, args.max_decode_mb)))


if __name__ == "__main__":
    main()
