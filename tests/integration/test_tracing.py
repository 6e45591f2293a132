"""Traces: one CreateAd (unary or streamed) is one trace with spans from all three services, each span naming
the request id; without an OTLP endpoint tracing stays off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.server import create_server as create_copywriter
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.server import create_server as create_diffusion
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import create_server as create_orchestrator
from adgen_runtime.logs import REQUEST_ID_SPAN_ATTRIBUTE
from adgen_runtime.server import RunningServer
from adgen_runtime.telemetry import Telemetry, tracer_provider
from adgen_wire.channel import REQUEST_ID_METADATA_KEY, create_aio_channel

pytestmark = pytest.mark.integration

SERVICES = ("orchestrator", "copywriter", "diffusion")


@dataclass
class TracedServices:
    orchestrator: RunningServer
    exporter: InMemorySpanExporter


def _telemetry(service_name: str, exporter: InMemorySpanExporter) -> Telemetry:
    return Telemetry(service_name, tracing=tracer_provider(service_name, SimpleSpanProcessor(exporter)))


@pytest.fixture(scope="module")
async def traced(tiny_models_dir: Path) -> AsyncIterator[TracedServices]:
    exporter = InMemorySpanExporter()
    started: list[RunningServer] = []
    try:
        diffusion = await create_diffusion(
            DiffusionSettings(port=0, tiny=True, models_dir=tiny_models_dir),
            telemetry=_telemetry("diffusion", exporter),
        )
        started.append(diffusion)
        copywriter = await create_copywriter(
            CopywriterSettings(port=0, backend=BackendChoice.TEMPLATE), telemetry=_telemetry("copywriter", exporter)
        )
        started.append(copywriter)
        settings = OrchestratorSettings(
            port=0,
            http_enabled=False,
            copywriter_target=f"127.0.0.1:{copywriter.port}",
            diffusion_target=f"127.0.0.1:{diffusion.port}",
        )
        orchestrator = await create_orchestrator(settings, telemetry=_telemetry("orchestrator", exporter))
        started.append(orchestrator)
        yield TracedServices(orchestrator, exporter)
    finally:
        for server in reversed(started):
            await server.stop(None)


def _request() -> ad_pb.CreateAdRequest:
    return ad_pb.CreateAdRequest(keyword="여름 딸기 주스", num_inference_steps=2)


def _spans_of(exporter: InMemorySpanExporter, request_id: str) -> list[ReadableSpan]:
    return [
        s for s in exporter.get_finished_spans() if (s.attributes or {}).get(REQUEST_ID_SPAN_ATTRIBUTE) == request_id
    ]


def _assert_one_trace_across_the_services(spans: list[ReadableSpan]) -> None:
    assert {s.resource.attributes["service.name"] for s in spans} == set(SERVICES)
    assert len({s.context.trace_id for s in spans}) == 1
    names = {s.name for s in spans}
    assert "/adgen.copywriter.v1.CopywriterService/GenerateCopy" in names
    assert any(name.startswith("/adgen.diffusion.v1.DiffusionService/") for name in names)


async def test_a_create_ad_is_one_trace_over_all_three_services(traced: TracedServices) -> None:
    async with create_aio_channel(f"127.0.0.1:{traced.orchestrator.port}") as channel:
        await ad_grpc.AdServiceStub(channel).CreateAd(
            _request(), metadata=((REQUEST_ID_METADATA_KEY, "trace-unary"),), wait_for_ready=True, timeout=120
        )
    spans = _spans_of(traced.exporter, "trace-unary")
    _assert_one_trace_across_the_services(spans)
    assert "/adgen.ad.v1.AdService/CreateAd" in {s.name for s in spans}


async def test_a_streamed_create_ad_is_one_trace_too(traced: TracedServices) -> None:
    async with create_aio_channel(f"127.0.0.1:{traced.orchestrator.port}") as channel:
        stream = ad_grpc.AdServiceStub(channel).StreamCreateAd(
            ad_pb.StreamCreateAdRequest(request=_request()),
            metadata=((REQUEST_ID_METADATA_KEY, "trace-stream"),),
            wait_for_ready=True,
            timeout=120,
        )
        events = [event async for event in stream]
    assert events[-1].HasField("result")
    spans = _spans_of(traced.exporter, "trace-stream")
    _assert_one_trace_across_the_services(spans)
    assert "/adgen.ad.v1.AdService/StreamCreateAd" in {s.name for s in spans}


def test_tracing_is_off_without_an_otlp_endpoint() -> None:
    assert Telemetry.from_settings(CopywriterSettings(), "copywriter").tracing is None
    on = Telemetry.from_settings(CopywriterSettings(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317"), "copywriter")
    assert on.tracing is not None
    on.shutdown()
