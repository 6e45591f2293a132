"""Who is calling and what they may do: bearer tokens (API keys by their hashes, JWTs against a JWKS), the
caller's roles, rate limits, and the one guard both front ends run before a call.

Authentication is on when the server has an API keys file or a JWKS URL. With it off (loopback development)
every caller may do everything, as before. Tokens, keys and their hashes never reach a log line or a caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from grpc import aio
from grpc_interceptor import AsyncServerInterceptor

from adgen.type.v1 import error_reason_pb2
from adgen_runtime import Context
from adgen_runtime.errors import AccessDenied, AuthenticationRequired, Unavailable, reason_name
from adgen_runtime.rate_limit import TokenBuckets

if TYPE_CHECKING:
    from adgen_runtime.settings import ServerSettings

_LOGGER = logging.getLogger(__name__)
_R = error_reason_pb2

AUTHORIZATION_METADATA_KEY = "authorization"
# Services every caller reaches without a token: probes, and generic clients discovering the API.
DEFAULT_OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
# Only asymmetric algorithms: a JWKS publishes public keys, and "none" or HMAC would let a caller sign.
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# How often a changed API keys file is looked for: a stat per call would be cheap, but this is cheaper.
API_KEYS_RECHECK_S = 1.0
_API_KEY_LINE = re.compile(r"sha256:(?P<digest>[0-9a-fA-F]{64})\s+(?P<role>\S+)(?:\s+(?P<label>\S.*))?")
_MAX_LABEL = 64


class Role(enum.StrEnum):
    """What a caller is: a person or app (`user`), another AdGen service (`service`), an operator (`admin`)."""

    USER = "user"
    SERVICE = "service"
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: `label` may be logged (a key's label, a JWT's subject); `identity` is what
    its rate limit counts by and is never logged (it derives from a key's hash)."""

    label: str
    roles: frozenset[Role]
    identity: str

    @classmethod
    def anonymous(cls, peer: str) -> Caller:
        """Any caller while authentication is off: every role, counted by its address for rate limits."""
        return cls("anonymous", frozenset(Role), f"peer:{peer}")


# The caller of the call being served, set by the guard before the handler runs.
caller_var: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("adgen_caller", default=None)


def role_required(role: Role, action: str) -> AccessDenied:
    return AccessDenied(
        _R.ERROR_REASON_ROLE_REQUIRED,
        f"{action} needs the {role.value} role; this caller does not have it.",
        metadata={"required_role": role.value},
    )


def require_role(role: Role, action: str) -> None:
    """Raises PERMISSION_DENIED ROLE_REQUIRED unless the current caller has `role` (e.g. "Priority above 0").

    A call with no caller set (it did not come through the guard) is refused: the check fails closed.
    """
    caller = caller_var.get()
    if caller is None or role not in caller.roles:
        raise role_required(role, action)


# ── tokens ────────────────────────────────────────────────────────────────────────────────────


def token_missing() -> AuthenticationRequired:
    return AuthenticationRequired(
        _R.ERROR_REASON_TOKEN_MISSING,
        "This server needs a bearer token: send `authorization: Bearer <token>`.",
    )


def token_invalid() -> AuthenticationRequired:
    return AuthenticationRequired(
        _R.ERROR_REASON_TOKEN_INVALID, "The bearer token is not valid here; check that it is current and complete."
    )


def token_expired() -> AuthenticationRequired:
    return AuthenticationRequired(_R.ERROR_REASON_TOKEN_EXPIRED, "The bearer token has expired; get a new one.")


def bearer_token(authorization: str | None) -> str:
    """The token of an `authorization: Bearer <token>` value; TOKEN_MISSING when there is none."""
    if not authorization:
        raise token_missing()
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise token_missing()
    token = token.strip()
    if not token:
        raise token_missing()
    return token


class ApiKeyFileError(ValueError):
    """A line of an API keys file that is not `sha256:<hex> <role> [label]`; names the line, never its text."""


@dataclass(frozen=True)
class _ApiKey:
    digest: bytes
    caller: Caller


def read_api_keys(path: Path) -> list[_ApiKey]:
    """The keys of an API keys file: `sha256:<hex digest of the key> <role> [label]` a line, `#` comments
    and blank lines allowed. The label (default: the role and line number) is what logs name the key by."""
    keys: list[_ApiKey] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _API_KEY_LINE.fullmatch(line)
        if match is None:
            raise ApiKeyFileError(f"line {number}: expected `sha256:<64 hex digits> <role> [label]`")
        try:
            role = Role(match["role"].lower())
        except ValueError:
            raise ApiKeyFileError(f"line {number}: the role must be one of user, service, admin") from None
        digest = bytes.fromhex(match["digest"])
        label = (match["label"] or f"{role.value}-key-line-{number}").strip()[:_MAX_LABEL]
        # The identity is a digest of the digest: rate limits tell keys apart without holding their hashes.
        identity = "key:" + hashlib.sha256(b"adgen-rate-limit:" + digest).hexdigest()[:24]
        keys.append(_ApiKey(digest, Caller(label, frozenset({role}), identity)))
    return keys


class ApiKeys:
    """API keys by their SHA-256 digests (the keys themselves are never held), compared in constant time
    and re-read when the file changes; a changed file that does not parse keeps the keys read before."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._stamp = self._file_stamp()
        self._keys = read_api_keys(path)
        self._checked = clock()

    def caller_for(self, token: str) -> Caller | None:
        """The caller whose key `token` is, or None."""
        self._reload_if_changed()
        digest = hashlib.sha256(token.encode()).digest()
        found: Caller | None = None
        for key in self._keys:  # Every entry, always: the time taken says nothing about which matched.
            if hmac.compare_digest(key.digest, digest):
                found = key.caller
        return found

    def _reload_if_changed(self) -> None:
        now = self._clock()
        if now - self._checked < API_KEYS_RECHECK_S:
            return
        self._checked = now
        try:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            self._keys = read_api_keys(self._path)
            self._stamp = stamp
        except (OSError, ValueError) as error:
            problem = str(error) if isinstance(error, ApiKeyFileError) else type(error).__name__
            _LOGGER.warning("the API keys file changed but cannot be read (%s); keeping the keys read before", problem)
            return
        _LOGGER.info("re-read the API keys file: %d key(s)", len(self._keys))

    def _file_stamp(self) -> tuple[int, int, int]:
        stat = self._path.stat()
        return stat.st_ino, stat.st_mtime_ns, stat.st_size


class JwtVerifier:
    """JWTs signed by a key of a JWKS (fetched with PyJWT's PyJWKClient, which caches it), with `exp`
    required and the issuer and audience checked when set. Roles come from `role_claim`: a string or a list."""

    def __init__(
        self, jwks_url: str, *, issuer: str | None = None, audience: str | None = None, role_claim: str = "role"
    ) -> None:
        # The JWKS is cached for 5 minutes, and a token naming an unknown key refetches it at most every 30 s
        # (PyJWT's cooldown), so forged key ids cannot turn into a flood of fetches.
        self._keys = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5, cooldown_duration=30)
        self._issuer = issuer
        self._audience = audience
        self._role_claim = role_claim

    async def caller_for(self, token: str) -> Caller:
        # A JWKS fetch (first use, an unknown key id) is blocking HTTP: off the event loop.
        return await asyncio.to_thread(self._verify, token)

    def _verify(self, token: str) -> Caller:
        try:
            signing_key = self._keys.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=list(JWT_ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise token_expired() from None
        except jwt.PyJWKClientConnectionError:
            _LOGGER.warning("the JWKS could not be fetched; refusing JWTs until it can")
            raise Unavailable(
                _R.ERROR_REASON_UPSTREAM_UNAVAILABLE,
                "The token could not be checked right now; retry in a moment.",
                retry_after_s=1.0,
            ) from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError):
            raise token_invalid() from None
        subject = str(claims.get("sub", ""))[:_MAX_LABEL] or "unnamed"
        return Caller(f"jwt:{subject}", frozenset(_roles(claims.get(self._role_claim))), f"jwt:{subject}")


_ROLE_NAMES = frozenset(role.value for role in Role)


def _roles(claim: object) -> Iterable[Role]:
    values = [claim] if isinstance(claim, str) else claim if isinstance(claim, list) else []
    for value in values:
        if isinstance(value, str) and value.lower() in _ROLE_NAMES:
            yield Role(value.lower())


class Authenticator:
    """Turns a bearer token into a Caller: an API key when one matches, else a JWT when it looks like one."""

    def __init__(self, api_keys: ApiKeys | None = None, jwt_verifier: JwtVerifier | None = None) -> None:
        self._api_keys = api_keys
        self._jwt = jwt_verifier

    async def authenticate(self, authorization: str | None) -> Caller:
        token = bearer_token(authorization)
        if self._api_keys is not None:
            caller = self._api_keys.caller_for(token)
            if caller is not None:
                return caller
        if self._jwt is not None and token.count(".") == 2:
            return await self._jwt.caller_for(token)
        raise token_invalid()


# ── the guard ─────────────────────────────────────────────────────────────────────────────────


class CallGuard:
    """The checks every call makes before it runs, over gRPC and the HTTP edge alike: authentication
    (unless its service is open), the admin role for admin-only methods, then the caller's rate limit.

    Methods are named as gRPC names them: `/package.Service/Method`.
    """

    def __init__(
        self,
        authenticator: Authenticator | None = None,
        *,
        rate_limit: TokenBuckets | None = None,
        open_services: Sequence[str] = DEFAULT_OPEN_SERVICES,
        admin_methods: Iterable[str] = (),
    ) -> None:
        self._authenticator = authenticator
        self._rate_limit = rate_limit
        self._open_services = frozenset(open_services)
        self._admin_methods = frozenset(admin_methods)

    @classmethod
    def from_settings(cls, settings: ServerSettings, admin_methods: Iterable[str] = ()) -> CallGuard:
        api_keys = ApiKeys(settings.api_keys_file) if settings.api_keys_file is not None else None
        verifier = None
        if settings.jwt_jwks_url is not None:
            verifier = JwtVerifier(
                settings.jwt_jwks_url,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                role_claim=settings.jwt_role_claim,
            )
        authenticator = Authenticator(api_keys, verifier) if api_keys or verifier else None
        limit = (
            TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst) if settings.rate_limit_per_s else None
        )
        return cls(
            authenticator, rate_limit=limit, open_services=settings.auth_open_services, admin_methods=admin_methods
        )

    @property
    def authenticating(self) -> bool:
        return self._authenticator is not None

    def with_admin_methods(self, methods: Iterable[str]) -> None:
        """Adds admin-only methods (the server adds those its bindings name)."""
        self._admin_methods = self._admin_methods | frozenset(methods)

    def is_open(self, method: str) -> bool:
        return method.strip("/").partition("/")[0] in self._open_services

    async def admit(self, method: str, authorization: str | None, peer: str) -> Caller | None:
        """The caller of `method` once it may run (None for an open service); raises UNAUTHENTICATED,
        PERMISSION_DENIED or RESOURCE_EXHAUSTED RATE_LIMITED otherwise. `peer` is the caller's address
        (host, no port), which anonymous callers are counted by."""
        if self.is_open(method):
            return None
        if self._authenticator is None:
            caller = Caller.anonymous(peer)
        else:
            try:
                caller = await self._authenticator.authenticate(authorization)
            except AuthenticationRequired as refusal:
                _LOGGER.info("refused %s: %s", method, reason_name(refusal.reason))
                raise
        if not caller.roles:
            _LOGGER.info("refused %s: ROLE_REQUIRED, caller %s has no known role", method, caller.label)
            raise role_required(Role.USER, "This call")
        if method in self._admin_methods and Role.ADMIN not in caller.roles:
            _LOGGER.info("refused %s: ROLE_REQUIRED admin, caller %s", method, caller.label)
            raise role_required(Role.ADMIN, method.rsplit("/", 1)[-1])
        if self._rate_limit is not None:
            self._rate_limit.take(caller.identity)
        return caller


def peer_host(peer: str) -> str:
    """The host of a gRPC peer (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`) or an HTTP client (`1.2.3.4:5000`),
    without the port: one caller opens many connections."""
    for prefix in ("ipv4:", "ipv6:"):
        peer = peer.removeprefix(prefix)
    host, separator, port = peer.rpartition(":")
    return host.strip("[]") if separator and port.isdigit() else peer


class GuardInterceptor(AsyncServerInterceptor):
    """Runs the CallGuard before each call and makes its caller visible to the handler (`caller_var`).

    Inside the ErrorInterceptor, so a refusal leaves as a rich status and is logged as the call's outcome.
    """

    def __init__(self, guard: CallGuard) -> None:
        self._guard = guard

    async def intercept(
        self, method: Callable[..., Any], request_or_iterator: Any, context: Context, method_name: str
    ) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        authorization = metadata.get(AUTHORIZATION_METADATA_KEY)
        caller = await self._guard.admit(
            method_name, authorization if isinstance(authorization, str) else None, peer_host(context.peer() or "")
        )
        caller_var.set(caller)
        response_or_iterator = method(request_or_iterator, context)
        if hasattr(response_or_iterator, "__aiter__"):
            return response_or_iterator
        return await response_or_iterator


# ── calling another service ───────────────────────────────────────────────────────────────────


class _BearerMetadata:
    def __init__(self, token: str) -> None:
        self._header = (AUTHORIZATION_METADATA_KEY, f"Bearer {token}")

    def __repr__(self) -> str:
        return "BearerTokenInterceptor(<token hidden>)"

    def _details(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._header)
        return aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(_BearerMetadata, aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_BearerMetadata, aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_BearerMetadata, aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_BearerMetadata, aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def bearer_token_interceptors(token: str) -> list[aio.ClientInterceptor]:
    """Client interceptors that send `authorization: Bearer <token>` on every call of a channel (over TLS
    or, inside a trusted network, plaintext)."""
    return [_UnaryUnary(token), _UnaryStream(token), _StreamUnary(token), _StreamStream(token)]


def read_token_file(path: Path) -> str:
    """A token kept in a file (a mounted secret): its first line, without surrounding blanks."""
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    if not lines or not lines[0].strip():
        raise ValueError("the token file is empty")
    return lines[0].strip()
