"""API key files, bearer tokens, the call guard's decisions, and the role check servicers make."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from adgen_runtime.auth import (
    ApiKeyFileError,
    ApiKeys,
    Authenticator,
    Caller,
    CallGuard,
    Role,
    bearer_token,
    bearer_token_interceptors,
    caller_var,
    peer_host,
    read_api_keys,
    read_token_file,
    require_role,
)
from adgen_runtime.errors import AccessDenied, AuthenticationRequired
from adgen_runtime.rate_limit import RateLimited, TokenBuckets
from adgen_runtime.settings import ServerSettings, settings_problems

USER_KEY, ADMIN_KEY = "user-key-0123456789", "admin-key-9876543210"


def _line(key: str, role: str, label: str = "") -> str:
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()} {role} {label}".rstrip()


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"# comment\n\n{_line(USER_KEY, 'user', 'mobile app')}\n{_line(ADMIN_KEY, 'ADMIN')}\n")
    return path


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_api_keys_file_gives_each_key_its_role_and_label(keys_file: Path) -> None:
    keys = ApiKeys(keys_file)
    user, admin = keys.caller_for(USER_KEY), keys.caller_for(ADMIN_KEY)
    assert user is not None and admin is not None
    assert (user.label, user.roles) == ("mobile app", frozenset({Role.USER}))
    assert (admin.label, admin.roles) == ("admin-key-line-4", frozenset({Role.ADMIN}))
    assert keys.caller_for("not-a-key") is None
    assert hashlib.sha256(USER_KEY.encode()).hexdigest() not in user.identity


def test_a_bad_line_is_named_by_its_number_and_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    secretish = "sha256:" + "ab" * 31 + " user"  # One digit short.
    path.write_text(f"{_line(USER_KEY, 'user')}\n{secretish}\n")
    with pytest.raises(ApiKeyFileError, match="line 2") as bad:
        read_api_keys(path)
    assert "ab" * 31 not in str(bad.value)
    path.write_text(_line(USER_KEY, "root"))
    with pytest.raises(ApiKeyFileError, match="line 1: the role must be one of user, service, admin"):
        read_api_keys(path)


def test_a_changed_keys_file_is_reread_and_a_broken_one_keeps_the_old_keys(keys_file: Path) -> None:
    clock = FakeClock()
    keys = ApiKeys(keys_file, clock=clock)
    keys_file.write_text(_line("new-key-abcdefghijkl", "service") + "\n")
    assert keys.caller_for("new-key-abcdefghijkl") is None  # Not looked at again within the second.
    clock.now += 2
    assert keys.caller_for("new-key-abcdefghijkl") is not None
    assert keys.caller_for(USER_KEY) is None
    keys_file.write_text("garbage that is not a key line at all\n")
    clock.now += 2
    assert keys.caller_for("new-key-abcdefghijkl") is not None


def test_bearer_tokens_are_read_from_the_authorization_value() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    for value in (None, "", "Bearer", "Bearer  ", "Basic abc", "abc"):
        with pytest.raises(AuthenticationRequired) as missing:
            bearer_token(value)
        assert missing.value.message.startswith("This server needs a bearer token")


def test_the_guard_refuses_missing_and_unknown_tokens_and_admits_known_ones(keys_file: Path) -> None:
    guard = CallGuard(Authenticator(ApiKeys(keys_file)), admin_methods=["/x.Svc/Admin"])

    async def admit(method: str, authorization: str | None) -> Caller | None:
        return await guard.admit(method, authorization, "127.0.0.1")

    with pytest.raises(AuthenticationRequired):
        asyncio.run(admit("/x.Svc/Call", None))
    with pytest.raises(AuthenticationRequired):
        asyncio.run(admit("/x.Svc/Call", "Bearer a.b.c"))  # Looks like a JWT, but no JWKS is configured.
    caller = asyncio.run(admit("/x.Svc/Call", f"Bearer {USER_KEY}"))
    assert caller is not None and caller.label == "mobile app"
    with pytest.raises(AccessDenied) as denied:
        asyncio.run(admit("/x.Svc/Admin", f"Bearer {USER_KEY}"))
    assert denied.value.metadata == {"required_role": "admin"}
    assert asyncio.run(admit("/x.Svc/Admin", f"Bearer {ADMIN_KEY}")) is not None
    assert asyncio.run(admit("/grpc.health.v1.Health/Check", None)) is None


def test_without_authentication_callers_are_anonymous_and_counted_by_address() -> None:
    guard = CallGuard(rate_limit=TokenBuckets(1.0, 1), admin_methods=["/x.Svc/Admin"])
    caller = asyncio.run(guard.admit("/x.Svc/Admin", None, "10.0.0.1"))
    assert caller is not None and Role.ADMIN in caller.roles
    asyncio.run(guard.admit("/x.Svc/Call", None, "10.0.0.2"))
    with pytest.raises(RateLimited):
        asyncio.run(guard.admit("/x.Svc/Call", None, "10.0.0.1"))


def test_refusals_log_the_reason_and_the_key_label_but_never_the_token(
    keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    guard = CallGuard(Authenticator(ApiKeys(keys_file)), admin_methods=["/x.Svc/Admin"])
    with pytest.raises(AuthenticationRequired):
        asyncio.run(guard.admit("/x.Svc/Call", f"Bearer {ADMIN_KEY}x", "127.0.0.1"))
    with pytest.raises(AccessDenied):
        asyncio.run(guard.admit("/x.Svc/Admin", f"Bearer {USER_KEY}", "127.0.0.1"))
    assert "refused /x.Svc/Call: TOKEN_INVALID" in caplog.text
    assert "mobile app" in caplog.text
    for secret in (USER_KEY, ADMIN_KEY, hashlib.sha256(USER_KEY.encode()).hexdigest()[:12]):
        assert secret not in caplog.text


def test_require_role_fails_closed_without_a_caller() -> None:
    with pytest.raises(AccessDenied):
        require_role(Role.ADMIN, "A priority above 0")
    token = caller_var.set(Caller("ops", frozenset({Role.ADMIN}), "key:1"))
    try:
        require_role(Role.ADMIN, "A priority above 0")
    finally:
        caller_var.reset(token)
    token = caller_var.set(Caller("app", frozenset({Role.USER}), "key:2"))
    try:
        with pytest.raises(AccessDenied, match="A priority above 0 needs the admin role"):
            require_role(Role.ADMIN, "A priority above 0")
    finally:
        caller_var.reset(token)


def test_peer_hosts_drop_the_port() -> None:
    assert peer_host("ipv4:127.0.0.1:5000") == "127.0.0.1"
    assert peer_host("ipv6:[::1]:5000") == "::1"
    assert peer_host("10.1.2.3:443") == "10.1.2.3"
    assert peer_host("unix:/tmp/socket") == "unix:/tmp/socket"


def test_the_token_interceptors_never_show_the_token() -> None:
    for interceptor in bearer_token_interceptors("s3cret-token"):
        assert "s3cret-token" not in repr(interceptor)


def test_a_token_file_gives_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  tok-en \n")
    assert read_token_file(path) == "tok-en"
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token_file(path)


def test_settings_need_cert_and_key_together_and_name_a_bad_keys_line(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ValidationError) as both:
        ServerSettings(tls_cert_file=cert)
    assert "TLS_CERT_FILE and TLS_KEY_FILE must be set together" in str(both.value)
    keys = tmp_path / "keys"
    keys.write_text("sha256:abc user\n")
    with pytest.raises(ValidationError) as bad:
        ServerSettings(api_keys_file=keys)
    assert settings_problems(ServerSettings, bad.value, {}) == [
        "API_KEYS_FILE: line 1: expected `sha256:<64 hex digits> <role> [label]`"
    ]
    assert not ServerSettings().auth_enabled
    assert ServerSettings(jwt_jwks_url="https://issuer.example/jwks.json").auth_enabled
