"""Real OCI registries on 127.0.0.1 (Debian's docker-registry), with and without htpasswd auth,
the models pushed to them, and a TCP proxy that can drop a connection mid-upload."""

from __future__ import annotations

import contextlib
import http.client
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import free_port, skip_or_fail

USER, PASSWORD = "alice", "s3cret-pass"


@dataclass(frozen=True)
class LocalRegistry:
    host: str  # 127.0.0.1:PORT
    storage: Path

    def ref(self, repo: str) -> str:
        return f"oci://{self.host}/{repo}"

    def blob_data(self, digest: str) -> Path:
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def _wait_ready(host: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"docker-registry exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection(host, timeout=1)
            try:
                conn.request("GET", "/v2/")
                if conn.getresponse().status in (200, 401):
                    return
            finally:
                conn.close()
        time.sleep(0.05)
    pytest.fail("docker-registry did not start within 30 s")


@contextlib.contextmanager
def run_registry(
    root: Path, *, htpasswd: Path | None = None, auth: str = ""
) -> Iterator[LocalRegistry]:
    exe = shutil.which("docker-registry")
    if exe is None:
        skip_or_fail(
            "the OCI tests need Debian's docker-registry (apt-get install docker-registry)"
        )
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    if htpasswd:
        auth = f"auth:\n  htpasswd:\n    realm: modelpack-test\n    path: {htpasswd}\n"
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [str(exe), "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    host = f"127.0.0.1:{port}"
    try:
        _wait_ready(host, proc)
        yield LocalRegistry(host, root / "data")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="package")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with run_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="package")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    bcrypt = pytest.importorskip("bcrypt")
    root = tmp_path_factory.mktemp("auth-registry")
    htpasswd = root / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    htpasswd.write_text(f"{USER}:{hashed}\n", encoding="utf-8")
    with run_registry(root, htpasswd=htpasswd) as reg:
        yield reg


@pytest.fixture(scope="package")
def sklearn_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.linear_model import LogisticRegression

    import modelpack
    from tests.models import iris_like

    frame, target = iris_like()
    numeric = frame[["length", "width", "count"]]
    model = LogisticRegression(max_iter=200).fit(numeric, target)
    path = tmp_path_factory.mktemp("models") / "sk"
    modelpack.save(model, path, input_example=numeric.head(3), metadata={"license": "MIT"})
    return path


@pytest.fixture(scope="package")
def torch_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    import modelpack

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    path = tmp_path_factory.mktemp("models") / "torch"
    modelpack.save(net, path, input_example=np.zeros((2, 3), dtype=np.float32))
    return path


class CuttingProxy:
    """Forwards TCP to ``upstream``; the first time more than ``cut_after`` bytes have gone
    upstream, it drops that connection: in the middle of a request, or (``at_request``) just as
    the next request starting with those bytes begins, before the server got any of it."""

    def __init__(
        self,
        upstream: str,
        cut_after: int,
        at_request: bytes | None = None,
        *,
        port: int = 0,
        then_down: bool = False,
    ) -> None:
        self.upstream = upstream
        self.cut_after = cut_after
        self.at_request = at_request
        self.then_down = then_down  # after the cut, refuse connections (a registry gone away)
        self.sent = 0  # bytes forwarded upstream, all connections
        self.cuts = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", port))
        self.port = int(self._server.getsockname()[1])
        self.host = f"127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accepting thread; close alone may not
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            host, port = self.upstream.rsplit(":", 1)
            server = socket.create_connection((host, int(port)))
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream:
                    with self._lock:
                        self.sent += len(data)
                        cut = self.cuts == 0 and self.sent > self.cut_after
                        if self.at_request is not None:
                            cut = cut and data.startswith(self.at_request)
                        if cut:
                            self.cuts += 1
                    if cut:
                        if self.then_down:
                            self.close()
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
