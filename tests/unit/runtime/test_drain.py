"""The shared drain: refuse new calls at once, let running ones finish, cut the rest within one grace period."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from adgen_runtime import Context
from adgen_runtime.server import CUT_SETTLE_S, SHUTDOWN_RETRY_AFTER_S, RunningServer, ServiceBinding, start_server
from adgen_runtime.settings import ServerSettings
from adgen_wire.channel import create_aio_channel

SERVICE = "test.Slow"
GRACE_S = 1.0
# What a drain may take beyond its grace: the cut calls' settling, then the server's own close.
SLACK_S = 2 * CUT_SETTLE_S + 0.5


def _raw(message: bytes) -> bytes:
    return message


@dataclass
class SlowService:
    """`Wait` answers once `release` is set; `Ticks` streams a message every 50 ms until cancelled."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, request: bytes, context: Context) -> bytes:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b"done"

    async def ticks(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        self.started.set()
        try:
            while True:
                yield b"tick"
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def register(self, server: aio.Server) -> None:
        handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
            "Wait": grpc.unary_unary_rpc_method_handler(self.wait),
            "Ticks": grpc.unary_stream_rpc_method_handler(self.ticks),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@dataclass
class Slow:
    service: SlowService
    running: RunningServer
    channel: aio.Channel

    def wait(self, timeout: float = 30) -> aio.UnaryUnaryCall[bytes, bytes]:
        method = self.channel.unary_unary(f"/{SERVICE}/Wait", request_serializer=_raw, response_deserializer=_raw)
        return method(b"", timeout=timeout)

    def ticks(self) -> aio.UnaryStreamCall[bytes, bytes]:
        method = self.channel.unary_stream(f"/{SERVICE}/Ticks", request_serializer=_raw, response_deserializer=_raw)
        return method(b"", timeout=30)

    async def health(self, name: str = SERVICE) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
        reply = await health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=name))
        return reply.status

    async def until_draining(self) -> None:
        await self.running.calls.drain_begun.wait()


@pytest.fixture
async def slow() -> AsyncIterator[Slow]:
    service = SlowService()
    running = await start_server(ServerSettings(port=0), [ServiceBinding(SERVICE, service.register)])
    # No channel retries: each refusal must be seen as it is.
    async with create_aio_channel(f"127.0.0.1:{running.port}", retry_unavailable=False) as channel:
        yield Slow(service, running, channel)
        await running.stop(None)


def _not_ready_details(status: status_pb2.Status | None) -> tuple[str, float]:
    """The ErrorInfo reason and RetryInfo delay of a drain's status."""
    assert status is not None
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    assert any(detail.Unpack(retry) for detail in status.details)
    return info.reason, retry.retry_delay.ToNanoseconds() / 1e9


async def test_a_call_that_finishes_within_the_grace_completes_and_the_drain_ends_with_it(slow: Slow) -> None:
    call = slow.wait()
    await slow.service.started.wait()
    started = time.monotonic()
    stopping = asyncio.create_task(slow.running.stop(30))
    await slow.until_draining()
    slow.service.release.set()
    assert await call == b"done"
    await stopping
    assert time.monotonic() - started < 1 + SLACK_S  # Ended with its last call, not after the 30 s grace.
    assert not slow.service.cancelled.is_set()


async def test_a_stream_still_running_at_the_grace_ends_with_not_ready_and_retry_info(slow: Slow) -> None:
    stream = slow.ticks()
    assert await stream.read() == b"tick"
    started = time.monotonic()
    stopping = asyncio.create_task(slow.running.stop(GRACE_S))
    with pytest.raises(aio.AioRpcError) as raised:
        while await stream.read() is not aio.EOF:
            pass
    ended = time.monotonic() - started
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _not_ready_details(await rpc_status.aio.from_call(stream)) == ("NOT_READY", SHUTDOWN_RETRY_AFTER_S)
    await stopping
    stopped = time.monotonic() - started
    assert GRACE_S - 0.05 <= ended <= GRACE_S + CUT_SETTLE_S  # Cut at the grace, not before, not much after.
    assert stopped <= GRACE_S + SLACK_S
    assert slow.service.cancelled.is_set()  # The handler's work was stopped, not left running.


async def test_during_the_drain_new_calls_are_refused_and_health_answers_not_serving(slow: Slow) -> None:
    running_call = slow.wait()
    await slow.service.started.wait()
    stopping = asyncio.create_task(slow.running.stop(GRACE_S))
    await slow.until_draining()
    assert await slow.health() == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await slow.health("") == health_pb2.HealthCheckResponse.NOT_SERVING
    refused = slow.wait()
    with pytest.raises(aio.AioRpcError) as raised:
        await refused
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _not_ready_details(await rpc_status.aio.from_call(refused))[0] == "NOT_READY"
    assert "shutting down" in (raised.value.details() or "")
    assert not stopping.done()  # Refused at once: the running call still has its grace.
    with pytest.raises(aio.AioRpcError):
        await running_call
    await stopping


async def test_stop_without_grace_cuts_running_calls_at_once_with_a_reason(slow: Slow) -> None:
    call = slow.wait()
    await slow.service.started.wait()
    started = time.monotonic()
    await slow.running.stop(None)
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _not_ready_details(await rpc_status.aio.from_call(call))[0] == "NOT_READY"
    assert time.monotonic() - started <= SLACK_S
    assert slow.service.cancelled.is_set()


async def test_a_caller_that_goes_away_still_cancels_its_handler(slow: Slow) -> None:
    call = slow.wait()
    await slow.service.started.wait()
    call.cancel()
    await asyncio.wait_for(slow.service.cancelled.wait(), 5)
    assert slow.running.calls.running == 0


async def test_stopping_twice_is_harmless(slow: Slow) -> None:
    await slow.running.stop(None)
    await slow.running.stop(GRACE_S)
    with pytest.raises(aio.AioRpcError) as raised:
        await slow.health()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
