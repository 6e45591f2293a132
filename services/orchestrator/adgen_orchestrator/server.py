"""Wires the orchestrator: downstream channels and their health, AdCore, and its gRPC and HTTP front ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen_orchestrator.ad_core import AdCore
from adgen_orchestrator.ad_pipeline import AdPipeline
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.downstream import CopywriterClient, DiffusionClient, DownstreamHealth, WatchedService
from adgen_orchestrator.http_edge import HttpEdge, create_http_app
from adgen_orchestrator.servicer import SERVICE_NAME, AdServicer
from adgen_runtime.server import RunningServer, ServiceBinding, run_service, start_server
from adgen_wire.channel import create_aio_channel

_LOGGER = logging.getLogger(__name__)

COPYWRITER_SERVICE = cw_pb.DESCRIPTOR.services_by_name["CopywriterService"].full_name
DIFFUSION_SERVICE = df_pb.DESCRIPTOR.services_by_name["DiffusionService"].full_name


@dataclass
class OrchestratorServer(RunningServer):
    """The running gRPC server, plus the port of the HTTP edge (None when it is off)."""

    http_port: int | None = None


async def create_server(settings: OrchestratorSettings) -> OrchestratorServer:
    """Starts the AdService over gRPC on `settings.host:port` and, unless turned off, over
    HTTP (Connect, gRPC-Web) on `settings.http_port`, both calling one AdCore.

    Liveness ("") is SERVING once started; readiness (the AdService) is SERVING while both the
    copywriter and the diffusion service report SERVING, since every call needs both. Both front
    ends drain together within `settings.shutdown_grace_s`.
    """
    # No retries on these hops: the SDK retries UNAVAILABLE at the edge, and the copywriter already retried its LLM.
    copywriter_channel = create_aio_channel(
        settings.copywriter_target, settings.max_message_bytes, retry_unavailable=False
    )
    diffusion_channel = create_aio_channel(
        settings.diffusion_target, settings.max_message_bytes, retry_unavailable=False
    )
    pipeline = AdPipeline(
        CopywriterClient(copywriter_channel, settings.copywriter_timeout_s),
        DiffusionClient(diffusion_channel, settings.diffusion_timeout_s),
        font_path=settings.overlay_font_path,
    )
    core = AdCore(pipeline, settings)
    servicer = AdServicer(core)

    async def close_channels() -> None:
        await copywriter_channel.close()
        await diffusion_channel.close()

    http: HttpEdge | None = None
    try:
        if settings.http_enabled:
            # CORS is applied by the edge, outside its drain guard, so browsers can read a refusal too.
            app = create_http_app(core, (), settings.max_message_bytes)
            http = HttpEdge(app, settings.host, settings.http_port, cors_origins=settings.http_cors_origins)
        running = await start_server(
            settings,
            [
                ServiceBinding(
                    SERVICE_NAME, lambda server: ad_grpc.add_AdServiceServicer_to_server(servicer, server), False
                )
            ],
        )
    except BaseException:
        if http is not None:
            await http.stop()
        await close_channels()
        raise

    async def follow_downstreams(ready: bool) -> None:
        await running.set_ready(SERVICE_NAME, ready)

    downstream_health = DownstreamHealth(
        [
            WatchedService(CopywriterClient.SERVICE, copywriter_channel, COPYWRITER_SERVICE),
            WatchedService(DiffusionClient.SERVICE, diffusion_channel, DIFFUSION_SERVICE),
        ],
        follow_downstreams,
    )
    downstream_health.start()
    if http is not None:
        running.front_ends.append(http)
    running.on_shutdown.extend([downstream_health.close, close_channels])
    _LOGGER.info("copywriter at %s, diffusion at %s", settings.copywriter_target, settings.diffusion_target)
    return OrchestratorServer(
        server=running.server,
        port=running.port,
        health=running.health,
        service_names=running.service_names,
        calls=running.calls,
        front_ends=running.front_ends,
        on_shutdown=running.on_shutdown,
        http_port=http.port if http is not None else None,
    )


def main() -> None:
    """Console script `adgen-orchestrator`: settings from ADGEN_ORCHESTRATOR_* variables."""
    from adgen_runtime.settings import load_settings

    run_service(load_settings(OrchestratorSettings), create_server)


if __name__ == "__main__":
    main()
