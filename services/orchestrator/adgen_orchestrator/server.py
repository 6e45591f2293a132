"""Wires the orchestrator: downstream channels and their health, AdCore, and its gRPC and HTTP front ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from grpc import aio
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen_orchestrator.ad_core import AdCore
from adgen_orchestrator.ad_pipeline import AdPipeline
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.downstream import (
    CopywriterClient,
    DiffusionClient,
    DownstreamHealth,
    WatchedService,
    downstream_channel,
)
from adgen_orchestrator.http_edge import HttpEdge, create_http_app
from adgen_orchestrator.message_size import RAW_HOP_MAX_BYTES
from adgen_orchestrator.metrics import StageMetrics
from adgen_orchestrator.routing import DiffusionRouter, RouteTable
from adgen_orchestrator.servicer import SERVICE_NAME, AdServicer
from adgen_runtime.auth import CallGuard, bearer_token_interceptors, read_token_file
from adgen_runtime.server import RunningServer, ServiceBinding, run_service, start_server
from adgen_runtime.telemetry import Telemetry
from adgen_runtime.tls import client_channel_credentials
from adgen_wire.channel import grpc_options

_LOGGER = logging.getLogger(__name__)

COPYWRITER_SERVICE = cw_pb.DESCRIPTOR.services_by_name["CopywriterService"].full_name


@dataclass
class OrchestratorServer(RunningServer):
    """The running gRPC server, plus the port of the HTTP edge (None when it is off)."""

    http_port: int | None = None


async def create_server(settings: OrchestratorSettings, telemetry: Telemetry | None = None) -> OrchestratorServer:
    """Starts the AdService over gRPC on `settings.host:port` and, unless turned off, over
    HTTP (Connect, gRPC-Web) on `settings.http_port`, both calling one AdCore.

    Liveness ("") is SERVING once started; readiness (the AdService) is SERVING while the copywriter
    and the diffusion target of the default text-to-image model report SERVING (a target of many replicas: at least
    one of them), since every call needs both services. Both front ends drain together within
    `settings.shutdown_grace_s`. With tracing on, the downstream calls carry the trace onward.
    """
    telemetry = telemetry or Telemetry.from_settings(settings, SERVICE_NAME)
    interceptors: list[aio.ClientInterceptor] = []
    if telemetry.tracing is not None:
        interceptors = aio_client_interceptors(tracer_provider=telemetry.tracing)  # type: ignore[no-untyped-call]
    credentials, identity = downstream_security(settings)
    interceptors = [*interceptors, *identity]
    # No retries on these hops: the SDK retries UNAVAILABLE at the edge, and the copywriter already retried its LLM.
    copywriter_channel = downstream_channel(
        settings.copywriter_target,
        grpc_options(settings.max_message_bytes, retry_unavailable=False),
        credentials,
        interceptors,
    )
    routes = RouteTable(settings.diffusion_routes, settings.diffusion_target)
    # Renders come back as raw pixels: the diffusion hop takes them whatever limit the public side has.
    diffusion_max_bytes = max(settings.max_message_bytes, RAW_HOP_MAX_BYTES)
    diffusion = DiffusionRouter(
        routes, diffusion_max_bytes, settings.diffusion_timeout_s, interceptors, credentials=credentials
    )
    pipeline = AdPipeline(
        CopywriterClient(copywriter_channel, settings.copywriter_timeout_s),
        diffusion,
        font_path=settings.overlay_font_path,
        metrics=StageMetrics(telemetry.metrics),
        signer=settings.content_signer(),
    )
    core = AdCore(pipeline, settings)
    servicer = AdServicer(core)

    async def close_channels() -> None:
        await copywriter_channel.close()
        await diffusion.close()

    # One guard for both front ends: a caller's rate limit counts its gRPC and HTTP calls together.
    guard = CallGuard.from_settings(settings)
    http: HttpEdge | None = None
    try:
        if settings.http_enabled:
            # CORS is applied by the edge, outside its drain guard, so browsers can read a refusal too.
            app = create_http_app(core, (), settings.max_message_bytes, guard=guard)
            http = HttpEdge(
                app,
                settings.host,
                settings.http_port,
                cors_origins=settings.http_cors_origins,
                tls=settings.tls_files,
            )
        running = await start_server(
            settings,
            [
                ServiceBinding(
                    SERVICE_NAME, lambda server: ad_grpc.add_AdServiceServicer_to_server(servicer, server), False
                )
            ],
            telemetry,
            guard=guard,
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
            # CreateAd's default model gates readiness; other pools may be empty (scaled to zero) for a while.
            *diffusion.watched(
                DiffusionClient.SERVICE,
                gating_target=routes.target_for(settings.default_model_id, df_pb.MODEL_TASK_TEXT_TO_IMAGE),
            ),
        ],
        follow_downstreams,
    )
    downstream_health.start()
    if http is not None:
        running.front_ends.append(http)
    running.on_shutdown.extend([downstream_health.close, close_channels])
    _LOGGER.info("copywriter at %s, diffusion at %s", settings.copywriter_target, ", ".join(routes.targets))
    return OrchestratorServer(
        server=running.server,
        port=running.port,
        health=running.health,
        service_names=running.service_names,
        calls=running.calls,
        telemetry=running.telemetry,
        metrics_port=running.metrics_port,
        health_port=running.health_port,
        front_ends=running.front_ends,
        on_shutdown=running.on_shutdown,
        http_port=http.port if http is not None else None,
    )


def downstream_security(
    settings: OrchestratorSettings,
) -> tuple[grpc.ChannelCredentials | None, list[aio.ClientInterceptor]]:
    """The orchestrator's TLS credentials for its downstreams (None: plaintext) and the interceptors that send
    its service token on every call (none without a token file)."""
    credentials = None
    if settings.downstream_tls_ca_file is not None:
        credentials = client_channel_credentials(
            settings.downstream_tls_ca_file, settings.downstream_tls_cert_file, settings.downstream_tls_key_file
        )
    token_file = settings.downstream_token_file
    return credentials, bearer_token_interceptors(read_token_file(token_file)) if token_file is not None else []


def main() -> None:
    """Console script `adgen-orchestrator`: settings from ADGEN_ORCHESTRATOR_* variables."""
    from adgen_runtime.allocator import keep_image_buffers
    from adgen_runtime.settings import load_settings

    settings = load_settings(OrchestratorSettings)
    if settings.keep_image_buffers:
        # Process-wide, so here at the process's start rather than in create_server (tests run many servers).
        keep_image_buffers()
    run_service(settings, create_server)


if __name__ == "__main__":
    main()
