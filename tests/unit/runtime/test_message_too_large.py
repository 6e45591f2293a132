"""A request over the configured message limit gets MESSAGE_TOO_LARGE naming the limit, not a bare status."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen_runtime import Context
from adgen_runtime.interceptors import server_interceptors, transport_receive_limit, with_request_size_limit
from adgen_wire.channel import create_aio_channel, grpc_options

LIMIT = 64 * 1024
SERVICE = "test.Sized"


async def _echo(request: pb.GenerateCopyRequest, context: Context) -> pb.GenerateCopyResponse:
    return pb.GenerateCopyResponse(caption=str(len(request.keyword)))


async def _stream(request: pb.GenerateCopyRequest, context: Context) -> AsyncIterator[pb.GenerateCopyResponse]:
    yield pb.GenerateCopyResponse(caption=str(len(request.keyword)))


@pytest.fixture
async def target() -> AsyncIterator[str]:
    """A server wired as start_server wires one: raised transport limit, configured limit in the chain."""
    options = with_request_size_limit([*grpc_options(LIMIT, server=True), ("grpc.so_reuseport", 0)], LIMIT)
    server = aio.server(interceptors=server_interceptors(LIMIT), options=options)
    decode, encode = pb.GenerateCopyRequest.FromString, pb.GenerateCopyResponse.SerializeToString
    handlers: dict[str, grpc.RpcMethodHandler[pb.GenerateCopyRequest, pb.GenerateCopyResponse]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo, decode, encode),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream, decode, encode),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


def _request_of(size: int) -> pb.GenerateCopyRequest:
    request = pb.GenerateCopyRequest(keyword="x" * size)
    request.keyword = "x" * (2 * size - request.ByteSize())  # Exactly `size` bytes on the wire.
    assert request.ByteSize() == size
    return request


async def _call(target: str, method: str, request: pb.GenerateCopyRequest) -> tuple[grpc.StatusCode, aio.Call]:
    """The code `method` ends with, and the call to read its trailers from."""
    path, metadata = f"/{SERVICE}/{method}", (("x-request-id", "big-1"),)
    encode, decode = pb.GenerateCopyRequest.SerializeToString, pb.GenerateCopyResponse.FromString
    async with create_aio_channel(target) as channel:
        try:
            if method == "Echo":
                unary = channel.unary_unary(path, encode, decode)(request, metadata=metadata)
                call: aio.Call = unary
                await unary
            else:
                stream = channel.unary_stream(path, encode, decode)(request, metadata=metadata)
                call = stream
                async for _ in stream:
                    pass
        except aio.AioRpcError as error:
            return error.code(), call
        return grpc.StatusCode.OK, call


@pytest.mark.parametrize("method", ["Echo", "Stream"])
async def test_a_request_over_the_limit_is_message_too_large_with_the_limit_in_error_info(
    target: str, method: str
) -> None:
    code, call = await _call(target, method, _request_of(LIMIT + 1))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "MESSAGE_TOO_LARGE"
    assert info.metadata["max_bytes"] == str(LIMIT) and info.metadata["message_bytes"] == str(LIMIT + 1)
    assert f"{LIMIT:,}" in status.message
    assert dict(await call.trailing_metadata())["x-request-id"] == "big-1"


async def test_a_request_at_the_limit_is_served(target: str) -> None:
    code, _ = await _call(target, "Echo", _request_of(LIMIT))
    assert code == grpc.StatusCode.OK


async def test_beyond_the_transport_limit_only_the_framework_can_answer(target: str) -> None:
    # The transport refuses it before any handler runs: documented as the one status without details.
    code, call = await _call(target, "Echo", _request_of(transport_receive_limit(LIMIT) + 1))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await rpc_status.aio.from_call(call) is None


def test_the_raised_limit_replaces_the_configured_one_rather_than_following_it() -> None:
    options = with_request_size_limit(grpc_options(LIMIT, server=True), LIMIT)
    receive = [value for key, value in options if key == "grpc.max_receive_message_length"]
    assert receive == [transport_receive_limit(LIMIT)] and receive[0] > LIMIT
    assert ("grpc.max_send_message_length", LIMIT) in options
