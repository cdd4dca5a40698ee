"""Start a live ``modelpack server`` in a subprocess for a test, and stop it after."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
_CLIENT_ENV = ("MODELPACK_TRACKING_URI", "MODELPACK_TRACKING_TOKEN")


@contextlib.contextmanager
def team_server(home: Path, *args: str, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A server over the store under ``home``; yields its base URL once it answers."""
    port = free_port()
    server_env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV}
    for name in ("MODELPACK_STORE_URI", "MODELPACK_ARTIFACT_URI"):
        server_env.pop(name, None)
    server_env.update({"MODELPACK_HOME": str(home), **(env or {})})
    log = open(home.parent / f"server-{port}.log", "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelpack",
            "server",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *args,
        ],
        cwd=ROOT,
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the server exited {proc.returncode}:\n{log.read().decode()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/v1/whoami", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
