"""Server interceptors: request ids and logging, and the one place errors become statuses."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from grpc import aio
from grpc_interceptor import AsyncServerInterceptor
from grpc_interceptor.exception_to_status import AsyncExceptionToStatusInterceptor

from adgen_client.channel import REQUEST_ID_METADATA_KEY
from adgen_runtime import Context
from adgen_runtime.errors import AdGenError, internal_error
from adgen_runtime.logs import current_request_id, request_id_from, request_id_var

_LOGGER = logging.getLogger(__name__)


class RequestContextInterceptor(AsyncServerInterceptor):
    """Gives every call a request id (the caller's `x-request-id`, or a new one) and logs it.

    The id is answered in the trailing metadata and tagged on every log line of the call. It is
    not sent as initial metadata: that would commit the call and stop clients from retrying an
    UNAVAILABLE the server returns.
    """

    async def intercept(
        self, method: Callable[..., Any], request_or_iterator: Any, context: Context, method_name: str
    ) -> Any:
        incoming = dict(context.invocation_metadata() or ())
        caller_id = incoming.get(REQUEST_ID_METADATA_KEY)
        request_id = request_id_from(caller_id if isinstance(caller_id, str) else None)
        request_id_var.set(request_id)
        context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
        # Probes and reflection arrive every few seconds in production: keep them out of INFO logs.
        level = logging.DEBUG if method_name.startswith(_QUIET_METHOD_PREFIXES) else logging.INFO
        _LOGGER.log(level, "call %s", method_name)
        started = time.perf_counter()
        response_or_iterator = method(request_or_iterator, context)
        if hasattr(response_or_iterator, "__aiter__"):
            return _logged_stream(response_or_iterator, method_name, started, level)
        try:
            return await response_or_iterator
        finally:
            _LOGGER.log(level, "done %s in %.3fs", method_name, time.perf_counter() - started)


_QUIET_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


async def _logged_stream(
    responses: AsyncIterator[Any], method_name: str, started: float, level: int
) -> AsyncIterator[Any]:
    """Passes a server stream through, logging when it ends (streams are the long calls)."""
    try:
        async for response in responses:
            yield response
    finally:
        _LOGGER.log(level, "done %s in %.3fs", method_name, time.perf_counter() - started)


class ErrorInterceptor(AsyncExceptionToStatusInterceptor):
    """Turns domain errors into rich `google.rpc.Status`; anything else becomes a generic INTERNAL.

    Internal text never reaches callers: unexpected exceptions are logged with their
    traceback under the request id, and the caller gets only that id.
    """

    async def handle_exception(
        self, ex: Exception, request_or_iterator: Any, context: Context, method_name: str
    ) -> NoReturn:
        if isinstance(ex, aio.AbortError):
            raise ex  # The handler already set the status itself.
        if isinstance(ex, AdGenError):
            _LOGGER.info("%s failed: %s %s", method_name, ex.code.name, ex.message)
            await context.abort_with_status(_with_request_id(ex.to_status()))
        _LOGGER.exception("%s failed unexpectedly", method_name)
        await context.abort_with_status(_with_request_id(internal_error(current_request_id()).to_status()))
        raise AssertionError("unreachable: abort_with_status raises")


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _with_request_id(status: grpc.Status) -> grpc.Status:
    """The status with the call's request id added to its trailing metadata (abort replaces it)."""
    trailing = (*status.trailing_metadata, (REQUEST_ID_METADATA_KEY, current_request_id()))
    return _Status(status.code, status.details, trailing)


def server_interceptors() -> list[aio.ServerInterceptor]:
    """The interceptor chain every AdGen server uses, outermost first."""
    return [RequestContextInterceptor(), ErrorInterceptor()]
