"""Server interceptors: request ids, call outcomes in the log, request size, and the one place errors
become statuses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_interceptor import AsyncServerInterceptor
from grpc_interceptor.exception_to_status import AsyncExceptionToStatusInterceptor
from opentelemetry import trace

from adgen.type.v1 import error_reason_pb2
from adgen_runtime import Context
from adgen_runtime.errors import (
    STATUS_DETAILS_METADATA_KEY,
    GrpcStatus,
    ResourceExhausted,
    ServiceError,
    bounded_grpc_status,
    internal_error,
)
from adgen_runtime.logs import (
    REQUEST_ID_SPAN_ATTRIBUTE,
    call_request_id,
    current_request_id,
    is_request_id,
    request_id_var,
)
from adgen_runtime.metrics import CallMetrics
from adgen_wire.channel import REQUEST_ID_METADATA_KEY

_LOGGER = logging.getLogger(__name__)

# Probes and reflection arrive every few seconds in production: keep them out of INFO logs.
_QUIET_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class RequestContextInterceptor(AsyncServerInterceptor):
    """Gives every call a request id and logs how the call ended, with its duration.

    The id is the request message's own `request_id` field when it holds a valid one (inside the
    `request` wrapper of a stream request), else the caller's `x-request-id`, else a new one. It is
    answered in the trailing metadata and tagged on every log line of the call. It is not sent as
    initial metadata: that would commit the call and stop clients from retrying an UNAVAILABLE the
    server returns.

    The last line of each call is `done <method> <outcome> in <seconds>s`, the outcome being OK, the
    status code and ErrorInfo reason of an error, CANCELLED when the caller went away, or
    DEADLINE_EXCEEDED when its deadline passed; the record carries them as `outcome`, `code`, `reason`
    and `duration_s`.
    """

    def __init__(self, metrics: CallMetrics | None = None) -> None:
        self._metrics = metrics

    async def intercept(
        self, method: Callable[..., Any], request_or_iterator: Any, context: Context, method_name: str
    ) -> Any:
        incoming = dict(context.invocation_metadata() or ())
        header = incoming.get(REQUEST_ID_METADATA_KEY)
        header_id = header if isinstance(header, str) else None
        request_id = call_request_id(_body_request_id(request_or_iterator), header_id)
        request_id_var.set(request_id)
        context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
        level = logging.DEBUG if method_name.startswith(_QUIET_METHOD_PREFIXES) else logging.INFO
        if header_id is not None and header_id != request_id and is_request_id(header_id):
            # A proxy's id, kept in the log so its traces still lead here.
            _LOGGER.log(level, "call %s (the caller's x-request-id was %s)", method_name, header_id)
        else:
            _LOGGER.log(level, "call %s", method_name)
        # Every span of this call (the server span and the client spans of its downstream calls) names it.
        trace.get_current_span().set_attribute(REQUEST_ID_SPAN_ATTRIBUTE, request_id)
        started = time.perf_counter()

        def finish(error: BaseException | None) -> None:
            code, reason = _outcome(error, context)
            duration_s = time.perf_counter() - started
            _log_outcome(method_name, code, reason, duration_s, level)
            if self._metrics is not None:
                self._metrics.observe(method_name, code, duration_s)

        response_or_iterator = method(request_or_iterator, context)
        if hasattr(response_or_iterator, "__aiter__"):
            return _finished_stream(response_or_iterator, finish)
        try:
            response = await response_or_iterator
        except BaseException as error:
            finish(error)
            raise
        finish(None)
        return response


async def _finished_stream(
    responses: AsyncIterator[Any], finish: Callable[[BaseException | None], None]
) -> AsyncIterator[Any]:
    """Passes a server stream through, then records how it ended (streams are the long calls)."""
    try:
        async for response in responses:
            yield response
    except BaseException as error:
        finish(error)
        raise
    finish(None)


def _body_request_id(request_or_iterator: Any) -> str:
    """The `request_id` field of a unary request message, or of the `request` it wraps; "" if none."""
    message = request_or_iterator
    for _ in range(2):
        if not isinstance(message, Message):
            return ""
        fields = message.DESCRIPTOR.fields_by_name
        field = fields.get("request_id")
        if field is not None and field.type == field.TYPE_STRING and not field.is_repeated:
            value: str = getattr(message, field.name)
            return value
        wrapped = fields.get("request")
        if wrapped is None or wrapped.type != wrapped.TYPE_MESSAGE or wrapped.is_repeated:
            return ""
        message = getattr(message, wrapped.name)
    return ""


def _outcome(error: BaseException | None, context: Context) -> tuple[str, str]:
    """The status code name and ErrorInfo reason a call ended with ("" when it has none)."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        # The server cancels a call when its caller cancels or its deadline passes; the clock tells which.
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return ("DEADLINE_EXCEEDED" if expired else "CANCELLED"), ""
    code = context.code()
    if error is not None and not isinstance(error, aio.AbortError):
        return grpc.StatusCode.UNKNOWN.name, ""  # The ErrorInterceptor maps every Exception; this is a BaseException.
    if code is None:
        return grpc.StatusCode.OK.name, ""
    return code.name, _reason_in(context.trailing_metadata())


def _reason_in(trailing_metadata: Any) -> str:
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_METADATA_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:
                return ""
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason: str = info.reason
                    return reason
    return ""


def _log_outcome(method_name: str, code: str, reason: str, duration_s: float, level: int) -> None:
    described = f"{code} {reason}" if reason else code
    fields = {"method": method_name, "outcome": described, "code": code, "reason": reason, "duration_s": duration_s}
    _LOGGER.log(level, "done %s %s in %.3fs", method_name, described, duration_s, extra=fields)


class RequestSizeInterceptor(AsyncServerInterceptor):
    """Refuses a request message larger than the configured limit with MESSAGE_TOO_LARGE naming the limit.

    The transport itself can only answer a bare RESOURCE_EXHAUSTED with no details, before any handler
    runs, so servers set its receive limit to `transport_receive_limit(max_bytes)` and leave the
    configured limit to this interceptor: a message up to that much larger gets an error that says
    what the limit is; one beyond it still gets the transport's.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    async def intercept(
        self, method: Callable[..., Any], request_or_iterator: Any, context: Context, method_name: str
    ) -> Any:
        if isinstance(request_or_iterator, Message):
            self._check(request_or_iterator)
        elif hasattr(request_or_iterator, "__aiter__"):
            request_or_iterator = self._checked_stream(request_or_iterator)
        response_or_iterator = method(request_or_iterator, context)
        if hasattr(response_or_iterator, "__aiter__"):
            return response_or_iterator
        return await response_or_iterator

    async def _checked_stream(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Message):
                self._check(request)
            yield request

    def _check(self, request: Message) -> None:
        size = request.ByteSize()
        if size > self._max_bytes:
            raise message_too_large(size, self._max_bytes)


def message_too_large(size: int, max_bytes: int) -> ResourceExhausted:
    """The error for a request of `size` bytes over a limit of `max_bytes`."""
    return ResourceExhausted(
        error_reason_pb2.ERROR_REASON_MESSAGE_TOO_LARGE,
        f"The request is {size:,} bytes; this server accepts at most {max_bytes:,} bytes per message.",
        metadata={"max_bytes": str(max_bytes), "message_bytes": str(size)},
    )


def transport_receive_limit(max_bytes: int) -> int:
    """The transport's receive limit for a configured `max_bytes`: a quarter more, so that
    RequestSizeInterceptor sees and answers the near misses (gRPC caps lengths at 2**31 - 1)."""
    return min(max_bytes + max_bytes // 4, 2**31 - 1)


def with_request_size_limit(options: Sequence[tuple[str, Any]], max_bytes: int) -> list[tuple[str, Any]]:
    """Server `options` with the receive limit raised to `transport_receive_limit(max_bytes)`; pair them
    with `server_interceptors(max_bytes)`. Replaced, not appended: gRPC keeps the first of two equal keys."""
    kept = [option for option in options if option[0] != _RECEIVE_LIMIT_OPTION]
    return [*kept, (_RECEIVE_LIMIT_OPTION, transport_receive_limit(max_bytes))]


_RECEIVE_LIMIT_OPTION = "grpc.max_receive_message_length"


class ErrorInterceptor(AsyncExceptionToStatusInterceptor):
    """Turns domain errors into rich `google.rpc.Status`; anything else becomes a generic INTERNAL.

    Internal text never reaches callers: unexpected exceptions are logged with their
    traceback under the request id, and the caller gets only that id. Every status is bounded
    (`bounded_grpc_status`), so no echoed value can overflow the trailers.
    """

    async def handle_exception(
        self, ex: Exception, request_or_iterator: Any, context: Context, method_name: str
    ) -> NoReturn:
        if isinstance(ex, aio.AbortError):
            raise ex  # The handler already set the status itself.
        if isinstance(ex, ServiceError):
            status = bounded_grpc_status(ex.to_status())
            _LOGGER.info("%s failed: %s %s", method_name, ex.code.name, status.details)
            await context.abort_with_status(_with_request_id(status))
        _LOGGER.exception("%s failed unexpectedly", method_name)
        await context.abort_with_status(_with_request_id(internal_error(current_request_id()).to_status()))
        raise AssertionError("unreachable: abort_with_status raises")


def _with_request_id(status: grpc.Status) -> grpc.Status:
    """The status with the call's request id added to its trailing metadata (abort replaces it)."""
    trailing = (*status.trailing_metadata, (REQUEST_ID_METADATA_KEY, current_request_id()))
    return GrpcStatus(status.code, status.details, trailing)


def server_interceptors(
    max_request_bytes: int | None = None, metrics: CallMetrics | None = None
) -> list[aio.ServerInterceptor]:
    """The interceptor chain every AdGen server uses, outermost first.

    With `max_request_bytes`, requests over it get MESSAGE_TOO_LARGE (see RequestSizeInterceptor); with
    `metrics`, every call is counted and timed by method and code.
    """
    chain: list[aio.ServerInterceptor] = [RequestContextInterceptor(metrics), ErrorInterceptor()]
    if max_request_bytes is not None:
        chain.append(RequestSizeInterceptor(max_request_bytes))
    return chain
