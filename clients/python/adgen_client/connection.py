"""How a client reaches the orchestrator: target and token from the environment, TLS, and the bearer token."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc import aio

from adgen_wire.channel import DEFAULT_MAX_MESSAGE_BYTES, create_aio_channel, create_channel, grpc_options

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_ENV = "ADGEN_TARGET"
TOKEN_ENV = "ADGEN_TOKEN"
CertificateArg = bytes | str | Path
"""PEM: the bytes themselves, PEM text, or the path of a PEM file."""

_PEM_MARKER = "-----BEGIN "
_UNIX_SCHEMES = ("unix:", "unix-abstract:")


@dataclass(frozen=True)
class Connection:
    """Where a client's channel goes and what it carries. `credentials` is None for a plaintext channel
    without a token; the token itself lives only inside the credentials, so no repr or log can show it."""

    target: str
    tls: bool
    has_token: bool
    credentials: grpc.ChannelCredentials | None

    def __repr__(self) -> str:
        return f"Connection(target={self.target!r}, tls={self.tls}, token={'set' if self.has_token else 'none'})"


def read_pem(pem: CertificateArg) -> bytes:
    """The PEM bytes of `pem`: bytes as they are, a str holding PEM text as text, any other str or Path as a
    file to read.

    Raises:
        ValueError: the file cannot be read.
    """
    if isinstance(pem, bytes):
        return pem
    if isinstance(pem, str) and _PEM_MARKER in pem:
        return pem.encode()
    try:
        return Path(pem).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the PEM file {str(pem)!r}: {error.strerror or error}") from None


def tls_credentials(
    root_certificates: CertificateArg | None = None,
    *,
    certificate_chain: CertificateArg | None = None,
    private_key: CertificateArg | None = None,
) -> grpc.ChannelCredentials:
    """TLS channel credentials; with `certificate_chain` and `private_key`, the client's certificate for mTLS.

    Args:
        root_certificates: the CA that signed the server's certificate; None trusts the system's roots.
        certificate_chain: the client's certificate (PEM), for a server that asks for one (mTLS).
        private_key: the client certificate's key (PEM).

    Returns:
        Credentials for `AdGenClient(credentials=...)`; a token passed alongside is added to them.

    Raises:
        ValueError: only one of `certificate_chain` and `private_key`, or a file that cannot be read.
    """
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("a client certificate needs both certificate_chain and private_key")
    return grpc.ssl_channel_credentials(
        root_certificates=None if root_certificates is None else read_pem(root_certificates),
        private_key=None if private_key is None else read_pem(private_key),
        certificate_chain=None if certificate_chain is None else read_pem(certificate_chain),
    )


def connect(
    target: str | None,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    root_certificates: CertificateArg | None = None,
    tls: bool = False,
    token: str | None = None,
) -> Connection:
    """Resolves a client's connection arguments; see `AdGenClient` for their meaning.

    A token travels only over TLS or to a loopback (or Unix socket) target: gRPC's own local credentials
    then check that the peer really is on this machine.

    Raises:
        ValueError: both `credentials` and `root_certificates`, an unreadable CA file, or a token that
            would go in plaintext to another host (the message names the target, never the token).
    """
    resolved_target = target or os.environ.get(TARGET_ENV) or DEFAULT_TARGET
    bearer = (os.environ.get(TOKEN_ENV, "") if token is None else token).strip()
    if credentials is not None and root_certificates is not None:
        raise ValueError("pass either credentials or root_certificates, not both")
    channel_credentials = credentials
    if channel_credentials is None and (tls or root_certificates is not None):
        channel_credentials = tls_credentials(root_certificates)
    secure = channel_credentials is not None
    if bearer and not secure:
        local = local_connection_type(resolved_target)
        if local is None:
            raise ValueError(
                f"a token is only sent over TLS or to a loopback address, and {resolved_target} is neither: "
                "pass tls=True or root_certificates (CLI: --tls / --ca FILE)"
            )
        channel_credentials = grpc.local_channel_credentials(local)
    if bearer and channel_credentials is not None:
        channel_credentials = grpc.composite_channel_credentials(
            channel_credentials, grpc.access_token_call_credentials(bearer)
        )
    return Connection(target=resolved_target, tls=secure, has_token=bool(bearer), credentials=channel_credentials)


def local_connection_type(target: str) -> grpc.LocalConnectionType | None:
    """UDS for a Unix socket target, LOCAL_TCP for a loopback host (127.0.0.0/8, ::1, localhost), else None."""
    if target.startswith(_UNIX_SCHEMES):
        return grpc.LocalConnectionType.UDS
    hosts = _hosts_of(target)
    if hosts and all(_is_loopback(host) for host in hosts):
        return grpc.LocalConnectionType.LOCAL_TCP
    return None


def _hosts_of(target: str) -> list[str]:
    """The host names of a gRPC target: host:port, dns:[//authority/]host:port, ipv4:/ipv6: address lists."""
    rest = target
    for scheme in ("dns:", "ipv4:", "ipv6:"):
        if rest.startswith(scheme):
            rest = rest.removeprefix(scheme)
            break
    if rest.startswith("//"):  # dns://authority/host:port names the DNS server first.
        rest = rest[2:].partition("/")[2]
    return [_host_of(address) for address in rest.split(",") if address]


def _host_of(address: str) -> str:
    if address.startswith("["):
        return address[1:].partition("]")[0]
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address  # A bare IPv6 address, or a host without a port.


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_channel(connection: Connection, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.Channel:
    """A blocking channel for `connection`, with the message limits and keepalive of every AdGen channel."""
    if connection.credentials is None:
        return create_channel(connection.target, max_message_bytes)
    options = grpc_options(max_message_bytes)
    return grpc.secure_channel(connection.target, connection.credentials, options=options)


def open_aio_channel(connection: Connection, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> aio.Channel:
    """An asyncio channel for `connection`, with the message limits and keepalive of every AdGen channel."""
    if connection.credentials is None:
        return create_aio_channel(connection.target, max_message_bytes)
    options = grpc_options(max_message_bytes)
    return aio.secure_channel(connection.target, connection.credentials, options=options)
