"""Push, pull and load models through a real OCI registry (docker-registry on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelpack
from modelpack import oci
from modelpack._fs import walk_files
from modelpack.errors import (
    IntegrityError,
    InvalidInputError,
    ModelExistsError,
    ModelNotFoundError,
    ServerUnavailableError,
    UnsafePathError,
)
from modelpack.oci import _layout
from modelpack.oci._client import Registry
from tests.conftest import free_port
from tests.models import iris_like
from tests.oci.conftest import CuttingProxy, LocalRegistry, run_registry

ROOT = Path(__file__).resolve().parents[2]


def _repo() -> str:
    return f"models/m{uuid.uuid4().hex[:10]}"


def _same_files(a: Path, b: Path) -> None:
    assert walk_files(a) == walk_files(b)
    for rel in walk_files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def _manifest(registry: LocalRegistry, ref: str) -> dict[str, object]:
    with Registry(oci.parse(ref)) as client:
        body, _, _ = client.get_manifest()
    data: dict[str, object] = json.loads(body)
    return data


def test_push_twice_uploads_nothing_and_pull_by_tag_and_digest(
    registry: LocalRegistry, sklearn_model: Path, tmp_path: Path
) -> None:
    ref = registry.ref(_repo()) + ":v1"
    first = oci.push(sklearn_model, ref)
    assert first.uploaded == first.blobs > 3 and first.uploaded_bytes > 0
    again = oci.push(sklearn_model, ref)
    assert (again.uploaded, again.uploaded_bytes, again.digest) == (0, 0, first.digest)

    by_tag = oci.pull(ref, tmp_path / "by-tag")
    assert by_tag.digest == first.digest and by_tag.reference == first.reference
    _same_files(sklearn_model, by_tag.path)
    by_digest = oci.pull(
        f"{registry.ref(oci.parse(ref).repository)}@{first.digest}", tmp_path / "d"
    )
    _same_files(sklearn_model, by_digest.path)

    frame, _ = iris_like()
    numeric = frame[["length", "width", "count"]]
    expected = modelpack.load(sklearn_model).predict(numeric)
    np.testing.assert_array_equal(modelpack.load(by_digest.path).predict(numeric), expected)
    with pytest.raises(ModelExistsError):
        oci.pull(ref, tmp_path / "by-tag")


def test_the_artifact_follows_the_model_spec(registry: LocalRegistry, torch_model: Path) -> None:
    ref = registry.ref(_repo()) + ":spec"
    result = oci.push(torch_model, ref)
    manifest = _manifest(registry, ref)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    config_desc = manifest["config"]
    assert isinstance(config_desc, dict)
    assert config_desc["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    layers = manifest["layers"]
    assert isinstance(layers, list)
    kinds = {
        layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"] for layer in layers
    }
    assert kinds["model/weights.safetensors"] == "application/vnd.cncf.model.weight.v1.raw"
    assert kinds["modelpack.yaml"] == "application/vnd.cncf.model.weight.config.v1.raw"
    annotations = manifest["annotations"]
    assert isinstance(annotations, dict)
    assert annotations["org.modelpack.flavor"] == "torch"
    assert json.loads(annotations["org.modelpack.signature"])["inputs"]["type"] == "tensors"
    meta = (torch_model / "modelpack.yaml").read_bytes()
    assert annotations["org.modelpack.digest"] == "sha256:" + hashlib.sha256(meta).hexdigest()

    with Registry(oci.parse(ref)) as client:
        config = json.loads(client.request("GET", _blob(ref, config_desc)).body)
    assert config["modelfs"] == {"type": "layers", "diffIds": [layer["digest"] for layer in layers]}
    assert config["config"] == {"format": "pytorch", "precision": "fp32", "paramSize": "0.0K"}
    assert config["descriptor"]["name"] == oci.parse(ref).repository.rsplit("/", 1)[1]
    assert config["descriptor"]["version"] == "spec"
    assert result.digest == "sha256:" + hashlib.sha256(_raw_manifest(ref)).hexdigest()


def _blob(ref: str, desc: dict[str, object]) -> str:
    return f"/v2/{oci.parse(ref).repository}/blobs/{desc['digest']}"


def _raw_manifest(ref: str) -> bytes:
    with Registry(oci.parse(ref)) as client:
        return client.get_manifest()[0]


def test_shipped_code_is_one_reproducible_tar_layer(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    from tests.models import Doubler

    path = tmp_path / "py"
    modelpack.save(Doubler(), path, code_paths=[ROOT / "tests" / "models.py"])
    repo = registry.ref(_repo())
    first = oci.push(path, repo + ":a")
    assert oci.push(path, repo + ":a").digest == first.digest  # no clock in the artifact
    layers = _manifest(registry, repo + ":a")["layers"]
    assert isinstance(layers, list)
    code = [layer for layer in layers if layer["mediaType"] == _layout.CODE_TAR]
    assert len(code) == 1 and code[0]["annotations"]["org.cncf.model.filepath"] == "model/code"
    with tarfile.open(registry.blob_data(code[0]["digest"])) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members) == ["model/code/models.py"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "", 0o644)}
    pulled = oci.pull(repo + ":a", tmp_path / "pulled")
    _same_files(path, pulled.path)


def test_load_and_register_oci_uris_and_the_digest_cache(tmp_path: Path, torch_model: Path) -> None:
    from modelpack import registry as model_registry

    x = np.ones((4, 3), dtype=np.float32)
    expected = modelpack.load(torch_model).predict(x)
    with run_registry(tmp_path / "reg") as reg:
        result = oci.push(torch_model, reg.ref(_repo()) + ":v1")
        pinned = f"{reg.ref(oci.parse(result.reference).repository)}@{result.digest}"
        np.testing.assert_allclose(modelpack.load(pinned).predict(x), expected)
        by_tag = oci.resolve(result.reference.split("@")[0])
        assert by_tag == oci.cache_dir(result.digest)
        name = f"oci-{uuid.uuid4().hex[:8]}"
        version = model_registry.register(name, pinned)
    # The registry is gone: a digest already fetched needs no network at all.
    np.testing.assert_allclose(modelpack.load(pinned).predict(x), expected)
    loaded = modelpack.load(f"models:/{name}/{version.version}")
    np.testing.assert_allclose(loaded.predict(x), expected)
    with pytest.raises(ServerUnavailableError):
        modelpack.load(result.reference.split("@")[0])  # a tag must be looked up


def test_a_tampered_blob_is_refused_and_nothing_is_left(
    registry: LocalRegistry, torch_model: Path, tmp_path: Path
) -> None:
    ref = registry.ref(_repo()) + ":v1"
    result = oci.push(torch_model, ref)
    weights = (torch_model / "model" / "weights.safetensors").read_bytes()
    blob = registry.blob_data("sha256:" + hashlib.sha256(weights).hexdigest())
    blob.write_bytes(bytes([weights[0] ^ 1]) + weights[1:])  # same size, one bit off
    with pytest.raises(IntegrityError, match="does not match its descriptor"):
        oci.pull(ref, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(IntegrityError):
        modelpack.load(f"{registry.ref(oci.parse(ref).repository)}@{result.digest}")
    assert not oci.cache_dir(result.digest).exists()


def test_into_an_existing_empty_folder_as_a_volume_mount(
    registry: LocalRegistry, sklearn_model: Path, tmp_path: Path
) -> None:
    ref = registry.ref(_repo()) + ":v1"
    oci.push(sklearn_model, ref)
    volume = tmp_path / "volume"
    volume.mkdir()
    oci.pull(ref, volume)
    _same_files(sklearn_model, volume)


@pytest.fixture
def big_model(tmp_path: Path) -> Path:
    from tests.models import Doubler

    weights = tmp_path / "factor.bin"
    weights.write_bytes(os.urandom(4 << 20))
    path = tmp_path / "big"
    modelpack.save(Doubler(), path, artifacts={"factor": weights})
    return path


CHUNK = 1 << 20


def test_an_upload_cut_between_chunks_resumes_where_the_registry_stands(
    registry: LocalRegistry, big_model: Path, tmp_path: Path
) -> None:
    proxy = CuttingProxy(registry.host, cut_after=int(2.5 * CHUNK), at_request=b"PATCH ")
    try:
        ref = f"oci://{proxy.host}/{_repo()}:v1"
        result = oci.push(big_model, ref, chunk_size=CHUNK)
    finally:
        proxy.close()
    assert proxy.cuts == 1 and result.uploaded == result.blobs
    # Resumed from the registry's Range: the 2 MiB it held were not sent again (the proxy
    # counts what it dropped, at most one 64 KiB read, and the headers).
    total = sum((big_model / rel).stat().st_size for rel in walk_files(big_model))
    assert total < proxy.sent < total + CHUNK // 4
    pulled = oci.pull(registry.ref(oci.parse(ref).repository) + ":v1", tmp_path / "out")
    _same_files(big_model, pulled.path)


def test_the_next_push_resumes_an_upload_a_failed_push_left(
    registry: LocalRegistry, big_model: Path, tmp_path: Path
) -> None:
    repo = _repo()
    down = CuttingProxy(registry.host, int(2.5 * CHUNK), at_request=b"PATCH ", then_down=True)
    try:
        with pytest.raises(ServerUnavailableError):
            oci.push(big_model, f"oci://{down.host}/{repo}:v1", chunk_size=CHUNK)
    finally:
        down.close()
    # The registry is back at the same address: the next push (a new client, as a new
    # process would be) continues the upload from the location the failed one left.
    back = CuttingProxy(registry.host, cut_after=1 << 40, port=down.port)
    try:
        result = oci.push(big_model, f"oci://{back.host}/{repo}:v1", chunk_size=CHUNK)
    finally:
        back.close()
    total = sum((big_model / rel).stat().st_size for rel in walk_files(big_model))
    assert result.uploaded >= 1
    # The 4 MiB blob's first 2 MiB were not sent again (a restart would send all of it).
    assert back.sent < total - 2 * CHUNK + CHUNK // 4
    assert list((Path(os.environ["MODELPACK_HOME"]) / "cache/oci/uploads").glob("*.json")) == []
    pulled = oci.pull(registry.ref(repo) + ":v1", tmp_path / "out")
    _same_files(big_model, pulled.path)


def test_an_upload_cut_inside_a_chunk_starts_over_and_completes(
    registry: LocalRegistry, big_model: Path, tmp_path: Path
) -> None:
    # distribution 2.x refuses to resume an upload whose chunk was cut in the middle.
    proxy = CuttingProxy(registry.host, cut_after=int(2.5 * CHUNK))
    try:
        ref = f"oci://{proxy.host}/{_repo()}:v1"
        result = oci.push(big_model, ref, chunk_size=CHUNK)
    finally:
        proxy.close()
    assert proxy.cuts == 1 and result.uploaded == result.blobs
    pulled = oci.pull(registry.ref(oci.parse(ref).repository) + ":v1", tmp_path / "out")
    _same_files(big_model, pulled.path)


def test_user_mistakes_are_one_line_errors(registry: LocalRegistry, sklearn_model: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="tag 'nope' does not exist"):
        oci.pull(registry.ref("models/absent") + ":nope", "/nonexistent-target")
    with pytest.raises(ServerUnavailableError, match="cannot reach the registry"):
        oci.push(sklearn_model, f"oci://127.0.0.1:{free_port()}/a/b:v1")
    for bad in ("oci://host", "oci://h/UPPER:v1", "oci://h/a:bad tag", "oci://h/a@sha256:12"):
        with pytest.raises(InvalidInputError):
            oci.parse(bad)
    with pytest.raises(InvalidInputError, match="not a digest"):
        oci.push(sklearn_model, registry.ref("a/b") + "@sha256:" + "0" * 64)


def test_cli_push_pull_and_errors(
    registry: LocalRegistry, sklearn_model: Path, tmp_path: Path
) -> None:
    ref = registry.ref(_repo()) + ":cli"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "modelpack", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)

    pushed = run("push", str(sklearn_model), ref)
    assert pushed.returncode == 0, pushed.stderr
    pulled = run("pull", ref, str(tmp_path / "out"))
    assert pulled.returncode == 0, pulled.stderr
    digest = pushed.stdout.split("@")[1].split()[0]
    assert f"digest: {digest}" in pulled.stdout
    _same_files(sklearn_model, tmp_path / "out")
    missing = run("pull", registry.ref("x/y") + ":v9", str(tmp_path / "none"))
    assert missing.returncode != 0
    assert (
        missing.stderr.startswith("error [model_not_found]: ") and "Traceback" not in missing.stderr
    )
    assert len(missing.stderr.strip().splitlines()) == 1


class _RedirectingFront:
    """A registry front on its own port: manifests proxied, blobs redirected (307) to the
    registry itself, as registries backed by object storage send clients to a presigned URL."""

    def __init__(self, upstream: str) -> None:
        import http.client
        import http.server
        import threading

        front = self
        self.redirected: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if "/blobs/" in self.path:
                    front.redirected.append(self.path)
                    self.send_response(307)
                    self.send_header("Location", f"http://{upstream}{self.path}?signed=1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(upstream, timeout=10)
                conn.request("GET", self.path, headers={"Accept": self.headers["Accept"] or "*/*"})
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                self.send_response(resp.status)
                for key in ("Content-Type", "Docker-Content-Digest"):
                    if resp.getheader(key):
                        self.send_header(key, resp.getheader(key, ""))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_blob_redirects_are_followed(
    registry: LocalRegistry, sklearn_model: Path, tmp_path: Path
) -> None:
    repo = _repo()
    pushed = oci.push(sklearn_model, registry.ref(repo) + ":v1")
    front = _RedirectingFront(registry.host)
    try:
        pulled = oci.pull(f"oci://{front.host}/{repo}:v1", tmp_path / "out")
    finally:
        front.close()
    assert pulled.digest == pushed.digest
    assert len(front.redirected) == pushed.blobs  # the config and every layer
    _same_files(sklearn_model, pulled.path)


def _republish(ref: str, tag: str, edit: Any) -> str:
    """The manifest of ``ref`` changed by ``edit(manifest)`` and pushed as ``tag``: a hostile
    artifact made of the real one's blobs."""
    with Registry(oci.parse(ref)) as client:
        manifest = json.loads(client.get_manifest()[0])
        edit(manifest)
        client.put_manifest(json.dumps(manifest).encode(), tag)
    return ref.rsplit(":", 1)[0] + ":" + tag


@pytest.mark.parametrize("path", ["../escaped.txt", "/etc/escaped.txt", "model/../../escaped"])
def test_a_layer_path_that_leaves_the_folder_is_refused(
    registry: LocalRegistry, sklearn_model: Path, tmp_path: Path, path: str
) -> None:
    ref = registry.ref(_repo()) + ":v1"
    oci.push(sklearn_model, ref)

    def escape(manifest: dict[str, Any]) -> None:
        layer = manifest["layers"][0]
        layer["annotations"][_layout.FILEPATH] = path
        layer["annotations"].pop("org.opencontainers.image.title", None)

    hostile = _republish(ref, "hostile", escape)
    with pytest.raises(UnsafePathError):
        oci.pull(hostile, tmp_path / "out" / "model")
    assert list((tmp_path / "out").iterdir()) == []  # nothing pulled, nothing outside
    assert not (tmp_path / "escaped.txt").exists() and not Path("/etc/escaped.txt").exists()


@pytest.mark.parametrize("entry", ["symlink", "climbing"])
def test_a_code_tar_with_a_link_or_a_climbing_path_is_refused(
    registry: LocalRegistry, sklearn_model: Path, tmp_path: Path, entry: str
) -> None:
    ref = registry.ref(_repo()) + ":v1"
    oci.push(sklearn_model, ref)
    blob = tmp_path / "code.tar"
    with tarfile.open(blob, "w") as tar:
        if entry == "symlink":
            link = tarfile.TarInfo("model/code/link")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
        else:
            payload = tmp_path / "payload"
            payload.write_bytes(b"x")
            tar.add(payload, arcname="../../escaped")
    data = blob.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with Registry(oci.parse(ref)) as client:
        client.upload_blob(digest, len(data), blob, chunk_size=1 << 20)

    def add_code(manifest: dict[str, Any]) -> None:
        manifest["layers"].append(
            {"mediaType": _layout.CODE_TAR, "digest": digest, "size": len(data)}
        )

    hostile = _republish(ref, "hostile", add_code)
    with pytest.raises(UnsafePathError):
        oci.pull(hostile, tmp_path / "out" / "model")
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "escaped").exists()
