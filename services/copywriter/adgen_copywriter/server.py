"""Wires the copywriter: settings → backend → engine → gRPC server; `main` is `adgen-copywriter`."""

from __future__ import annotations

import logging

from adgen.copywriter.v1 import copywriter_service_pb2_grpc as pb_grpc
from adgen_copywriter.config import CopywriterSettings
from adgen_copywriter.domain import CopyBackend
from adgen_copywriter.engine import CopyEngine
from adgen_copywriter.servicer import SERVICE_NAME, CopywriterServicer
from adgen_copywriter.template import TemplateBackend
from adgen_runtime.server import RunningServer, ServiceBinding, run_service, start_server

_LOGGER = logging.getLogger(__name__)


def build_backend(settings: CopywriterSettings) -> CopyBackend:
    """The LLM backend when one is configured (or forced), else the offline template."""
    if settings.uses_llm():
        _LOGGER.info("copy backend: LLM %s at %s", settings.llm_model, settings.llm_base_url or "api.openai.com")
        return build_llm_backend(settings)
    _LOGGER.info("copy backend: offline template (no LLM endpoint or key configured)")
    return TemplateBackend()


def build_llm_backend(settings: CopywriterSettings) -> CopyBackend:
    """An OpenAI-compatible client from settings; local servers that need no key get a placeholder."""
    # Imported here so a template-only process never loads the openai SDK.
    from openai import AsyncOpenAI

    from adgen_copywriter.llm import LlmBackend

    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "not-needed"
    client = AsyncOpenAI(
        api_key=key,
        base_url=settings.llm_base_url,
        timeout=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
    )
    return LlmBackend(
        client,
        settings.llm_model,
        temperature=settings.llm_temperature,
        unavailable_retry_after_s=settings.llm_unavailable_retry_after_s,
    )


async def create_server(settings: CopywriterSettings, backend: CopyBackend | None = None) -> RunningServer:
    """Starts the copywriter on `settings.host:settings.port`; `backend` overrides the configured one."""
    engine = CopyEngine(backend if backend is not None else build_backend(settings))
    servicer = CopywriterServicer(engine)
    binding = ServiceBinding(
        SERVICE_NAME, lambda server: pb_grpc.add_CopywriterServiceServicer_to_server(servicer, server)
    )
    try:
        running = await start_server(settings, [binding])
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
