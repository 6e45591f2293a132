"""Wires the orchestrator: downstream channels, AdCore, and its gRPC and HTTP front ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as cw_grpc
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen_client.channel import create_aio_channel
from adgen_orchestrator.ad_core import AdCore
from adgen_orchestrator.ad_pipeline import AdPipeline
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.downstream import CopywriterClient, DiffusionClient
from adgen_orchestrator.http_edge import HttpEdge, create_http_app
from adgen_orchestrator.servicer import SERVICE_NAME, AdServicer
from adgen_runtime.server import RunningServer, ServiceBinding, run_service, start_server

_LOGGER = logging.getLogger(__name__)


@dataclass
class OrchestratorServer(RunningServer):
    """The running gRPC server, plus the port of the HTTP edge (None when it is off)."""

    http_port: int | None = None


async def create_server(settings: OrchestratorSettings) -> OrchestratorServer:
    """Starts the AdService over gRPC on `settings.host:port` and, unless turned off, over
    HTTP (Connect, gRPC-Web) on `settings.http_port`, both calling one AdCore."""
    # No retries on these hops: the SDK retries UNAVAILABLE at the edge, and the copywriter already retried its LLM.
    copywriter_channel = create_aio_channel(
        settings.copywriter_target, settings.max_message_bytes, retry_unavailable=False
    )
    diffusion_channel = create_aio_channel(
        settings.diffusion_target, settings.max_message_bytes, retry_unavailable=False
    )
    pipeline = AdPipeline(
        CopywriterClient(cw_grpc.CopywriterServiceStub(copywriter_channel), settings.copywriter_timeout_s),
        DiffusionClient(df_grpc.DiffusionServiceStub(diffusion_channel), settings.diffusion_timeout_s),
    )
    core = AdCore(pipeline, settings)
    servicer = AdServicer(core)

    async def close_channels() -> None:
        await copywriter_channel.close()
        await diffusion_channel.close()

    http: HttpEdge | None = None
    try:
        if settings.http_enabled:
            app = create_http_app(core, settings.http_cors_origins, settings.max_message_bytes)
            http = HttpEdge(app, settings.host, settings.http_port, settings.shutdown_grace_s)
        running = await start_server(
            settings,
            [ServiceBinding(SERVICE_NAME, lambda server: ad_grpc.add_AdServiceServicer_to_server(servicer, server))],
        )
    except BaseException:
        if http is not None:
            await http.stop()
        await close_channels()
        raise
    if http is not None:
        running.on_shutdown.append(http.stop)
    running.on_shutdown.append(close_channels)
    _LOGGER.info("copywriter at %s, diffusion at %s", settings.copywriter_target, settings.diffusion_target)
    return OrchestratorServer(
        server=running.server,
        port=running.port,
        health=running.health,
        service_names=running.service_names,
        on_shutdown=running.on_shutdown,
        http_port=http.port if http is not None else None,
    )


def main() -> None:
    """Console script `adgen-orchestrator`: settings from ADGEN_ORCHESTRATOR_* variables."""
    run_service(OrchestratorSettings(), create_server)


if __name__ == "__main__":
    main()
