from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.registry.conftest import save_small


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "modelpack", "registry", *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def test_register_alias_transition_history_json(store_uri, tmp_path):
    model = save_small(tmp_path / "m")
    out = cli("register", "it's", model, "--tag", "team=a", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["version"] == 1
    assert cli("set-alias", "it's", "champion", "1").returncode == 0
    out = cli("transition", "it's", "1", "Staging", "--comment", "ok", "--json")
    assert json.loads(out.stdout)[0]["stage"] == "Staging"
    events = json.loads(cli("history", "it's", "--json").stdout)
    assert [(e["from_stage"], e["to_stage"], e["comment"]) for e in events] == [
        (None, "Staging", "ok")
    ]
    table = cli("history", "it's").stdout
    assert "Staging" in table and "ok" in table
    found = json.loads(cli("search", "--filter", "alias = 'champion'", "--json").stdout)
    assert [v["name"] for v in found] == ["it's"]
    assert "it's" in cli("models", "list").stdout
    inspect = subprocess.run(
        [sys.executable, "-m", "modelpack", "inspect", "models:/it's@champion", "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert json.loads(inspect.stdout)["loader"] == "python"


def test_user_mistakes_are_one_line(store_uri):
    for args, code in [
        (("get", "nope", "1"), "model_not_found"),
        (("search", "--filter", "name = 'x"), "invalid_input"),
        (("register", "x", "/nonexistent"), "model_not_found"),
        (("set-tag", "x", "one", "k", "v"), "invalid_input"),
    ]:
        out = cli(*args)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(f"error [{code}]:") and out.stderr.count("\n") == 1
