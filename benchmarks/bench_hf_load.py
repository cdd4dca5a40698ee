"""Load time of a BERT-base-sized HuggingFace model: ``modelpack.load`` vs ``from_pretrained``.

One BertModel with BERT-base's shape (random init from ``BertConfig()``, ~110M parameters,
~440 MB float32) is saved once with ``modelpack.save``; its ``model/`` folder is also a
``save_pretrained`` folder, so both sides read the very same files. Each case runs in a fresh
process that has already imported torch, transformers and modelpack; cases alternate in
rounds; the median wall time of load + one forward on a 2 x 16 batch is compared.

    .venv/bin/python -m benchmarks.bench_hf_load --rounds 5
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

CASES = ("modelpack.load + forward", "BertModel.from_pretrained + forward")

_CHILD = r"""
import json, sys, time
import numpy as np, torch
import modelpack, modelpack.flavors.torch
from transformers import BertModel
from transformers.utils import logging
logging.disable_progress_bar()
case, path = sys.argv[1], sys.argv[2]
ids = np.arange(32, dtype=np.int64).reshape(2, 16) % 1000
start = time.perf_counter()
if case == "modelpack":
    modelpack.load(path).predict({"input_ids": ids, "attention_mask": np.ones_like(ids)})
else:
    model = BertModel.from_pretrained(path + "/model", use_safetensors=True).eval()
    tokens = torch.from_numpy(ids)
    with torch.inference_mode():
        model(input_ids=tokens, attention_mask=torch.ones_like(tokens))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def _run(case: str, path: Path, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, case, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import torch
    from transformers import BertConfig, BertModel

    import modelpack
    import modelpack.flavors.torch

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench-hf-") as tmp:
        path = Path(tmp) / "bert-base"
        model = BertModel(BertConfig()).eval()
        started = time.perf_counter()
        modelpack.save(model, path)
        save_s = time.perf_counter() - started
        size = sum(f.stat().st_size for f in (path / "model").iterdir())
        env = {**os.environ, "MODELPACK_HOME": str(Path(tmp) / "home"), "HF_HUB_OFFLINE": "1"}
        _run("modelpack", path, env)  # the first load hashes the files once, as a server's would
        times: dict[str, list[float]] = {c: [] for c in CASES}
        for _ in range(args.rounds):
            times[CASES[0]].append(_run("modelpack", path, env))
            times[CASES[1]].append(_run("hf", path, env))
    base = statistics.median(times[CASES[1]])
    print(f"BertModel(BertConfig()): {size / 1e6:.0f} MB of weights, modelpack.save {save_s:.2f} s")
    print("| case | wall s (median) | wall s (min) | vs from_pretrained |")
    print("|---|---:|---:|---:|")
    for case in CASES:
        median = statistics.median(times[case])
        print(f"| {case} | {median:.2f} | {min(times[case]):.2f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
