"""Every call's last log line says how it ended: OK, the code and reason of an error, CANCELLED, or
DEADLINE_EXCEEDED, with its duration; a stream the caller abandons is not logged as a success."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio

from adgen.type.v1 import error_reason_pb2
from adgen_runtime import Context
from adgen_runtime.errors import BadField, ResourceExhausted, invalid_fields
from adgen_runtime.server import RunningServer, ServiceBinding, start_server
from adgen_runtime.settings import ServerSettings
from adgen_wire.channel import create_aio_channel

pytestmark = pytest.mark.integration

SERVICE = "test.Outcomes"
UNARY, STREAM = f"/{SERVICE}/Unary", f"/{SERVICE}/Stream"
_R = error_reason_pb2


class _Script:
    """Handlers that end as the request says; `started` is set once a call is inside its handler."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def unary(self, request: bytes, context: Context) -> bytes:
        self.started.set()
        if request == b"invalid":
            raise invalid_fields([BadField("keyword", "must not be empty")], _R.ERROR_REASON_EMPTY_KEYWORD)
        if request == b"bug":
            raise RuntimeError("internal detail")
        if request == b"hang":
            await asyncio.Event().wait()  # Until the caller cancels or its deadline passes.
        return b"ok"

    async def stream(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"1"
        yield b"2"
        self.started.set()
        if request == b"busy":
            raise ResourceExhausted(_R.ERROR_REASON_QUEUE_FULL, "queue full", retry_after_s=1.0)
        if request == b"hang":
            await asyncio.Event().wait()


def _raw(message: bytes) -> bytes:
    return message


@pytest.fixture
async def server() -> AsyncIterator[tuple[RunningServer, _Script]]:
    script = _Script()

    def register(grpc_server: aio.Server) -> None:
        handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
            "Unary": grpc.unary_unary_rpc_method_handler(script.unary),
            "Stream": grpc.unary_stream_rpc_method_handler(script.stream),
        }
        grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    running = await start_server(ServerSettings(port=0), [ServiceBinding(SERVICE, register)])
    yield running, script
    await running.stop(None)


async def _done_record(caplog: pytest.LogCaptureFixture, method: str, timeout_s: float = 5.0) -> logging.LogRecord:
    """The `done` line of `method`; the server logs it when its handler ends, maybe after the client returned."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        for record in caplog.records:
            if record.getMessage().startswith(f"done {method} "):
                return record
        await asyncio.sleep(0.01)  # Polling for the server's line, not waiting a fixed time.
    raise AssertionError(f"no done line for {method}: {[r.getMessage() for r in caplog.records]}")


async def _unary(target: str, request: bytes, deadline_s: float | None = None) -> None:
    async with create_aio_channel(target) as channel:
        call = channel.unary_unary(UNARY, request_serializer=_raw, response_deserializer=_raw)
        await call(request, timeout=deadline_s)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="adgen_runtime.interceptors")
    return caplog


async def test_a_unary_call_that_succeeds_is_logged_ok_with_its_duration(
    server: tuple[RunningServer, _Script], logs: pytest.LogCaptureFixture
) -> None:
    await _unary(f"127.0.0.1:{server[0].port}", b"fine")
    record = await _done_record(logs, UNARY)
    assert record.getMessage().startswith(f"done {UNARY} OK in ")
    assert record.__dict__["code"] == "OK" and record.__dict__["duration_s"] >= 0


@pytest.mark.parametrize(
    ("request_bytes", "code", "reason"),
    [(b"invalid", "INVALID_ARGUMENT", "EMPTY_KEYWORD"), (b"bug", "INTERNAL", "INTERNAL")],
)
async def test_a_failed_call_is_logged_with_its_code_and_reason(
    server: tuple[RunningServer, _Script],
    logs: pytest.LogCaptureFixture,
    request_bytes: bytes,
    code: str,
    reason: str,
) -> None:
    with pytest.raises(aio.AioRpcError):
        await _unary(f"127.0.0.1:{server[0].port}", request_bytes)
    record = await _done_record(logs, UNARY)
    assert record.getMessage().startswith(f"done {UNARY} {code} {reason} in ")
    assert (record.__dict__["code"], record.__dict__["reason"]) == (code, reason)


async def test_a_unary_call_its_caller_cancels_is_logged_cancelled(
    server: tuple[RunningServer, _Script], logs: pytest.LogCaptureFixture
) -> None:
    running, script = server
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        call = channel.unary_unary(UNARY, request_serializer=_raw, response_deserializer=_raw)(b"hang")
        await script.started.wait()
        call.cancel()
    assert (await _done_record(logs, UNARY)).__dict__["outcome"] == "CANCELLED"


async def test_a_unary_call_whose_deadline_passes_is_logged_deadline_exceeded(
    server: tuple[RunningServer, _Script], logs: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(aio.AioRpcError) as raised:
        await _unary(f"127.0.0.1:{server[0].port}", b"hang", deadline_s=0.2)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (await _done_record(logs, UNARY)).__dict__["outcome"] == "DEADLINE_EXCEEDED"


async def test_a_stream_its_caller_abandons_is_logged_cancelled_not_ok(
    server: tuple[RunningServer, _Script], logs: pytest.LogCaptureFixture
) -> None:
    running, script = server
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        call = channel.unary_stream(STREAM, request_serializer=_raw, response_deserializer=_raw)(b"hang")
        received = [await call.read(), await call.read()]
        await script.started.wait()
        call.cancel()
    assert received == [b"1", b"2"]
    record = await _done_record(logs, STREAM)
    assert record.getMessage().startswith(f"done {STREAM} CANCELLED in ")


async def test_a_stream_whose_deadline_passes_is_logged_deadline_exceeded(
    server: tuple[RunningServer, _Script], logs: pytest.LogCaptureFixture
) -> None:
    async with create_aio_channel(f"127.0.0.1:{server[0].port}") as channel:
        call = channel.unary_stream(STREAM, request_serializer=_raw, response_deserializer=_raw)(b"hang", timeout=0.3)
        with pytest.raises(aio.AioRpcError) as raised:
            async for _ in call:
                pass
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (await _done_record(logs, STREAM)).__dict__["outcome"] == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize(("request_bytes", "outcome"), [(b"all", "OK"), (b"busy", "RESOURCE_EXHAUSTED QUEUE_FULL")])
async def test_a_stream_that_ends_is_logged_with_how_it_ended(
    server: tuple[RunningServer, _Script], logs: pytest.LogCaptureFixture, request_bytes: bytes, outcome: str
) -> None:
    async with create_aio_channel(f"127.0.0.1:{server[0].port}") as channel:
        call = channel.unary_stream(STREAM, request_serializer=_raw, response_deserializer=_raw)(request_bytes)
        try:
            async for _ in call:
                pass
        except aio.AioRpcError:
            pass
    assert (await _done_record(logs, STREAM)).__dict__["outcome"] == outcome
