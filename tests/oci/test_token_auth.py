"""The registry token flow (WWW-Authenticate: Bearer realm, service, scope) against
docker-registry's token auth, with a token server that signs real RS256 JWTs."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from modelpack import oci
from modelpack.errors import AuthenticationError
from tests.oci.conftest import PASSWORD, USER, LocalRegistry, run_registry

SERVICE, ISSUER = "modelpack-test-registry", "modelpack-test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenServer:
    def __init__(self, root: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.bundle = root / "token-ca.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict[str, list[str]]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                server.requests.append(query)
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def token(self, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(dt.datetime.now(dt.timezone.utc).timestamp())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300}
        claims.update({"nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access})
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64(signature)}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalRegistry, _TokenServer]]:
    pytest.importorskip("cryptography")
    root = tmp_path_factory.mktemp("token-registry")
    tokens = _TokenServer(root)
    auth = (
        f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {SERVICE}\n"
        f"    issuer: {ISSUER}\n    rootcertbundle: {tokens.bundle}\n"
    )
    try:
        with run_registry(root, auth=auth) as reg:
            yield reg, tokens
    finally:
        tokens.close()


def test_bearer_tokens_for_push_and_pull(
    token_registry: tuple[LocalRegistry, _TokenServer], sklearn_model: Path, tmp_path: Path
) -> None:
    reg, tokens = token_registry
    repo = f"tok/m{uuid.uuid4().hex[:8]}"
    ref = reg.ref(repo) + ":v1"
    with pytest.raises(AuthenticationError, match="refused"):
        oci.push(sklearn_model, ref, username=USER, password="wrong")
    pushed = oci.push(sklearn_model, ref, username=USER, password=PASSWORD)
    assert pushed.uploaded == pushed.blobs
    scopes = {s for query in tokens.requests for s in query.get("scope", [])}
    assert f"repository:{repo}:pull,push" in scopes
    assert {q["service"][0] for q in tokens.requests} == {SERVICE}
    pulled = oci.pull(ref, tmp_path / "out", username=USER, password=PASSWORD)
    assert pulled.digest == pushed.digest
