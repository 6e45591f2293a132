"""The shared runtime: rich errors through the interceptor, request ids, health, reflection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as pb_grpc
from adgen.type.v1 import error_reason_pb2
from adgen_runtime import Context
from adgen_runtime.errors import BadField, ResourceExhausted, invalid_fields
from adgen_runtime.healthcheck import is_serving
from adgen_runtime.server import RunningServer, ServiceBinding, start_server
from adgen_runtime.settings import ServerSettings
from adgen_wire.channel import create_aio_channel

SERVICE = "adgen.copywriter.v1.CopywriterService"
STREAM_METHOD = "/test.Streams/Count"


async def _count_then_fail(request: bytes, context: Context) -> AsyncIterator[bytes]:
    """A server stream that sends two messages, then fails as the request asks."""
    yield b"1"
    yield b"2"
    if request == b"busy":
        raise ResourceExhausted(error_reason_pb2.ERROR_REASON_QUEUE_FULL, "queue full", retry_after_s=1.0)
    if request == b"bug":
        raise RuntimeError("secret internal detail /etc/passwd")


def _raw(message: bytes) -> bytes:
    return message


def _stream_call(channel: aio.Channel) -> aio.UnaryStreamMultiCallable[bytes, bytes]:
    return channel.unary_stream(STREAM_METHOD, request_serializer=_raw, response_deserializer=_raw)


def _register(server: aio.Server) -> None:
    pb_grpc.add_CopywriterServiceServicer_to_server(_ScriptedCopywriter(), server)
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_stream_rpc_method_handler(_count_then_fail)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Streams", {"Count": handler}),))


class _ScriptedCopywriter(pb_grpc.CopywriterServiceServicer):
    """Fails in the way the keyword asks for, so each error path can be observed."""

    async def GenerateCopy(self, request: pb.GenerateCopyRequest, context: Context) -> pb.GenerateCopyResponse:
        if request.keyword == "":
            raise invalid_fields(
                [BadField("keyword", "must not be empty")], error_reason_pb2.ERROR_REASON_EMPTY_KEYWORD
            )
        if request.keyword == "busy":
            raise ResourceExhausted(error_reason_pb2.ERROR_REASON_QUEUE_FULL, "queue full", retry_after_s=2.5)
        if request.keyword == "bug":
            raise RuntimeError("secret internal detail /etc/passwd")
        return pb.GenerateCopyResponse(caption=request.keyword)

    async def WriteEditInstruction(
        self, request: pb.WriteEditInstructionRequest, context: Context
    ) -> pb.WriteEditInstructionResponse:
        raise NotImplementedError


@pytest.fixture
async def running() -> AsyncIterator[RunningServer]:
    settings = ServerSettings(port=0)
    server = await start_server(
        settings,
        [ServiceBinding(SERVICE, _register)],
    )
    yield server
    await server.stop(None)


async def test_invalid_argument_carries_error_info_and_field_violations(running: RunningServer) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        call = pb_grpc.CopywriterServiceStub(channel).GenerateCopy(pb.GenerateCopyRequest(keyword=""))
        with pytest.raises(aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = await rpc_status.aio.from_call(call)
    assert status is not None
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and info.reason == "EMPTY_KEYWORD" and info.domain == "adgen.dev"
    assert status.details[1].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["keyword"]


async def test_resource_exhausted_carries_retry_info(running: RunningServer) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        call = pb_grpc.CopywriterServiceStub(channel).GenerateCopy(pb.GenerateCopyRequest(keyword="busy"))
        with pytest.raises(aio.AioRpcError):
            await call
        status = await rpc_status.aio.from_call(call)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status.details)
    assert retry.retry_delay.ToMilliseconds() == 2500


async def test_unexpected_exception_is_internal_without_leaking_text(running: RunningServer) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        call = pb_grpc.CopywriterServiceStub(channel).GenerateCopy(
            pb.GenerateCopyRequest(keyword="bug"), metadata=(("x-request-id", "req-42"),)
        )
        with pytest.raises(aio.AioRpcError) as raised:
            await call
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "passwd" not in (raised.value.details() or "") and "RuntimeError" not in (raised.value.details() or "")
    assert "req-42" in (raised.value.details() or "")


async def test_request_id_is_answered_in_trailing_metadata(running: RunningServer) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        call = pb_grpc.CopywriterServiceStub(channel).GenerateCopy(
            pb.GenerateCopyRequest(keyword="ok"), metadata=(("x-request-id", "abc"),)
        )
        assert (await call).caption == "ok"
        assert ("x-request-id", "abc") in tuple(await call.trailing_metadata())
        assert tuple(await call.initial_metadata()) == ()  # Nothing commits the call before its answer.


async def test_errors_carry_the_request_id_next_to_their_details(running: RunningServer) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        call = pb_grpc.CopywriterServiceStub(channel).GenerateCopy(
            pb.GenerateCopyRequest(keyword=""), metadata=(("x-request-id", "bad-1"),)
        )
        with pytest.raises(aio.AioRpcError):
            await call
        trailing = dict(await call.trailing_metadata())
    assert trailing["x-request-id"] == "bad-1"
    assert "grpc-status-details-bin" in trailing


async def test_health_reports_per_service_and_goes_not_serving_on_shutdown(running: RunningServer) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await running.set_ready(SERVICE, False)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await running.health.enter_graceful_shutdown()
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_service(running: RunningServer) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def one_request() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = [
            s.name
            async for reply in stub.ServerReflectionInfo(one_request())
            for s in reply.list_services_response.service
        ]
    assert SERVICE in names and "grpc.health.v1.Health" in names


async def test_a_failing_server_stream_ends_with_the_rich_status_after_its_messages(running: RunningServer) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        call = _stream_call(channel)(b"busy")
        received = []
        with pytest.raises(aio.AioRpcError) as raised:
            async for message in call:
                received.append(message)
        status = await rpc_status.aio.from_call(call)
    assert received == [b"1", b"2"] and raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "QUEUE_FULL"


async def test_an_unexpected_stream_failure_is_internal_and_logs_when_the_stream_ends(
    running: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        with caplog.at_level(logging.INFO, logger="adgen_runtime.interceptors"):
            call = _stream_call(channel)(b"bug", metadata=(("x-request-id", "stream-7"),))
            with pytest.raises(aio.AioRpcError) as raised:
                async for _ in call:
                    pass
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "passwd" not in (raised.value.details() or "") and "stream-7" in (raised.value.details() or "")
    assert any(r.getMessage().startswith(f"done {STREAM_METHOD}") for r in caplog.records)


@pytest.mark.parametrize("caller_id", ["x" * 129, "two words", "id;drop"])
async def test_a_request_id_that_is_not_a_short_token_is_replaced_by_a_fresh_one(
    running: RunningServer, caller_id: str
) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        call = pb_grpc.CopywriterServiceStub(channel).GenerateCopy(
            pb.GenerateCopyRequest(keyword="ok"), metadata=(("x-request-id", caller_id),)
        )
        await call
        answered = dict(await call.trailing_metadata())["x-request-id"]
    assert answered != caller_id and len(answered) == 32


async def test_container_health_probe_follows_readiness(running: RunningServer) -> None:
    target = f"127.0.0.1:{running.port}"
    # The probe is a blocking client: it runs in a thread while this loop serves it.
    assert await asyncio.to_thread(is_serving, target, SERVICE, 3.0)
    await running.set_ready(SERVICE, False)
    assert not await asyncio.to_thread(is_serving, target, SERVICE, 3.0)
    assert not await asyncio.to_thread(is_serving, target, "no.such.Service", 3.0)


async def test_a_second_server_on_a_taken_port_fails_instead_of_sharing_it(running: RunningServer) -> None:
    with pytest.raises(OSError, match="could not bind"):
        await start_server(ServerSettings(port=running.port), [])


async def test_health_probes_stay_out_of_info_logs_but_calls_do_not(
    running: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        with caplog.at_level(logging.INFO, logger="adgen_runtime.interceptors"):
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
            await pb_grpc.CopywriterServiceStub(channel).GenerateCopy(pb.GenerateCopyRequest(keyword="ok"))
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not any("Health" in message for message in logged)
    assert any(message.startswith("done /adgen.copywriter.v1.CopywriterService/GenerateCopy") for message in logged)
