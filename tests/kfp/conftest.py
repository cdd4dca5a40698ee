"""A venv with the kfp SDK for the Kubeflow Pipelines tests, cached outside the checkout.

kfp 2.17 cannot share the dev venv: it needs kubernetes<31 where modelpack pins 37.0.1. The
venv holds kfp, this checkout's modelpack (editable, without its dependencies) and modelpack's
core and sklearn requirements at the dev venv's versions, which the uv cache already holds. It
is built once per checkout, under a lock, and rebuilt when kfp's version or the requirements
change.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.conftest import ROOT, _run, _uv, _uv_offline_first

KFP = "kfp==2.17.3"
CACHE = Path("/var/cache/modelpack/kfp-venv")
# What kfp resolves to its own versions (kfp-server-api pins kubernetes<31): left unpinned.
KFP_OWN = {"kubernetes", "requests", "click-option-group"}


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["sklearn"]]


def _key(requirements: list[str]) -> str:
    seen = "\n".join([str(ROOT), sys.version, KFP, *requirements])
    return hashlib.sha256(seen.encode()).hexdigest()[:16]


def _build(venv: Path, requirements: list[str]) -> None:
    frozen = _run(_uv(), "pip", "freeze", "--python", sys.executable, "--exclude-editable")
    pins = [
        line
        for line in frozen.splitlines()
        if line.partition("==")[0].strip().lower() not in KFP_OWN
    ]
    constraints = venv.with_suffix(".constraints.txt")
    constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
    wanted = venv.with_suffix(".requirements.txt")
    wanted.write_text("\n".join([KFP, "pip", *requirements]) + "\n", encoding="utf-8")
    _run(_uv(), "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _uv_offline_first(
        "pip", "install", "--quiet", "--python", python, "-c", constraints, "-r", wanted
    )
    _uv_offline_first("pip", "install", "--quiet", "--python", python, "--no-deps", "-e", ROOT)


@pytest.fixture(scope="session")
def kfp_python() -> Path:
    """Python of the cached kfp venv (built when missing)."""
    requirements = _requirements()
    venv = CACHE / _key(requirements)
    done = venv / ".complete"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)  # a build that was interrupted
            _build(venv, requirements)
            done.touch()
    python = venv / "bin" / "python"
    subprocess.run([python, "-c", "import kfp, modelpack.kfp"], check=True, cwd=CACHE)
    return python
