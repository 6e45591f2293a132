"""Makes development secrets for a TLS + authentication run: a CA, a certificate and key for each service,
API keys with their hashes in a keys file, and the orchestrator's service token.

    .venv/bin/python scripts/dev_certs.py            # writes .secrets/ (git-ignored)
    .venv/bin/python scripts/dev_certs.py --out DIR --names extra-host.example

Certificates name the service (its compose and Kubernetes host name), `localhost` and `127.0.0.1`, and work
as server and client certificates (the orchestrator's is its mTLS identity); `operator.pem` is a client
certificate for calling the mTLS-only services by hand. For development only: a real
deployment's certificates come from its own CA (cert-manager, Vault) and its keys from a secret store.
Running it again replaces everything in the folder. The folder is private to you (mode 700); the files in it
are readable so that compose can mount them into containers that run as another user.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
from pathlib import Path

import trustme

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("orchestrator", "copywriter", "diffusion")
# The bearer tokens made, each an API key of this role.
TOKENS = {"user": "user", "admin": "admin", "orchestrator": "service"}


def write_secret(path: Path, data: bytes) -> None:
    # Readable by all inside the folder, which only its owner may enter: compose mounts secret files as they
    # are, and the containers' user (uid 10001) is not the one who ran this script.
    path.unlink(missing_ok=True)
    path.touch(mode=0o644)
    path.write_bytes(data)


def make_dev_secrets(out: Path, extra_names: tuple[str, ...] = ()) -> dict[str, str]:
    """Writes the CA, each service's certificate and key, the keys file and the tokens into `out`; returns the
    tokens by name (user, admin, orchestrator)."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    ca = trustme.CA(organization_name="AdGen development")
    (out / "ca.pem").write_bytes(ca.cert_pem.bytes())
    for service in SERVICES:
        issued = ca.issue_cert(service, "localhost", "127.0.0.1", *extra_names)
        (out / f"{service}.pem").write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        write_secret(out / f"{service}.key", issued.private_key_pem.bytes())
    # An operator's client certificate, for calling the mTLS-only services directly (model control).
    operator = ca.issue_cert("operator")
    (out / "operator.pem").write_bytes(b"".join(blob.bytes() for blob in operator.cert_chain_pems))
    write_secret(out / "operator.key", operator.private_key_pem.bytes())
    tokens = {name: f"adgen-{name}-{secrets.token_urlsafe(32)}" for name in TOKENS}
    lines = ["# AdGen API keys: sha256:<hex digest of the key> <role> [label]. Only hashes live here."]
    for name, role in TOKENS.items():
        lines.append(f"sha256:{hashlib.sha256(tokens[name].encode()).hexdigest()} {role} {name}")
        write_secret(out / f"{name}.token", (tokens[name] + "\n").encode())
    write_secret(out / "api-keys.txt", ("\n".join(lines) + "\n").encode())
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".secrets", help="folder to write (default .secrets/)")
    parser.add_argument("--names", nargs="*", default=[], help="more host names or IPs for every certificate")
    options = parser.parse_args()
    make_dev_secrets(options.out, tuple(options.names))
    print(f"wrote a CA, certificates for {', '.join(SERVICES)}, api-keys.txt and *.token to {options.out}")
    print(
        f'call the orchestrator with: --tls --ca {options.out / "ca.pem"} --token "$(cat {options.out / "user.token"})"'
    )


if __name__ == "__main__":
    main()
