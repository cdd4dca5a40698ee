"""``--max-memory`` with models whose weights dominate: does the server stay within the budget?

    .venv/bin/python benchmarks/bench_memory_budget.py [--torch 16] [--hidden 2048]
        [--budget 0.3] [--duration 10] [--warmup 5] [--connections 16] [--zipf 1.1]

bench_many_models.py measures the budget on 50 small models (8.7 MB of files in all): there the
server's RSS over its base is mostly per-model bookkeeping, not weights. Here ``--torch`` MLPs of
64-HIDDEN-HIDDEN-1 (``--hidden 2048``: ~17 MB of float32 weights each) and two small
scikit-learn models make a repository whose files sum to far more than the budget
(``--budget``, a fraction of it): one ``modelpack serve --repository DIR --lazy --max-memory``,
the same Zipf mix and load generator as bench_many_models.py's part 2, the server's RSS sampled
every 0.2 s. The figure: peak RSS less the base (both libraries imported, the smallest model of
each kind loaded) against the budget; and the hit rate, the loads, and the latency of the
request that triggered a load. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _many_models_side as side
import bench_many_models as many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", type=int, default=16, help="torch models")
    parser.add_argument("--hidden", type=int, default=2048, help="their hidden width")
    parser.add_argument("--budget", type=float, default=0.3, help="--max-memory / files' total")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    side.HIDDEN = args.hidden  # side.torch_model reads it when it builds each model
    work = Path(tempfile.mkdtemp(prefix="bench-budget-"))
    try:
        prepared = many.prepare(work, 2, args.torch, None)
        budget_args = argparse.Namespace(
            budget=args.budget,
            budget_connections=args.connections,
            warmup=args.warmup,
            duration=args.duration,
            zipf=args.zipf,
        )
        out = many.part_budget(budget_args, prepared)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = 1e6
    over_base = out["peak_rss"] - out["base_rss"]  # MiB (many.memory)
    misses = out["miss_latency_ms"]
    print(
        f"\n{args.torch} torch MLPs 64-{args.hidden}-{args.hidden}-1 + 2 scikit-learn models: "
        f"{out['files_total'] / mb:.0f} MB of files, --max-memory {out['budget'] / mb:.0f} MB "
        f"({args.budget:.0%}); {args.connections} connections, Zipf s={args.zipf}, "
        f"{args.warmup:.0f} s to fill the cache, {args.duration:.0f} s measured"
    )
    print(
        f"RSS: base {out['base_rss']:.0f} MiB, peak {out['peak_rss']:.0f} MiB: "
        f"{over_base:.0f} MiB over the base for a budget of {out['budget'] / 2**20:.0f} MiB "
        f"({'within' if over_base * 2**20 <= out['budget'] else 'over'} it)"
    )
    print(
        f"{out['ok']} answered, {out['errors']} errors ({out['statuses']}), "
        f"{out['rps']:.0f} req/s, p50 {out['p50']:.1f} ms, p99 {out['p99']:.1f} ms; "
        f"{out['loads']} loads, {out['unloads']} unloads, hit rate {out['hit_rate']:.1%}"
    )
    print(
        f"of which mapped files (the torch models' safetensors weights): base "
        f"{out['base_file']:.0f} MiB, peak {out['peak_file']:.0f} MiB "
        f"({out['peak_file'] - out['base_file']:.0f} MiB over the base); anonymous: base "
        f"{out['base_anon']:.0f} MiB, peak {out['peak_anon']:.0f} MiB "
        f"({out['peak_anon'] - out['base_anon']:.0f} MiB over the base)"
    )
    if misses:
        p99 = misses[min(len(misses) - 1, int(0.99 * len(misses)))]
        print(
            f"request that triggered a load: p50 {statistics.median(misses):.0f} ms, "
            f"p99 {p99:.0f} ms"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
