"""The team server itself: tokens and roles, resumable blobs, the OpenAPI document, bad input.

The registry and tracking suites run through a live server too (the "server" param of the
``store_uri`` fixture in tests/registry/conftest.py).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelpack import registry
from modelpack._rest import RestClient, close_all
from modelpack.errors import AuthenticationError, PermissionDeniedError
from modelpack.store import db
from tests._team_server import team_server
from tests.registry.conftest import save_small

ROOT = Path(__file__).resolve().parents[2]


def modelpack_cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_")}
    return subprocess.run(
        [sys.executable, "-m", "modelpack", *args],
        cwd=ROOT,
        env={**clean, "MODELPACK_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def client_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "client-home"))
    for name in ("MODELPACK_STORE_URI", "MODELPACK_ARTIFACT_URI", "MODELPACK_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield
    close_all()
    db.dispose_all()


@pytest.fixture
def server(tmp_path: Path, client_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    home = tmp_path / "home"
    home.mkdir()
    with team_server(home) as url:
        monkeypatch.setenv("MODELPACK_TRACKING_URI", url)
        yield url


@pytest.fixture
def secured(
    tmp_path: Path, client_env: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict[str, str]]]:
    """A server with --auth token, and one token per role (created with the CLI)."""
    home = tmp_path / "home"
    home.mkdir()
    tokens = {}
    for role in ("read", "write", "admin"):
        made = modelpack_cli("server", "token", "create", "--role", role, "--name", role, home=home)
        assert made.returncode == 0, made.stderr
        tokens[role] = made.stdout.strip()
        assert tokens[role].startswith("mpk_")
    with team_server(home, "--auth", "token") as url:
        monkeypatch.setenv("MODELPACK_TRACKING_URI", url)
        yield url, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_and_roles(secured, tmp_path, monkeypatch):
    url, tokens = secured
    api = f"{url}/api/v1"
    # Without a token: 401 everywhere but whoami, and the Python client raises it by class.
    answer = httpx.get(f"{api}/models")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthenticated"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert httpx.put(f"{api}/blobs/{'0' * 64}", content=b"x").status_code == 401
    assert httpx.get(f"{api}/models", headers=bearer("mpk_wrong")).status_code == 401
    assert httpx.get(f"{api}/whoami").json() == {"auth": "token", "role": None, "name": None}
    with pytest.raises(AuthenticationError, match="requires a token"):
        registry.search_models()

    # write: registers; the audit trail names the token, not what the client claims.
    monkeypatch.setenv("MODELPACK_TRACKING_TOKEN", tokens["write"])
    version = registry.register("m", save_small(tmp_path / "m"))
    registry.set_alias("m", "champion", version.version)
    registry.transition("m", 1, "Staging", comment="ok", user="someone-else")
    assert registry.history("m")[0].user == "write"
    with pytest.raises(PermissionDeniedError, match="needs 'admin'"):
        registry.delete_model("m")

    # read: sees everything, changes nothing.
    read = bearer(tokens["read"])
    assert httpx.get(f"{api}/whoami", headers=read).json()["role"] == "read"
    assert httpx.get(f"{api}/models/m", headers=read).json()["aliases"] == {"champion": 1}
    refused = [
        httpx.put(f"{api}/models/m/aliases/champion", json={"version": 1}, headers=read),
        httpx.delete(f"{api}/models/m/aliases/champion", headers=read),
        httpx.post(f"{api}/models/m/versions/1/stage", json={"stage": "Archived"}, headers=read),
        httpx.put(f"{api}/models/m/tags/k", json={"value": "v"}, headers=read),
        httpx.post(f"{api}/models", json={"name": "other"}, headers=read),
        httpx.delete(f"{api}/models/m", headers=read),
        httpx.put(f"{api}/blobs/{hashlib.sha256(b'x').hexdigest()}", content=b"x", headers=read),
        httpx.post(f"{api}/runs", json={"experiment": "e"}, headers=read),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert all(r.json()["error"]["code"] == "permission_denied" for r in refused)
    after = httpx.get(f"{api}/models/m", headers=read).json()
    assert (after["aliases"], after["tags"]) == ({"champion": 1}, {})
    assert httpx.get(f"{api}/models/m/versions/1", headers=read).json()["stage"] == "Staging"
    assert httpx.get(f"{api}/models", headers=read).json()["models"][0]["name"] == "m"

    # The CLI says it in one line and exits non-zero.
    cli = modelpack_cli(
        "registry",
        "set-alias",
        "m",
        "champion",
        "1",
        home=tmp_path / "cli-home",
        MODELPACK_TRACKING_URI=url,
        MODELPACK_TRACKING_TOKEN=tokens["read"],
    )
    assert cli.returncode == 2
    assert cli.stderr.startswith("error [permission_denied]: token 'read' has role 'read'")
    assert len(cli.stderr.strip().splitlines()) == 1

    # admin deletes.
    assert httpx.delete(f"{api}/models/m", headers=bearer(tokens["admin"])).status_code == 204
    assert httpx.get(f"{api}/models/m", headers=read).status_code == 404


def test_revoked_tokens_are_listed_and_refused(tmp_path, client_env):
    home = tmp_path / "home"
    home.mkdir()
    token = modelpack_cli("server", "token", "create", "--role", "read", home=home).stdout.strip()
    listed = modelpack_cli("server", "token", "list", home=home)
    assert "read" in listed.stdout and token not in listed.stdout
    assert modelpack_cli("server", "token", "revoke", "1", home=home).returncode == 0
    again = modelpack_cli("server", "token", "revoke", "1", home=home)
    assert again.returncode == 2 and "no active token with id 1" in again.stderr
    bad = modelpack_cli("server", "token", "create", "--role", "root", home=home)
    assert bad.returncode == 2 and "invalid role 'root'" in bad.stderr
    with team_server(home, "--auth", "token") as url:
        assert httpx.get(f"{url}/api/v1/models", headers=bearer(token)).status_code == 401


def test_uploads_resume_and_downloads_take_ranges(server, tmp_path):
    blobs = f"{server}/api/v1/blobs"
    data = os.urandom(3 << 20) + b"tail"
    sha = hashlib.sha256(data).hexdigest()
    half = len(data) // 2
    assert httpx.head(f"{blobs}/{sha}").headers["upload-offset"] == "0"

    first = httpx.put(
        f"{blobs}/{sha}",
        content=data[:half],
        headers={"Content-Range": f"bytes 0-{half - 1}/{len(data)}"},
    )
    assert first.status_code == 202 and first.headers["upload-offset"] == str(half)
    gap = httpx.head(f"{blobs}/{sha}")
    assert gap.status_code == 404 and gap.headers["upload-offset"] == str(half)
    wrong = httpx.put(
        f"{blobs}/{sha}",
        content=data[half + 10 :],
        headers={"Content-Range": f"bytes {half + 10}-{len(data) - 1}/{len(data)}"},
    )
    assert wrong.status_code == 409 and wrong.headers["upload-offset"] == str(half)

    # The Python client picks up where the upload stopped.
    source = tmp_path / "blob.bin"
    source.write_bytes(data)
    rest = RestClient(server)
    rest.upload_blob(source, sha)
    assert httpx.head(f"{blobs}/{sha}").status_code == 200
    stored = tmp_path / "home" / "artifacts" / "sha256" / sha[:2] / sha
    assert stored.read_bytes() == data

    ranged = httpx.get(f"{blobs}/{sha}", headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == data[100:200]
    assert httpx.get(f"{blobs}/{sha}").content == data

    # A partial download resumes with a Range request and is verified at the end.
    dest = tmp_path / "out.bin"
    (tmp_path / ".out.bin.part").write_bytes(data[:12345])
    rest.download_blob(sha, dest)
    rest.close()
    assert dest.read_bytes() == data and not (tmp_path / ".out.bin.part").exists()

    # Bytes that do not hash to the name are refused and not stored.
    fake = hashlib.sha256(b"other").hexdigest()
    refused = httpx.put(f"{blobs}/{fake}", content=b"not other")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "integrity_error"
    assert httpx.head(f"{blobs}/{fake}").headers["upload-offset"] == "0"
    assert httpx.put(f"{blobs}/not-a-sha", content=b"x").status_code == 400


def test_openapi_documents_every_route(server):
    from modelpack.teamserver._api import ROUTES

    spec = httpx.get(f"{server}/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    for route in ROUTES:
        assert (route.method, f"/api/v1{route.path}") in documented
    for method in ("GET", "HEAD", "PUT"):
        assert (method, "/api/v1/blobs/{sha256}") in documented
    # Each documented GET without path parameters answers (no route is documented but missing).
    for method, path in documented:
        if method == "GET" and "{" not in path:
            assert httpx.get(f"{server}{path}").status_code == 200, path


def test_bad_requests_are_one_line_json_errors(server):
    api = f"{server}/api/v1"
    cases = [
        (httpx.post(f"{api}/models", content=b"{not json"), 400, "invalid_input"),
        (httpx.post(f"{api}/models", json=[1, 2]), 400, "invalid_input"),
        (httpx.post(f"{api}/models", json={"name": 3}), 400, "invalid_input"),
        (httpx.post(f"{api}/models", json={}), 400, "invalid_input"),
        (httpx.get(f"{api}/models/nope"), 404, "model_not_found"),
        (httpx.get(f"{api}/runs/{'a' * 32}"), 404, "run_not_found"),
        (httpx.get(f"{api}/versions", params={"filter": "name ="}), 400, "invalid_input"),
        (httpx.get(f"{api}/versions", params={"max_results": "lots"}), 400, "invalid_input"),
        (httpx.post(f"{api}/metrics", json={"metrics": [["r", "k"]]}), 400, "invalid_input"),
        (httpx.post(f"{api}/runs", json={"experiment": "e", "id": "x"}), 400, "invalid_input"),
        (httpx.get(f"{api}/nothing-here"), 404, "not_found"),
        (httpx.delete(f"{api}/versions"), 405, "method_not_allowed"),
    ]
    for answer, status, code in cases:
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert error["code"] == code and "\n" not in error["message"], error
    assert "metrics[0]" in cases[8][0].json()["error"]["message"]
    # Metrics for an unknown run are refused as a whole: nothing half-written.
    answer = httpx.post(f"{api}/metrics", json={"metrics": [["f" * 32, "k", 1.0, 0, 1]]})
    assert answer.status_code == 404


def test_an_unreachable_server_is_one_line(tmp_path):
    from tests.conftest import free_port

    cli = modelpack_cli(
        "registry",
        "models",
        "list",
        home=tmp_path,
        MODELPACK_TRACKING_URI=f"http://127.0.0.1:{free_port()}",
    )
    assert cli.returncode == 2, cli.stderr
    assert cli.stderr.startswith("error [server_unavailable]: cannot reach the tracking server")
    bad = modelpack_cli(
        "registry", "models", "list", home=tmp_path, MODELPACK_TRACKING_URI="ftp://x"
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error [invalid_input]: invalid")


def test_set_tracking_uri_switches_in_process(server, tmp_path, monkeypatch):
    import modelpack
    from modelpack import _rest
    from modelpack._rest import get_tracking_uri, set_tracking_uri

    monkeypatch.delenv("MODELPACK_TRACKING_URI")
    # set_tracking_uri(None) pins the embedded store whatever the environment says: put the
    # "never set" state back afterwards, or every later [server] test silently runs embedded.
    monkeypatch.setattr(_rest, "_override", _rest._UNSET)
    assert get_tracking_uri() is None
    set_tracking_uri(server)
    try:
        with modelpack.start_run(experiment="switched") as run:
            modelpack.log_metric("loss", 0.5, step=1)
        answer = httpx.get(f"{server}/api/v1/runs/{run.id}").json()
        assert answer["experiment"] == "switched" and answer["metrics"] == {"loss": 0.5}
    finally:
        set_tracking_uri(None)
    assert not (tmp_path / "client-home" / "modelpack.db").exists()


def test_cors_is_off_unless_an_origin_is_given(tmp_path, client_env):
    preflight = {
        "Origin": "https://ui.example",
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization",
    }
    home = tmp_path / "home"
    home.mkdir()
    with team_server(home) as url:
        answer = httpx.get(f"{url}/api/v1/models", headers={"Origin": "https://ui.example"})
        assert "access-control-allow-origin" not in answer.headers
        assert httpx.options(f"{url}/api/v1/models", headers=preflight).status_code == 405
    with team_server(home, "--cors-origin", "https://ui.example") as url:
        answer = httpx.options(f"{url}/api/v1/models", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://ui.example"
        other = httpx.get(f"{url}/api/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_the_old_module_name_still_works_for_one_release() -> None:
    import importlib
    import sys

    sys.modules.pop("modelpack.server", None)
    with pytest.warns(DeprecationWarning, match="modelpack.teamserver"):
        old = importlib.import_module("modelpack.server")
    from modelpack.teamserver import create_app

    assert old.create_app is create_app
