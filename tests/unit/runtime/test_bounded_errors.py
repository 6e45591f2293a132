"""Errors that echo long caller values keep their code and details: every echoed value is bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from adgen.type.v1 import error_reason_pb2
from adgen_runtime import Context
from adgen_runtime.errors import (
    MAX_ECHOED_VALUE_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_STATUS_BYTES,
    STATUS_DETAILS_METADATA_KEY,
    BadField,
    NotFound,
    ServiceError,
    bounded_status,
    invalid_fields,
)
from adgen_runtime.server import RunningServer, ServiceBinding, start_server
from adgen_runtime.settings import ServerSettings
from adgen_wire.channel import create_aio_channel

_R = error_reason_pb2
METHOD = "/test.Echo/Fail"
MODEL = "adgen.diffusion.v1.Model"
ADVICE = "ListModels shows the allowed ids."


def _not_found(model_id: str) -> NotFound:
    """What a registry answers for an unknown id: the id in the message, the resource and the metadata."""
    return NotFound(
        _R.ERROR_REASON_MODEL_NOT_FOUND,
        f"Model {model_id!r} is not in the registry; {ADVICE}",
        resource=(MODEL, model_id),
        metadata={"model_id": model_id},
    )


class _SelfBuiltStatus(ServiceError):
    """An error whose subclass builds its own status (as a relayed downstream error does), unbounded."""

    code = grpc.StatusCode.NOT_FOUND

    def to_status(self) -> grpc.Status:
        info = error_details_pb2.ErrorInfo(reason="MODEL_NOT_FOUND", domain="adgen.dev", metadata={"id": "q" * 6000})
        status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="n" * 6000)
        status.details.add().Pack(info)
        converted: grpc.Status = rpc_status.to_status(status)
        return converted


async def _fail(request: bytes, context: Context) -> bytes:
    text = request.decode()
    if text.startswith("self-built"):
        raise _SelfBuiltStatus(_R.ERROR_REASON_MODEL_NOT_FOUND, "unused")
    raise _not_found(text)


def _raw(message: bytes) -> bytes:
    return message


def _fail_call(channel: aio.Channel) -> aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(METHOD, request_serializer=_raw, response_deserializer=_raw)


def _register(server: aio.Server) -> None:
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_fail)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Fail": handler}),))


@pytest.fixture
async def running() -> AsyncIterator[RunningServer]:
    server = await start_server(ServerSettings(port=0), [ServiceBinding("test.Echo", _register)])
    yield server
    await server.stop(None)


async def _error_of(running: RunningServer, request: bytes) -> tuple[aio.AioRpcError, status_pb2.Status]:
    # A stock channel: its default 8 KiB metadata limit is what an unbounded error overflowed.
    async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = _fail_call(channel)(request)
        with pytest.raises(aio.AioRpcError) as raised:
            await call
        status = await rpc_status.aio.from_call(call)
    assert status is not None, "the error lost its rich status"
    return raised.value, status


def _details(status: status_pb2.Status) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.ResourceInfo | None]:
    info, resource = error_details_pb2.ErrorInfo(), error_details_pb2.ResourceInfo()
    assert status.details[0].Unpack(info)
    found = any(detail.Unpack(resource) for detail in status.details[1:])
    return info, resource if found else None


@pytest.mark.parametrize("model_id", ["m" * 5000, "모" * 5000], ids=["ascii", "korean"])
async def test_a_not_found_echoing_a_5000_character_model_id_stays_not_found_with_its_details(
    running: RunningServer, model_id: str
) -> None:
    error, status = await _error_of(running, model_id.encode())
    assert error.code() == grpc.StatusCode.NOT_FOUND
    info, resource = _details(status)
    assert info.reason == "MODEL_NOT_FOUND" and info.domain == "adgen.dev"
    assert resource is not None and resource.resource_type == MODEL
    assert len(resource.resource_name.encode()) <= MAX_ECHOED_VALUE_BYTES
    assert resource.resource_name.startswith(model_id[:10]) and "…" in resource.resource_name
    assert len(info.metadata["model_id"].encode()) <= MAX_ECHOED_VALUE_BYTES
    assert len((error.details() or "").encode()) <= MAX_MESSAGE_BYTES
    assert (error.details() or "").endswith(ADVICE)  # Cut in the middle: the advice survives.


async def test_a_status_a_subclass_builds_itself_is_bounded_by_the_interceptor(running: RunningServer) -> None:
    error, status = await _error_of(running, b"self-built")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    info, _ = _details(status)
    assert info.reason == "MODEL_NOT_FOUND" and len(info.metadata["id"]) < 6000
    assert len((error.details() or "").encode()) <= MAX_MESSAGE_BYTES
    trailing = dict(error.trailing_metadata() or ())
    assert "x-request-id" in trailing and STATUS_DETAILS_METADATA_KEY in trailing


async def test_the_sdk_channel_reads_the_bounded_error_too(running: RunningServer) -> None:
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        call = _fail_call(channel)(("x" * 100_000).encode())
        with pytest.raises(aio.AioRpcError) as raised:
            await call
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_thousands_of_field_violations_keep_the_first_and_count_the_rest() -> None:
    violations = [BadField(f"facts.extra[{i}]", "'최고' cannot appear in a food ad " * 5) for i in range(5000)]
    status = status_pb2.Status.FromString(
        dict(invalid_fields(violations).to_status().trailing_metadata)[STATUS_DETAILS_METADATA_KEY]
    )
    assert status.ByteSize() <= MAX_STATUS_BYTES
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad_request)
    kept = len(bad_request.field_violations)
    assert kept >= 1 and bad_request.field_violations[0].field == "facts.extra[0]"
    assert info.metadata["omitted_field_violations"] == str(5000 - kept)


def test_an_error_within_the_bounds_is_left_exactly_as_it_was() -> None:
    error = _not_found("flux2-klein-4b")
    status = status_pb2.Status.FromString(dict(error.to_status().trailing_metadata)[STATUS_DETAILS_METADATA_KEY])
    assert status.message == f"Model 'flux2-klein-4b' is not in the registry; {ADVICE}"
    assert bounded_status(status) == status
    _, resource = _details(status)
    assert resource is not None and resource.resource_name == "flux2-klein-4b"


def test_a_cut_korean_value_is_valid_text_within_its_byte_bound() -> None:
    status = status_pb2.Status(code=5, message="가" * 1000)
    info = error_details_pb2.ErrorInfo(reason="X", domain="adgen.dev", metadata={"terms": "나" * 1000})
    status.details.add().Pack(info)
    bounded = bounded_status(status)
    assert len(bounded.message.encode()) <= MAX_MESSAGE_BYTES and set(bounded.message) == {"가", "…"}
    bounded_info = error_details_pb2.ErrorInfo()
    assert bounded.details[0].Unpack(bounded_info)
    assert len(bounded_info.metadata["terms"].encode()) <= MAX_ECHOED_VALUE_BYTES
    assert set(bounded_info.metadata["terms"]) == {"나", "…"}
