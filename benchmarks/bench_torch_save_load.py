"""Saving and loading a ~1 GB torch model: modelpack against raw safetensors and torch.save.

Every case runs in a fresh process that has already imported torch, safetensors and modelpack,
so only the operation itself is timed (wall and CPU seconds). Its peak RSS is the process's
high-water mark (VmHWM, reset just before the operation), so it includes the torch runtime and,
for saves, the model being saved. The page cache is warm for every case: each file was written
just before it is read.

``modelpack.load`` is timed twice after each save: a first load, which hashes every file of the
new directory and records them in the verified-file cache (a fresh ``$MODELPACK_HOME`` under the
work directory), and a second load, which finds them there unchanged and hashes only the small
files.

    python -m benchmarks.bench_torch_save_load --size-gb 1

(run from the repository root: the children import the model class from this module by name.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

WIDTH = 4096
INPUT_ROWS = 8
ROOT = Path(__file__).resolve().parent.parent

SAVES = ("modelpack.save", "safetensors save_file", "torch.save")
LOADS = (
    "modelpack.load + predict (first load)",
    "modelpack.load + predict (second load, cache warm)",
    "safetensors load_file + meta build + forward",
    "torch.load(weights_only, mmap=False) + forward",
)
OUTPUTS = dict(zip(SAVES, ("modelpack", "raw.safetensors", "raw.pt"), strict=True))
BASELINE = {"save": SAVES[1], "load": LOADS[2]}


# The benchmark's own class: a user class, so loading it is trusted by name, as a user would.
TRUST = ["benchmarks.bench_torch_save_load.LinearStack"]


class LinearStack(nn.Module):
    def __init__(self, depth: int, width: int = WIDTH) -> None:
        super().__init__()
        self.depth = depth
        self.width = width
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = torch.relu(block(x))
        return x


def depth_for(size_gb: float) -> int:
    per_layer = (WIDTH * WIDTH + WIDTH) * 4
    return max(1, round(size_gb * 2**30 / per_layer))


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _rss() -> int:
    return _status_bytes("VmRSS")


def _peak_rss() -> int:
    return _status_bytes("VmHWM")


def _touch_and_free(nbytes: int) -> None:
    # A VM may back guest memory lazily: the first touch of a page costs a host fault, about
    # 2 s per GB here. Memory touched and freed just before timing spares every case that cost,
    # whether it goes to page cache (saves) or to a copy of the weights (torch.load).
    np.ones(nbytes, dtype=np.uint8)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _model(depth: int) -> LinearStack:
    with torch.device("meta"):
        model = LinearStack(depth)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, WIDTH**-0.5, generator=generator)
    return model


def _meta_build(depth: int, state: dict[str, torch.Tensor]) -> LinearStack:
    with torch.device("meta"):
        model = LinearStack(depth)
    model.load_state_dict(state, assign=True)
    return model.eval()


def _count_hashed_bytes() -> list[int]:
    # What a load read to hash: one stat per hashed file, nothing next to the hash itself.
    from modelpack import _fs

    hashed: list[int] = []
    real = _fs.sha256_file

    def counting(path: Path) -> str:
        hashed.append(os.stat(path).st_size)
        return real(path)

    _fs.sha256_file = counting
    return hashed


def child(case: str, work: Path, depth: int) -> dict[str, Any]:
    import safetensors.torch

    import modelpack
    import modelpack.flavors.torch  # imported before timing, like torch

    x = torch.randn(INPUT_ROWS, WIDTH, generator=torch.Generator().manual_seed(1))
    ops: dict[str, Callable[[], Any]] = {}
    if case in SAVES:
        model = _model(depth)
        ops = {
            SAVES[0]: lambda: modelpack.save(model, work / OUTPUTS[SAVES[0]]),
            SAVES[1]: lambda: safetensors.torch.save_file(
                model.state_dict(), work / OUTPUTS[SAVES[1]]
            ),
            SAVES[2]: lambda: torch.save(model.state_dict(), work / OUTPUTS[SAVES[2]]),
        }
    else:

        def forward(model: nn.Module) -> Any:
            with torch.inference_mode():
                return model(x)

        ops = {
            LOADS[0]: lambda: modelpack.load(work / "modelpack", trust=TRUST).predict(x.numpy()),
            LOADS[1]: lambda: modelpack.load(work / "modelpack", trust=TRUST).predict(x.numpy()),
            LOADS[2]: lambda: forward(
                _meta_build(depth, safetensors.torch.load_file(work / "raw.safetensors"))
            ),
            LOADS[3]: lambda: forward(
                _meta_build(depth, torch.load(work / "raw.pt", weights_only=True, mmap=False))
            ),
        }
    hashed = _count_hashed_bytes()
    _touch_and_free(int(depth * (WIDTH * WIDTH + WIDTH) * 4 * 1.1))
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := RSS now
    before = _rss()
    cpu = _cpu_seconds()
    start = time.perf_counter()
    ops[case]()
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    peak = _peak_rss()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss": peak,
        "rss_before": before,
        "hashed_bytes": sum(hashed),
    }


def run_case(case: str, work: Path, depth: int) -> dict[str, Any]:
    # Each save writes a new file once the dirty pages of earlier ones are on disk: an
    # overwrite, or the writeback of an earlier save, can add seconds to a save on this VM.
    output = work / OUTPUTS.get(case, "-")
    if output.is_dir():
        shutil.rmtree(output)
    output.unlink(missing_ok=True)
    os.sync()
    cmd = [sys.executable, "-m", "benchmarks.bench_torch_save_load", "--child", case]
    cmd += ["--work", str(work), "--depth", str(depth)]
    env = {k: v for k, v in os.environ.items() if k != "MODELPACK_VERIFY"}
    env["MODELPACK_HOME"] = str(work / "home")  # its own verified-file cache
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def sha256_seconds(path: Path) -> float:
    from modelpack._fs import sha256_file

    start = time.perf_counter()
    sha256_file(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write the files (default: a tmp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.work), args.depth)))
        return

    depth = depth_for(args.size_gb)
    weights = depth * (WIDTH * WIDTH + WIDTH) * 4
    print(f"{depth} x Linear({WIDTH}, {WIDTH}) float32: {weights / 1e9:.2f} GB of weights")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.repeat} runs per case")
    print(f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n")
    work = Path(tempfile.mkdtemp(prefix="bench-torch-", dir=args.dir))
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in (*SAVES, *LOADS)}
    try:
        for _ in range(args.repeat):  # round robin, so a slow spell of the disk hits every case
            for case in runs:
                runs[case].append(run_case(case, work, depth))
        hash_s = sha256_seconds(work / "raw.safetensors")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        case: {
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "min_s": min(r["wall_s"] for r in rs),
            "cpu_s": statistics.median(r["cpu_s"] for r in rs),
            "peak_rss": max(r["peak_rss"] for r in rs),
            "rss_before": min(r["rss_before"] for r in rs),
            "hashed_bytes": max(r["hashed_bytes"] for r in rs),
        }
        for case, rs in runs.items()
    }

    print(
        "| case | wall s (median) | wall s (min) | wall vs safetensors | CPU s (median) "
        "| peak RSS GB | peak RSS / weights |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, cases in (("save", SAVES), ("load", LOADS)):
        base = results[BASELINE[kind]]["wall_s"]
        for case in cases:
            r = results[case]
            print(
                f"| {case} | {r['wall_s']:.2f} | {r['min_s']:.2f} | {r['wall_s'] / base:.2f}x "
                f"| {r['cpu_s']:.2f} | {r['peak_rss'] / 1e9:.2f} | {r['peak_rss'] / weights:.2f} |"
            )
    loads_before = results[BASELINE["load"]]["rss_before"] / 1e9
    saves_before = results[SAVES[1]]["rss_before"] / 1e9
    print(
        f"\nRSS before the timed operation: {loads_before:.2f} GB for loads (torch and modelpack "
        f"imported), {saves_before:.2f} GB for saves (the model built)."
    )
    print(f"sha256 of the weights, one thread (what the manifest costs): {hash_s:.2f} s")
    for case in LOADS[:2]:
        print(f"read to hash by {case}: {results[case]['hashed_bytes']:,} bytes (most of any run)")
    print(f"load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
