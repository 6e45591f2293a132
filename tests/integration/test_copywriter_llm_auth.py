"""A 4xx from the LLM endpoint (a bad key, an unknown model) is FAILED_PRECONDITION LLM_MISCONFIGURED, never retried."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from openai import AsyncOpenAI

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as pb_grpc
from adgen_client import AsyncAdGenClient
from adgen_client.errors import AdGenError
from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.domain import Brief, EditRequest, LlmMisconfiguredError
from adgen_copywriter.engine import CopyEngine
from adgen_copywriter.llm import LlmBackend
from adgen_copywriter.server import create_server as create_copywriter
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import create_server as create_orchestrator
from adgen_wire.channel import create_aio_channel
from tests.live_services import Services
from tests.support.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.integration

API_KEY = "sk-test-DO-NOT-LEAK-0987654321"
KEYWORD = "여름 느낌 딸기 생과일 주스"


def refusal(status: int) -> Reply:
    """OpenAI's own 401 body, which quotes part of the key, so a message that repeats it leaks."""
    body = {"error": {"message": f"Incorrect API key provided: {API_KEY[:8]}***{API_KEY[-4:]}", "code": "bad"}}
    return Reply(status=status, body=body)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
async def engine(fake: FakeOpenAI) -> AsyncIterator[CopyEngine]:
    # Two SDK retries are configured: a refused key must still be asked exactly once.
    client = AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, timeout=5, max_retries=2)
    engine = CopyEngine(LlmBackend(client, "gpt-4o-mini"))
    yield engine
    await engine.aclose()


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_is_misconfigured_after_one_request_naming_the_setting(
    fake: FakeOpenAI, engine: CopyEngine, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(refusal(status), refusal(status), refusal(status))
    with caplog.at_level(logging.DEBUG), pytest.raises(LlmMisconfiguredError) as raised:
        await engine.generate_copy(Brief(keyword=KEYWORD))
    assert len(fake.received) == 1
    assert "credentials" in raised.value.message and "ADGEN_COPYWRITER_LLM_API_KEY" in raised.value.message
    for text in (raised.value.message, caplog.text):
        assert API_KEY not in text and API_KEY[-4:] not in text and "Incorrect API key" not in text


async def test_an_unknown_model_is_misconfigured_naming_the_model_setting(fake: FakeOpenAI, engine: CopyEngine) -> None:
    fake.script(refusal(404), refusal(404))
    with pytest.raises(LlmMisconfiguredError) as raised:
        await engine.write_edit_instruction(EditRequest(request="컵을 빨간색으로 바꿔줘"))
    assert len(fake.received) == 1 and "ADGEN_COPYWRITER_LLM_MODEL" in raised.value.message


async def test_a_rejected_request_format_is_misconfigured(fake: FakeOpenAI, engine: CopyEngine) -> None:
    fake.script(refusal(400), refusal(400))
    with pytest.raises(LlmMisconfiguredError) as raised:
        await engine.generate_copy(Brief(keyword=KEYWORD))
    assert len(fake.received) == 1 and "json_schema" in raised.value.message


# ── over gRPC, and through the orchestrator and the SDK ───────────────────────────────────────


@pytest.fixture(scope="module")
async def copywriter_port(fake: FakeOpenAI) -> AsyncIterator[int]:
    settings = CopywriterSettings(
        port=0, backend=BackendChoice.LLM, llm_base_url=fake.base_url, llm_api_key=API_KEY, llm_max_retries=2
    )
    running = await create_copywriter(settings)
    yield running.port
    await running.stop(None)


async def test_grpc_refused_key_is_failed_precondition_without_retry_info(
    fake: FakeOpenAI, copywriter_port: int
) -> None:
    fake.script(refusal(401), refusal(401), refusal(401))
    async with create_aio_channel(f"127.0.0.1:{copywriter_port}") as channel:
        call = pb_grpc.CopywriterServiceStub(channel).GenerateCopy(pb.GenerateCopyRequest(keyword=KEYWORD))
        with pytest.raises(aio.AioRpcError) as raised:
            await call
        status = await rpc_status.aio.from_call(call)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION and status is not None
    kinds = [detail.type_url.rsplit(".", 1)[-1] for detail in status.details]
    assert kinds == ["ErrorInfo"], "no RetryInfo: retrying cannot fix a key"
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "LLM_MISCONFIGURED" and API_KEY[-4:] not in status.message
    assert len(fake.received) == 1


async def test_create_ad_with_a_refused_key_reaches_the_endpoint_once_through_the_sdk(
    fake: FakeOpenAI, copywriter_port: int, services: Services
) -> None:
    orchestrator = await create_orchestrator(
        OrchestratorSettings(
            port=0,
            http_enabled=False,
            copywriter_target=f"127.0.0.1:{copywriter_port}",
            diffusion_target=services.diffusion,
        )
    )
    fake.script(*[refusal(401)] * 9)
    try:
        async with AsyncAdGenClient(f"127.0.0.1:{orchestrator.port}", timeout=60) as client:
            with pytest.raises(AdGenError) as raised:
                await client.create_ad(KEYWORD)
    finally:
        await orchestrator.stop(None)
    assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LLM_MISCONFIGURED")
    assert raised.value.retry_after_s is None and "ADGEN_COPYWRITER_LLM_API_KEY" in raised.value.message
    assert len(fake.received) == 1, "neither the SDK, the orchestrator nor the openai client retried"
