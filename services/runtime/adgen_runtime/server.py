"""gRPC server bootstrap shared by every AdGen service: limits, interceptors, health,
reflection and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from adgen_client.channel import grpc_options
from adgen_runtime.interceptors import server_interceptors
from adgen_runtime.logs import configure_logging
from adgen_runtime.settings import ServerSettings

_LOGGER = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

_Settings = TypeVar("_Settings", bound=ServerSettings)


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to mount: its full proto name and the generated `add_*_to_server` call."""

    name: str
    register: Callable[[aio.Server], None]
    ready_at_start: bool = True


@dataclass
class RunningServer:
    """A started server, the port it bound, and the health servicer that reports readiness.

    Health lifecycle: "" (liveness) is SERVING once the port is bound. Each service name is
    SERVING when it can take work (services that warm up start NOT_SERVING), and every
    name goes NOT_SERVING the moment shutdown begins, before in-flight calls drain.
    """

    server: aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def set_ready(self, service_name: str, ready: bool) -> None:
        """Flips a service's readiness as seen by `grpc.health.v1` checks and watchers."""
        await self.health.set(service_name, SERVING if ready else NOT_SERVING)

    async def stop(self, grace_s: float | None) -> None:
        """Drains: readiness NOT_SERVING, then stop with a grace period, then shutdown hooks."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        for hook in self.on_shutdown:
            try:
                await hook()
            except Exception:
                # One failing hook must not leave the later ones' resources open.
                _LOGGER.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))


async def start_server(settings: ServerSettings, bindings: Sequence[ServiceBinding]) -> RunningServer:
    """Builds, binds and starts an aio server with the shared interceptors, health and reflection."""
    # gRPC sets SO_REUSEPORT by default, so a second server on a taken port would silently share it.
    options = [*grpc_options(settings.max_message_bytes, server=True), ("grpc.so_reuseport", 0)]
    server = aio.server(interceptors=server_interceptors(), options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in bindings:
        binding.register(server)
    names = tuple(b.name for b in bindings)
    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{settings.host}:{settings.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"could not bind {address}; is another server listening there?") from error
    await server.start()
    running = RunningServer(server=server, port=port, health=health_servicer, service_names=names)
    await health_servicer.set("", SERVING)
    for binding in bindings:
        await running.set_ready(binding.name, binding.ready_at_start)
    _LOGGER.info("serving %s on %s:%d", ", ".join(names), settings.host, port)
    return running


async def serve_until_signal(running: RunningServer, grace_s: float) -> None:
    """Serves until SIGTERM or SIGINT, then drains gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _LOGGER.info("shutting down: draining for up to %.0fs", grace_s)
    await running.stop(grace_s)
    _LOGGER.info("stopped")


def run_service(settings: _Settings, create_server: Callable[[_Settings], Awaitable[RunningServer]]) -> None:
    """A service's console entry point: logging, start, serve until SIGTERM or SIGINT, drain."""
    configure_logging(settings.log_level)

    async def serve() -> None:
        running = await create_server(settings)
        await serve_until_signal(running, settings.shutdown_grace_s)

    asyncio.run(serve())
