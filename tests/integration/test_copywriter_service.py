"""CopywriterService over real gRPC on a loopback port, with the offline template backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as pb_grpc
from adgen.type.v1 import ad_pb2
from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.server import create_server
from adgen_wire.channel import create_aio_channel

pytestmark = pytest.mark.integration

KEYWORD = "여름 느낌 딸기 생과일 주스"


@pytest.fixture(scope="module")
async def stub() -> AsyncIterator[pb_grpc.CopywriterServiceAsyncStub]:
    running = await create_server(CopywriterSettings(port=0, backend=BackendChoice.TEMPLATE))
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        await channel.channel_ready()
        yield pb_grpc.CopywriterServiceStub(channel)
    await running.stop(None)


async def failure_of(call: aio.UnaryUnaryCall[Any, Any]) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The code and rich status of a call that must fail."""
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    return raised.value.code(), status


def details_of(status: status_pb2.Status) -> tuple[error_details_pb2.ErrorInfo, list[str]]:
    """ErrorInfo and the BadRequest field names of a status."""
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info)
    fields = [v.field for d in status.details[1:] if d.Unpack(bad_request) for v in bad_request.field_violations]
    return info, fields


async def test_generate_copy_returns_korean_copy_and_english_prompts(stub: pb_grpc.CopywriterServiceAsyncStub) -> None:
    request = pb.GenerateCopyRequest(
        keyword=KEYWORD,
        tone=ad_pb2.TONE_EMOTIONAL,
        placement=ad_pb2.PLACEMENT_FEED_PORTRAIT,
        variant_count=3,
        facts=ad_pb2.MerchantFacts(shop_name="하루카페", price="5,500원"),
    )
    reply = await stub.GenerateCopy(request)
    assert len(reply.image_prompts) == 3 and all("strawberry juice" in p for p in reply.image_prompts)
    assert KEYWORD in reply.caption and reply.caption.startswith(reply.hook)
    assert 1 <= len(reply.hashtags) <= 5 and reply.headline and reply.alt_text
    assert list(reply.facts_used) == ["하루카페", "5,500원"]
    assert reply.provenance.backend == pb.BACKEND_TEMPLATE and reply.provenance.model == "offline-template-v1"


async def test_variant_count_zero_means_one(stub: pb_grpc.CopywriterServiceAsyncStub) -> None:
    reply = await stub.GenerateCopy(pb.GenerateCopyRequest(keyword=KEYWORD))
    assert len(reply.image_prompts) == 1


@pytest.mark.parametrize("keyword", ["", "   \n\t "])
async def test_empty_keyword_is_invalid_argument_with_error_info_and_field_violation(
    stub: pb_grpc.CopywriterServiceAsyncStub, keyword: str
) -> None:
    code, status = await failure_of(stub.GenerateCopy(pb.GenerateCopyRequest(keyword=keyword)))
    info, fields = details_of(status)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.reason, info.domain) == ("EMPTY_KEYWORD", "adgen.dev")
    assert fields == ["keyword"]


async def test_keyword_over_100_graphemes_is_rejected_but_100_emoji_families_pass(
    stub: pb_grpc.CopywriterServiceAsyncStub,
) -> None:
    code, status = await failure_of(stub.GenerateCopy(pb.GenerateCopyRequest(keyword="딸" * 101)))
    info, fields = details_of(status)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and info.reason == "INVALID_ARGUMENT" and fields == ["keyword"]
    # 100 graphemes of 7 code points each: long in code points, within the limit as people count.
    reply = await stub.GenerateCopy(pb.GenerateCopyRequest(keyword="딸기" + "👨‍👩‍👧‍👦" * 98))
    assert reply.caption


async def test_every_bad_field_is_named_at_once(stub: pb_grpc.CopywriterServiceAsyncStub) -> None:
    request = pb.GenerateCopyRequest(
        keyword=KEYWORD,
        tone=99,  # type: ignore[arg-type]
        placement=42,  # type: ignore[arg-type]
        caption_length=7,  # type: ignore[arg-type]
        emoji_level=9,  # type: ignore[arg-type]
        variant_count=5,
        target_model_id="../../etc/passwd",
    )
    code, status = await failure_of(stub.GenerateCopy(request))
    _, fields = details_of(status)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == ["tone", "placement", "caption_length", "emoji_level", "variant_count", "target_model_id"]


async def test_negative_variant_count_is_rejected(stub: pb_grpc.CopywriterServiceAsyncStub) -> None:
    code, status = await failure_of(stub.GenerateCopy(pb.GenerateCopyRequest(keyword=KEYWORD, variant_count=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details_of(status)[1] == ["variant_count"]


async def test_a_merchant_fact_with_a_banned_claim_is_rejected_naming_the_fact(
    stub: pb_grpc.CopywriterServiceAsyncStub,
) -> None:
    facts = ad_pb2.MerchantFacts(price="5,500원", extra=["매일 아침 직접 갈아요", "면역력에 좋은 비타민 가득"])
    code, status = await failure_of(stub.GenerateCopy(pb.GenerateCopyRequest(keyword=KEYWORD, facts=facts)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(status)[1] == ["facts.extra[1]"]
    assert "면역" in status.message


async def test_edit_request_becomes_an_english_instruction(stub: pb_grpc.CopywriterServiceAsyncStub) -> None:
    reply = await stub.WriteEditInstruction(pb.WriteEditInstructionRequest(request="커피를 딸기 라떼로 바꿔줘"))
    assert reply.instruction.startswith("Replace the coffee with a strawberry latte")
    assert reply.instruction.endswith("keep the background, lighting, camera angle and framing unchanged.")
    assert reply.provenance.backend == pb.BACKEND_TEMPLATE


async def test_empty_edit_request_is_invalid_argument(stub: pb_grpc.CopywriterServiceAsyncStub) -> None:
    code, status = await failure_of(stub.WriteEditInstruction(pb.WriteEditInstructionRequest(request=" ")))
    info, fields = details_of(status)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and info.reason == "INVALID_ARGUMENT" and fields == ["request"]


async def test_health_reports_the_copywriter_serving() -> None:
    running = await create_server(CopywriterSettings(port=0, backend=BackendChoice.TEMPLATE))
    try:
        async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="adgen.copywriter.v1.CopywriterService")
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.stop(None)
