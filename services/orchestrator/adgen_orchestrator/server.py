"""Wires the orchestrator: downstream channels, the AdService servicer, and the shared server."""

from __future__ import annotations

import asyncio
import logging

from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as cw_grpc
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen_client.channel import create_aio_channel
from adgen_orchestrator.ad_pipeline import AdPipeline
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.downstream import CopywriterClient, DiffusionClient
from adgen_orchestrator.servicer import SERVICE_NAME, AdServicer
from adgen_runtime.logs import configure_logging
from adgen_runtime.server import RunningServer, ServiceBinding, serve_until_signal, start_server

_LOGGER = logging.getLogger(__name__)


async def create_server(settings: OrchestratorSettings) -> RunningServer:
    """Starts the AdService on `settings.host:port`, with channels to the copywriter and diffusion."""
    copywriter_channel = create_aio_channel(settings.copywriter_target, settings.max_message_bytes)
    diffusion_channel = create_aio_channel(settings.diffusion_target, settings.max_message_bytes)
    pipeline = AdPipeline(
        CopywriterClient(cw_grpc.CopywriterServiceStub(copywriter_channel), settings.copywriter_timeout_s),
        DiffusionClient(df_grpc.DiffusionServiceStub(diffusion_channel), settings.diffusion_timeout_s),
    )
    servicer = AdServicer(pipeline, settings)

    async def close_channels() -> None:
        await copywriter_channel.close()
        await diffusion_channel.close()

    try:
        running = await start_server(
            settings,
            [ServiceBinding(SERVICE_NAME, lambda server: ad_grpc.add_AdServiceServicer_to_server(servicer, server))],
        )
    except BaseException:
        await close_channels()
        raise
    running.on_shutdown.append(close_channels)
    _LOGGER.info("copywriter at %s, diffusion at %s", settings.copywriter_target, settings.diffusion_target)
    return running


async def _serve(settings: OrchestratorSettings) -> None:
    running = await create_server(settings)
    await serve_until_signal(running, settings.shutdown_grace_s)


def main() -> None:
    """Console script `adgen-orchestrator`: settings from ADGEN_ORCHESTRATOR_* variables."""
    settings = OrchestratorSettings()
    configure_logging(settings.log_level)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
