"""The web UI reaches an orchestrator with TLS and a bearer token through its settings; the browser never sees it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError
from streamlit.testing.v1 import AppTest

from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen_client import AdGenError
from adgen_web.cli import APP_PATH
from adgen_web.config import WebSettings
from adgen_web.messages import describe_error
from tests.support.tls_stub import LoopbackPki, StubServer, make_pki, tls_stub_server
from tests.unit.web.conftest import ScriptedAdService

TOKEN = "web-key-5e0a77"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LoopbackPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(pki: LoopbackPki) -> Iterator[StubServer]:
    servicer = ScriptedAdService()
    with tls_stub_server(
        pki, {TOKEN: "user"}, register=lambda server: ad_grpc.add_AdServiceServicer_to_server(servicer, server)
    ) as server:
        yield server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "web-token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_adgen_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADGEN_TOKEN", "not-the-pages-token")  # the page must use its own setting, not this


def test_settings_open_a_tls_client_that_sends_the_token_files_token(
    secured: StubServer, pki: LoopbackPki, token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADGEN_WEB_TARGET", secured.target)
    monkeypatch.setenv("ADGEN_WEB_TARGET_CA_FILE", str(pki.ca_file))
    monkeypatch.setenv("ADGEN_WEB_TOKEN_FILE", str(token_file))
    secured.gate.seen.clear()
    with WebSettings().open_client() as client:
        client.list_models(timeout=10)
    assert secured.gate.seen == [f"Bearer {TOKEN}"]


def test_without_a_token_file_the_page_sends_no_token(secured: StubServer, pki: LoopbackPki) -> None:
    secured.gate.seen.clear()
    with (
        WebSettings(target=secured.target, target_ca_file=pki.ca_file).open_client() as client,
        pytest.raises(AdGenError) as raised,
    ):
        client.list_models(timeout=10)
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED and secured.gate.seen == [None]
    message = describe_error(raised.value)
    assert "접속 허가" in message.problem and "토큰" in message.next_step


def test_a_rewritten_token_file_changes_the_client_key(pki: LoopbackPki, token_file: Path) -> None:
    settings = WebSettings(target_ca_file=pki.ca_file, token_file=token_file)
    before = settings.client_key()
    assert settings.client_key() == before
    token_file.write_text("a-longer-rotated-token\n", encoding="utf-8")
    os.utime(token_file, ns=(1, 1))  # a new mtime even on a coarse clock
    assert settings.client_key() != before
    assert TOKEN not in repr(before)


def test_an_empty_token_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    empty = tmp_path / "empty-token"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="ADGEN_WEB_TOKEN_FILE"):
        WebSettings(token_file=empty).open_client()


def test_a_missing_ca_file_fails_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="target_ca_file"):
        WebSettings(target_ca_file=tmp_path / "nowhere.pem")


def test_the_page_creates_an_ad_over_tls_and_never_shows_the_token(
    secured: StubServer, pki: LoopbackPki, token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "ADGEN_WEB_TARGET": secured.target,
        "ADGEN_WEB_TARGET_CA_FILE": str(pki.ca_file),
        "ADGEN_WEB_TOKEN_FILE": str(token_file),
        "ADGEN_WEB_IMAGE_WIDTH": "128",
        "ADGEN_WEB_IMAGE_HEIGHT": "128",
    }.items():
        monkeypatch.setenv(name, value)
    secured.gate.seen.clear()
    page = AppTest.from_file(str(APP_PATH), default_timeout=30)
    page.run()
    page.text_input(key="keyword").input("여름 느낌 딸기 생과일 주스")
    next(button for button in page.button if button.label == "광고 만들기").click()
    page.run()
    assert not page.exception
    assert "광고가 완성됐어요" in page.success[0].value
    assert secured.gate.seen == [f"Bearer {TOKEN}"]
    rendered = " ".join(str(getattr(node, "proto", "")) for node in page.main)
    assert "딸기 가득 여름" in rendered and TOKEN not in rendered
