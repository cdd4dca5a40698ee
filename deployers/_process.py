"""Detached server processes and their state files, for the deployers that run on this machine.

A deployment's state is one JSON file, replaced atomically, so a reader (``get``, a client
following the endpoint) sees either the old or the new state, never half of one. Mutations hold
an exclusive ``flock`` on a lock file beside it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from modelpack._fs import atomic_write_bytes
from modelpack.errors import DeploymentError

HOME_ENV = "MODELPACK_HOME"
STOP_GRACE_S = 10.0

# Children started by this process, so that their exit is reaped (no zombies in a long-lived
# caller) and a Popen is never collected while its child runs.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".modelpack").expanduser()


# -- state -----------------------------------------------------------------------------------


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        state: dict[str, Any] = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DeploymentError(f"the state file {path} is corrupt ({exc}); delete it") from exc
    return state


def write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, orjson.dumps(state, option=orjson.OPT_INDENT_2) + b"\n")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# -- ports -----------------------------------------------------------------------------------


def free_port(host: str) -> int:
    with socket.socket(_family(host)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    with socket.socket(_family(host)) as s:
        # The server sets SO_REUSEADDR too: a port in TIME_WAIT is free for it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise DeploymentError(
                    f"port {port} on {host} is in use; choose another with -C port=N "
                    "or leave it out to get a free one"
                ) from None
            raise DeploymentError(f"cannot bind {host}:{port}: {exc.strerror}") from None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# -- processes -------------------------------------------------------------------------------


def spawn(args: Sequence[str], log_file: Path, cwd: Path) -> tuple[int, str | None]:
    """Start ``args`` detached (own session, stdin closed, output to ``log_file``).

    Returns its PID and its start time (to tell it from a later process with the same PID).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(args),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid, start_time(proc.pid)


def start_time(pid: int) -> str | None:
    # Field 22 of /proc/PID/stat: start time in clock ticks since boot (Linux only).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int, started: str | None = None) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: ours ended and its PID was reused
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    return started is None or fields[19] == started


def stop(pid: int, started: str | None = None, *, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group of ``pid``, SIGKILL it after ``grace`` seconds."""
    if not alive(pid, started):
        _CHILDREN.pop(pid, None)
        return
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid, started) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid, started):
        _signal_group(pid, signal.SIGKILL)
        while alive(pid, started):
            time.sleep(0.05)
    _CHILDREN.pop(pid, None)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The server leads its own session: the group holds uvicorn's worker processes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


# -- HTTP ------------------------------------------------------------------------------------


def ping(endpoint: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/ping", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def get_json(url: str, timeout: float = 2.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return orjson.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def post_json(url: str, body: bytes, timeout: float) -> Any:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise DeploymentError(f"{url} answered {exc.code}: {_error_message(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeploymentError(f"cannot reach {url}: {reason}") from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        error = orjson.loads(exc.read())["error"]
        return f"[{error['code']}] {error['message']}"
    except (orjson.JSONDecodeError, KeyError, TypeError, OSError):
        return str(exc.reason)
