"""Calls to the copywriter and diffusion services: deadlines, request ids, reconnection, waiting for GPU
capacity, downstream health, and error mapping."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as cw_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen.type.v1 import error_reason_pb2
from adgen_runtime.errors import (
    ERROR_DOMAIN,
    DeadlineExceeded,
    Internal,
    Reason,
    ServiceError,
    Unavailable,
    reason_name,
)
from adgen_wire.channel import REQUEST_ID_METADATA_KEY

_LOGGER = logging.getLogger(__name__)
_Event = TypeVar("_Event")

STATUS_DETAILS_METADATA_KEY = "grpc-status-details-bin"
# GenerateCopyRequest fields that CreateAdRequest carries under another path.
_COPY_FIELDS_OF_CREATE_AD = {"brand_name": "brand.name"}
# The diffusion service's stream requests wrap the job in `request`; its violations start so.
_STREAM_REQUEST_PREFIX = "request."
_R = error_reason_pb2

# How long a call waits for a downstream that is not connected (restarting, or just gone) before it is
# UPSTREAM_UNAVAILABLE. The channels retry the connection at most 1.2 s apart (1 s and gRPC's jitter), so a
# service that is back is found within this; one that stays down is reported soon, not at the deadline.
CONNECT_WAIT_S = 1.5
# Diffusion jobs that may wait in this orchestrator for room in the diffusion service's queue.
DIFFUSION_WAITING_MAX = 64
# After a health watch failed before its first answer (no health service there), the next try waits this.
_WATCH_RETRY_S = 1.0

# Codes whose downstream details tell the caller what to fix or when to retry: kept as they are.
_PASSED_THROUGH = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


@dataclass(frozen=True)
class CallBudget:
    """What every downstream call of one request carries: the caller's deadline and request id."""

    request_id: str
    deadline: float | None = None  # time.monotonic() value; None when the caller set no deadline
    margin_s: float = 0.2
    field_prefix: str = ""  # Where the caller's request sits in its message ("request." on streams).

    @classmethod
    def from_time_remaining(
        cls, request_id: str, remaining_s: float | None, margin_s: float, field_prefix: str = ""
    ) -> CallBudget:
        deadline = None if remaining_s is None else time.monotonic() + remaining_s
        return cls(request_id=request_id, deadline=deadline, margin_s=margin_s, field_prefix=field_prefix)

    def timeout(self, service: str, cap_s: float) -> float:
        """Seconds the next call to `service` may take: what is left of the caller's deadline."""
        left = self.left_s(cap_s)
        if left <= 0:
            raise _deadline_exceeded(service)
        return left

    def left_s(self, cap_s: float) -> float:
        """Seconds left of the caller's deadline (less the margin), at most `cap_s`; may be 0 or less."""
        if self.deadline is None:
            return cap_s
        return min(self.deadline - time.monotonic() - self.margin_s, cap_s)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((REQUEST_ID_METADATA_KEY, self.request_id),)


class DownstreamError(ServiceError):
    """A downstream service's own rich error, relayed to our caller with its details intact."""

    def __init__(self, code: grpc.StatusCode, status: status_pb2.Status, reason: Reason, service: str) -> None:
        super().__init__(reason, status.message, metadata={"service": service}, retry_after_s=_retry_after_s(status))
        self.code = code
        self.status = status

    def to_status(self) -> grpc.Status:
        converted: grpc.Status = rpc_status.to_status(self.status)
        return converted


def rich_status(error: aio.AioRpcError) -> status_pb2.Status | None:
    """The `google.rpc.Status` a server attached to an error, if any.

    A trailer that is corrupt or disagrees with the call's code or message is treated as no details at all.
    """
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)
    except (DecodeError, ValueError):
        return None
    return status


def map_downstream_error(
    service: str,
    error: aio.AioRpcError,
    request_id: str,
    *,
    downstream_prefix: str = "",
    caller_prefix: str = "",
    caller_fields: Mapping[str, str] | None = None,
) -> ServiceError:
    """The status our caller gets for a failed downstream call: never UNKNOWN, never internal text.

    Field violations are renamed from the downstream request's layout (`downstream_prefix`)
    to the caller's (`caller_prefix`), so they name fields the caller sent; `caller_fields` names the
    downstream fields the caller knows by another path (the copywriter's `brand_name` is `brand.name`).
    """
    code = error.code()
    status = rich_status(error)
    info = _error_info(status)
    if code in _PASSED_THROUGH and status is not None and info is not None:
        info.metadata["service"] = service
        _replace_error_info(status, info)
        _rename_violated_fields(status, downstream_prefix, caller_prefix, caller_fields or {})
        return DownstreamError(code, status, _reason_value(info.reason), service)
    downstream = {"service": service}
    if info is not None:
        downstream["downstream_reason"] = info.reason
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return Unavailable(
            _R.ERROR_REASON_UPSTREAM_UNAVAILABLE,
            f"The {service} service is unavailable; try again shortly.",
            retry_after_s=_retry_after_s(status),
            metadata=downstream,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return _deadline_exceeded(service)
    _LOGGER.error("%s call failed with %s: %s", service, code.name, error.details())
    return Internal(
        _R.ERROR_REASON_INTERNAL,
        f"The {service} service failed; quote request id {request_id} when reporting it.",
        metadata={**downstream, "request_id": request_id},
    )


def _deadline_exceeded(service: str) -> DeadlineExceeded:
    return DeadlineExceeded(
        _R.ERROR_REASON_UPSTREAM_DEADLINE_EXCEEDED,
        f"The {service} service could not finish within the request's deadline.",
        metadata={"service": service},
    )


def _error_info(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return info
    return None


def _replace_error_info(status: status_pb2.Status, info: error_details_pb2.ErrorInfo) -> None:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Pack(info)
            return


def _rename_violated_fields(
    status: status_pb2.Status, downstream_prefix: str, caller_prefix: str, caller_fields: Mapping[str, str]
) -> None:
    """Renames the violated fields, in the BadRequest and in the message that names them, from the
    downstream request's layout to the caller's."""
    if downstream_prefix == caller_prefix and not caller_fields:
        return
    renamed: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            for violation in bad.field_violations:
                field_path = violation.field.removeprefix(downstream_prefix)
                caller_field = caller_prefix + caller_fields.get(field_path, field_path)
                renamed[violation.field] = caller_field
                violation.field = caller_field
            detail.Pack(bad)
    status.message = _renamed_in_text(status.message, renamed, downstream_prefix, caller_prefix)


def _renamed_in_text(text: str, renamed: dict[str, str], downstream_prefix: str, caller_prefix: str) -> str:
    """`text` with each field path in it renamed: the violated fields (and their sub-fields) by name, and
    any other path that starts with the downstream prefix by swapping that prefix."""
    names = sorted((name for name in renamed if name), key=len, reverse=True)
    if names:
        # A whole path only: not "width" inside "max_width", but "image" in "image.data" is its sub-field.
        by_name = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, names)) + r")(?!\w)")
        text = by_name.sub(lambda match: renamed[match.group(1)], text)
    if downstream_prefix:
        by_prefix = re.compile(r"(?<![\w.])" + re.escape(downstream_prefix) + r"(?=[A-Za-z_])")
        text = by_prefix.sub(caller_prefix, text)
    return text


def _retry_after_s(status: status_pb2.Status | None) -> float | None:
    for detail in status.details if status is not None else ():
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return float(retry.retry_delay.ToNanoseconds()) / 1e9
    return None


def _reason_value(reason: str) -> Reason:
    try:
        return _R.ErrorReason.Value(f"ERROR_REASON_{reason}")
    except ValueError:
        return _R.ERROR_REASON_UNSPECIFIED


@contextmanager
def _mapped_errors(
    service: str, budget: CallBudget, downstream_prefix: str = "", caller_fields: Mapping[str, str] | None = None
) -> Iterator[None]:
    try:
        yield
    except aio.AioRpcError as error:
        raise map_downstream_error(
            service,
            error,
            budget.request_id,
            downstream_prefix=downstream_prefix,
            caller_prefix=budget.field_prefix,
            caller_fields=caller_fields,
        ) from None


def _unavailable(service: str) -> Unavailable:
    return Unavailable(
        _R.ERROR_REASON_UPSTREAM_UNAVAILABLE,
        f"The {service} service is unavailable; try again shortly.",
        metadata={"service": service},
    )


async def _connected(
    channel: aio.Channel, service: str, budget: CallBudget, cap_s: float, connect_wait_s: float
) -> None:
    """Returns once `channel` is connected, waiting for a reconnect at most `connect_wait_s` and never past
    the caller's deadline; UPSTREAM_UNAVAILABLE when it does not connect in that time."""
    if channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
        return
    wait_s = min(connect_wait_s, budget.left_s(cap_s))
    if wait_s <= 0:
        raise _deadline_exceeded(service)
    try:
        await asyncio.wait_for(channel.channel_ready(), wait_s)
    except TimeoutError:
        if budget.left_s(cap_s) <= 0:
            raise _deadline_exceeded(service) from None
        raise _unavailable(service) from None


def downstream_channel(
    target: str,
    options: Sequence[tuple[str, Any]],
    credentials: grpc.ChannelCredentials | None,
    interceptors: Sequence[aio.ClientInterceptor] = (),
) -> aio.Channel:
    """A channel to a downstream service: TLS (or mTLS) with `credentials`, else plaintext."""
    if credentials is None:
        return aio.insecure_channel(target, options=options, interceptors=interceptors or None)
    return aio.secure_channel(target, credentials, options=options, interceptors=interceptors or None)


def _call_options(service: str, budget: CallBudget, cap_s: float) -> dict[str, Any]:
    # wait_for_ready: a connection lost after `_connected` is waited for (within the timeout), not failed at once.
    return {"timeout": budget.timeout(service, cap_s), "metadata": budget.metadata, "wait_for_ready": True}


class CopywriterClient:
    """The copywriter calls the orchestrator makes."""

    SERVICE = "copywriter"

    def __init__(self, channel: aio.Channel, timeout_s: float, *, connect_wait_s: float = CONNECT_WAIT_S) -> None:
        self._channel = channel
        self._stub = cw_grpc.CopywriterServiceStub(channel)
        self._timeout_s = timeout_s
        self._connect_wait_s = connect_wait_s

    async def generate_copy(self, request: cw_pb.GenerateCopyRequest, budget: CallBudget) -> cw_pb.GenerateCopyResponse:
        await _connected(self._channel, self.SERVICE, budget, self._timeout_s, self._connect_wait_s)
        with _mapped_errors(self.SERVICE, budget, caller_fields=_COPY_FIELDS_OF_CREATE_AD):
            return await self._stub.GenerateCopy(request, **_call_options(self.SERVICE, budget, self._timeout_s))

    async def write_edit_instruction(
        self, request: cw_pb.WriteEditInstructionRequest, budget: CallBudget
    ) -> cw_pb.WriteEditInstructionResponse:
        await _connected(self._channel, self.SERVICE, budget, self._timeout_s, self._connect_wait_s)
        with _mapped_errors(self.SERVICE, budget):
            return await self._stub.WriteEditInstruction(
                request, **_call_options(self.SERVICE, budget, self._timeout_s)
            )


# Waited before trying again when a QUEUE_FULL came without RetryInfo.
_DEFAULT_QUEUE_RETRY_S = 1.0


def _is_queue_full(error: ServiceError) -> bool:
    return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == _R.ERROR_REASON_QUEUE_FULL


def _is_refusal(error: ServiceError) -> bool:
    """A job turned away before it was queued: a full queue, or a replica draining or gone (UNAVAILABLE)."""
    return _is_queue_full(error) or error.code == grpc.StatusCode.UNAVAILABLE


@dataclass(eq=False)
class WaitingPlace:
    """One job's place in the waiting room."""

    entered: float = field(default_factory=time.monotonic)
    woken: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_turn(self, refusal: ServiceError, left_s: float) -> None:
        """Waits until woken or until the refusal's RetryInfo delay has passed; raises the refusal when the
        caller's time (`left_s`) runs out first."""
        delay_s = refusal.retry_after_s if refusal.retry_after_s is not None else _DEFAULT_QUEUE_RETRY_S
        wait_s = min(delay_s, left_s)
        if wait_s <= 0:
            raise refusal
        try:
            await asyncio.wait_for(self.woken.wait(), wait_s)
        except TimeoutError:
            if delay_s >= left_s:
                raise refusal from None
        self.woken.clear()


class WaitingRoom:
    """Diffusion jobs turned away with QUEUE_FULL, waiting in this orchestrator for room, oldest first.

    They wait here rather than fail their callers because by then the copy is written and earlier variants
    are rendered: a caller's retry would redo that work (and the language-model call). A waiting job tries
    again as soon as one of this orchestrator's own diffusion jobs ends, which frees a place in the
    diffusion queue, or once the diffusion service's RetryInfo delay has passed (other callers may have
    freed one), whichever is first; the oldest waiter is woken first. At most `max_waiting` jobs wait;
    beyond that, or when the caller's deadline would pass first, the QUEUE_FULL reaches the caller with its
    RetryInfo, for the SDK to honour.
    """

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._places: collections.deque[WaitingPlace] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._places)

    def enter(self, refusal: ServiceError) -> WaitingPlace:
        """A place at the back; the refusal itself when the room is full."""
        if len(self._places) >= self.max_waiting:
            raise refusal
        place = WaitingPlace()
        self._places.append(place)
        _LOGGER.info("diffusion queue full: waiting for room (%d waiting here)", len(self._places))
        return place

    def leave(self, place: WaitingPlace) -> None:
        with contextlib.suppress(ValueError):
            self._places.remove(place)

    def job_left(self) -> None:
        """One of our jobs left the diffusion service: the oldest waiter not yet woken tries again."""
        for place in self._places:
            if not place.woken.is_set():
                place.woken.set()
                return


class DiffusionClient:
    """The diffusion calls the orchestrator makes; streams wait for queue room and are cancelled when the
    caller goes."""

    SERVICE = "diffusion"

    def __init__(
        self,
        channel: aio.Channel,
        timeout_s: float,
        *,
        connect_wait_s: float = CONNECT_WAIT_S,
        waiting_max: int = DIFFUSION_WAITING_MAX,
        reroutes: int = 0,
    ) -> None:
        self._channel = channel
        self._stub = df_grpc.DiffusionServiceStub(channel)
        self._timeout_s = timeout_s
        self._connect_wait_s = connect_wait_s
        self.waiting_room = WaitingRoom(waiting_max)
        # On a channel that balances over replicas, a job refused before it was queued is started again at
        # once, at most this many times: round robin sends each try to the next ready replica. Bounded by
        # the replica count (see routing.reroutes_of) and by the caller's deadline, so a fleet that is full
        # everywhere costs a few quick refusals, then the waiting room as on one server.
        self._reroutes = reroutes

    async def list_models(self, budget: CallBudget) -> df_pb.ListModelsResponse:
        await _connected(self._channel, self.SERVICE, budget, self._timeout_s, self._connect_wait_s)
        with _mapped_errors(self.SERVICE, budget):
            return await self._stub.ListModels(
                df_pb.ListModelsRequest(), **_call_options(self.SERVICE, budget, self._timeout_s)
            )

    async def stream_generate(
        self, request: df_pb.GenerateRequest, budget: CallBudget
    ) -> AsyncIterator[df_pb.StreamGenerateResponse]:
        def start() -> aio.UnaryStreamCall[df_pb.StreamGenerateRequest, df_pb.StreamGenerateResponse]:
            options = _call_options(self.SERVICE, budget, self._timeout_s)
            return self._stub.StreamGenerate(df_pb.StreamGenerateRequest(request=request), **options)

        async for event in self._admitted(start, budget):
            yield event

    async def stream_edit(
        self, request: df_pb.EditRequest, budget: CallBudget
    ) -> AsyncIterator[df_pb.StreamEditResponse]:
        def start() -> aio.UnaryStreamCall[df_pb.StreamEditRequest, df_pb.StreamEditResponse]:
            options = _call_options(self.SERVICE, budget, self._timeout_s)
            return self._stub.StreamEdit(df_pb.StreamEditRequest(request=request), **options)

        async for event in self._admitted(start, budget):
            yield event

    async def _admitted(
        self, start: Callable[[], aio.UnaryStreamCall[Any, _Event]], budget: CallBudget
    ) -> AsyncIterator[_Event]:
        """The job's events; a refused job is tried on other replicas, then waits in the waiting room while
        the diffusion queue is full."""
        place: WaitingPlace | None = None
        reroutes_left = self._reroutes
        try:
            while True:
                await _connected(self._channel, self.SERVICE, budget, self._timeout_s, self._connect_wait_s)
                admitted = False  # Its first event (QUEUED) means the job holds a place in the diffusion queue.
                try:
                    async for event in self._events(start(), budget):
                        admitted = True
                        yield event
                    return
                except ServiceError as error:
                    if admitted or not _is_refusal(error):
                        raise
                    if reroutes_left > 0 and budget.left_s(self._timeout_s) > 0:
                        reroutes_left -= 1
                        _LOGGER.info(
                            "diffusion replica refused the job (%s): trying another", reason_name(error.reason)
                        )
                        continue
                    if not _is_queue_full(error):
                        raise
                    if place is None:
                        place = self.waiting_room.enter(error)
                    waited = time.monotonic() - place.entered
                    await place.wait_turn(error, min(budget.left_s(self._timeout_s), self._timeout_s - waited))
                    reroutes_left = self._reroutes
                finally:
                    if admitted:
                        self.waiting_room.job_left()
        finally:
            if place is not None:
                self.waiting_room.leave(place)

    async def _events(self, call: aio.UnaryStreamCall[Any, _Event], budget: CallBudget) -> AsyncIterator[_Event]:
        """The stream's events, its errors mapped; cancelling it stops the GPU job if we stop early."""
        with _mapped_errors(self.SERVICE, budget, _STREAM_REQUEST_PREFIX):
            try:
                async for event in call:
                    yield event
            finally:
                call.cancel()  # A no-op once finished.


@dataclass(frozen=True)
class WatchedService:
    """A downstream whose readiness the orchestrator's own follows: a label, its channel, its health name."""

    label: str
    channel: aio.Channel
    health_name: str
    # Ready while the channel is READY rather than by Health.Watch: for a channel balancing over replicas with
    # client-side health checking, READY means at least one replica is connected and SERVING.
    by_connectivity: bool = False
    # Whether the orchestrator's readiness waits for it. A pool that may scale to zero (the fleet's edit pool)
    # must not take CreateAd down with it; its calls fail fast with UNAVAILABLE while it is empty.
    gates_readiness: bool = True


class DownstreamHealth:
    """Whether the services this orchestrator needs are ready, from their own grpc.health.v1 Watch streams.

    Watch rather than polling Check: each downstream pushes its changes (a diffusion service going
    NOT_SERVING after an unverified unload, or while draining), and a dropped connection ends the stream at
    once, so readiness follows within a round trip rather than a polling period, at no cost while nothing
    changes. A broken watch counts as NOT_SERVING and is opened again with wait_for_ready, so it resumes as
    soon as the channel has reconnected.
    """

    def __init__(self, watched: Sequence[WatchedService], on_change: Callable[[bool], Awaitable[None]]) -> None:
        self._watched = tuple(watched)
        self._serving = {service.label: False for service in self._watched}
        self._on_change = on_change
        self._reported: bool | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        """Whether every watched service that gates readiness last said SERVING."""
        return all(self._serving[service.label] for service in self._watched if service.gates_readiness)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch(service)) for service in self._watched]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _watch(self, service: WatchedService) -> None:
        if service.by_connectivity:
            await self._follow_connectivity(service)
            return
        stub = health_pb2_grpc.HealthStub(service.channel)
        request = health_pb2.HealthCheckRequest(service=service.health_name)
        while True:
            answered = False
            call = stub.Watch(request, wait_for_ready=True)
            try:
                async for reply in call:
                    answered = True
                    await self._update(service.label, reply.status == health_pb2.HealthCheckResponse.SERVING)
            except aio.AioRpcError as error:
                _LOGGER.debug("health watch of the %s service ended: %s", service.label, error.code().name)
            finally:
                call.cancel()
            await self._update(service.label, False)
            if not answered:  # Not a health server, or not ours: try again later, not in a busy loop.
                await asyncio.sleep(_WATCH_RETRY_S)

    async def _follow_connectivity(self, service: WatchedService) -> None:
        state = service.channel.get_state(try_to_connect=True)
        while True:
            await self._update(service.label, state == grpc.ChannelConnectivity.READY)
            await service.channel.wait_for_state_change(state)
            state = service.channel.get_state(try_to_connect=True)

    async def _update(self, label: str, serving: bool) -> None:
        self._serving[label] = serving
        ready = self.ready
        if ready == self._reported:
            return
        self._reported = ready
        states = ", ".join(f"{name} {'SERVING' if up else 'NOT_SERVING'}" for name, up in self._serving.items())
        _LOGGER.info("readiness %s (%s)", "SERVING" if ready else "NOT_SERVING", states)
        await self._on_change(ready)
