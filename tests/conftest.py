from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIRDPARTY_FIXTURE = ROOT / "tests" / "fixtures" / "thirdparty_flavor"
THIRDPARTY_DEPLOYER = ROOT / "tests" / "fixtures" / "thirdparty_deployer"

# What the wheel is built from: the repository less what is not part of the distribution.
_NOT_BUILT = {".git", ".venv", "build", "dist", "tests", "benchmarks", "examples", "docs", ".ci"}
_JUNK = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*_cache")
_FIXTURE_JUNK = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")


@pytest.fixture(scope="session", autouse=True)
def _own_modelpack_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never touch the user's ~/.modelpack: a session-wide home unless a test sets one."""
    if os.environ.get("MODELPACK_HOME"):
        yield
        return
    os.environ["MODELPACK_HOME"] = str(tmp_path_factory.mktemp("modelpack-home"))
    try:
        yield
    finally:
        os.environ.pop("MODELPACK_HOME", None)


class CommandError(RuntimeError):
    pass


def _uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.fail("uv is not installed in the test environment; run `make venv`")
    return found


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise CommandError(
            f"{' '.join(proc.args)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
        )
    return proc.stdout


def _uv_offline_first(*args: str | Path) -> None:
    # The uv cache normally holds everything: offline takes seconds and needs no network.
    try:
        _run(_uv(), *args, "--offline")
    except CommandError:
        _run(_uv(), *args)


def _copy_project(dest: Path) -> Path:
    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = set(_JUNK(directory, names))
        if Path(directory) == ROOT:
            skipped |= _NOT_BUILT & set(names)
        return skipped

    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def build_thirdparty_venv(base: Path) -> Path:
    """A fresh venv with the built modelpack wheel (core deps) and the third-party fixtures.

    Both are built from copies, so the build writes nothing into the checkout; dependencies are
    pinned to the dev venv's versions, which the uv cache already holds.
    """
    wheels = base / "dist"
    _uv_offline_first("build", "--wheel", "--out-dir", wheels, _copy_project(base / "src"))
    [wheel] = wheels.glob("modelpack-*.whl")
    constraints = base / "constraints.txt"
    frozen = _run(_uv(), "pip", "freeze", "--python", sys.executable, "--exclude-editable")
    constraints.write_text(frozen, encoding="utf-8")
    thirdparty = shutil.copytree(THIRDPARTY_FIXTURE, base / "thirdparty", ignore=_FIXTURE_JUNK)
    deployer = shutil.copytree(THIRDPARTY_DEPLOYER, base / "deployer", ignore=_FIXTURE_JUNK)
    venv = base / "venv"
    _run(_uv(), "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _uv_offline_first(
        "pip",
        "install",
        "--quiet",
        "--python",
        python,
        "-c",
        constraints,
        wheel,
        thirdparty,
        deployer,
    )
    return python


@pytest.fixture(scope="session")
def thirdparty_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python of a fresh venv holding the built wheel and the third-party fixture plugins."""
    return build_thirdparty_venv(tmp_path_factory.mktemp("thirdparty_venv"))


@pytest.fixture(scope="session")
def run_in_venv(
    thirdparty_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., str]:
    """Run a Python snippet in the third-party venv, outside the checkout, and return stdout."""
    cwd = tmp_path_factory.mktemp("venv_cwd")  # the checkout's modelpack/ must not shadow it

    def run(code: str, *args: str) -> str:
        return _run(thirdparty_venv, "-c", code, *args, cwd=cwd)

    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def skip_or_fail(reason: str) -> None:
    """Skip a test whose tool is missing here; on CI (``CI`` set) a missing tool is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server (S3, STS, ECR, SageMaker...) on 127.0.0.1; point AWS_ENDPOINT_URL at it."""
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if exe is None:
        skip_or_fail("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


# The classes the suite's own python and torch models are made of. A test about serving,
# batching or the registry grants them as a user would (MODELPACK_TRUST, exact names): loading
# a user's class is code that only runs when trusted (tests/security covers the refusals).
TEST_MODEL_CLASSES = (
    "tests.models.Doubler",
    *(
        f"tests.flavors.torch_models.{name}"
        for name in (
            "MLP",
            "Opaque",
            "TwoInputs",
            "DictOutput",
            "TiedLM",
            "WithBuffers",
            "MetaHostile",
            "PlainTensorAttribute",
        )
    ),
    "tests.servers._models.RowEcho",
    "tests.servers._models.Slow",
    "tests.servers._models.Words",
    "tests.batch._models.SlowScaler",
    "tests.batch._models.TwoOutputs",
    "tests.flavors.sklearn_models.MeanRegressor",
    "tests.test_convert._Doubler",
    "tests.tracking.test_hooks._Const",
    "tests.tracking.test_lightning.TinyModule",
)


@pytest.fixture(scope="session", autouse=True)
def _trust_test_models() -> Iterator[None]:
    """Trust exactly the suite's model classes, through MODELPACK_TRUST (child processes too).

    Tests of the refusals take it away (``monkeypatch.delenv("MODELPACK_TRUST")``).
    """
    previous = os.environ.get("MODELPACK_TRUST")
    os.environ["MODELPACK_TRUST"] = ",".join(TEST_MODEL_CLASSES)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MODELPACK_TRUST", None)
        else:
            os.environ["MODELPACK_TRUST"] = previous
