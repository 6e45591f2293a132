"""The HTTP front end of AdService: Connect (JSON or binary over HTTP/1.1) and gRPC-Web.

Served by uvicorn as a task of the orchestrator's own event loop, next to the gRPC server,
calling the same AdCore; no proxy and no loopback gRPC hop. `curl` works with canonical
proto JSON:

    curl -H 'Content-Type: application/json' -d '{"keyword":"딸기 주스"}' \\
        http://127.0.0.1:8080/adgen.ad.v1.AdService/CreateAd
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
import socket
import ssl
import struct
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import grpc
import uvicorn
from connectrpc.code import Code
from connectrpc.codec import Codec
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.request import RequestContext
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from google.rpc import status_pb2
from grpc_status import rpc_status
from protobuf.wkt import Any as ConnectAny

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1.ad_service_connect import AdServiceASGIApplication
from adgen.type.v1 import error_reason_pb2
from adgen_orchestrator.ad_core import AdCore, CallInfo
from adgen_orchestrator.downstream import STATUS_DETAILS_METADATA_KEY
from adgen_runtime.auth import CallGuard, caller_var, peer_host
from adgen_runtime.errors import (
    BadField,
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    bounded_grpc_status,
    internal_error,
    invalid_fields,
    reason_name,
)
from adgen_runtime.logs import call_request_id, request_id_from, request_id_var
from adgen_runtime.server import InFlightCalls, ShuttingDown
from adgen_runtime.tls import ReloadingSslContext, TlsFiles

_LOGGER = logging.getLogger(__name__)
_M = TypeVar("_M", bound=ProtoMessage)

REQUEST_ID_HEADER = "x-request-id"
# Headers Connect and gRPC-Web clients send, and the ones browsers may read back.
_CORS_ALLOW_HEADERS = (
    "content-type, connect-protocol-version, connect-timeout-ms, connect-accept-encoding, connect-content-encoding, "
    "grpc-timeout, x-grpc-web, x-user-agent, x-request-id, authorization"
)
_CORS_EXPOSE_HEADERS = "grpc-status, grpc-message, grpc-status-details-bin, x-request-id"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConnectAdService:
    """The generated Connect `AdService` protocol, answered by AdCore."""

    def __init__(self, core: AdCore, guard: CallGuard | None = None) -> None:
        self._core = core
        self._guard = guard or CallGuard()

    async def _admit(self, ctx: RequestContext[Any, Any]) -> None:
        """The same checks a gRPC call meets: bearer token, role, rate limit (shared with gRPC)."""
        method = f"/{ctx.method.service_name}/{ctx.method.name}"
        peer = peer_host(ctx.client_address or "")
        caller_var.set(await self._guard.admit(method, ctx.request_headers.get("authorization"), peer))

    async def create_ad(
        self, request: ad_pb.CreateAdRequest, ctx: RequestContext[ad_pb.CreateAdRequest, ad_pb.CreateAdResponse], /
    ) -> ad_pb.CreateAdResponse:
        with _connect_call(ctx, request.request_id) as call:
            await self._admit(ctx)
            return await self._core.create_ad(request, call)

    async def stream_create_ad(
        self,
        request: ad_pb.StreamCreateAdRequest,
        ctx: RequestContext[ad_pb.StreamCreateAdRequest, ad_pb.StreamCreateAdResponse],
        /,
    ) -> AsyncIterator[ad_pb.StreamCreateAdResponse]:
        with _connect_call(ctx, request.request.request_id) as call:
            await self._admit(ctx)
            async for event in self._core.stream_create_ad(request.request, call, field_prefix="request."):
                yield event

    async def edit_ad(
        self, request: ad_pb.EditAdRequest, ctx: RequestContext[ad_pb.EditAdRequest, ad_pb.EditAdResponse], /
    ) -> ad_pb.EditAdResponse:
        with _connect_call(ctx, request.request_id) as call:
            await self._admit(ctx)
            return await self._core.edit_ad(request, call)

    async def stream_edit_ad(
        self,
        request: ad_pb.StreamEditAdRequest,
        ctx: RequestContext[ad_pb.StreamEditAdRequest, ad_pb.StreamEditAdResponse],
        /,
    ) -> AsyncIterator[ad_pb.StreamEditAdResponse]:
        with _connect_call(ctx, request.request.request_id) as call:
            await self._admit(ctx)
            async for event in self._core.stream_edit_ad(request.request, call, field_prefix="request."):
                yield event

    async def list_models(
        self,
        request: ad_pb.ListModelsRequest,
        ctx: RequestContext[ad_pb.ListModelsRequest, ad_pb.ListModelsResponse],
        /,
    ) -> ad_pb.ListModelsResponse:
        with _connect_call(ctx, "") as call:
            await self._admit(ctx)
            return await self._core.list_models(call)


@contextmanager
def _connect_call(ctx: RequestContext[Any, Any], body_request_id: str) -> Iterator[CallInfo]:
    """The call's request id (the body's `request_id`, else the caller's `x-request-id`, else a new one, as on
    gRPC) and deadline; errors leave as Connect errors carrying the same details gRPC callers get, never
    internal text. The last log line says how the call ended."""
    request_id = call_request_id(body_request_id, ctx.request_headers.get(REQUEST_ID_HEADER))
    request_id_var.set(request_id)  # Each HTTP request runs in its own task and context.
    ctx.response_headers[REQUEST_ID_HEADER] = request_id
    remaining_ms = ctx.timeout_ms
    method = ctx.method.name
    _LOGGER.info("call %s over HTTP", method)
    started = time.perf_counter()
    outcome = "OK"
    try:
        yield CallInfo(request_id, None if remaining_ms is None else remaining_ms / 1000)
    except ServiceError as error:
        outcome = f"{error.code.name} {reason_name(error.reason)}"
        raise connect_error(error) from None
    except ConnectError as error:
        outcome = error.code.name
        raise
    except asyncio.CancelledError:
        outcome = "CANCELLED"
        raise
    except Exception:
        outcome = "INTERNAL"
        _LOGGER.exception("%s failed unexpectedly", method)
        raise connect_error(internal_error(request_id)) from None
    finally:
        _LOGGER.info("done %s %s in %.3fs", method, outcome, time.perf_counter() - started)


def connect_error(error: ServiceError) -> ConnectError:
    """The Connect form of a domain error: same code, message and google.rpc details."""
    status = _rich_status(error)
    details = [ErrorDetail(ConnectAny(type_url=detail.type_url, value=detail.value)) for detail in status.details]
    return ConnectError(_connect_code(error.code), status.message, details)


def _rich_status(error: ServiceError) -> status_pb2.Status:
    bounded = bounded_grpc_status(error.to_status())
    try:
        status: status_pb2.Status | None = rpc_status.from_call(_FinishedCall(bounded))
    except ValueError:  # Details that disagree with the code: send the code and message alone.
        status = None
    return status if status is not None else status_pb2.Status(message=error.message)


class _FinishedCall:
    """A status we built ourselves, shown as the finished call `rpc_status.from_call` reads."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return tuple(self._status.trailing_metadata)


def _connect_code(code: grpc.StatusCode) -> Code:
    return Code.CANCELED if code == grpc.StatusCode.CANCELLED else Code[code.name]


def create_http_app(
    core: AdCore, cors_origins: Sequence[str], max_message_bytes: int, *, guard: CallGuard | None = None
) -> AsgiApp:
    """The Connect + gRPC-Web (binary and text) ASGI app for AdService, with CORS for `cors_origins`.

    Requests may be as large as over gRPC (Connect's default of 4 MB is too small for photos). Every
    refusal, including those connectrpc answers by itself, carries the details every other error carries.
    `guard` checks each call's bearer token and rate limit as the gRPC server does (none: every call runs).
    """
    codecs: list[Codec[ProtoMessage, Any]] = [_StrictJsonCodec(), _BinaryCodec()]
    connect_app: AsgiApp = AdServiceASGIApplication(
        ConnectAdService(core, guard), read_max_bytes=max_message_bytes, codecs=codecs
    )
    app = GrpcWebText(ProtocolErrors(connect_app, max_message_bytes))
    return CorsMiddleware(app, cors_origins) if cors_origins else app


# ── request bodies ────────────────────────────────────────────────────────────────────────────

_MAX_BODY_VIOLATIONS = 10
_MAX_ECHOED_NAME = 64
_INTEGER_RANGES = {
    **dict.fromkeys(
        (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32), (-(2**31), 2**31 - 1)
    ),
    **dict.fromkeys((FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys(
        (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64), (-(2**63), 2**63 - 1)
    ),
    **dict.fromkeys((FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64), (0, 2**64 - 1)),
}
_MAX_FLOAT32 = 3.4028234663852886e38
# Proto JSON bytes: standard or URL-safe base64, padded or not.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_INTEGER_TEXT = re.compile(r"-?[0-9]+")


class _StrictJsonCodec:
    """Proto JSON that refuses what the stock codec lets through or describes in parser terms: unknown
    fields and enum names (which would silently become defaults), wrong types, malformed JSON. Each
    problem is a field violation written for people."""

    def name(self) -> str:
        return "json"

    def encode(self, message: ProtoMessage) -> bytes:
        return json_format.MessageToJson(message).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        return decode_json_message(bytes(data), message_class)


class _BinaryCodec:
    """Binary proto whose undecodable bodies get the same details as every other bad request."""

    def name(self) -> str:
        return "proto"

    def encode(self, message: ProtoMessage) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            return message_class.FromString(bytes(data))
        except DecodeError:
            raise _bad_body(f"is not a binary {message_class.DESCRIPTOR.name} message") from None


def decode_json_message(data: bytes, message_class: type[_M]) -> _M:
    """The message a proto JSON body holds, or a Connect INVALID_ARGUMENT naming every field that is wrong.

    The checks run before the conversion so that nothing is coerced: `"placement": "STORY"` is refused
    rather than read as the default placement. Numbers are accepted for enums; validation names unknown ones.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_body("is not UTF-8 text") from None
    try:
        # An empty body is the empty message, as in binary proto; validation then names what is missing.
        value = json.loads(text, object_pairs_hook=_unique_keys) if text.strip() else {}
    except _RepeatedKey as repeated:
        raise connect_error(invalid_fields([BadField(_echoed(repeated.key), "is given more than once")])) from None
    except json.JSONDecodeError as error:
        raise _bad_body(f"is not valid JSON (line {error.lineno}, column {error.colno})") from None
    except RecursionError:
        raise _bad_body("is nested too deeply") from None
    if not isinstance(value, dict):
        raise _bad_body(f"must be a JSON object ({message_class.DESCRIPTOR.name})")
    # The C (upb) descriptor the runtime uses has the same attributes as the Python one the checks are typed for.
    violations = _json_violations(value, cast(Descriptor, message_class.DESCRIPTOR), "")
    if violations:
        raise connect_error(invalid_fields(violations[:_MAX_BODY_VIOLATIONS]))
    message = message_class()
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=False)
    except json_format.ParseError:
        _LOGGER.warning("a %s body passed the JSON checks but not the parser", message_class.DESCRIPTOR.name)
        raise _bad_body(f"is not a valid {message_class.DESCRIPTOR.name}") from None
    return message


class _RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _RepeatedKey(key)
        result[key] = value
    return result


def _bad_body(description: str) -> ConnectError:
    """INVALID_ARGUMENT for a body that is wrong as a whole: the violation's empty field names the request."""
    violation = BadField("", f"The request body {description}")
    return connect_error(
        InvalidArgument(
            error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT,
            f"The request body {description}.",
            field_violations=[violation],
        )
    )


def _echoed(name: str) -> str:
    """A name the caller sent, safe to repeat: escaped and bounded."""
    escaped = json.dumps(name, ensure_ascii=False)[1:-1]
    return escaped if len(escaped) <= _MAX_ECHOED_NAME else escaped[: _MAX_ECHOED_NAME - 1] + "…"


def _json_violations(value: dict[str, Any], descriptor: Descriptor, prefix: str) -> list[BadField]:
    """Every field of one JSON object that the proto JSON mapping of `descriptor` does not allow."""
    by_name = {field.name: field for field in descriptor.fields} | {
        field.json_name: field for field in descriptor.fields
    }
    violations: list[BadField] = []
    seen: dict[str, str] = {}  # Field or oneof name -> the key that set it.
    for key, item in value.items():
        field = by_name.get(key)
        if field is None:
            violations.append(BadField(prefix + _echoed(key), f"is not a field of {descriptor.name}"))
            continue
        path = prefix + field.name
        group = field.containing_oneof.name if field.containing_oneof is not None else field.name
        if group in seen:
            violations.append(BadField(path, f"is given more than once (also as {_echoed(seen[group])})"))
            continue
        if item is None:  # null is the field's default (for a oneof member too: it sets nothing)
            continue
        seen[group] = key
        violations += _field_violations(item, field, path)
    return violations


def _field_violations(item: Any, field: FieldDescriptor, path: str) -> list[BadField]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if not isinstance(item, dict):
            return [BadField(path, "must be a JSON object")]
        value_field = field.message_type.fields_by_name["value"]
        return [v for key, element in item.items() for v in _value_violations(element, value_field, f"{path}[{key}]")]
    if field.is_repeated:
        if not isinstance(item, list):
            return [BadField(path, "must be a JSON array")]
        return [v for index, element in enumerate(item) for v in _value_violations(element, field, f"{path}[{index}]")]
    return _value_violations(item, field, path)


def _value_violations(value: Any, field: FieldDescriptor, path: str) -> list[BadField]:
    """What is wrong with one value of `field` (one element, for a repeated field)."""
    if value is None:
        return [BadField(path, "must not be null")]
    if field.message_type is not None:
        if field.message_type.full_name.startswith("google.protobuf."):
            # Well-known types have JSON forms of their own (a Duration is "1.5s"); their parser checks them.
            try:
                json_format.ParseDict(value, message_factory.GetMessageClass(field.message_type)())
            except json_format.ParseError:
                return [BadField(path, f"is not a valid {field.message_type.name}")]
            return []
        if not isinstance(value, dict):
            return [BadField(path, f"must be a JSON object ({field.message_type.name})")]
        return _json_violations(value, field.message_type, path + ".")
    if field.enum_type is not None:
        if (isinstance(value, str) and value in field.enum_type.values_by_name) or _is_integer(value):
            return []
        names = ", ".join(option.name for option in field.enum_type.values)
        return [BadField(path, f"must be one of {names}")]
    if field.type == FieldDescriptor.TYPE_STRING:
        return [] if isinstance(value, str) else [BadField(path, "must be a string")]
    if field.type == FieldDescriptor.TYPE_BYTES:
        valid = isinstance(value, str) and _BASE64.fullmatch(value) is not None and len(value.rstrip("=")) % 4 != 1
        return [] if valid else [BadField(path, "must be base64-encoded bytes")]
    if field.type == FieldDescriptor.TYPE_BOOL:
        return [] if isinstance(value, bool) else [BadField(path, "must be true or false")]
    if field.type in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[field.type]
        whole = _whole_number(value)
        if whole is not None and low <= whole <= high:
            return []
        return [BadField(path, f"must be a whole number from {low} to {high}")]
    return [] if _is_number(value, field.type) else [BadField(path, "must be a number")]


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole_number(value: Any) -> int | None:
    """The integer proto JSON reads from `value` (a number, or a decimal string), or None."""
    if _is_integer(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value)
    return None


def _is_number(value: Any, kind: int) -> bool:
    if isinstance(value, str):
        if value in ("NaN", "Infinity", "-Infinity"):
            return True
        try:
            value = float(value)
        except ValueError:
            return False
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return kind != FieldDescriptor.TYPE_FLOAT or not math.isfinite(value) or abs(value) <= _MAX_FLOAT32


# ── gRPC-Web text mode ────────────────────────────────────────────────────────────────────────

_GRPC_WEB = "application/grpc-web"
_GRPC_WEB_TEXT = "application/grpc-web-text"


class GrpcWebText:
    """gRPC-Web's text mode (grpc-web's default): base64 request bodies in, base64 response bodies out,
    around the binary gRPC-Web the app speaks. Each response chunk is encoded on its own, padding and all,
    as the gRPC-Web spec allows, so a message leaves the moment the app sends it."""

    def __init__(self, app: AsgiApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        media_type = _media_type(_header(scope, b"content-type") or "")
        if scope["type"] != "http" or not (media_type == _GRPC_WEB_TEXT or media_type.startswith(_GRPC_WEB_TEXT + "+")):
            await self._app(scope, receive, send)
            return
        binary = _GRPC_WEB + media_type[len(_GRPC_WEB_TEXT) :]
        headers = [(key, value) for key, value in scope["headers"] if key.lower() != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", binary.encode("latin-1"))]}
        await self._app(scope, _Base64Body(receive), _base64_sender(send))


class _Base64Body:
    """The request body decoded from base64 as it arrives; a clear INVALID_ARGUMENT if it is not base64."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._pending = b""

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        text = self._pending + b"".join(bytes(message.get("body", b"")).split())
        more = bool(message.get("more_body", False))
        whole = len(text) - len(text) % 4 if more else len(text)
        self._pending = text[whole:]
        try:
            body = _b64decode_chunks(text[:whole])
        except (binascii.Error, ValueError):
            raise _bad_body("is not base64, as the application/grpc-web-text content type says") from None
        return {**message, "body": body, "more_body": more}


def _b64decode_chunks(text: bytes) -> bytes:
    """Base64 that may be several padded chunks end to end (each ends at its own padding)."""
    decoded = bytearray()
    for chunk in re.findall(rb"[^=]+=*|=+", text):
        decoded += base64.b64decode(chunk, validate=True)
    return bytes(decoded)


def _base64_sender(send: Send) -> Send:
    async def send_text(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = []
            for key, value in message.get("headers", ()):
                if key.lower() == b"content-type" and bytes(value).startswith(_GRPC_WEB.encode()):
                    value = _GRPC_WEB_TEXT.encode() + bytes(value)[len(_GRPC_WEB) :]
                if key.lower() != b"content-length":  # The text is longer than the bytes it encodes.
                    headers.append((key, value))
            message = {**message, "headers": headers}
        elif message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": base64.b64encode(bytes(message["body"]))}
        await send(message)

    return send_text


# ── refusals connectrpc answers by itself ─────────────────────────────────────────────────────

# "Not a call this server implements" (no such method, HTTP method or content type).
_UNSUPPORTED_REASON = error_reason_pb2.ERROR_REASON_UNSUPPORTED_CALL
_METHODS = "POST /adgen.ad.v1.AdService/CreateAd, StreamCreateAd, EditAd or StreamEditAd"
_MEDIA_TYPES = (
    "application/json or application/proto (Connect), application/connect+json or application/connect+proto "
    "(Connect streaming), application/grpc-web[-text][+proto] (gRPC-Web)"
)
_HTTP_REFUSALS = {
    404: f"There is no such method here; AdService answers {_METHODS}.",
    405: f"AdService methods take POST: {_METHODS}.",
    415: f"Unsupported content type; send {_MEDIA_TYPES}.",
}
_NATIVE_GRPC = (
    "gRPC needs HTTP/2, which this HTTP port does not serve: call the orchestrator's gRPC port, or use Connect or "
    "gRPC-Web here."
)
_END_STREAM, _GRPC_WEB_TRAILERS = 0x02, 0x80


class ProtocolErrors:
    """Gives the errors connectrpc answers by itself (an unknown path, a wrong HTTP method or content type,
    a malformed envelope or header, a body over the limit, a deadline) what every other error carries: an
    ErrorInfo reason, field violations for bad input, and a message for people instead of framework text.

    They are rewritten on the way out, in the request's protocol: Connect error JSON (unary), a Connect
    end-of-stream message, gRPC-Web status headers or a gRPC-Web trailers frame. Errors that already carry
    an ErrorInfo (everything AdCore raises) pass through untouched.
    """

    def __init__(self, app: AsgiApp, max_message_bytes: int) -> None:
        self._app = app
        self._max_message_bytes = max_message_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        media_type = _media_type(_header(scope, b"content-type") or "")
        request_id = request_id_from(_header(scope, REQUEST_ID_HEADER.encode()))
        response = _RewrittenResponse(send, media_type.startswith(_GRPC_WEB), request_id, self._max_message_bytes)
        if media_type == "application/grpc" or media_type.startswith("application/grpc+"):
            await response.refuse(415, _unsupported(_NATIVE_GRPC), [])
            return
        await self._app(scope, receive, response.send)


class _RewrittenResponse:
    """One response on its way out, with framework errors given their details."""

    def __init__(self, send: Send, grpc_web: bool, request_id: str, max_message_bytes: int) -> None:
        self._send = send
        self._grpc_web = grpc_web
        self._request_id = request_id
        self._max_message_bytes = max_message_bytes
        self._held: Message | None = None  # A start held back until its body shows what to send instead.
        self._held_body = bytearray()
        self._refusal: int | None = None
        self._framed = False  # A Connect stream or gRPC-Web body: enveloped messages, one per chunk.

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self._start(message)
        elif message["type"] == "http.response.body" and (self._held is not None or self._refusal is not None):
            await self._held_message_body(message)
        elif message["type"] == "http.response.body" and self._framed:
            await self._send({**message, "body": self._end_of_stream(bytes(message.get("body", b"")))})
        else:
            await self._send(message)

    async def refuse(self, status: int, error: ServiceError, headers: list[tuple[bytes, bytes]]) -> None:
        """Answers `error`: trailers-only for gRPC-Web (HTTP 200, as gRPC answers), else Connect error JSON."""
        if self._grpc_web:
            status_headers = [(key.encode(), value.encode()) for key, value in grpc_status_fields(error)]
            start_headers = [(b"content-type", b"application/grpc-web+proto"), *status_headers, *headers]
            await self._send({"type": "http.response.start", "status": 200, "headers": start_headers})
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        body = connect_error_json(error)
        json_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
        await self._send({"type": "http.response.start", "status": status, "headers": json_headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def _start(self, message: Message) -> None:
        headers = [(bytes(key).lower(), bytes(value)) for key, value in message.get("headers", ())]
        names = {key for key, _ in headers}
        status = int(message["status"])
        if status in _HTTP_REFUSALS and b"content-type" not in names:
            # connectrpc's HTTPError: an empty body, keeping only its Allow / Accept-Post headers.
            self._refusal = status
            self._held = {**message, "headers": [(k, v) for k, v in headers if k in (b"allow", b"accept-post")]}
            return
        if status != 200 and (dict(headers).get(b"content-type", b"").startswith(b"application/json")):
            self._held = message  # A Connect unary error: its JSON follows.
            return
        content_type = dict(headers).get(b"content-type", b"")
        self._framed = content_type.startswith((b"application/connect+", _GRPC_WEB.encode()))
        grpc_status = dict(headers).get(b"grpc-status")
        if grpc_status not in (None, b"0") and STATUS_DETAILS_METADATA_KEY.encode() not in names:
            # A gRPC-Web trailers-only error without details.
            text = urllib.parse.unquote(dict(headers).get(b"grpc-message", b"").decode("latin-1"))
            error = self._framework_error(_GRPC_CODES.get(grpc_status, Code.UNKNOWN), text)
            kept = [(k, v) for k, v in headers if k not in (b"grpc-status", b"grpc-message")]
            status_headers = [(key.encode(), value.encode()) for key, value in grpc_status_fields(error)]
            message = {**message, "headers": [*kept, *status_headers]}
        await self._send(message)

    async def _held_message_body(self, message: Message) -> None:
        self._held_body += bytes(message.get("body", b""))
        if message.get("more_body", False):
            return
        held, self._held = self._held, None
        assert held is not None
        if self._refusal is not None:
            await self.refuse(self._refusal, _unsupported(_HTTP_REFUSALS[self._refusal]), held["headers"])
            return
        body = bytes(self._held_body)
        error = self._rewritten_connect_error(body)
        body = connect_error_json(error) if error is not None else _with_debug_body(body)
        headers = [(k, v) for k, v in held.get("headers", ()) if bytes(k).lower() != b"content-length"]
        await self._send({**held, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    def _rewritten_connect_error(self, body: bytes) -> ServiceError | None:
        """The error to send instead of a Connect error body without an ErrorInfo, else None."""
        try:
            wire = json.loads(body)
        except ValueError:
            return self._framework_error(Code.UNKNOWN, "")
        if not isinstance(wire, dict) or _has_error_info(wire):
            return None
        code = Code(wire["code"]) if wire.get("code") in _CONNECT_CODES else Code.UNKNOWN
        return self._framework_error(code, str(wire.get("message", "")))

    def _end_of_stream(self, chunk: bytes) -> bytes:
        """`chunk`, or the end of a stream (Connect end message, gRPC-Web trailers) given its details."""
        if len(chunk) < 5 or chunk[0] not in (_END_STREAM, _GRPC_WEB_TRAILERS):
            return chunk  # Compressed (flag bit 0) or partial frames pass as they are.
        (length,) = struct.unpack_from(">I", chunk, 1)
        if length != len(chunk) - 5:
            return chunk
        payload = chunk[5:]
        if chunk[0] == _GRPC_WEB_TRAILERS:
            fields = {}
            for line in payload.split(b"\r\n"):
                key, _, value = line.partition(b":")
                fields[key.strip().lower()] = value.strip()
            grpc_status = fields.get(b"grpc-status", b"")
            if grpc_status in (b"", b"0") or STATUS_DETAILS_METADATA_KEY.encode() in fields:
                return chunk
            text = urllib.parse.unquote(fields.get(b"grpc-message", b"").decode("latin-1"))
            return grpc_web_trailers_frame(self._framework_error(_GRPC_CODES.get(grpc_status, Code.UNKNOWN), text))
        try:
            end = json.loads(payload)
        except ValueError:
            return chunk
        wire = end.get("error") if isinstance(end, dict) else None
        if isinstance(wire, dict) and _has_error_info(wire) and _with_debug_details(wire):
            encoded = json.dumps(end, ensure_ascii=False).encode()
            return struct.pack(">BI", _END_STREAM, len(encoded)) + encoded
        if not isinstance(wire, dict) or _has_error_info(wire):
            return chunk
        code = Code(wire["code"]) if wire.get("code") in _CONNECT_CODES else Code.UNKNOWN
        end["error"] = json.loads(connect_error_json(self._framework_error(code, str(wire.get("message", "")))))
        encoded = json.dumps(end, ensure_ascii=False).encode()
        return struct.pack(">BI", _END_STREAM, len(encoded)) + encoded

    def _framework_error(self, code: Code, text: str) -> ServiceError:
        """Our error for one connectrpc raised by itself; `text` (its message) only picks the wording."""
        reasons = error_reason_pb2
        if code == Code.RESOURCE_EXHAUSTED:
            limit = self._max_message_bytes
            return ResourceExhausted(
                reasons.ERROR_REASON_MESSAGE_TOO_LARGE,
                f"The request is larger than this server's {limit}-byte ({limit / 2**20:.0f} MiB) limit.",
                metadata={"max_bytes": str(limit)},
            )
        if code == Code.INVALID_ARGUMENT:
            return _malformed(_protocol_description(text))
        if code == Code.UNIMPLEMENTED:
            return _unsupported(_protocol_description(text))
        if code == Code.DEADLINE_EXCEEDED:
            return DeadlineExceeded(reasons.ERROR_REASON_JOB_CANCELLED, "The request's deadline ran out.")
        if code == Code.CANCELED:
            return Cancelled(reasons.ERROR_REASON_JOB_CANCELLED, "The request was cancelled.")
        if code == Code.UNAVAILABLE:
            return Unavailable(reasons.ERROR_REASON_NOT_READY, "The service cannot take requests now.", retry_after_s=1)
        _LOGGER.error("the HTTP edge answered %s by itself: %s", code.value, text[:200])
        return internal_error(self._request_id)


def _protocol_description(text: str) -> str:
    """A readable description of a malformed request, from the kind connectrpc named (never its text, which
    can quote headers and parser errors); the first matching marker wins."""
    for marker, description in _PROTOCOL_PROBLEMS:
        if marker in text:
            return description
    return "The request is not a well-formed Connect or gRPC-Web call."


_PROTOCOL_PROBLEMS = (
    ("connect-protocol-version", "The connect-protocol-version header must be 1."),
    ("timeout", "The request's timeout header (connect-timeout-ms or grpc-timeout) is malformed."),
    ("compression", "The request's content encoding is not supported; send identity or gzip."),
    ("decompress", "The request body is not valid data in its declared content encoding."),
    ("zero messages", "The request carries no message; send exactly one."),
    ("multiple messages", "The request carries more than one message; send exactly one."),
    ("promised", "The request's message framing says more bytes than the body holds."),
    ("envelope", "The request's message framing (the 5-byte envelope) is malformed."),
    ("'message' parameter", "A GET request needs the message query parameter."),
    ("base64", "The request's message query parameter is not base64."),
)
_CONNECT_CODES = frozenset(code.value for code in Code)
_GRPC_CODES = {
    str(status.value[0]).encode(): _connect_code(status) for status in grpc.StatusCode if status != grpc.StatusCode.OK
}


def _malformed(description: str) -> InvalidArgument:
    return InvalidArgument(
        error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT,
        description,
        field_violations=[BadField("", description)],
    )


def _unsupported(description: str) -> ServiceError:
    return _Unimplemented(_UNSUPPORTED_REASON, description)


class _Unimplemented(ServiceError):
    """Not a call this server implements: an unknown method, HTTP method, content type or encoding."""

    code = grpc.StatusCode.UNIMPLEMENTED


def _has_error_info(wire: dict[str, Any]) -> bool:
    details = wire.get("details")
    return isinstance(details, list) and any(
        isinstance(detail, dict) and detail.get("type") == "google.rpc.ErrorInfo" for detail in details
    )


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def connect_error_json(error: ServiceError) -> bytes:
    """Connect's JSON form of `error` (an error response body, or the `error` of an end-of-stream message)."""
    status = _rich_status(error)
    details = [_connect_detail(detail.type_url.rpartition("/")[2], detail.value) for detail in status.details]
    body = {"code": _connect_code(error.code).value, "message": status.message, "details": details}
    return json.dumps(body, ensure_ascii=False).encode()


def _connect_detail(type_name: str, value: bytes) -> dict[str, Any]:
    """One Connect error detail: the type name (not the URL), unpadded base64 and, as connectrpc's own
    clients show it, the message as JSON under `debug` when its type is known here."""
    detail: dict[str, Any] = {"type": type_name, "value": base64.b64encode(value).decode().rstrip("=")}
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
        detail["debug"] = json_format.MessageToDict(message_factory.GetMessageClass(descriptor).FromString(value))
    except (KeyError, DecodeError):
        pass  # An unknown or unreadable detail still travels, just without its readable form.
    return detail


def _with_debug_details(wire: dict[str, Any]) -> bool:
    """Adds `debug` to the details of Connect error JSON `wire` that lack it; True if any changed."""
    changed = False
    for index, detail in enumerate(wire.get("details") or ()):
        if isinstance(detail, dict) and "debug" not in detail and isinstance(detail.get("value"), str):
            try:
                value = base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
            except binascii.Error:
                continue
            wire["details"][index] = {**detail, **_connect_detail(str(detail.get("type", "")), value)}
            changed = changed or "debug" in wire["details"][index]
    return changed


def _with_debug_body(body: bytes) -> bytes:
    """Connect error JSON `body` (connectrpc's, for an error that already has its details) with `debug` added."""
    try:
        wire = json.loads(body)
    except ValueError:
        return body
    if not isinstance(wire, dict) or not _with_debug_details(wire):
        return body
    return json.dumps(wire, ensure_ascii=False).encode()


def grpc_status_fields(error: ServiceError) -> list[tuple[str, str]]:
    """The grpc-status, grpc-message and grpc-status-details-bin of `error`, as headers or trailers carry them."""
    status = _rich_status(error)
    status.code = error.code.value[0]
    return [
        ("grpc-status", str(status.code)),
        ("grpc-message", urllib.parse.quote(status.message, safe="")),
        (STATUS_DETAILS_METADATA_KEY, base64.b64encode(status.SerializeToString()).decode().rstrip("=")),
    ]


def grpc_web_trailers_frame(error: ServiceError) -> bytes:
    """The gRPC-Web trailers frame that ends a response with `error`."""
    trailers = "".join(f"{key}: {value}\r\n" for key, value in grpc_status_fields(error)).encode()
    return struct.pack(">BI", _GRPC_WEB_TRAILERS, len(trailers)) + trailers


class CorsMiddleware:
    """Answers browser preflights and marks responses readable by the allowed origins."""

    # Not Starlette's CORSMiddleware: starlette is no orchestrator dependency (only streamlit's, in the
    # web extra), connectrpc 0.13 has no CORS of its own, and Starlette answers preflights 200, not 204.

    def __init__(self, app: AsgiApp, allowed_origins: Sequence[str]) -> None:
        self._app = app
        self._any_origin = "*" in allowed_origins
        self._origins = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None or not (self._any_origin or origin in self._origins):
            await self._app(scope, receive, send)
            return
        allow = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            preflight = [
                *allow,
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", _CORS_ALLOW_HEADERS.encode()),
                (b"access-control-max-age", b"7200"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": preflight})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                exposed = (b"access-control-expose-headers", _CORS_EXPOSE_HEADERS.encode())
                message = {**message, "headers": [*message.get("headers", ()), *allow, exposed]}
            await send(message)

        await self._app(scope, receive, send_with_cors)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the orchestrator's loop owns SIGTERM/SIGINT."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpEdge:
    """uvicorn serving an ASGI app on a socket bound up front, as a task of the running loop, draining
    with the gRPC server by the same deadline.

    Binding first means the port is known (and already accepting) when this returns. A drain keeps the
    port open and refuses every new request at once with UNAVAILABLE NOT_READY and RetryInfo, in its
    protocol's error form (Connect error JSON, a Connect end-of-stream message, gRPC-Web trailers), so a
    client learns why instead of meeting a closed port; running requests may finish until the deadline,
    and a stream still running then ends with the same error. CORS for `cors_origins` is applied
    outside that guard, so browsers can read a refusal too.
    """

    def __init__(
        self, app: AsgiApp, host: str, port: int, *, cors_origins: Sequence[str] = (), tls: TlsFiles | None = None
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host.strip("[]"), port), family=family)
        self.port: int = self._socket.getsockname()[1]
        self._app = app
        self.calls = InFlightCalls()
        served: AsgiApp = CorsMiddleware(self._guarded, cors_origins) if cors_origins else self._guarded
        # By the time uvicorn shuts down, the drain has ended every request; a second is plenty to close.
        # asgi3 said outright: uvicorn would take a bound method for an ASGI 2 app.
        config = uvicorn.Config(
            served,
            interface="asgi3",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
            # HTTPS from the same certificate files as gRPC, re-read when they are rotated.
            ssl_context_factory=_ssl_context_factory(tls) if tls is not None else None,
        )
        self._server = _EmbeddedUvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        self._task.add_done_callback(_log_crash)
        scheme = "HTTP" if tls is None else "HTTPS"
        _LOGGER.info("serving %s (Connect, gRPC-Web) on %s:%d", scheme, host, self.port)

    def begin_drain(self) -> None:
        """Refuses every new request from now on, with UNAVAILABLE NOT_READY."""
        self.calls.begin_drain()

    async def drain(self, deadline: float) -> None:
        """Refuses new requests at once, lets running ones finish until `deadline` (a `time.monotonic()`
        value), ends those left with UNAVAILABLE NOT_READY, then stops serving and closes the socket."""
        cut = await self.calls.drain(deadline)
        if cut:
            _LOGGER.warning("cut %d HTTP request(s) still running at the end of the grace period", cut)
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._socket.close()

    async def stop(self) -> None:
        """Stops at once; running requests end with UNAVAILABLE NOT_READY."""
        await self.drain(time.monotonic())

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        exchange = HttpEdge._Exchange(_header(scope, b"content-type") or "", send)
        try:
            self.calls.admit()  # Before the app's coroutine exists: a refused request runs nothing.
            await self.calls.run(self._app(scope, receive, exchange.send), on_cut=exchange.stop_forwarding)
        except ShuttingDown as error:  # Refused at once during a drain, or cut at its deadline.
            await exchange.end_with(error)

    class _Exchange:
        """One HTTP request's response as it goes out, so a drain can end it in its protocol's form."""

        def __init__(self, content_type: str, send: Send) -> None:
            self._media_type = content_type.partition(";")[0].strip().lower()
            self._send = send
            self._forwarding = True
            self._started = False
            self._finished = False

        async def send(self, message: Message) -> None:
            if not self._forwarding:
                return  # Cut: what the app sends while it unwinds would contradict the status we send.
            if message["type"] == "http.response.start":
                self._started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                self._finished = True
            await self._send(message)

        def stop_forwarding(self) -> None:
            self._forwarding = False

        async def end_with(self, error: ServiceError) -> None:
            """Answers `error` if nothing was sent yet, else ends the stream with it."""
            self._forwarding = False
            if self._finished:
                return
            if self._started:
                await self._send({"type": "http.response.body", "body": self._end_of_stream(error), "more_body": False})
                return
            if self._is_stream():
                status, content_type, body = 200, self._media_type, self._end_of_stream(error)
            else:  # Connect unary, and anything that is not a known protocol: Connect error JSON.
                status, content_type, body = 503, "application/json", connect_error_json(error)
            headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
            await self._send({"type": "http.response.start", "status": status, "headers": headers})
            await self._send({"type": "http.response.body", "body": body, "more_body": False})

        def _is_stream(self) -> bool:
            return self._media_type.startswith(("application/connect+", "application/grpc-web"))

        def _end_of_stream(self, error: ServiceError) -> bytes:
            """The last message of a Connect stream or gRPC-Web response, carrying `error`."""
            if self._media_type.startswith("application/grpc-web"):
                frame = grpc_web_trailers_frame(error)
                return base64.b64encode(frame) if self._media_type.startswith("application/grpc-web-text") else frame
            if self._media_type.startswith("application/connect+"):
                end = json.dumps({"error": json.loads(connect_error_json(error))}, ensure_ascii=False).encode()
                return struct.pack(">BI", 0x02, len(end)) + end
            return b""  # A unary response cut halfway has no end message: it stays truncated.


def _ssl_context_factory(tls: TlsFiles) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    reloading = ReloadingSslContext(tls)  # Built now: bad files fail the start, not the first request.

    def factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return reloading.context

    return factory


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _LOGGER.error("the HTTP edge stopped", exc_info=task.exception())
