"""Real MLflow, in its own venv (never in .venv): built once, shared by every pytest process.

``/var/cache/modelpack/mlflow-venv`` holds mlflow 3.17 and the libraries of the flavors tested,
built with uv from the same versions as .venv (so uv's cache serves them) under a lock file.
What MLflow saves there (models, a SQLite store) is cached beside it, keyed by the script that
saves them and the venv's packages: a change to either builds them again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail

CACHE = Path(os.environ.get("MODELPACK_MLFLOW_CACHE", "/var/cache/modelpack"))
VENV = CACHE / "mlflow-venv"
SIDE = Path(__file__).with_name("mlflow_side.py")
UV = Path(sys.executable).with_name("uv")
# The same versions as .venv where both have them, so uv links them from its cache.
PACKAGES = (
    "mlflow==3.17.2",
    "scikit-learn==1.9.1",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "skops==0.16.0",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "xgboost==3.2.0",
    "lightgbm==4.7.0",
    "catboost==1.2.10",
    "cloudpickle==3.1.3",
    "keras==3.15.1",
    "transformers==5.25.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "huggingface-hub==2.4.0",
    "torch==2.13.0+cpu",  # from /opt/wheels: never another torch spec (the CUDA build is GBs)
)
SPEC = hashlib.sha256("\n".join(PACKAGES).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process building it waits here
        yield


def _say(message: str) -> None:
    print(f"[mlflow venv] {message}", file=sys.stderr, flush=True)


def _build_venv() -> None:
    # Built in place (a venv's scripts hold its absolute path); the marker, written last, says
    # it is complete.
    shutil.rmtree(VENV, ignore_errors=True)
    started = time.monotonic()
    _say(f"building {VENV} with uv ({len(PACKAGES)} packages)...")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    for args in (
        [str(UV), "venv", "-q", "--python", sys.executable, str(VENV)],
        [
            str(UV), "pip", "install", "-q", "--python", str(VENV / "bin" / "python"),
            "--find-links", "/opt/wheels", *PACKAGES,
        ],
    ):  # fmt: skip
        proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            skip_or_fail(f"cannot build the MLflow venv: {proc.stderr.strip()[-500:]}")
    (VENV / "modelpack-spec").write_text(SPEC)
    _say(f"built in {time.monotonic() - started:.1f}s")


def _venv_ready() -> bool:
    marker = VENV / "modelpack-spec"
    return marker.is_file() and marker.read_text() == SPEC


@pytest.fixture(scope="session")
def mlflow_python() -> Path:
    """The MLflow venv's python (built when missing or when PACKAGES changed)."""
    if not UV.is_file():
        skip_or_fail(f"uv is not installed beside {sys.executable}")
    with _locked("mlflow-venv"):
        if not _venv_ready():
            _build_venv()
    return VENV / "bin" / "python"


def run_side(python: Path, *args: str | Path, timeout: float = 600, script: Path = SIDE) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    proc = subprocess.run(
        [str(python), str(script), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"MLflow side {args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


def _saved(python: Path, command: str) -> Path:
    """What ``mlflow_side.py COMMAND`` saves, cached by the script's and the venv's content."""
    key = hashlib.sha256(SIDE.read_bytes() + SPEC.encode()).hexdigest()[:16]
    target = CACHE / f"mlflow-{command}-{key}"
    with _locked(f"mlflow-{command}"):
        for stale in CACHE.glob(f"mlflow-{command}-*"):
            if stale != target:  # saved by an older script or venv
                shutil.rmtree(stale, ignore_errors=True)
        if not (target / ".complete").is_file():
            shutil.rmtree(target, ignore_errors=True)
            started = time.monotonic()
            _say(f"saving {command} with MLflow into {target}...")
            run_side(python, command, target)
            (target / ".complete").write_text("")
            _say(f"saved {command} in {time.monotonic() - started:.1f}s")
    return target


@pytest.fixture(scope="session")
def mlflow_models(mlflow_python: Path) -> Path:
    """One MLflow model directory per flavor, each with MLflow's predictions (expected.json)."""
    return _saved(mlflow_python, "models")


@pytest.fixture(scope="session")
def mlflow_store(mlflow_python: Path) -> dict[str, object]:
    """A real MLflow SQLite store: registered models, versions, aliases, tags, descriptions."""
    root = _saved(mlflow_python, "store")
    ids = json.loads((root / "store.json").read_text())
    return {"root": root, "uri": f"sqlite:///{root / 'mlflow.db'}", **ids}


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty modelpack home: its own registry and artifact store."""
    home = tmp_path / "home"
    monkeypatch.setenv("MODELPACK_HOME", str(home))
    monkeypatch.delenv("MODELPACK_STORE_URI", raising=False)
    monkeypatch.delenv("MODELPACK_TRACKING_URI", raising=False)
    return home
