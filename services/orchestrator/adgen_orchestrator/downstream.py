"""Calls to the copywriter and diffusion services: deadlines, request ids and error mapping."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as cw_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen.type.v1 import error_reason_pb2
from adgen_client.channel import REQUEST_ID_METADATA_KEY
from adgen_runtime.errors import (
    ERROR_DOMAIN,
    AdGenError,
    DeadlineExceeded,
    Internal,
    Reason,
    Unavailable,
)

_LOGGER = logging.getLogger(__name__)
_Event = TypeVar("_Event")

STATUS_DETAILS_METADATA_KEY = "grpc-status-details-bin"
# The diffusion service's stream requests wrap the job in `request`; its violations start so.
_STREAM_REQUEST_PREFIX = "request."
_R = error_reason_pb2

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
        if self.deadline is None:
            return cap_s
        left = self.deadline - time.monotonic() - self.margin_s
        if left <= 0:
            raise _deadline_exceeded(service)
        return min(left, cap_s)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((REQUEST_ID_METADATA_KEY, self.request_id),)


class DownstreamError(AdGenError):
    """A downstream service's own rich error, relayed to our caller with its details intact."""

    def __init__(self, code: grpc.StatusCode, status: status_pb2.Status, reason: Reason, service: str) -> None:
        super().__init__(reason, status.message, metadata={"service": service})
        self.code = code
        self.status = status

    def to_status(self) -> grpc.Status:
        converted: grpc.Status = rpc_status.to_status(self.status)
        return converted


def rich_status(error: aio.AioRpcError) -> status_pb2.Status | None:
    """The `google.rpc.Status` a server attached to an error, if any."""
    metadata = error.trailing_metadata()
    raw: Any = metadata.get(STATUS_DETAILS_METADATA_KEY) if metadata is not None else None
    if not isinstance(raw, bytes):
        return None
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except DecodeError:  # A corrupt trailer is treated as no details at all.
        return None
    return status if status.code == error.code().value[0] else None


def map_downstream_error(
    service: str, error: aio.AioRpcError, request_id: str, *, downstream_prefix: str = "", caller_prefix: str = ""
) -> AdGenError:
    """The status our caller gets for a failed downstream call: never UNKNOWN, never internal text.

    Field violations are renamed from the downstream request's layout (`downstream_prefix`)
    to the caller's (`caller_prefix`), so they name fields the caller sent.
    """
    code = error.code()
    status = rich_status(error)
    info = _error_info(status)
    if code in _PASSED_THROUGH and status is not None and info is not None:
        info.metadata["service"] = service
        _replace_error_info(status, info)
        _rename_violated_fields(status, downstream_prefix, caller_prefix)
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


def _rename_violated_fields(status: status_pb2.Status, downstream_prefix: str, caller_prefix: str) -> None:
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            for violation in bad.field_violations:
                violation.field = caller_prefix + violation.field.removeprefix(downstream_prefix)
            detail.Pack(bad)


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
def _mapped_errors(service: str, budget: CallBudget, downstream_prefix: str = "") -> Iterator[None]:
    try:
        yield
    except aio.AioRpcError as error:
        raise map_downstream_error(
            service, error, budget.request_id, downstream_prefix=downstream_prefix, caller_prefix=budget.field_prefix
        ) from None


class CopywriterClient:
    """The copywriter calls the orchestrator makes."""

    SERVICE = "copywriter"

    def __init__(self, stub: cw_grpc.CopywriterServiceAsyncStub, timeout_s: float) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def generate_copy(self, request: cw_pb.GenerateCopyRequest, budget: CallBudget) -> cw_pb.GenerateCopyResponse:
        with _mapped_errors(self.SERVICE, budget):
            return await self._stub.GenerateCopy(
                request, timeout=budget.timeout(self.SERVICE, self._timeout_s), metadata=budget.metadata
            )

    async def write_edit_instruction(
        self, request: cw_pb.WriteEditInstructionRequest, budget: CallBudget
    ) -> cw_pb.WriteEditInstructionResponse:
        with _mapped_errors(self.SERVICE, budget):
            return await self._stub.WriteEditInstruction(
                request, timeout=budget.timeout(self.SERVICE, self._timeout_s), metadata=budget.metadata
            )


class DiffusionClient:
    """The diffusion calls the orchestrator makes; streams are cancelled when the caller goes."""

    SERVICE = "diffusion"

    def __init__(self, stub: df_grpc.DiffusionServiceAsyncStub, timeout_s: float) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def list_models(self, budget: CallBudget) -> df_pb.ListModelsResponse:
        with _mapped_errors(self.SERVICE, budget):
            return await self._stub.ListModels(
                df_pb.ListModelsRequest(),
                timeout=budget.timeout(self.SERVICE, self._timeout_s),
                metadata=budget.metadata,
            )

    async def stream_generate(
        self, request: df_pb.GenerateRequest, budget: CallBudget
    ) -> AsyncIterator[df_pb.StreamGenerateResponse]:
        call = self._stub.StreamGenerate(df_pb.StreamGenerateRequest(request=request), **self._options(budget))
        async for event in self._events(call, budget):
            yield event

    async def stream_edit(
        self, request: df_pb.EditRequest, budget: CallBudget
    ) -> AsyncIterator[df_pb.StreamEditResponse]:
        call = self._stub.StreamEdit(df_pb.StreamEditRequest(request=request), **self._options(budget))
        async for event in self._events(call, budget):
            yield event

    def _options(self, budget: CallBudget) -> dict[str, Any]:
        return {"timeout": budget.timeout(self.SERVICE, self._timeout_s), "metadata": budget.metadata}

    async def _events(self, call: aio.UnaryStreamCall[Any, _Event], budget: CallBudget) -> AsyncIterator[_Event]:
        """The stream's events, its errors mapped; cancelling it stops the GPU job if we stop early."""
        with _mapped_errors(self.SERVICE, budget, _STREAM_REQUEST_PREFIX):
            try:
                async for event in call:
                    yield event
            finally:
                call.cancel()  # A no-op once finished.
