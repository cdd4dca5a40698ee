"""Credentials against a registry with htpasswd (bcrypt) auth: flags, docker config, helpers."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from modelpack import oci
from modelpack.errors import AuthenticationError
from tests.oci.conftest import PASSWORD, USER, LocalRegistry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "docker"
    folder.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder / "config.json"


def _auths(host: str, user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {f"https://{host}": {"auth": token}}})


def test_no_or_wrong_credentials_say_what_was_tried(
    auth_registry: LocalRegistry, sklearn_model: Path, docker_config: Path
) -> None:
    ref = auth_registry.ref(f"private/m{uuid.uuid4().hex[:8]}") + ":v1"
    with pytest.raises(AuthenticationError, match="refused no credentials"):
        oci.push(sklearn_model, ref)
    docker_config.write_text(_auths(auth_registry.host, USER, "wrong"), encoding="utf-8")
    with pytest.raises(AuthenticationError, match=rf"{docker_config}.*user {USER}"):
        oci.push(sklearn_model, ref)
    with pytest.raises(AuthenticationError, match="--username bob"):
        oci.pull(ref, "/nonexistent-target", username="bob", password="nope")


def test_docker_config_auths_and_explicit_credentials(
    auth_registry: LocalRegistry, sklearn_model: Path, docker_config: Path, tmp_path: Path
) -> None:
    ref = auth_registry.ref(f"private/m{uuid.uuid4().hex[:8]}") + ":v1"
    pushed = oci.push(sklearn_model, ref, username=USER, password=PASSWORD)
    docker_config.write_text(_auths(auth_registry.host, USER, PASSWORD), encoding="utf-8")
    assert oci.pull(ref, tmp_path / "out").digest == pushed.digest
    assert oci.resolve(ref) == oci.cache_dir(pushed.digest)


def test_a_credential_helper_is_asked(
    auth_registry: LocalRegistry,
    sklearn_model: Path,
    docker_config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "asked"
    helper = bin_dir / "docker-credential-mptest"
    # The docker credential-helper protocol: `get`, the server on stdin, JSON on stdout.
    helper.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 1\ncat > {asked}\n'
        f'echo \'{{"ServerURL": "x", "Username": "{USER}", "Secret": "{PASSWORD}"}}\'\n',
        encoding="utf-8",
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    docker_config.write_text(
        json.dumps({"credHelpers": {auth_registry.host: "mptest"}}), encoding="utf-8"
    )
    ref = auth_registry.ref(f"private/m{uuid.uuid4().hex[:8]}") + ":v1"
    assert oci.push(sklearn_model, ref).uploaded > 0
    assert asked.read_text(encoding="utf-8").strip() == auth_registry.host
    docker_config.write_text(json.dumps({"credsStore": "absent-helper"}), encoding="utf-8")
    with pytest.raises(AuthenticationError, match="docker-credential-absent-helper.*not on PATH"):
        oci.pull(ref, tmp_path / "out")


def test_cli_password_stdin(
    auth_registry: LocalRegistry, sklearn_model: Path, docker_config: Path, tmp_path: Path
) -> None:
    ref = auth_registry.ref(f"private/m{uuid.uuid4().hex[:8]}") + ":v1"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "modelpack"]
    push = [*base, "push", str(sklearn_model), ref, "--username", USER, "--password-stdin"]
    done = subprocess.run(push, input=f"{PASSWORD}\n", capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    denied = subprocess.run(
        [*base, "pull", ref, str(tmp_path / "out")], capture_output=True, text=True, env=env
    )
    assert denied.returncode != 0
    assert denied.stderr.startswith("error [unauthenticated]: registry ")
    assert not (tmp_path / "out").exists()
