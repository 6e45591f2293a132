"""The SDK reaches a server with TLS (or mTLS) and bearer tokens: CA, credentials, ADGEN_TARGET and ADGEN_TOKEN."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from adgen_client import (
    AdGenClient,
    AsyncAdGenClient,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    tls_credentials,
)
from adgen_client.connection import CertificateArg, local_connection_type
from tests.support.tls_stub import LoopbackPki, StubServer, make_pki, tls_stub_server
from tests.unit.client.conftest import FakeServer

USER_TOKEN = "user-key-6f1c2b"
ADMIN_TOKEN = "admin-key-93ad0e"
ROLES = {USER_TOKEN: "user", ADMIN_TOKEN: "admin"}
LIST_MODELS = "/adgen.ad.v1.AdService/ListModels"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LoopbackPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki: LoopbackPki) -> Iterator[StubServer]:
    with tls_stub_server(pki, ROLES) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(pki: LoopbackPki) -> Iterator[StubServer]:
    with tls_stub_server(pki, ROLES, require_client_cert=True) as server:
        yield server


@pytest.fixture
def gate(tls_server: StubServer) -> StubServer:
    tls_server.gate.seen.clear()
    tls_server.gate.admin_methods.clear()
    return tls_server


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADGEN_TARGET", raising=False)
    monkeypatch.delenv("ADGEN_TOKEN", raising=False)


def _models(client: AdGenClient) -> list[str]:
    with client:
        return [model.id for model in client.list_models(timeout=10)]


@pytest.mark.parametrize("form", ["path", "str-path", "bytes", "pem-text"])
def test_a_client_trusting_the_ca_sends_its_token_as_a_bearer_header(
    gate: StubServer, pki: LoopbackPki, form: str
) -> None:
    forms: dict[str, CertificateArg] = {
        "path": pki.ca_file,
        "str-path": str(pki.ca_file),
        "bytes": pki.ca_pem,
        "pem-text": pki.ca_pem.decode(),
    }
    roots = forms[form]
    assert _models(AdGenClient(gate.target, root_certificates=roots, token=USER_TOKEN)) == ["tiny"]
    assert gate.gate.seen == [f"Bearer {USER_TOKEN}"]


def test_target_and_token_come_from_adgen_target_and_adgen_token(
    gate: StubServer, pki: LoopbackPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADGEN_TARGET", gate.target)
    monkeypatch.setenv("ADGEN_TOKEN", f"  {USER_TOKEN}\n")  # as a file or a shell may hand it over
    client = AdGenClient(root_certificates=pki.ca_file)
    assert client.connection.target == gate.target
    assert _models(client) == ["tiny"] and gate.gate.seen == [f"Bearer {USER_TOKEN}"]


def test_an_empty_token_argument_sends_none_even_with_adgen_token_set(
    gate: StubServer, pki: LoopbackPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADGEN_TOKEN", USER_TOKEN)
    with pytest.raises(Unauthenticated) as raised:
        _models(AdGenClient(gate.target, root_certificates=pki.ca_file, token=""))
    assert raised.value.reason == "TOKEN_MISSING" and gate.gate.seen == [None]


async def test_the_async_client_speaks_tls_with_a_token(gate: StubServer, pki: LoopbackPki) -> None:
    # The stub serves from its own threads, so this loop may wait on it.
    async with AsyncAdGenClient(gate.target, root_certificates=pki.ca_pem, token=USER_TOKEN, timeout=10) as client:
        ad = await client.create_ad("딸기 주스")
        kinds = [event.WhichOneof("event") async for event in client.stream_create_ad("딸기 주스")]
    assert ad.copy.caption == "딸기 주스 출시!" and kinds == ["copy", "result"]
    assert gate.gate.seen == [f"Bearer {USER_TOKEN}"] * 2


def test_missing_and_unknown_tokens_are_unauthenticated_with_their_reason(gate: StubServer, pki: LoopbackPki) -> None:
    with pytest.raises(Unauthenticated) as missing:
        _models(AdGenClient(gate.target, root_certificates=pki.ca_file))
    with pytest.raises(Unauthenticated) as unknown:
        _models(AdGenClient(gate.target, root_certificates=pki.ca_file, token="not-a-key"))
    assert missing.value.code == grpc.StatusCode.UNAUTHENTICATED and missing.value.reason == "TOKEN_MISSING"
    assert unknown.value.reason == "TOKEN_INVALID"
    assert "not-a-key" not in str(unknown.value)


def test_a_user_token_on_an_admin_call_is_permission_denied_naming_the_role(gate: StubServer, pki: LoopbackPki) -> None:
    gate.gate.admin_methods.add(LIST_MODELS)
    with pytest.raises(PermissionDenied) as raised:
        _models(AdGenClient(gate.target, root_certificates=pki.ca_file, token=USER_TOKEN))
    assert raised.value.reason == "ROLE_REQUIRED" and raised.value.metadata["required_role"] == "admin"
    assert _models(AdGenClient(gate.target, root_certificates=pki.ca_file, token=ADMIN_TOKEN)) == ["tiny"]


def test_a_plaintext_client_cannot_reach_a_tls_port(gate: StubServer) -> None:
    with pytest.raises(Unavailable):
        _models(AdGenClient(gate.target))
    with pytest.raises(Unavailable):
        _models(AdGenClient(gate.target, token=USER_TOKEN))  # loopback: the token may go, but TLS is missing
    assert gate.gate.seen == []  # no call got through to the gate


def test_a_client_that_does_not_trust_the_servers_ca_cannot_reach_it(
    gate: StubServer, tmp_path: Path, pki: LoopbackPki
) -> None:
    other = make_pki(tmp_path / "other")
    with pytest.raises(Unavailable):
        _models(AdGenClient(gate.target, root_certificates=other.ca_file, token=USER_TOKEN))
    with pytest.raises(Unavailable):
        _models(AdGenClient(gate.target, tls=True, token=USER_TOKEN))  # the system's roots do not know it either
    assert gate.gate.seen == []


def test_mtls_credentials_carry_the_client_certificate_and_the_token(mtls_server: StubServer, pki: LoopbackPki) -> None:
    mtls_server.gate.seen.clear()
    credentials = tls_credentials(pki.ca_file, certificate_chain=pki.client_cert_file, private_key=pki.client_key_file)
    assert _models(AdGenClient(mtls_server.target, credentials=credentials, token=USER_TOKEN)) == ["tiny"]
    assert mtls_server.gate.seen == [f"Bearer {USER_TOKEN}"]
    with pytest.raises(Unavailable):  # the same server refuses the handshake without a client certificate
        _models(AdGenClient(mtls_server.target, root_certificates=pki.ca_file, token=USER_TOKEN))


async def test_a_token_travels_in_plaintext_only_to_loopback(fake_ad_server: FakeServer) -> None:
    def call() -> None:
        with AdGenClient(fake_ad_server.target, token=USER_TOKEN, timeout=10) as client:
            client.create_ad("딸기")

    await asyncio.to_thread(call)
    _, metadata, _ = fake_ad_server.service.seen[0]
    assert metadata["authorization"] == f"Bearer {USER_TOKEN}"


@pytest.mark.parametrize(
    "target", ["ads.example.com:50051", "10.0.0.5:50051", "dns:///ads.example.com:443", "[2001:db8::1]:50051"]
)
def test_a_token_for_a_plaintext_remote_target_is_refused_without_naming_the_token(target: str) -> None:
    with pytest.raises(ValueError, match="only sent over TLS") as raised:
        AdGenClient(target, token=USER_TOKEN)
    assert USER_TOKEN not in str(raised.value) and target in str(raised.value)
    AdGenClient(target, tls=True, token=USER_TOKEN).close()  # over TLS it may go
    AdGenClient(target).close()  # and without a token nothing is sent at all


@pytest.mark.parametrize(
    ("target", "local"),
    [
        ("127.0.0.1:50051", grpc.LocalConnectionType.LOCAL_TCP),
        ("127.0.0.2:50051", grpc.LocalConnectionType.LOCAL_TCP),
        ("localhost:50051", grpc.LocalConnectionType.LOCAL_TCP),
        ("[::1]:50051", grpc.LocalConnectionType.LOCAL_TCP),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", grpc.LocalConnectionType.LOCAL_TCP),
        ("dns:///localhost:50051", grpc.LocalConnectionType.LOCAL_TCP),
        ("unix:/run/adgen.sock", grpc.LocalConnectionType.UDS),
        ("ipv4:127.0.0.1:1,10.0.0.1:2", None),
        ("localhost.example.com:50051", None),
        ("dns://127.0.0.1/ads.example.com:50051", None),  # the DNS server is local, the target is not
    ],
)
def test_loopback_targets_are_told_apart(target: str, local: grpc.LocalConnectionType | None) -> None:
    assert local_connection_type(target) == local


def test_no_repr_shows_the_token(pki: LoopbackPki) -> None:
    client = AdGenClient("127.0.0.1:1", root_certificates=pki.ca_file, token=USER_TOKEN)
    with client:
        shown = " ".join([repr(client), str(client.connection), repr(vars(client))])
    assert USER_TOKEN not in shown
    assert "token=set" in repr(client) and "tls=True" in repr(client)


def test_credentials_and_root_certificates_together_are_refused(pki: LoopbackPki) -> None:
    with pytest.raises(ValueError, match="either credentials or root_certificates"):
        AdGenClient("127.0.0.1:1", credentials=tls_credentials(pki.ca_file), root_certificates=pki.ca_file)


def test_an_unreadable_ca_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(ValueError, match=r"missing-ca\.pem"):
        AdGenClient("127.0.0.1:1", root_certificates=missing)


def test_a_client_certificate_needs_its_key(pki: LoopbackPki) -> None:
    with pytest.raises(ValueError, match="both certificate_chain and private_key"):
        tls_credentials(pki.ca_file, certificate_chain=pki.client_cert_file)
