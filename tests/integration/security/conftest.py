"""Security fixtures: a test CA with server and client certificates (trustme), API keys in a keys file,
and a JWKS served over loopback HTTP with a way to sign tokens for it."""

from __future__ import annotations

import hashlib
import http.server
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class Pki:
    """A CA and, in files, a server certificate for localhost/127.0.0.1 and a client certificate."""

    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path
    client_key_file: Path


def write_server_cert(ca: trustme.CA, cert_file: Path, key_file: Path, *names: str) -> None:
    issued = ca.issue_cert(*(names or ("localhost", "127.0.0.1")))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key_file.write_bytes(issued.private_key_pem.bytes())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    write_server_cert(ca, folder / "server.pem", folder / "server.key")
    client = ca.issue_cert("orchestrator")
    (folder / "client.pem").write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    (folder / "client.key").write_bytes(client.private_key_pem.bytes())
    return Pki(
        ca,
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
    )


@dataclass(frozen=True)
class ApiKeySet:
    """Three API keys, one per role, and the keys file that holds only their hashes."""

    user: str
    service: str
    admin: str
    file: Path

    @property
    def all_secrets(self) -> list[str]:
        keys = [self.user, self.service, self.admin]
        return keys + [hashlib.sha256(key.encode()).hexdigest() for key in keys]


def api_keys_line(key: str, role: str, label: str = "") -> str:
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()} {role} {label}".rstrip()


@pytest.fixture(scope="session")
def api_keys(tmp_path_factory: pytest.TempPathFactory) -> ApiKeySet:
    user, service, admin = (f"adgen-{secrets.token_urlsafe(24)}" for _ in range(3))
    path = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    lines = [
        "# AdGen API keys: hashes only",
        api_keys_line(user, "user", "test-user"),
        "",
        api_keys_line(service, "service", "orchestrator"),
        api_keys_line(admin, "admin", "operator"),
    ]
    path.write_text("\n".join(lines) + "\n")
    return ApiKeySet(user, service, admin, path)


class Jwks:
    """A signing key whose public half is served as a JWKS at `url`, and a way to sign tokens with it."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        body = json.dumps({"keys": [{**public, "kid": "test-key", "alg": "RS256", "use": "sig"}]}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def token(self, *, role: object = "user", expires_in_s: float = 300, **claims: Any) -> str:
        payload = {"sub": "jwt-tester", "role": role, "exp": int(time.time() + expires_in_s), **claims}
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": "test-key"})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def jwks() -> Iterator[Jwks]:
    served = Jwks()
    yield served
    served.close()
