"""A real kube-apiserver (built by .ci/build-kube-apiserver.sh) with etcd on 127.0.0.1, and a
stand-in Deployment controller: no kubelet runs, so the test writes the status a rollout needs."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import free_port, skip_or_fail

APISERVER = Path(
    os.environ.get("MODELPACK_KUBE_APISERVER", "/var/cache/modelpack/kube-apiserver/kube-apiserver")
)
TOKEN = "modelpack-test-token"
NEVER_READY = "never-ready"  # images with this in their name never become available


@dataclass
class KubeApi:
    url: str
    kubeconfig: Path
    ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certs(d: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=modelpack-test-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.crt",
             cwd=d)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


@contextlib.contextmanager
def kube_api(base: Path) -> Iterator[KubeApi]:
    etcd = shutil.which("etcd")
    if not APISERVER.is_file():
        skip_or_fail(f"{APISERVER} is missing; build it with .ci/build-kube-apiserver.sh")
    if etcd is None or shutil.which("openssl") is None:
        skip_or_fail("etcd or openssl is missing (apt-get install etcd-server openssl)")
    assert etcd is not None
    _certs(base)
    (base / "tokens.csv").write_text(f'{TOKEN},admin,admin,"system:masters"\n')
    client_port, peer_port, port = free_port(), free_port(), free_port()
    logs = (base / "etcd.log").open("w"), (base / "apiserver.log").open("w")
    procs = [
        subprocess.Popen(
            [
                etcd,
                "--data-dir",
                str(base / "etcd"),
                "--name",
                "test",
                "--listen-client-urls",
                f"http://127.0.0.1:{client_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{client_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"test=http://127.0.0.1:{peer_port}",
            ],
            stdout=logs[0],
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        procs.append(
            subprocess.Popen(
                [
                    str(APISERVER),
                    f"--etcd-servers=http://127.0.0.1:{client_port}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={port}",
                    "--insecure-port=0",
                    f"--tls-cert-file={base / 'server.crt'}",
                    f"--tls-private-key-file={base / 'server.key'}",
                    f"--token-auth-file={base / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    f"--service-account-key-file={base / 'sa.pub'}",
                    f"--service-account-signing-key-file={base / 'sa.key'}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    f"--cert-dir={base / 'certs'}",
                ],
                stdout=logs[1],
                stderr=subprocess.STDOUT,
            )
        )
        url = f"https://127.0.0.1:{port}"
        _wait_ready(url, base / "ca.crt", procs, base / "apiserver.log")
        kubeconfig = base / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(_kubeconfig(url, base / "ca.crt")))
        yield KubeApi(url=url, kubeconfig=kubeconfig, ca=base / "ca.crt")
    finally:
        for proc in reversed(procs):
            stop(proc)
        for log in logs:
            log.close()


def _wait_ready(url: str, ca: Path, procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    deadline = time.monotonic() + 90
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        with contextlib.suppress(httpx.HTTPError):
            if (
                httpx.get(
                    f"{url}/readyz",
                    verify=ssl.create_default_context(cafile=str(ca)),
                    headers=headers,
                ).status_code
                == 200
            ):
                return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"kube-apiserver did not become ready:\n{tail}")


def _kubeconfig(url: str, ca: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": url, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "admin", "user": {"token": TOKEN}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    }


class FakeController:
    """Writes Deployment status as the deployment controller would once pods are available."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        from kubernetes import client, config

        self.apps = client.AppsV1Api(config.new_client_from_config(str(kubeconfig)))
        self.namespace = namespace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeController:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                for d in self.apps.list_namespaced_deployment(self.namespace).items:
                    self._reconcile(d)
            self._stop.wait(0.2)

    def _reconcile(self, d: Any) -> None:
        generation = d.metadata.generation
        status = d.status
        if status is not None and status.observed_generation == generation:
            return
        replicas = d.spec.replicas or 1
        image = d.spec.template.spec.containers[0].image
        if NEVER_READY in image:
            old = (status.available_replicas or 0) if status else 0
            body = {
                "observedGeneration": generation,
                "replicas": old + 1,
                "updatedReplicas": 1,
                "readyReplicas": old,
                "availableReplicas": old,
                "unavailableReplicas": 1,
                "conditions": [
                    _condition("Available", "True" if old else "False",
                               "MinimumReplicasUnavailable", "no minimum availability"),
                    _condition("Progressing", "True", "ReplicaSetUpdated",
                               f'ReplicaSet "{d.metadata.name}-new" is progressing.'),
                ],
            }  # fmt: skip
        else:
            body = {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    _condition("Available", "True", "MinimumReplicasAvailable", "ok"),
                    _condition("Progressing", "True", "NewReplicaSetAvailable", "ok"),
                ],
            }
        self.apps.patch_namespaced_deployment_status(
            d.metadata.name, self.namespace, {"status": body}
        )


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def core_api(kube: KubeApi) -> Any:
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(str(kube.kubeconfig)))


_namespaces = itertools.count()


def new_namespace(kube: KubeApi, prefix: str) -> str:
    """A namespace of its own for one test (one apiserver serves the whole session)."""
    name = f"{prefix}-{next(_namespaces)}"
    core_api(kube).create_namespace({"metadata": {"name": name}})
    return name
