"""TLS from certificate files that are re-read when they change: gRPC server credentials, the HTTP edge's
SSLContext, and the credentials of a channel to another AdGen service."""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """Where a server's certificate chain and key are, and the CA its clients' certificates must chain to
    (mTLS) when set."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        extra = () if self.client_ca_file is None else (self.client_ca_file,)
        return (self.cert_file, self.key_file, *extra)


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM bytes read from a `TlsFiles` at one moment."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None


# What tells a rewritten file from the one read before: a Secret volume swaps a symlink (a new inode),
# `cp` rewrites in place (a new mtime, often a new size).
_Stamp = tuple[tuple[int, int, int], ...]


class CertificateFiles:
    """The certificate, key and client CA files a server serves, re-read when any of them changes.

    `rotated()` is cheap (a stat of each file), so it can run on every new connection; each reader of the
    files has its own instance, since a rotation is reported once. A rotation caught
    halfway (the files changed while being read, or a key that does not match its certificate) keeps the
    material served so far and is tried again on the next connection.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        stamp = self._stamp()
        self.material = self._read()  # Raises at start: a server must not come up without its certificate.
        _check_pair(files)
        self._stamp_read = stamp

    def rotated(self) -> TlsMaterial | None:
        """The new material when the files changed since they were last read, else None."""
        with self._lock:
            try:
                stamp = self._stamp()
                if stamp == self._stamp_read:
                    return None
                material = self._read()
                _check_pair(self.files)
                if self._stamp() != stamp:
                    return None  # Still being written: the next connection looks again.
            except (OSError, ssl.SSLError) as error:
                problem = type(error).__name__
                _LOGGER.warning("certificate files changed but cannot be used yet (%s); serving the old ones", problem)
                return None
            self._stamp_read = stamp
            self.material = material
            _LOGGER.info("serving the rotated certificate from %s", self.files.cert_file)
            return material

    def _stamp(self) -> _Stamp:
        stats = [path.stat() for path in self.files.paths]
        return tuple((stat.st_ino, stat.st_mtime_ns, stat.st_size) for stat in stats)

    def _read(self) -> TlsMaterial:
        client_ca = self.files.client_ca_file.read_bytes() if self.files.client_ca_file is not None else None
        return TlsMaterial(self.files.cert_file.read_bytes(), self.files.key_file.read_bytes(), client_ca)


def _check_pair(files: TlsFiles) -> None:
    """Raises ssl.SSLError when the key does not belong to the certificate (or either is not PEM)."""
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(files.cert_file, files.key_file)


def grpc_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that serve the current files to every new connection (gRPC asks before each
    handshake), so a rotated certificate needs no restart. With a client CA, clients must present a
    certificate it signed (mTLS)."""
    certificates = CertificateFiles(files)

    def configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(material.private_key, material.cert_chain)], root_certificates=material.client_ca
        )

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # Runs on a gRPC core thread before each handshake: never raise here.
        try:
            material = certificates.rotated()
        except Exception:
            _LOGGER.exception("could not check the certificate files for a rotation")
            return None
        return configuration(material) if material is not None else None

    return grpc.dynamic_ssl_server_credentials(
        configuration(certificates.material),
        fetch,  # type: ignore[arg-type]  # gRPC documents None as "no change"; the stubs leave it out.
        require_client_authentication=files.client_ca_file is not None,
    )


class ReloadingSslContext:
    """An SSLContext for the HTTP edge whose certificate follows the files: each handshake checks them, and
    a rotation is served from that very handshake on (the connection is moved to a context built from the
    new files). With a client CA, clients must present a certificate it signed."""

    def __init__(self, files: TlsFiles) -> None:
        self._certificates = CertificateFiles(files)
        self._current = self._context()
        self.context = self._context()  # What uvicorn serves; its callback hands out `_current`.
        self.context.sni_callback = self._on_hello

    def _context(self) -> ssl.SSLContext:
        files = self._certificates.files
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(files.cert_file, files.key_file)
        if files.client_ca_file is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=files.client_ca_file)
        return context

    def _on_hello(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        # OpenSSL calls this on every ClientHello, with or without SNI (server_name is then None).
        try:
            if self._certificates.rotated() is not None:
                self._current = self._context()
        except (OSError, ssl.SSLError):
            _LOGGER.warning("the rotated certificate files could not be loaded; serving the previous ones")
        connection.context = self._current


def client_channel_credentials(
    ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """TLS to another AdGen service, trusting `ca_file`; with `cert_file` and `key_file`, mTLS.

    Read once: a Python channel cannot swap its credentials, so a rotated client certificate takes a restart.
    """
    return grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes(),
        private_key=key_file.read_bytes() if key_file is not None else None,
        certificate_chain=cert_file.read_bytes() if cert_file is not None else None,
    )
