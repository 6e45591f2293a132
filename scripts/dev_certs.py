"""Makes development secrets for a TLS + authentication run: a CA, a certificate and key for each service,
API keys with their hashes in a keys file, and the orchestrator's service token; and a C2PA claim signer
(c2pa-chain.pem, c2pa-key.pem, issued by its own c2pa-ca.pem) for trying content credentials.

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
import datetime
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
    """Writes the CA, each service's certificate and key, the keys file, the tokens and the C2PA development
    signer into `out`; returns the tokens by name (user, admin, orchestrator)."""
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
    make_signing_identity().write(out)
    return tokens


@dataclass(frozen=True)
class SigningIdentity:
    """PEM bytes: the chain (signing certificate, then the CA), its private key, and the CA to trust."""

    chain: bytes
    private_key: bytes
    ca_certificate: bytes

    def write(self, directory: Path) -> tuple[Path, Path]:
        """The chain and key as files, as an operator would configure them (C2PA_CERT_FILE, C2PA_KEY_FILE), and
        c2pa-ca.pem, the trust anchor a reader needs to call the manifest Trusted rather than only Valid."""
        chain, key = directory / "c2pa-chain.pem", directory / "c2pa-key.pem"
        chain.write_bytes(self.chain)
        write_secret(key, self.private_key)
        (directory / "c2pa-ca.pem").write_bytes(self.ca_certificate)
        return chain, key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "AdGen development"),
        ]
    )


def _key_usage(*, sign_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not sign_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certificates,
        crl_sign=sign_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def make_signing_identity(*, claim_signing: bool = True) -> SigningIdentity:
    """An ES256 (P-256) signing certificate issued by a fresh CA, valid from yesterday for a month, with what
    C2PA asks of a claim signer: key usage digitalSignature and extended key usage emailProtection.
    `claim_signing=False` gives it TLS server authentication instead, which C2PA refuses."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("AdGen Development C2PA CA"))
        .issuer_name(_name("AdGen Development C2PA CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    signer = (
        x509.CertificateBuilder()
        .subject_name(_name("AdGen Development Claim Signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign_certificates=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.EMAIL_PROTECTION if claim_signing else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = signer.public_bytes(pem) + ca.public_bytes(pem)
    private_key = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return SigningIdentity(chain, private_key, ca.public_bytes(pem))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".secrets", help="folder to write (default .secrets/)")
    parser.add_argument("--names", nargs="*", default=[], help="more host names or IPs for every certificate")
    options = parser.parse_args()
    make_dev_secrets(options.out, tuple(options.names))
    print(
        f"wrote a CA, certificates for {', '.join(SERVICES)}, api-keys.txt, *.token and a C2PA claim signer"
        f" (c2pa-chain.pem, c2pa-key.pem; readers trust c2pa-ca.pem) to {options.out}"
    )
    print(
        f'call the orchestrator with: --tls --ca {options.out / "ca.pem"} --token "$(cat {options.out / "user.token"})"'
    )


if __name__ == "__main__":
    main()
