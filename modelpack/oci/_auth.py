"""Registry credentials the way docker, podman and oras find them.

Explicit ``--username``/``--password-stdin`` first; else ``$DOCKER_CONFIG/config.json`` (or
``~/.docker/config.json``): a ``credHelpers`` entry for the host, an ``auths`` entry with a
base64 ``auth``, then the default ``credsStore``. A helper is ``docker-credential-NAME get``
with the host on stdin and ``{"Username", "Secret"}`` on stdout.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from modelpack.errors import AuthenticationError, InvalidInputError

HELPER_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str  # where they came from, for error messages (never the secret)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def config_path() -> Path:
    folder = os.environ.get("DOCKER_CONFIG")
    return (
        Path(folder).expanduser() / "config.json"
        if folder
        else Path.home() / ".docker" / "config.json"
    )


def find(host: str, username: str | None = None, password: str | None = None) -> Credentials | None:
    if username is not None or password is not None:
        if not username or password is None:
            raise InvalidInputError("give both a username and a password (--password-stdin)")
        return Credentials(username, password, f"--username {username}")
    path = config_path()
    config = _read_config(path)
    if not config:
        return None
    helper = (config.get("credHelpers") or {}).get(host)
    if helper:
        return _from_helper(str(helper), host)
    entry = _auth_entry(config.get("auths") or {}, host)
    if entry is not None:
        found = _from_entry(entry, host, path)
        if found is not None:
            return found
    store = config.get("credsStore")
    return _from_helper(str(store), host) if store else None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: expected a JSON object at the top level")
    return data


def _auth_entry(auths: dict[str, Any], host: str) -> dict[str, Any] | None:
    # Keys are written as "host", "https://host" or "https://host/v1/" by different tools.
    for key, entry in auths.items():
        bare = urlparse(key).netloc if "://" in key else key.split("/", 1)[0]
        if bare == host and isinstance(entry, dict):
            return entry
    return None


def _from_entry(entry: dict[str, Any], host: str, path: Path) -> Credentials | None:
    source = f"{path} (auths.{host})"
    if entry.get("auth"):
        try:
            user, sep, secret = base64.b64decode(str(entry["auth"])).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"{source}: 'auth' is not base64 of user:password") from exc
        if not sep:
            raise InvalidInputError(f"{source}: 'auth' is not base64 of user:password")
        return Credentials(user, secret, f"{source}, user {user}")
    if entry.get("username") and entry.get("password") is not None:
        user = str(entry["username"])
        return Credentials(user, str(entry["password"]), f"{source}, user {user}")
    return None


def _from_helper(name: str, host: str) -> Credentials | None:
    exe = shutil.which(f"docker-credential-{name}")
    source = f"credential helper docker-credential-{name}"
    if exe is None:
        raise AuthenticationError(
            f"{config_path()} names {source} for {host}, but it is not on PATH"
        )
    try:
        proc = subprocess.run(
            [exe, "get"],
            input=host,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthenticationError(f"{source} failed for {host}: {exc}") from exc
    if proc.returncode != 0:
        if "credentials not found" in (proc.stdout + proc.stderr).lower():
            return None
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise AuthenticationError(
            f"{source} failed for {host} (exit {proc.returncode}): {detail[0] if detail else ''}"
        )
    try:
        data = json.loads(proc.stdout)
        user, secret = str(data["Username"]), str(data["Secret"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise AuthenticationError(f"{source} answered no Username/Secret for {host}") from exc
    return Credentials(user, secret, f"{source}, user {user}")
