"""Hostile model directories (tests/security/_hostile.py) must not run code at load.

Every surface that loads a model is tried on every entry of the corpus: ``modelpack.load``,
the CLI commands, ``modelpack serve``, and a client of the team server. Each must refuse with
``untrusted_model`` (``integrity_error`` for a descriptor edited after save), in one line,
and leave no marker behind. ``trust=True`` must then run them: the proof that these tests
would see a regression.

The CLI commands run in one driver process (``python -m tests.security._hostile``) through
``modelpack.cli.main``, the console script's own entry point: a Python process spends seconds
importing scikit-learn here, and one process per command and entry would take minutes.
``serve`` runs as real processes, for one entry of each case.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import modelpack
from modelpack.errors import IntegrityError, UntrustedModelError
from tests.conftest import free_port
from tests.security import _hostile
from tests.security._hostile import BY_ID, CORPUS, MARKER_ENV, Corpus, Hostile

ROOT = Path(__file__).resolve().parents[2]
IN_PROCESS = [h for h in CORPUS if h.case in (1, 2, 3, 6)]  # 4, 5: the import is the attack
SKOPS = [h for h in CORPUS if h.case in (1, 2)]
SERVED = (
    "skops-numpy-runstring",
    "skops-pickle-numpy-load",
    "python-os-spawnv",
    "python-shipped-code",
    "torch-installed-module",
    "tampered-predict-method",
)
REGISTERED = ("skops-pickle-numpy-load", "python-shipped-code")
SERVE_WAIT_S = 60.0

pytestmark = pytest.mark.timeout(600)


def _ids(entries: list[Hostile]) -> list[Any]:
    return [pytest.param(h, id=h.id) for h in entries]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MODELPACK_TRUST", "MODELPACK_TRUST_PICKLE", MARKER_ENV)
        and k != "MODELPACK_TRACKING_URI"
    }
    return {**env, **extra}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return _hostile.build_corpus(tmp_path_factory.mktemp("hostile"))


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start_serve(corpus: Corpus, entry_id: str) -> dict[str, Any]:
    port = free_port()
    marker = corpus.root / "markers" / f"serve-{entry_id}.marker"
    pythonpath = os.pathsep.join([str(ROOT), *corpus.pythonpath(entry_id)])
    log = corpus.root / f"serve-{entry_id}.log"
    with open(log, "wb") as stderr:
        proc = _popen_serve(corpus, entry_id, port, marker, pythonpath, stderr)
    return {"proc": proc, "port": port, "marker": marker, "log": log}


def _popen_serve(
    corpus: Corpus, entry_id: str, port: int, marker: Path, pythonpath: str, stderr: Any
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "modelpack", "serve", str(corpus.built[entry_id].path)),
            *("--port", str(port), "--log-level", "warning"),
        ],
        cwd=ROOT,
        env=_clean_env(**{MARKER_ENV: str(marker), "PYTHONPATH": pythonpath}),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def _settle_serve(started: dict[str, Any], deadline: float) -> dict[str, Any]:
    proc: subprocess.Popen[bytes] = started["proc"]
    ready = False
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{started['port']}/health", timeout=1).is_success:
                ready = True
                break
        time.sleep(0.2)
    rc = proc.poll()
    if rc is None:
        proc.kill()
        proc.wait()
    time.sleep(0.3)
    return {
        "rc": rc,
        "ready": ready,
        "stderr": started["log"].read_text(errors="replace"),
        "marker": started["marker"].exists(),
    }


def _register(corpus: Corpus, url: str, home: Path) -> dict[str, str]:
    from modelpack import registry
    from modelpack._rest import close_all
    from modelpack.store import db

    uris = {}
    with _env(MODELPACK_TRACKING_URI=url, MODELPACK_HOME=str(home)):
        try:
            for entry_id in REGISTERED:
                name = f"hostile-{entry_id}"
                version = registry.register(name, corpus.built[entry_id].path)
                uris[entry_id] = f"models:/{name}/{version.version}"
        finally:
            close_all()
            db.dispose_all()
    return uris


@pytest.fixture(scope="module")
def surfaces(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every surface tried on every entry: serve processes, the team server, the driver."""
    from tests._team_server import team_server

    work = tmp_path_factory.mktemp("surfaces")
    inputs = {"json": str(work / "input.json"), "csv": str(work / "in.csv")}
    Path(inputs["json"]).write_text(
        json.dumps({"dataframe_records": [{"a": 0.0, "b": 1.0, "x": 1.0}]}), encoding="utf-8"
    )
    Path(inputs["csv"]).write_text("a,b,x\n0.0,1.0,1.0\n1.0,0.0,2.0\n", encoding="utf-8")
    served = {entry_id: _start_serve(corpus, entry_id) for entry_id in SERVED}
    started = time.monotonic()
    home = work / "server-home"
    home.mkdir()
    with team_server(home) as url:
        plan = {
            "root": str(work),
            "markers": str(work / "markers"),
            "inputs": inputs,
            "entries": {
                h.id: {"path": str(corpus.built[h.id].path), "pythonpath": corpus.pythonpath(h.id)}
                for h in CORPUS
            },
            "registry": _register(corpus, url, work / "client-home"),
            "tracking_uri": url,
        }
        (work / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
        driver = subprocess.run(
            [
                *(sys.executable, "-m", "tests.security._hostile"),
                *(str(work / "plan.json"), str(work / "out.json")),
            ],
            cwd=ROOT,
            env=_clean_env(MODELPACK_HOME=str(work / "driver-home")),
            capture_output=True,
            text=True,
            timeout=400,
        )
    assert driver.returncode == 0, driver.stderr[-4000:]
    deadline = started + SERVE_WAIT_S
    return {
        "driver": json.loads((work / "out.json").read_text(encoding="utf-8")),
        "serve": {k: _settle_serve(v, deadline) for k, v in served.items()},
    }


def _expected(entry: Hostile) -> tuple[type[Exception], str]:
    if entry.integrity:
        return IntegrityError, "integrity_error"
    return UntrustedModelError, "untrusted_model"


def _names_it(entry: Hostile, text: str) -> bool:
    return any(name in text for name in entry.names)


def _check_error_line(entry: Hostile, stderr: str, codes: tuple[str, ...]) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1, stderr
    assert [line for line in lines if not line.startswith(("error", "warning:"))] == [], stderr
    assert any(f"[{code}]" in errors[0] for code in codes), stderr
    if "[conversion_failed]" not in errors[0]:
        assert _names_it(entry, errors[0]), f"{entry.names} not named in: {errors[0]}"


# ---------------------------------------------------------------------------------------------
# the corpus is a real weapon


@pytest.mark.parametrize("entry", _ids(SKOPS))
def test_the_skops_files_run_their_payload_when_skops_trusts_them(
    entry: Hostile, corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import skops.io as sio

    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    file = corpus.built[entry.id].path / "model" / "model.skops"
    untrusted = sio.get_untrusted_types(file=file)
    assert sorted(untrusted) == sorted(entry.trust)
    with pytest.raises(Exception, match="Untrusted types found"):
        sio.load(file)  # skops itself refuses them without trust...
    assert not marker.exists()
    with contextlib.suppress(Exception):  # ...and runs them with it, whatever comes after
        sio.load(file, trusted=untrusted)
    assert marker.exists()


# ---------------------------------------------------------------------------------------------
# modelpack.load


@pytest.mark.parametrize("entry", _ids(IN_PROCESS))
def test_load_refuses(
    entry: Hostile, corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    monkeypatch.delenv("MODELPACK_TRUST", raising=False)
    monkeypatch.delenv("MODELPACK_TRUST_PICKLE", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    error, code = _expected(entry)
    try:
        with pytest.raises(error) as caught:
            modelpack.load(corpus.built[entry.id].path)
    finally:
        if entry.async_payload:
            time.sleep(0.5)
        assert not marker.exists(), "the payload ran"
    assert getattr(caught.value, "code", None) == code
    message = str(caught.value)
    assert "\n" not in message.strip(), message
    assert _names_it(entry, message), f"{entry.names} not named in: {message}"
    assert not [m for m in set(sys.modules) - before if m.split(".")[0] in entry.modules]


@pytest.mark.parametrize("entry", _ids(list(CORPUS)))
def test_load_refuses_in_a_fresh_process(entry: Hostile, surfaces: dict[str, Any]) -> None:
    result = surfaces["driver"][f"load/{entry.id}"]
    assert not result["marker"], "the payload ran"
    assert result["imported"] == [], f"hostile modules imported: {result['imported']}"
    error, code = _expected(entry)
    assert "error" in result, f"loaded: {result}"
    assert error.__name__ in result["error"]["mro"], result["error"]
    assert result["error"]["code"] == code
    message = result["error"]["message"]
    assert "\n" not in message.strip(), message
    assert _names_it(entry, message), f"{entry.names} not named in: {message}"


def test_trusting_other_names_is_not_trusting_these(
    corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    entry = BY_ID["skops-numpy-runstring"]
    with pytest.raises(UntrustedModelError, match="runstring"):
        modelpack.load(
            corpus.built[entry.id].path, trust=["numpy.testing._private.utils.assert_equal"]
        )
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# the CLI


@pytest.mark.parametrize("command", _hostile.CLI_COMMANDS)
@pytest.mark.parametrize("entry", _ids(list(CORPUS)))
def test_cli_refuses(entry: Hostile, command: str, surfaces: dict[str, Any]) -> None:
    result = surfaces["driver"][f"cli/{command}/{entry.id}"]
    assert not result["marker"], "the payload ran"
    assert result["imported"] == [], f"hostile modules imported: {result['imported']}"
    assert "error" not in result, result  # main() itself raised (driver bookkeeping)
    stderr, rc = result["stderr"], result["rc"]
    assert "Traceback" not in stderr, stderr
    _, code = _expected(entry)
    if command == "verify":
        if entry.integrity:
            assert rc == 1, result
            _check_error_line(entry, stderr, (code,))
        elif rc != 0:  # the files are intact; it may still say what they need
            _check_error_line(entry, stderr, ("untrusted_model",))
        return
    if command == "scan":
        assert rc == 1 if not entry.integrity else rc != 0, result
        if entry.integrity:
            _check_error_line(entry, stderr, (code,))
        else:
            assert _names_it(entry, result["stdout"] + stderr), result
        return
    assert rc == 2, result
    codes: tuple[str, ...] = (code,)
    if command == "convert" and entry.flavor == "python":
        codes = (code, "conversion_failed")  # not convertible: refused before any load
    _check_error_line(entry, stderr, codes)


@pytest.mark.parametrize("entry_id", SERVED)
def test_serve_refuses(entry_id: str, surfaces: dict[str, Any]) -> None:
    entry = BY_ID[entry_id]
    result = surfaces["serve"][entry_id]
    assert not result["marker"], "the payload ran"
    assert not result["ready"], "the server became ready with the model loaded"
    assert "Traceback" not in result["stderr"], result["stderr"]
    if result["rc"] is not None:
        assert result["rc"] != 0
        _, code = _expected(entry)
        errors = [line for line in result["stderr"].splitlines() if line.startswith("error")]
        assert len(errors) == 1 and f"[{code}]" in errors[0], result["stderr"]


# ---------------------------------------------------------------------------------------------
# through the team server


@pytest.mark.parametrize("entry_id", REGISTERED)
def test_a_registered_version_is_refused_by_clients(
    entry_id: str, surfaces: dict[str, Any]
) -> None:
    entry = BY_ID[entry_id]
    result = surfaces["driver"][f"registry/{entry_id}"]
    assert not result["marker"], "the payload ran"
    assert result["imported"] == [], f"hostile modules imported: {result['imported']}"
    assert "error" in result, f"loaded: {result}"
    assert "UntrustedModelError" in result["error"]["mro"], result["error"]
    assert result["error"]["code"] == "untrusted_model"
    assert _names_it(entry, result["error"]["message"]), result["error"]["message"]


# ---------------------------------------------------------------------------------------------
# trust given: the payloads do run (these tests would see a regression)


TRUSTED = [
    *(f"trust/{h.id}" for h in CORPUS if h.case in (3, 4) and h.runs_when_trusted),
    *(f"trust-list/{h.id}" for h in SKOPS),
    "trust-env/python-os-spawnv",
]


@pytest.mark.parametrize("key", TRUSTED)
def test_trust_runs_them(key: str, surfaces: dict[str, Any]) -> None:
    result = surfaces["driver"][key]
    assert result["marker"], f"trusted, and still not run: {result}"


@pytest.mark.parametrize("file", ["../../outside.skops", "/etc/passwd", "a/../../b.skops"])
def test_a_config_naming_a_file_outside_the_model_is_refused(tmp_path: Path, file: str) -> None:
    # A resealed descriptor could point the flavor at any file; none is read outside model/.
    import modelpack
    import modelpack.model
    from modelpack.errors import UnsafePathError
    from tests.security._hostile import _edit_config, _reseal, _save_sklearn

    path = _save_sklearn(tmp_path / "m")
    _edit_config(path, file=file)
    _reseal(path)
    with pytest.raises(UnsafePathError, match="file"):
        modelpack.load(path)
    with pytest.raises(UnsafePathError):
        modelpack.model.untrusted_needs(path)
