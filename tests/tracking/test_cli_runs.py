from __future__ import annotations

import json
import os
import subprocess
import sys

import modelpack


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "modelpack", "runs", *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def test_runs_list_show_compare(home):
    ids = []
    for lr in (0.1, 0.2):
        with modelpack.start_run(experiment="cli", run_name=f"lr{lr}") as run:
            modelpack.log_params({"lr": lr, "epochs": 3})
            modelpack.log_metric("loss", 1.0, step=0)
            modelpack.log_metric("loss", lr, step=1)
        ids.append(run.id)
    with modelpack.start_run(experiment="other"):
        pass

    listed = json.loads(cli("list", "--experiment", "cli", "--json").stdout)
    assert [r["id"] for r in listed] == ids[::-1]
    table = cli("list").stdout
    assert "lr0.1" in table and "other" in table and "FINISHED" in table

    shown = json.loads(cli("show", ids[0], "--json").stdout)
    assert shown["params"] == {"epochs": "3", "lr": "0.1"} and shown["metrics"] == {"loss": 0.1}
    assert "loss" in cli("show", ids[0]).stdout

    compared = json.loads(cli("compare", *ids, "--json").stdout)
    assert [r["metrics"]["loss"] for r in compared["runs"]] == [0.1, 0.2]
    table = cli("compare", *ids).stdout
    assert "param lr *" in table and "param epochs " in table and "0.2" in table

    missing = cli("show", "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error [run_not_found]: no run with id 'nope'"
