"""Wires the copywriter: settings → backend → engine → gRPC server; `main` is `adgen-copywriter`."""

from __future__ import annotations

import logging

import httpx2
from opentelemetry import propagate

from adgen.copywriter.v1 import copywriter_service_pb2_grpc as pb_grpc
from adgen_copywriter.config import CopywriterSettings
from adgen_copywriter.domain import CopyBackend
from adgen_copywriter.engine import CopyEngine
from adgen_copywriter.metrics import LlmMetrics
from adgen_copywriter.servicer import SERVICE_NAME, CopywriterServicer
from adgen_copywriter.template import TemplateBackend
from adgen_runtime.server import RunningServer, ServiceBinding, run_service, start_server
from adgen_runtime.telemetry import Telemetry

_LOGGER = logging.getLogger(__name__)


def build_backend(settings: CopywriterSettings, telemetry: Telemetry | None = None) -> CopyBackend:
    """The LLM backend when one is configured (or forced), else the offline template."""
    if settings.uses_llm():
        _LOGGER.info("copy backend: LLM %s at %s", settings.llm_model, settings.llm_base_url or "api.openai.com")
        return build_llm_backend(settings, telemetry or Telemetry(SERVICE_NAME))
    _LOGGER.info("copy backend: offline template (no LLM endpoint or key configured)")
    return TemplateBackend()


def build_llm_backend(settings: CopywriterSettings, telemetry: Telemetry) -> CopyBackend:
    """An OpenAI-compatible client from settings; local servers that need no key get a placeholder.

    Its HTTP client counts each request (so the SDK's retries show in the metrics) and, with tracing on,
    gives every request a span under the call that asked for it.
    """
    # Imported here so a template-only process never loads the openai SDK.
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient

    from adgen_copywriter.llm import LlmBackend

    backend: LlmBackend | None = None

    async def on_request(request: httpx2.Request) -> None:
        if backend is not None:
            backend.count_attempt()
        if telemetry.tracing is not None:
            # The endpoint (a vLLM or a gateway) can join the trace: W3C traceparent of the completion's span.
            propagate.inject(request.headers)

    http_client = DefaultAsyncHttpxClient(event_hooks={"request": [on_request]})
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "not-needed"
    client = AsyncOpenAI(
        api_key=key,
        base_url=settings.llm_base_url,
        timeout=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        http_client=http_client,
    )
    backend = LlmBackend(
        client,
        settings.llm_model,
        temperature=settings.llm_temperature,
        unavailable_retry_after_s=settings.llm_unavailable_retry_after_s,
        metrics=LlmMetrics(telemetry.metrics),
        tracer=telemetry.tracing.get_tracer(__name__) if telemetry.tracing is not None else None,
    )
    return backend


async def create_server(
    settings: CopywriterSettings, backend: CopyBackend | None = None, telemetry: Telemetry | None = None
) -> RunningServer:
    """Starts the copywriter on `settings.host:settings.port`; `backend` overrides the configured one.

    `telemetry` (metrics registry, tracer) is made from the settings unless given.
    """
    telemetry = telemetry or Telemetry.from_settings(settings, SERVICE_NAME)
    engine = CopyEngine(backend if backend is not None else build_backend(settings, telemetry))
    servicer = CopywriterServicer(engine)
    binding = ServiceBinding(
        SERVICE_NAME, lambda server: pb_grpc.add_CopywriterServiceServicer_to_server(servicer, server)
    )
    try:
        running = await start_server(settings, [binding], telemetry)
    except BaseException:
        await engine.aclose()  # The LLM client's connection pool would outlive a server that never started.
        raise
    running.on_shutdown.append(engine.aclose)
    return running


def main() -> None:
    """Console entry point: `adgen-copywriter`, configured from the environment."""
    from adgen_runtime.settings import load_settings

    run_service(load_settings(CopywriterSettings), create_server)


if __name__ == "__main__":
    main()
