"""``--repository oci://HOST/NAMESPACE``: every model of a namespace of a real registry
(Debian's docker-registry on 127.0.0.1), at ``latest`` or the ``--alias`` tag; a non-model
artifact is UNAVAILABLE with its reason, a registry that refuses its catalog is one line."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from modelpack import oci
from modelpack.errors import AuthenticationError, InvalidInputError
from modelpack.oci._client import MANIFEST, Registry
from modelpack.servers.http import HttpServer
from servers.http._sources import ModelSources, Repository
from tests.oci.conftest import LocalRegistry, run_registry
from tests.servers import _multi_models
from tests.servers.conftest import ROOT, running, save_python, split_body

TRUST = ["tests.servers._multi_models.Constant"]
X = pd.DataFrame({"x": [1.0, 2.0]})
EMPTY = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY).hexdigest()


def _constant(root: Path, value: float) -> Path:
    return save_python(root / f"c{value}", _multi_models.Constant(value), X, value=value)


def _push_other_artifact(reference: str, scratch: Path) -> None:
    """An OCI artifact of another type (as oras pushes one, an SBOM say): no model."""
    ref = oci.parse(reference)
    blob = scratch / "empty.json"
    blob.write_bytes(EMPTY)
    with Registry(ref) as registry:
        registry.upload_blob(EMPTY_DIGEST, len(EMPTY), blob, chunk_size=1 << 20)
        empty = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST}
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": "application/vnd.example.sbom.v1",
            "config": {**empty, "size": 2},
            "layers": [{**empty, "size": 2}],
        }
        registry.put_manifest(json.dumps(manifest).encode(), ref.tag or "latest")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """ns/one (latest: 1, v2: 3), ns/two (latest: 2), ns/team/three (latest: 4), ns/sbom (not a
    model), and other/four outside the namespace."""
    root = tmp_path_factory.mktemp("oci-repo")
    with run_registry(root / "registry") as reg:
        oci.push(_constant(root, 1.0), reg.ref("ns/one:latest"))
        oci.push(_constant(root, 3.0), reg.ref("ns/one:v2"))
        oci.push(_constant(root, 2.0), reg.ref("ns/two:latest"))
        oci.push(_constant(root, 4.0), reg.ref("ns/team/three:latest"))
        oci.push(_constant(root, 5.0), reg.ref("other/four:latest"))
        _push_other_artifact(reg.ref("ns/sbom:latest"), root)
        yield reg


def serve_repo(source: str, **options: Any) -> Any:
    app = HttpServer().app_for_models({}, repository=source, trust=TRUST, **options)
    return running(app)


def rows(url: str) -> dict[str, dict[str, str]]:
    return {r["name"]: r for r in httpx.post(url + "/v2/repository/index").json()}


def predict(url: str, name: str) -> Any:
    answer = httpx.post(f"{url}/invocations/{name}", json=split_body(X))
    return answer.status_code, answer.json()


def test_every_model_of_the_namespace_serves_by_name(filled: LocalRegistry) -> None:
    with serve_repo(f"oci://{filled.host}/ns") as url:
        index = rows(url)
        assert set(index) == {"one", "two", "team.three", "sbom"}  # not other/four
        for name in ("one", "two", "team.three"):
            assert index[name]["state"] == "READY", index[name]
        assert predict(url, "one") == (200, {"predictions": [1.0, 1.0]})
        assert predict(url, "two") == (200, {"predictions": [2.0, 2.0]})
        assert predict(url, "team.three") == (200, {"predictions": [4.0, 4.0]})
        # The artifact of another type: unavailable with why; the others serve.
        assert index["sbom"]["state"] == "UNAVAILABLE"
        assert "is not a CNCF ModelPack model artifact" in index["sbom"]["reason"]
        assert "application/vnd.example.sbom.v1" in index["sbom"]["reason"]
        status, body = predict(url, "sbom")
        assert status == 503 and "not a CNCF ModelPack" in body["error"]["message"]


def test_alias_picks_the_tag_and_a_repository_without_it_is_left_out_with_a_warning(
    filled: LocalRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="modelpack.serve"):
        app = serve_repo(f"oci://{filled.host}/ns", repository_alias="v2")
    warnings = [r.getMessage() for r in caplog.records if "has no tag 'v2'" in r.getMessage()]
    assert sorted(w.split()[2] for w in warnings) == ["ns/sbom", "ns/team/three", "ns/two"]
    with app as url:
        assert set(rows(url)) == {"one"}
        assert predict(url, "one") == (200, {"predictions": [3.0, 3.0]})
        # Triton's load of a name the repository does not have (at that tag): a 404.
        assert httpx.post(url + "/v2/repository/models/two/load").status_code == 404


def test_filter_is_a_glob_on_the_model_names(filled: LocalRegistry) -> None:
    repo = Repository(f"oci://{filled.host}/ns/", filter="t*")
    assert repo.models() == {
        "team.three": f"oci://{filled.host}/ns/team/three:latest",
        "two": f"oci://{filled.host}/ns/two:latest",
    }
    assert repo.discover("one") is None  # filtered out
    assert Repository(f"oci://{filled.host}").models()["ns.one"].endswith("/ns/one:latest")


def test_bad_sources_are_one_line_errors(filled: LocalRegistry) -> None:
    with pytest.raises(InvalidInputError, match="without a tag or digest"):
        Repository(f"oci://{filled.host}/ns:v1").models()
    with pytest.raises(InvalidInputError, match="is not an OCI tag"):
        Repository(f"oci://{filled.host}/ns", alias="bad tag").models()
    follow = ModelSources({}, Repository(f"oci://{filled.host}/ns"), follow_aliases=True)
    with pytest.raises(InvalidInputError, match="--follow-aliases follows models:/"):
        follow.collect()
    # as the server is built from the CLI's options
    with pytest.raises(InvalidInputError, match="--follow-aliases follows models:/"):
        HttpServer().app_for_models(
            {}, repository=f"oci://{filled.host}/ns", trust=TRUST, follow_aliases=5.0
        )


def test_a_registry_that_refuses_its_catalog_is_one_line_that_suggests_m(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bcrypt = pytest.importorskip("bcrypt")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))  # no credentials
    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"alice:{hashed}\n", encoding="utf-8")
    with run_registry(tmp_path / "auth", htpasswd=htpasswd) as reg:
        source = f"oci://{reg.host}/ns"
        with pytest.raises(AuthenticationError, match="does not list its repositories") as exc:
            Repository(source).models()
        assert f"-m NAME=oci://{reg.host}/ns/REPO:TAG" in str(exc.value)
        done = subprocess.run(
            [sys.executable, "-m", "modelpack", "serve", "--repository", source],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert "does not list its repositories" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_the_catalog_and_the_tags_are_read_page_by_page(filled: LocalRegistry) -> None:
    everything = oci.list_repositories(filled.host)
    assert {"ns/one", "ns/two", "ns/team/three", "ns/sbom", "other/four"} <= set(everything)
    with Registry(oci.parse(filled.ref("ns/one"))) as registry:
        assert registry.repositories(page_size=2) == everything  # several Link: rel="next"
        assert sorted(registry.tags(page_size=1)) == ["latest", "v2"]
    assert oci.list_tags(filled.ref("ns/missing")) == []


def test_a_model_pushed_since_the_start_loads_by_name(
    filled: LocalRegistry, tmp_path: Path
) -> None:
    oci.push(_constant(tmp_path, 6.0), filled.ref("late/six:latest"))
    with serve_repo(f"oci://{filled.host}/late", repository_filter="s*") as url:
        assert set(rows(url)) == {"six"}
        oci.push(_constant(tmp_path, 7.0), filled.ref("late/seven:latest"))
        assert httpx.post(url + "/v2/repository/models/seven/load").status_code == 200
        assert predict(url, "seven") == (200, {"predictions": [7.0, 7.0]})
        assert rows(url)["seven"]["state"] == "READY"
