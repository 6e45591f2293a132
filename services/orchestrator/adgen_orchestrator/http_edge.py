"""The HTTP front end of AdService: Connect (JSON or binary over HTTP/1.1) and gRPC-Web.

Served by uvicorn as a task of the orchestrator's own event loop, next to the gRPC server,
calling the same AdCore; no proxy and no loopback gRPC hop. `curl` works with canonical
proto JSON:

    curl -H 'Content-Type: application/json' -d '{"keyword":"딸기 주스"}' \\
        http://127.0.0.1:8080/adgen.ad.v1.AdService/CreateAd
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
import uvicorn
from connectrpc.code import Code
from connectrpc.codec import Codec
from connectrpc.compat import google_protobuf_codecs
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.request import RequestContext
from google.protobuf.message import Message as ProtoMessage
from google.rpc import status_pb2
from protobuf.wkt import Any as ConnectAny

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1.ad_service_connect import AdServiceASGIApplication
from adgen.type.v1 import error_reason_pb2
from adgen_orchestrator.ad_core import AdCore, CallInfo
from adgen_orchestrator.downstream import STATUS_DETAILS_METADATA_KEY
from adgen_runtime.errors import AdGenError, InvalidArgument, internal_error
from adgen_runtime.logs import request_id_from, request_id_var

_LOGGER = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# Headers Connect and gRPC-Web clients send, and the ones browsers may read back.
_CORS_ALLOW_HEADERS = (
    "content-type, connect-protocol-version, connect-timeout-ms, connect-accept-encoding, connect-content-encoding, "
    "grpc-timeout, x-grpc-web, x-user-agent, x-request-id"
)
_CORS_EXPOSE_HEADERS = "grpc-status, grpc-message, grpc-status-details-bin, x-request-id"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConnectAdService:
    """The generated Connect `AdService` protocol, answered by AdCore."""

    def __init__(self, core: AdCore) -> None:
        self._core = core

    async def create_ad(
        self, request: ad_pb.CreateAdRequest, ctx: RequestContext[ad_pb.CreateAdRequest, ad_pb.CreateAdResponse], /
    ) -> ad_pb.CreateAdResponse:
        with _connect_call(ctx) as call:
            return await self._core.create_ad(request, call)

    async def stream_create_ad(
        self,
        request: ad_pb.StreamCreateAdRequest,
        ctx: RequestContext[ad_pb.StreamCreateAdRequest, ad_pb.StreamCreateAdResponse],
        /,
    ) -> AsyncIterator[ad_pb.StreamCreateAdResponse]:
        with _connect_call(ctx) as call:
            async for event in self._core.stream_create_ad(request.request, call, field_prefix="request."):
                yield event

    async def edit_ad(
        self, request: ad_pb.EditAdRequest, ctx: RequestContext[ad_pb.EditAdRequest, ad_pb.EditAdResponse], /
    ) -> ad_pb.EditAdResponse:
        with _connect_call(ctx) as call:
            return await self._core.edit_ad(request, call)

    async def stream_edit_ad(
        self,
        request: ad_pb.StreamEditAdRequest,
        ctx: RequestContext[ad_pb.StreamEditAdRequest, ad_pb.StreamEditAdResponse],
        /,
    ) -> AsyncIterator[ad_pb.StreamEditAdResponse]:
        with _connect_call(ctx) as call:
            async for event in self._core.stream_edit_ad(request.request, call, field_prefix="request."):
                yield event


@contextmanager
def _connect_call(ctx: RequestContext[Any, Any]) -> Iterator[CallInfo]:
    """The call's request id (the caller's `x-request-id` or a new one) and deadline; errors
    leave as Connect errors carrying the same details gRPC callers get, never internal text."""
    request_id = request_id_from(ctx.request_headers.get(REQUEST_ID_HEADER))
    request_id_var.set(request_id)  # Each HTTP request runs in its own task and context.
    ctx.response_headers[REQUEST_ID_HEADER] = request_id
    remaining_ms = ctx.timeout_ms
    method = ctx.method.name
    _LOGGER.info("call %s over HTTP", method)
    started = time.perf_counter()
    try:
        yield CallInfo(request_id, None if remaining_ms is None else remaining_ms / 1000)
    except AdGenError as error:
        _LOGGER.info("%s failed: %s %s", method, error.code.name, error.message)
        raise connect_error(error) from None
    except ConnectError:
        raise
    except Exception:
        _LOGGER.exception("%s failed unexpectedly", method)
        raise connect_error(internal_error(request_id)) from None
    finally:
        _LOGGER.info("done %s in %.3fs", method, time.perf_counter() - started)


def connect_error(error: AdGenError) -> ConnectError:
    """The Connect form of a domain error: same code, message and google.rpc details."""
    status = _rich_status(error)
    details = [ErrorDetail(ConnectAny(type_url=detail.type_url, value=detail.value)) for detail in status.details]
    return ConnectError(_connect_code(error.code), status.message, details)


def _rich_status(error: AdGenError) -> status_pb2.Status:
    for key, value in error.to_status().trailing_metadata:
        if key == STATUS_DETAILS_METADATA_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return status_pb2.Status(message=error.message)


def _connect_code(code: grpc.StatusCode) -> Code:
    return Code.CANCELED if code == grpc.StatusCode.CANCELLED else Code[code.name]


def create_http_app(core: AdCore, cors_origins: Sequence[str], max_message_bytes: int) -> AsgiApp:
    """The Connect + gRPC-Web ASGI app for AdService, with CORS for `cors_origins`.

    Requests may be as large as over gRPC (Connect's default of 4 MB is too small for photos).
    """
    codecs = [_DecodeErrorsWithDetails(codec) for codec in google_protobuf_codecs()]
    connect_app: AsgiApp = AdServiceASGIApplication(
        ConnectAdService(core), read_max_bytes=max_message_bytes, codecs=codecs
    )
    return CorsMiddleware(connect_app, cors_origins) if cors_origins else connect_app


class _DecodeErrorsWithDetails:
    """A codec whose undecodable requests (bad JSON, wrong types) get the ErrorInfo every
    other bad request carries, not a bare Connect error."""

    def __init__(self, codec: Codec[ProtoMessage, Any]) -> None:
        self._codec = codec

    def name(self) -> str:
        return self._codec.name()

    def encode(self, message: ProtoMessage) -> bytes:
        return self._codec.encode(message)

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            return self._codec.decode(data, message_class)
        except Exception as error:  # The parser's message describes the caller's body, not our code.
            invalid = InvalidArgument(
                error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT,
                f"The request body is not a valid {message_class.DESCRIPTOR.full_name}: {error}",
            )
            raise connect_error(invalid) from None


class CorsMiddleware:
    """Answers browser preflights and marks responses readable by the allowed origins."""

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
    """uvicorn serving an ASGI app on a socket bound up front, as a task of the running loop.

    Binding first means the port is known (and already accepting) when this returns.
    """

    def __init__(self, app: AsgiApp, host: str, port: int, grace_s: float) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host.strip("[]"), port), family=family)
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=max(1, math.ceil(grace_s))
        )
        self._server = _EmbeddedUvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        self._task.add_done_callback(_log_crash)
        _LOGGER.info("serving HTTP (Connect, gRPC-Web) on %s:%d", host, self.port)

    async def stop(self) -> None:
        """Stops accepting, lets open requests finish within the grace period, closes the socket."""
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._socket.close()


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _LOGGER.error("the HTTP edge stopped", exc_info=task.exception())
