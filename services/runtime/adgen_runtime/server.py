"""gRPC server bootstrap shared by every AdGen service: limits, interceptors, health, reflection and drain."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_interceptor import AsyncServerInterceptor
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from adgen.type.v1 import error_reason_pb2
from adgen_runtime import Context
from adgen_runtime.auth import CallGuard, GuardInterceptor
from adgen_runtime.errors import Unavailable
from adgen_runtime.interceptors import server_interceptors, with_request_size_limit
from adgen_runtime.logs import configure_logging
from adgen_runtime.metrics import CallMetrics, serve_metrics
from adgen_runtime.settings import ServerSettings
from adgen_runtime.telemetry import Telemetry
from adgen_runtime.tls import grpc_server_credentials
from adgen_wire.channel import grpc_options

_LOGGER = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Answered all through a drain and never waited for by one: probes must read NOT_SERVING until the end,
# and health watches would hold the drain for its whole grace period.
_ALWAYS_ANSWERED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# How long calls cut at the end of a drain get to unwind and send their status before the server closes.
CUT_SETTLE_S = 0.5
# What a caller turned away by a draining server is told to wait: a replacement is usually up by then.
SHUTDOWN_RETRY_AFTER_S = 1.0

_Settings = TypeVar("_Settings", bound=ServerSettings)
T = TypeVar("T")


class ShuttingDown(Unavailable):
    """What a call refused or cut by a drain ends with: UNAVAILABLE, NOT_READY and when to retry."""

    def __init__(self) -> None:
        super().__init__(
            error_reason_pb2.ERROR_REASON_NOT_READY,
            "The server is shutting down; retry in a moment.",
            retry_after_s=SHUTDOWN_RETRY_AFTER_S,
        )


class InFlightCalls:
    """The calls one front end is serving, so that a drain can refuse new ones at once, let the running
    ones finish until its deadline, and cut those still running then, each with a status that says why.

    Each call's work runs as a task of its own (a stream: each step), raced against the cut; the cut
    cancels the work, so downstream calls and GPU jobs stop, and the call ends with
    `ShuttingDown` (UNAVAILABLE NOT_READY) instead of a bare cancellation.
    """

    def __init__(self) -> None:
        self.drain_begun = asyncio.Event()
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._cut: asyncio.Future[None] | None = None

    @property
    def running(self) -> int:
        """How many calls are being served now."""
        return self._running

    @property
    def draining(self) -> bool:
        return self.drain_begun.is_set()

    def begin_drain(self) -> None:
        """Refuses every new call from now on (`drain` waits and cuts)."""
        self.drain_begun.set()

    def admit(self) -> None:
        """Refuses a new call once a drain has begun."""
        if self.draining:
            raise ShuttingDown()

    async def run(self, work: Awaitable[T], *, on_cut: Callable[[], None] | None = None, background: bool = False) -> T:
        """Awaits one call's `work`; `on_cut` runs just before a cut cancels it.

        A `background` call (a probe, a health watch) is answered during a drain and not waited for by it,
        but is cut with the rest at its end.
        """
        if not background:
            self.admit()
        with self._tracked(not background):
            return await self._until_cut(asyncio.ensure_future(work), on_cut)

    async def stream(self, responses: AsyncIterator[T], *, background: bool = False) -> AsyncIterator[T]:
        """Passes one call's response stream through, ending it with `ShuttingDown` when cut."""
        if not background:
            self.admit()
        loop = asyncio.get_running_loop()
        # One context for every step, so what the handler sets in one step (a request id) holds in the next.
        context = contextvars.copy_context()
        step: asyncio.Task[T] | None = None
        with self._tracked(not background):
            try:
                while True:
                    step = loop.create_task(_next_or_end(responses), context=context)
                    item = await self._until_cut(step, None)
                    if item is _END:
                        return
                    yield item
            finally:
                aclose = getattr(responses, "aclose", None)
                # A step still unwinding ends the handler's stream itself; closing it meanwhile would raise.
                if aclose is not None and (step is None or step.done()):
                    await aclose()

    async def drain(self, deadline: float) -> int:
        """Refuses new calls from now on, waits for the running ones until `deadline` (a `time.monotonic()`
        value), then cuts those left and the background ones; returns how many running calls were cut."""
        self.begin_drain()
        remaining = deadline - time.monotonic()
        if self._running and remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), remaining)
        cut = self._running
        signal_ = self._cut_signal()
        if not signal_.done():
            signal_.set_result(None)
        if cut:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), CUT_SETTLE_S)
        return cut

    @contextlib.contextmanager
    def _tracked(self, counted: bool) -> Iterator[None]:
        if not counted:
            yield
            return
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    def _cut_signal(self) -> asyncio.Future[None]:
        if self._cut is None:
            self._cut = asyncio.get_running_loop().create_future()
        return self._cut

    async def _until_cut(self, work: asyncio.Future[T], on_cut: Callable[[], None] | None) -> T:
        cut = self._cut_signal()
        try:
            await asyncio.wait((work, cut), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _cancelled(work)  # The caller went away: so does its work.
            raise
        if not work.done():
            if on_cut is not None:
                on_cut()
            await _cancelled(work)
            raise ShuttingDown()
        return work.result()


_END: Any = object()


async def _next_or_end(responses: AsyncIterator[T]) -> T:
    try:
        return await anext(responses)
    except StopAsyncIteration:
        return _END  # type: ignore[no-any-return]  # A sentinel: a task cannot end with StopAsyncIteration.


async def _cancelled(work: asyncio.Future[Any]) -> None:
    """Cancels `work` and waits until it has unwound; what it ended with is of no interest any more."""
    work.cancel()
    await asyncio.wait((work,))
    if not work.cancelled():
        work.exception()  # Marks it retrieved: a handler may turn the cancellation into an error of its own.


def reflection_pool(service_names: Sequence[str]) -> descriptor_pool.DescriptorPool:
    """The listed services' files, each also importing the google.rpc error-detail files.

    Generic clients (`buf curl`) decode `Any` details only with types from the files they fetched for the
    service they call, so every service's file names the detail types' files as dependencies.
    """
    default = descriptor_pool.Default()
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    for detail_file in _ERROR_DETAIL_FILES:
        _add_with_dependencies(pool, default.FindFileByName(detail_file), added)
    for name in service_names:
        try:
            service_file = default.FindFileContainingSymbol(name)
        except KeyError:  # A service without generated descriptors (a test's generic handler) has no file.
            continue
        for dependency in service_file.dependencies:
            _add_with_dependencies(pool, dependency, added)
        proto = descriptor_pb2.FileDescriptorProto()
        service_file.CopyToProto(proto)
        proto.dependency.extend(file for file in _ERROR_DETAIL_FILES if file not in proto.dependency)
        if proto.name not in added:
            pool.Add(proto)
            added.add(proto.name)
    return pool


_ERROR_DETAIL_FILES = (status_pb2.DESCRIPTOR.name, error_details_pb2.DESCRIPTOR.name)


def _add_with_dependencies(
    pool: descriptor_pool.DescriptorPool, file: descriptor.FileDescriptor, added: set[str]
) -> None:
    if file.name in added:
        return
    for dependency in file.dependencies:
        _add_with_dependencies(pool, dependency, added)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    pool.Add(proto)
    added.add(file.name)


class DrainInterceptor(AsyncServerInterceptor):
    """Runs every call but probes and reflection through the server's `InFlightCalls`.

    Innermost in the chain, so the ErrorInterceptor turns its refusals and cuts into rich statuses.
    """

    def __init__(self, calls: InFlightCalls) -> None:
        self._calls = calls

    async def intercept(
        self, method: Callable[..., Any], request_or_iterator: Any, context: Context, method_name: str
    ) -> Any:
        background = method_name.startswith(_ALWAYS_ANSWERED)
        if not background:
            self._calls.admit()  # Before the handler runs: a refused call does no work at all.
        response_or_iterator = method(request_or_iterator, context)
        if hasattr(response_or_iterator, "__aiter__"):
            return self._calls.stream(response_or_iterator, background=background)
        return await self._calls.run(response_or_iterator, background=background)


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to mount: its full proto name and the generated `add_*_to_server` call."""

    name: str
    register: Callable[[aio.Server], None]
    ready_at_start: bool = True
    # Methods (by short name, e.g. "UnloadModel") only an admin may call when authentication is on.
    admin_methods: tuple[str, ...] = ()

    @property
    def admin_method_paths(self) -> tuple[str, ...]:
        return tuple(f"/{self.name}/{method}" for method in self.admin_methods)


class FrontEnd(Protocol):
    """Another front end of the same service (the orchestrator's HTTP edge), drained with the gRPC server."""

    def begin_drain(self) -> None:
        """Refuses new work from now on."""

    async def drain(self, deadline: float) -> None:
        """Lets running work finish until `deadline` (a `time.monotonic()` value), ends the rest, stops."""


@dataclass
class RunningServer:
    """A started server, the port it bound, and the health servicer that reports readiness.

    Health lifecycle: "" is liveness: SERVING while the process serves. Each service name is readiness:
    SERVING when that service can take work (services that warm up start NOT_SERVING; the orchestrator
    follows its downstreams). Every name goes NOT_SERVING the moment a drain begins, and Check keeps
    answering until the drain ends.
    """

    server: aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    calls: InFlightCalls
    telemetry: Telemetry
    metrics_port: int | None = None
    health_port: int | None = None
    front_ends: list[FrontEnd] = field(default_factory=list)
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _stopped: bool = field(default=False, init=False, repr=False)

    async def set_ready(self, service_name: str, ready: bool) -> None:
        """Flips a service's readiness as seen by `grpc.health.v1` checks and watchers."""
        await self.health.set(service_name, SERVING if ready else NOT_SERVING)

    async def stop(self, grace_s: float | None) -> None:
        """Drains every front end together within one grace period, then runs the shutdown hooks.

        At once: readiness goes NOT_SERVING (probes keep being answered) and new calls are refused with
        UNAVAILABLE NOT_READY. Running calls may finish until the grace period ends; those still running
        then are cut, each ending with UNAVAILABLE NOT_READY and RetryInfo. `None` cuts at once.
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + (grace_s or 0.0)
        # Before any await, on every front end: no new call slips in while readiness is updated.
        self.calls.begin_drain()
        for front_end in self.front_ends:
            front_end.begin_drain()
        await self.health.enter_graceful_shutdown()
        outcomes = await asyncio.gather(
            self.calls.drain(deadline),
            *(front_end.drain(deadline) for front_end in self.front_ends),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                _LOGGER.error("a front end failed to drain", exc_info=outcome)
        if isinstance(outcomes[0], int) and outcomes[0]:
            _LOGGER.warning("cut %d call(s) still running at the end of the grace period", outcomes[0])
        # Only calls sending their final status are left; this is the time they get.
        await self.server.stop(CUT_SETTLE_S)
        for hook in self.on_shutdown:
            try:
                await hook()
            except Exception:
                # One failing hook must not leave the later ones' resources open.
                _LOGGER.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))


async def start_server(
    settings: ServerSettings,
    bindings: Sequence[ServiceBinding],
    telemetry: Telemetry | None = None,
    *,
    extra_options: Sequence[tuple[str, Any]] = (),
    guard: CallGuard | None = None,
) -> RunningServer:
    """Builds, binds and starts an aio server with the shared interceptors, health and reflection.

    `telemetry` is the registry and tracer the service's own parts report to; by default one is made from
    the settings. `/metrics` is served on `settings.metrics_port` when it is set. `extra_options` are
    further gRPC server options of one service (e.g. the diffusion service's connection age).

    Security follows the settings: TLS (mTLS with a client CA) with certificates re-read on rotation, and
    the `guard` (by default one from the settings: tokens, admin-only methods, rate limits) before every call.
    Pass a `guard` to share it with another front end (the orchestrator's HTTP edge shares its rate limits).
    """
    # gRPC sets SO_REUSEPORT by default, so a second server on a taken port would silently share it.
    options = [*grpc_options(settings.max_message_bytes, server=True), ("grpc.so_reuseport", 0), *extra_options]
    # The transport takes a little more than the limit, so a near miss gets MESSAGE_TOO_LARGE naming it.
    options = with_request_size_limit(options, settings.max_message_bytes)
    names = tuple(b.name for b in bindings)
    telemetry = telemetry or Telemetry.from_settings(settings, names[0] if names else "adgen")
    calls = InFlightCalls()
    guard = guard or CallGuard.from_settings(settings)
    guard.with_admin_methods(path for binding in bindings for path in binding.admin_method_paths)
    chain = [
        *server_interceptors(settings.max_message_bytes, CallMetrics(telemetry.metrics)),
        GuardInterceptor(guard),
        DrainInterceptor(calls),
    ]
    if telemetry.tracing is not None:
        # Outermost, so the server span covers the whole call and the request-id interceptor runs inside it.
        chain.insert(0, aio_server_interceptor(tracer_provider=telemetry.tracing))  # type: ignore[no-untyped-call]
    server = aio.server(interceptors=chain, options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in bindings:
        binding.register(server)
    listed = (*names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(listed, server, pool=reflection_pool(listed))
    address = f"{settings.host}:{settings.port}"
    tls = settings.tls_files
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, grpc_server_credentials(tls))
    except RuntimeError as error:
        raise OSError(f"could not bind {address}; is another server listening there?") from error
    await server.start()
    running = RunningServer(
        server=server, port=port, health=health_servicer, service_names=names, calls=calls, telemetry=telemetry
    )
    running.on_shutdown.append(_async(telemetry.shutdown))
    if settings.health_port is not None:
        running.health_port = await _serve_health_only(running, settings.host, settings.health_port)
    if settings.metrics_port is not None:
        endpoint = serve_metrics(telemetry.metrics, settings.host, settings.metrics_port)
        running.metrics_port = endpoint.port
        running.on_shutdown.append(_async(endpoint.close))
    await health_servicer.set("", SERVING)
    for binding in bindings:
        await running.set_ready(binding.name, binding.ready_at_start)
    security = "plaintext" if tls is None else "mTLS" if tls.client_ca_file else "TLS"
    security += ", bearer tokens required" if guard.authenticating else ""
    _LOGGER.info("serving %s on %s:%d (%s)", ", ".join(names), settings.host, port, security)
    return running


async def _serve_health_only(running: RunningServer, host: str, port: int) -> int:
    """A plaintext server on `port` with only the health service (the same one, so it reads the same
    readiness), for probes that cannot speak TLS; it stops after the main server, as probes should."""
    server = aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(running.health, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:
        raise OSError(f"could not bind the health port {host}:{port}; is another server listening there?") from error
    await server.start()

    async def stop() -> None:
        await server.stop(None)

    running.on_shutdown.append(stop)
    return bound


async def serve_until_signal(running: RunningServer, grace_s: float) -> None:
    """Serves until SIGTERM or SIGINT, then drains within `grace_s`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        _LOGGER.info("shutting down: draining for up to %.1fs", grace_s)
        started = time.monotonic()
        await running.stop(grace_s)
        _LOGGER.info("stopped after %.1fs", time.monotonic() - started)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _async(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """A shutdown hook for a blocking close, run off the event loop."""

    async def hook() -> None:
        await asyncio.to_thread(close)

    hook.__qualname__ = getattr(close, "__qualname__", "close")
    return hook


def run_service(settings: _Settings, create_server: Callable[[_Settings], Awaitable[RunningServer]]) -> None:
    """A service's console entry point: logging, start, serve until SIGTERM or SIGINT, drain."""
    configure_logging(settings.log_level, settings.log_format)

    async def serve() -> None:
        running = await create_server(settings)
        await serve_until_signal(running, settings.shutdown_grace_s)

    asyncio.run(serve())
