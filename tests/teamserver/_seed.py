"""Seed a MODELPACK_HOME with runs, a registered model and its history for the UI tests.

Run as ``python -m tests.teamserver._seed HOME`` from the repository root; it prints the run ids
as JSON. The store is written in a process of its own, so the test process holds no engine on
the server's database.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pandas as pd

RUNS = {
    "run-a": {"lr": 0.01, "depth": 3, "rate": 0.15},
    "run-b": {"lr": 0.1, "depth": 5, "rate": 0.3},
}
STEPS = 20


def seed(home: Path) -> dict[str, str]:
    """Write the demo data under ``home``; return the run ids by run name."""
    os.environ["MODELPACK_HOME"] = str(home)
    for name in ("MODELPACK_STORE_URI", "MODELPACK_TRACKING_URI", "MODELPACK_ARTIFACT_URI"):
        os.environ.pop(name, None)

    import modelpack.registry as r
    import modelpack.tracking as t
    from modelpack.store import db
    from tests.models import Doubler

    run_ids: dict[str, str] = {}
    try:
        for run_name, spec in RUNS.items():
            # The note is markup on purpose: the UI must show it as text.
            tags = {"team": "vision", "note": f"<b>{run_name}</b>"}
            with t.start_run(experiment="demo", run_name=run_name, tags=tags) as run:
                t.log_params({"lr": spec["lr"], "depth": spec["depth"]})
                for step in range(STEPS):
                    decay = math.exp(-spec["rate"] * step)
                    t.log_metric("loss", 0.1 + 0.9 * decay, step=step)
                    t.log_metric("accuracy", 0.95 - 0.5 * decay, step=step)
                if run_name == "run-a":
                    t.log_model(Doubler(), input_example=pd.DataFrame({"x": [1.0, 2.0]}))
                run_ids[run_name] = run.id
        uri = f"runs:/{run_ids['run-a']}/model"
        r.register("demo-model", uri, description="Doubles its input.")
        r.register("demo-model", uri, parent=("demo-model", 1))
        r.update_model("demo-model", description="A tiny model for the UI tests.")
        r.set_alias("demo-model", "champion", 1)
        r.transition("demo-model", 1, "Staging", comment="first", user="seed")
    finally:
        db.dispose_all()
    return run_ids


if __name__ == "__main__":
    print(json.dumps(seed(Path(sys.argv[1]))))
