"""The LLM backend against a scripted OpenAI-compatible server over real HTTP, with the real SDK."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from openai import AsyncOpenAI

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as pb_grpc
from adgen.type.v1 import ad_pb2
from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.domain import (
    BackendKind,
    BannedClaimError,
    Brief,
    EditRequest,
    LlmBadOutputError,
    LlmMisconfiguredError,
    LlmRefusedError,
    LlmUnavailableError,
    MerchantFacts,
)
from adgen_copywriter.engine import CopyEngine
from adgen_copywriter.llm import LlmBackend
from adgen_copywriter.rules import grapheme_count
from adgen_copywriter.server import create_server
from adgen_wire.channel import create_aio_channel
from tests.support.fake_openai import FakeOpenAI, Reply, completion, error_reply

pytestmark = pytest.mark.integration

API_KEY = "sk-test-DO-NOT-LEAK-1234567890"
KEYWORD = "여름 느낌 딸기 생과일 주스"


def copy_json(**overrides: Any) -> str:
    """A good answer for KEYWORD; tests override single fields to break it."""
    answer: dict[str, Any] = {
        "image_prompts": [
            "A hero close-up of a fresh strawberry juice in a tall glass on a sunlit cafe counter, beads of "
            "condensation, crushed ice, clean negative space in the upper third for a headline."
        ],
        "caption": "여름엔 역시 딸기 생과일 주스예요! 🍓\n\n하루카페에서 시원하게 즐겨 보세요. 5,500원이에요.",
        "hook": "여름엔 역시 딸기 생과일 주스예요! 🍓",
        "hashtags": ["딸기주스", "여름음료", "하루카페"],
        "headline": "여름 딸기 주스",
        "alt_text": "유리잔에 담긴 딸기 생과일 주스 사진이에요.",
        "facts_used": ["하루카페", "5,500원"],
    }
    answer.update(overrides)
    return json.dumps(answer, ensure_ascii=False)


BRIEF = Brief(keyword=KEYWORD, facts=MerchantFacts(shop_name="하루카페", price="5,500원"))


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


def make_backend(fake: FakeOpenAI, *, timeout_s: float = 5.0, max_retries: int = 2) -> LlmBackend:
    client = AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, timeout=timeout_s, max_retries=max_retries)
    return LlmBackend(client, "gpt-4o-mini", unavailable_retry_after_s=7.0)


@pytest.fixture
async def engine(fake: FakeOpenAI) -> AsyncIterator[CopyEngine]:
    engine = CopyEngine(make_backend(fake))
    yield engine
    await engine.aclose()


async def test_happy_path_returns_llm_copy_with_token_usage(
    fake: FakeOpenAI, engine: CopyEngine, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(completion(copy_json(), prompt_tokens=321, completion_tokens=123))
    with caplog.at_level(logging.DEBUG):
        draft = await engine.generate_copy(BRIEF)
    assert draft.caption.startswith("여름엔 역시 딸기 생과일 주스예요!")
    assert draft.hashtags == ("딸기주스", "여름음료", "하루카페") and draft.facts_used == ("하루카페", "5,500원")
    assert draft.provenance.backend is BackendKind.LLM and draft.provenance.model == "gpt-4o-mini-2024-07-18"
    assert (draft.provenance.prompt_tokens, draft.provenance.completion_tokens) == (321, 123)
    [sent] = fake.received
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    response_format = sent.body["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["additionalProperties"] is False and set(schema["required"]) == set(schema["properties"])
    assert KEYWORD in sent.last_user_message and "5,500원" in sent.last_user_message
    assert API_KEY not in caplog.text


async def test_refusal_is_llm_refused(fake: FakeOpenAI, engine: CopyEngine) -> None:
    fake.script(completion(None, refusal="I can't help with that."))
    with pytest.raises(LlmRefusedError):
        await engine.generate_copy(BRIEF)
    assert len(fake.received) == 1


async def test_truncated_json_gets_one_repair_then_bad_output(fake: FakeOpenAI, engine: CopyEngine) -> None:
    truncated = copy_json()[:80]
    fake.script(completion(truncated, finish_reason="length"), completion(truncated, finish_reason="length"))
    with pytest.raises(LlmBadOutputError):
        await engine.generate_copy(BRIEF)
    assert len(fake.received) == 2
    assert "cut off" in fake.received[1].last_user_message


async def test_truncated_json_repaired_on_the_retry_succeeds(fake: FakeOpenAI, engine: CopyEngine) -> None:
    fake.script(completion(copy_json()[:80], finish_reason="length"), completion(copy_json()))
    draft = await engine.generate_copy(BRIEF)
    assert draft.headline == "여름 딸기 주스"
    assert (draft.provenance.prompt_tokens, draft.provenance.completion_tokens) == (240, 160)


async def test_invalid_json_then_repaired(fake: FakeOpenAI, engine: CopyEngine) -> None:
    fake.script(completion("Sure! Here is your ad: {caption: 딸기"), completion(copy_json()))
    draft = await engine.generate_copy(BRIEF)
    assert draft.caption
    repair = fake.received[1]
    assert "not valid JSON" in repair.last_user_message
    assert repair.body["messages"][-2] == {"role": "assistant", "content": "Sure! Here is your ad: {caption: 딸기"}


async def test_reply_without_choices_is_retried_then_bad_output(fake: FakeOpenAI, engine: CopyEngine) -> None:
    empty = completion(None)
    assert isinstance(empty.body, dict)
    empty.body["choices"] = []
    fake.script(empty, empty)
    with pytest.raises(LlmBadOutputError):
        await engine.generate_copy(BRIEF)
    assert len(fake.received) == 2


async def test_null_token_counts_from_a_compatible_server_count_as_zero(fake: FakeOpenAI, engine: CopyEngine) -> None:
    reply = completion(copy_json())
    assert isinstance(reply.body, dict)
    reply.body["usage"] = {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}
    fake.script(reply)
    draft = await engine.generate_copy(BRIEF)
    assert (draft.provenance.prompt_tokens, draft.provenance.completion_tokens) == (0, 0)


async def test_json_with_missing_fields_counts_as_invalid(fake: FakeOpenAI, engine: CopyEngine) -> None:
    fake.script(completion(json.dumps({"caption": "딸기"})), completion(json.dumps({"caption": "딸기"})))
    with pytest.raises(LlmBadOutputError):
        await engine.generate_copy(BRIEF)


async def test_rate_limit_then_success_is_retried_by_the_sdk(fake: FakeOpenAI, engine: CopyEngine) -> None:
    fake.script(error_reply(429), completion(copy_json()))
    draft = await engine.generate_copy(BRIEF)
    assert draft.caption and len(fake.received) == 2


async def test_persistent_500_is_unavailable_with_the_servers_retry_delay(fake: FakeOpenAI, engine: CopyEngine) -> None:
    fake.script(
        error_reply(500, retry_after_ms=20), error_reply(502, retry_after_ms=20), error_reply(503, retry_after_ms=20)
    )
    with pytest.raises(LlmUnavailableError) as raised:
        await engine.generate_copy(BRIEF)
    assert len(fake.received) == 3  # The first try and two SDK retries.
    assert raised.value.retry_after_s == pytest.approx(0.02)
    assert API_KEY not in raised.value.message


async def test_timeout_is_unavailable_with_the_default_retry_delay(fake: FakeOpenAI) -> None:
    backend = make_backend(fake, timeout_s=0.2, max_retries=1)
    fake.script(Reply(delay_s=5, body="{}"), Reply(delay_s=5, body="{}"))
    try:
        with pytest.raises(LlmUnavailableError) as raised:
            await CopyEngine(backend).generate_copy(BRIEF)
    finally:
        await backend.aclose()
    assert raised.value.retry_after_s == 7.0 and len(fake.received) == 2


async def test_misconfigured_key_is_misconfigured_without_retrying_or_leaking(
    fake: FakeOpenAI, engine: CopyEngine
) -> None:
    fake.script(error_reply(401, retry_after_ms=None))
    with pytest.raises(LlmMisconfiguredError) as raised:
        await engine.generate_copy(BRIEF)
    assert len(fake.received) == 1
    assert API_KEY not in raised.value.message


async def test_banned_claim_gets_one_repair_naming_it(fake: FakeOpenAI, engine: CopyEngine) -> None:
    banned = copy_json(
        caption="여름엔 면역력에 좋은 딸기 주스예요!\n\n동네 최고의 맛이에요.",
        hook="여름엔 면역력에 좋은 딸기 주스예요!",
    )
    fake.script(completion(banned), completion(copy_json()))
    draft = await engine.generate_copy(BRIEF)
    assert "면역" not in draft.caption
    repair = fake.received[1].last_user_message
    assert "면역" in repair and "최고" in repair and "식품표시광고법" in repair


async def test_banned_claim_kept_after_the_repair_is_rejected(fake: FakeOpenAI, engine: CopyEngine) -> None:
    banned = copy_json(hashtags=["딸기주스", "디톡스"])
    fake.script(completion(banned), completion(banned))
    with pytest.raises(BannedClaimError) as raised:
        await engine.generate_copy(BRIEF)
    assert [v.text for v in raised.value.violations] == ["디톡스"]
    assert raised.value.violations[0].field == "hashtags[1]"


async def test_invented_discount_gets_a_repair(fake: FakeOpenAI, engine: CopyEngine) -> None:
    invented = copy_json(caption="여름엔 딸기 주스예요!\n\n지금 30% 할인 중이에요.", hook="여름엔 딸기 주스예요!")
    fake.script(completion(invented), completion(copy_json()))
    draft = await engine.generate_copy(BRIEF)
    assert "할인" not in draft.caption and "30%" in fake.received[1].last_user_message


async def test_six_hashtags_are_trimmed_to_five_without_a_repair(fake: FakeOpenAI, engine: CopyEngine) -> None:
    six = copy_json(hashtags=["#딸기주스", "여름 음료", "하루카페", "생과일", "카페스타그램", "오늘의메뉴"])
    fake.script(completion(six))
    draft = await engine.generate_copy(BRIEF)
    assert draft.hashtags == ("딸기주스", "여름음료", "하루카페", "생과일", "카페스타그램")
    assert len(fake.received) == 1


async def test_too_few_prompts_for_the_variants_asked_gets_a_repair(fake: FakeOpenAI, engine: CopyEngine) -> None:
    two = copy_json(
        image_prompts=["A hero close-up of a strawberry juice.", "A top-down flat lay of a strawberry juice."]
    )
    fake.script(completion(copy_json()), completion(two))
    draft = await engine.generate_copy(Brief(keyword=KEYWORD, facts=BRIEF.facts, variant_count=2))
    assert len(draft.image_prompts) == 2
    assert "exactly 2" in fake.received[1].last_user_message


async def test_korean_keyword_with_emoji_and_mixed_scripts(fake: FakeOpenAI, engine: CopyEngine) -> None:
    keyword = "딸기🍓 Dirty Chai 라떼 👨‍👩‍👧‍👦 여름"
    answer = copy_json(
        image_prompts=['A strawberry Dirty Chai latte with "딸기" lettering on the cup, no people, soft summer light.'],
        caption="딸기🍓 Dirty Chai 라떼 👨‍👩‍👧‍👦 가족 모두 좋아해요.\n\n여름에 만나요.",
        hook="딸기🍓 Dirty Chai 라떼 👨‍👩‍👧‍👦 가족 모두 좋아해요.",
        facts_used=[],
    )
    fake.script(completion(answer))
    draft = await engine.generate_copy(Brief(keyword=keyword))
    assert keyword in fake.received[0].last_user_message  # Sent as UTF-8, not \u escapes.
    assert draft.image_prompts == ("A strawberry Dirty Chai latte with lettering on the cup, soft summer light.",)
    assert "👨‍👩‍👧‍👦" in draft.caption and grapheme_count(draft.hook) == 31 < len(draft.hook)


async def test_edit_instruction_from_the_llm(fake: FakeOpenAI, engine: CopyEngine) -> None:
    instruction = "Replace the coffee with a strawberry latte: pale pink milk; keep the background unchanged."
    fake.script(completion(json.dumps({"instruction": instruction}), prompt_tokens=50, completion_tokens=20))
    written = await engine.write_edit_instruction(EditRequest("커피를 딸기 라떼로 바꿔줘"))
    assert written.instruction == instruction
    assert (written.provenance.backend, written.provenance.prompt_tokens) == (BackendKind.LLM, 50)
    assert fake.received[0].body["response_format"]["json_schema"]["name"] == "edit_instruction"


async def test_banned_words_in_the_keyword_are_not_sent_to_the_model(fake: FakeOpenAI, engine: CopyEngine) -> None:
    fake.script(completion(copy_json()))
    await engine.generate_copy(Brief(keyword=f"다이어트 {KEYWORD}", facts=BRIEF.facts))
    request = fake.received[0].last_user_message
    assert KEYWORD in request and "다이어트" not in request


async def test_temperature_is_omitted_when_unset_for_models_that_reject_it(fake: FakeOpenAI) -> None:
    client = AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    backend = LlmBackend(client, "gpt-5-mini", temperature=None)
    fake.script(completion(copy_json()))
    try:
        await CopyEngine(backend).generate_copy(BRIEF)
    finally:
        await backend.aclose()
    assert "temperature" not in fake.received[0].body and fake.received[0].body["model"] == "gpt-5-mini"


# ── the same failures as gRPC statuses ────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
async def llm_stub(fake: FakeOpenAI) -> AsyncIterator[pb_grpc.CopywriterServiceAsyncStub]:
    settings = CopywriterSettings(
        port=0,
        backend=BackendChoice.LLM,
        llm_base_url=fake.base_url,
        llm_api_key=API_KEY,
        llm_max_retries=1,
        llm_unavailable_retry_after_s=3.0,
    )
    running = await create_server(settings)
    async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
        yield pb_grpc.CopywriterServiceStub(channel)
    await running.stop(None)


async def _failure(call: aio.UnaryUnaryCall[Any, Any]) -> tuple[grpc.StatusCode, str, list[Any], str]:
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return raised.value.code(), info.reason, list(status.details), status.message


async def test_grpc_happy_path_reports_llm_provenance(
    fake: FakeOpenAI, llm_stub: pb_grpc.CopywriterServiceAsyncStub
) -> None:
    fake.script(completion(copy_json(facts_used=["5,500원", "논산 딸기"]), prompt_tokens=11, completion_tokens=22))
    facts = ad_pb2.MerchantFacts(shop_name="하루카페", price="5,500원")
    reply = await llm_stub.GenerateCopy(pb.GenerateCopyRequest(keyword=KEYWORD, facts=facts))
    assert reply.provenance.backend == pb.BACKEND_LLM and reply.provenance.model == "gpt-4o-mini-2024-07-18"
    assert (reply.provenance.prompt_tokens, reply.provenance.completion_tokens) == (11, 22)
    assert list(reply.facts_used) == ["5,500원"]  # "논산 딸기" was claimed but never given.


async def test_grpc_refusal_is_failed_precondition(
    fake: FakeOpenAI, llm_stub: pb_grpc.CopywriterServiceAsyncStub
) -> None:
    fake.script(completion(None, refusal="no"))
    code, reason, _, _ = await _failure(llm_stub.GenerateCopy(pb.GenerateCopyRequest(keyword=KEYWORD)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LLM_REFUSED")


async def test_grpc_bad_output_is_internal_llm_bad_output(
    fake: FakeOpenAI, llm_stub: pb_grpc.CopywriterServiceAsyncStub
) -> None:
    fake.script(completion("nope"), completion("still nope"))
    code, reason, _, _ = await _failure(llm_stub.GenerateCopy(pb.GenerateCopyRequest(keyword=KEYWORD)))
    assert (code, reason) == (grpc.StatusCode.INTERNAL, "LLM_BAD_OUTPUT")


async def test_grpc_persistent_500_is_unavailable_with_retry_info(
    fake: FakeOpenAI, llm_stub: pb_grpc.CopywriterServiceAsyncStub
) -> None:
    fake.script(error_reply(500, retry_after_ms=None), error_reply(500, retry_after_ms=None))
    code, reason, details, message = await _failure(llm_stub.GenerateCopy(pb.GenerateCopyRequest(keyword=KEYWORD)))
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "LLM_UNAVAILABLE")
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in details) and retry.retry_delay.seconds == 3
    assert API_KEY not in message and "scripted" not in message


async def test_grpc_banned_claim_after_repair_is_failed_precondition(
    fake: FakeOpenAI, llm_stub: pb_grpc.CopywriterServiceAsyncStub
) -> None:
    banned = copy_json(headline="다이어트 주스")
    fake.script(completion(banned), completion(banned))
    code, reason, _, message = await _failure(llm_stub.GenerateCopy(pb.GenerateCopyRequest(keyword=KEYWORD)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BANNED_CLAIM")
    assert "다이어트" in message
