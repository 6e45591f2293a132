"""The `adgen` CLI against a TLS (and mTLS) server that wants a bearer token: --tls, --ca, --cert/--key, --token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from adgen_client.cli import EXIT_UNREACHABLE, app
from tests.support.tls_stub import LoopbackPki, StubServer, make_pki, tls_stub_server

TOKEN = "cli-key-4b7d21"
KEYWORD = "여름 느낌 딸기 생과일 주스"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LoopbackPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki: LoopbackPki) -> Iterator[StubServer]:
    with tls_stub_server(pki, {TOKEN: "user"}) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(pki: LoopbackPki) -> Iterator[StubServer]:
    with tls_stub_server(pki, {TOKEN: "user"}, require_client_cert=True) as server:
        yield server


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ADGEN_TARGET", "ADGEN_TOKEN", "ADGEN_TLS", "ADGEN_CA_FILE"):
        monkeypatch.delenv(name, raising=False)


def _create(out: Path, *options: str, env: dict[str, str] | None = None) -> Result:
    # The stub serves from its own threads, so the CLI may block this one.
    return CliRunner().invoke(app, ["create", KEYWORD, "--out", str(out), *options], env=env)


def test_create_over_tls_with_ca_and_token_writes_the_ad(
    tls_server: StubServer, pki: LoopbackPki, tmp_path: Path
) -> None:
    tls_server.gate.seen.clear()
    result = _create(tmp_path / "ad", "--target", tls_server.target, "--ca", str(pki.ca_file), "--token", TOKEN)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "ad" / "ad.json").read_text(encoding="utf-8"))
    assert manifest["copy"]["caption"] == f"{KEYWORD} 출시!" and manifest["request_id"] == "rid-tls"
    assert tls_server.gate.seen == [f"Bearer {TOKEN}"]
    assert TOKEN not in result.output


def test_target_token_and_ca_come_from_the_environment(
    tls_server: StubServer, pki: LoopbackPki, tmp_path: Path
) -> None:
    tls_server.gate.seen.clear()
    env = {"ADGEN_TARGET": tls_server.target, "ADGEN_TOKEN": TOKEN, "ADGEN_CA_FILE": str(pki.ca_file)}
    result = _create(tmp_path / "ad", env=env)
    assert result.exit_code == 0, result.output
    assert tls_server.gate.seen == [f"Bearer {TOKEN}"]


def test_a_missing_token_prints_unauthenticated_and_how_to_pass_one(
    tls_server: StubServer, pki: LoopbackPki, tmp_path: Path
) -> None:
    result = _create(tmp_path / "ad", "--target", tls_server.target, "--ca", str(pki.ca_file))
    assert result.exit_code == 1
    assert "UNAUTHENTICATED TOKEN_MISSING" in result.stderr and "set ADGEN_TOKEN" in result.stderr
    assert not (tmp_path / "ad").exists()


def test_a_refused_token_is_named_refused_but_never_printed(
    tls_server: StubServer, pki: LoopbackPki, tmp_path: Path
) -> None:
    result = _create(tmp_path / "ad", "--target", tls_server.target, "--ca", str(pki.ca_file), "--token", "stale-9f")
    assert result.exit_code == 1
    assert "TOKEN_INVALID" in result.stderr and "refused the token" in result.stderr
    assert "stale-9f" not in result.output


def test_plaintext_to_a_tls_port_is_unreachable_with_a_tls_hint(tls_server: StubServer, tmp_path: Path) -> None:
    result = _create(tmp_path / "ad", "--target", tls_server.target, "--token", TOKEN)
    assert result.exit_code == EXIT_UNREACHABLE
    assert "cannot reach" in result.stderr and "pass --tls" in result.stderr


def test_a_server_certificate_from_another_ca_gets_a_handshake_hint(tls_server: StubServer, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    result = _create(tmp_path / "ad", "--target", tls_server.target, "--ca", str(other.ca_file), "--token", TOKEN)
    assert result.exit_code == EXIT_UNREACHABLE
    assert "TLS handshake failed: check --ca" in result.stderr


def test_mtls_with_cert_and_key(mtls_server: StubServer, pki: LoopbackPki, tmp_path: Path) -> None:
    mtls_server.gate.seen.clear()
    base = ("--target", mtls_server.target, "--ca", str(pki.ca_file), "--token", TOKEN)
    without = _create(tmp_path / "refused", *base)
    assert without.exit_code == EXIT_UNREACHABLE and "--cert" in without.stderr
    result = _create(tmp_path / "ad", *base, "--cert", str(pki.client_cert_file), "--key", str(pki.client_key_file))
    assert result.exit_code == 0, result.output
    assert mtls_server.gate.seen == [f"Bearer {TOKEN}"]


def test_a_cert_without_its_key_is_a_usage_error(pki: LoopbackPki, tmp_path: Path) -> None:
    result = _create(tmp_path / "ad", "--ca", str(pki.ca_file), "--cert", str(pki.client_cert_file))
    assert result.exit_code == 2 and "--key" in result.output


def test_a_token_for_a_plaintext_remote_target_is_refused_before_any_call(tmp_path: Path) -> None:
    result = _create(tmp_path / "ad", "--target", "ads.example.com:50051", env={"ADGEN_TOKEN": TOKEN})
    assert result.exit_code == 2
    assert "only sent over TLS" in result.output and TOKEN not in result.output


def test_help_names_the_security_options_and_never_a_token_value() -> None:
    result = CliRunner().invoke(app, ["create", "--help"], env={"ADGEN_TOKEN": TOKEN})
    assert result.exit_code == 0
    for option in ("--tls", "--ca", "--cert", "--key", "--token", "ADGEN_TOKEN"):
        assert option in result.output
    assert TOKEN not in result.output
