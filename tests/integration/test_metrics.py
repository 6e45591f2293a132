"""`/metrics`: each service serves Prometheus text on its METRICS_PORT, and the values move with the work done."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as cw_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen.type.v1 import ad_pb2
from adgen_copywriter.config import CopywriterSettings
from adgen_copywriter.server import create_server as create_copywriter
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.server import create_server as create_diffusion
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import create_server as create_orchestrator
from adgen_runtime.server import RunningServer
from adgen_wire.channel import create_aio_channel
from tests.integration.test_copywriter_llm import KEYWORD, copy_json
from tests.support.fake_openai import FakeOpenAI, completion, error_reply

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(running: RunningServer) -> Samples:
    assert running.metrics_port is not None
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"http://127.0.0.1:{running.metrics_port}/metrics")
    reply.raise_for_status()
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def diffusion(tiny_models_dir: Path) -> AsyncIterator[RunningServer]:
    settings = DiffusionSettings(
        host="127.0.0.1", port=0, metrics_port=0, tiny=True, models_dir=tiny_models_dir, device="cpu"
    )
    running = await create_diffusion(settings)
    yield running
    await running.stop(None)


def _generate(model_id: str) -> df_pb.GenerateRequest:
    return df_pb.GenerateRequest(
        model_id=model_id, prompt="a strawberry smoothie", width=64, height=64, num_inference_steps=2, seed=1
    )


async def test_diffusion_metrics_follow_switches_loads_steps_and_calls(diffusion: RunningServer) -> None:
    before = await _scrape(diffusion)
    async with create_aio_channel(f"127.0.0.1:{diffusion.port}") as channel:
        stub = df_grpc.DiffusionServiceStub(channel)
        await stub.Generate(_generate("flux2-klein-4b"))
        await stub.Generate(_generate("z-image-turbo"))
    after = await _scrape(diffusion)

    assert _value(after, "adgen_queue_depth", model="z-image-turbo") == 0  # How it moves: tests/unit/diffusion.
    assert _value(after, "adgen_model_switches_total") - _value(before, "adgen_model_switches_total") == 2
    assert _value(after, "adgen_model_loaded", model="z-image-turbo") == 1
    assert _value(after, "adgen_model_loaded", model="flux2-klein-4b") == 0
    assert _value(after, "adgen_model_unload_duration_seconds_count", model="flux2-klein-4b") == 1
    assert _value(after, "adgen_model_load_duration_seconds_count", model="z-image-turbo", phase="unload_previous") == 1
    assert _value(after, "adgen_unload_verification_failures_total", model="flux2-klein-4b") == 0
    assert _value(after, "adgen_unload_leftover_device_bytes") == 0
    assert _value(after, "adgen_denoise_step_seconds_count", model="flux2-klein-4b") == 1
    assert _value(after, "adgen_queue_wait_seconds_count", model="z-image-turbo") == 1
    generate = "/adgen.diffusion.v1.DiffusionService/Generate"
    assert _value(after, "adgen_requests_total", method=generate, code="OK") == 2
    assert _value(after, "adgen_request_duration_seconds_count", method=generate, code="OK") == 2
    assert ("adgen_device_memory_total_bytes", frozenset()) in after


async def test_copywriter_counts_calls_by_code() -> None:
    running = await create_copywriter(CopywriterSettings(host="127.0.0.1", port=0, metrics_port=0, backend="template"))
    try:
        async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
            stub = cw_grpc.CopywriterServiceStub(channel)
            await stub.GenerateCopy(cw_pb.GenerateCopyRequest(keyword="딸기 주스"))
            with pytest.raises(grpc.RpcError):
                await stub.GenerateCopy(cw_pb.GenerateCopyRequest(keyword=""))
        samples = await _scrape(running)
    finally:
        await running.stop(None)
    method = "/adgen.copywriter.v1.CopywriterService/GenerateCopy"
    assert _value(samples, "adgen_requests_total", method=method, code="OK") == 1
    assert _value(samples, "adgen_requests_total", method=method, code="INVALID_ARGUMENT") == 1


async def test_copywriter_counts_llm_latency_tokens_and_the_sdks_retries() -> None:
    fake = FakeOpenAI().start()
    fake.script(error_reply(429), completion(copy_json(), prompt_tokens=120, completion_tokens=80))
    settings = CopywriterSettings(
        host="127.0.0.1", port=0, metrics_port=0, backend="llm", llm_base_url=fake.base_url, llm_model="gpt-4o-mini"
    )
    running = await create_copywriter(settings)
    try:
        async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
            facts = ad_pb2.MerchantFacts(shop_name="하루카페", price="5,500원")  # The facts copy_json() uses.
            await cw_grpc.CopywriterServiceStub(channel).GenerateCopy(
                cw_pb.GenerateCopyRequest(keyword=KEYWORD, facts=facts)
            )
        samples = await _scrape(running)
    finally:
        await running.stop(None)
        fake.stop()
    llm = {"backend": "127.0.0.1", "model": "gpt-4o-mini"}
    assert _value(samples, "adgen_llm_request_duration_seconds_count", **llm, outcome="ok") == 1
    assert _value(samples, "adgen_llm_tokens_total", **llm, kind="prompt") == 120
    assert _value(samples, "adgen_llm_tokens_total", **llm, kind="completion") == 80
    assert _value(samples, "adgen_llm_retries_total", **llm, kind="http") == 1


async def test_unset_metrics_port_serves_nothing() -> None:
    running = await create_copywriter(CopywriterSettings(host="127.0.0.1", port=0, backend="template"))
    try:
        assert running.metrics_port is None
    finally:
        await running.stop(None)


async def test_orchestrator_times_each_stage_of_an_ad(diffusion: RunningServer) -> None:
    copywriter = await create_copywriter(CopywriterSettings(host="127.0.0.1", port=0, backend="template"))
    orchestrator = await create_orchestrator(
        OrchestratorSettings(
            port=0,
            metrics_port=0,
            http_enabled=False,
            copywriter_target=f"127.0.0.1:{copywriter.port}",
            diffusion_target=f"127.0.0.1:{diffusion.port}",
        )
    )
    try:
        async with create_aio_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            request = ad_pb.CreateAdRequest(keyword="딸기 주스", variant_count=2, num_inference_steps=2)
            await ad_grpc.AdServiceStub(channel).CreateAd(request, wait_for_ready=True, timeout=120)
        samples = await _scrape(orchestrator)
    finally:
        await orchestrator.stop(None)
        await copywriter.stop(None)
    for stage, count in (("copy", 1), ("generate", 2), ("deliver", 2)):
        assert _value(samples, "adgen_stage_duration_seconds_count", rpc="CreateAd", stage=stage) == count, stage
    method = "/adgen.ad.v1.AdService/CreateAd"
    assert _value(samples, "adgen_requests_total", method=method, code="OK") == 1
