"""Every example runs as the README says (`make demo` runs the quickstart)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_the_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "MODELPACK_HOME": str(tmp_path / "home")}
    for key in ("MODELPACK_TRACKING_URI", "MODELPACK_STORE_URI", "MODELPACK_ARTIFACT_URI"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "registered:  quickstart-iris version 1, alias @champion" in out
    assert "deleted:     quickstart" in out
    predictions = next(line for line in out.splitlines() if line.startswith("predictions:"))
    expected = next(line for line in out.splitlines() if line.startswith("expected:"))
    assert predictions.split(":", 1)[1].strip() == expected.split(":", 1)[1].strip()
    assert "scored 200,000 of 200,000 rows" in out
