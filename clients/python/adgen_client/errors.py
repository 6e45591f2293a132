"""AdGenError and its subclasses: a failed call with its rich `google.rpc.Status` details parsed for programs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from adgen_wire.channel import REQUEST_ID_METADATA_KEY

_QUEUE_FULL = "QUEUE_FULL"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, as the server named it (e.g. ``keyword``, ``request.width``)."""

    field: str
    description: str
    reason: str = ""


@dataclass(eq=False)
class AdGenError(Exception):
    """A call that failed: the gRPC code and message, plus the ErrorInfo reason and details.

    `AdGenError.from_rpc_error` returns the subclass for the code (`BadRequest`, `NotFound`,
    `Unauthenticated`, `PermissionDenied`, `RateLimited` / `QueueFull`, `Timeout`, `Unavailable`);
    other codes are this class itself, so `except AdGenError` catches every failed call.
    """

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)
    retry_after_s: float | None = None
    resource: tuple[str, str] | None = None
    call_request_id: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    @property
    def request_id(self) -> str:
        """The request id the server logged the failure under: its ErrorInfo's, else the `x-request-id`
        the call's metadata carried (empty when neither said)."""
        return self.metadata.get("request_id", "") or self.call_request_id

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> AdGenError:
        """Reads the code, message, request id and rich details of a sync or asyncio gRPC error.

        Args:
            error: the error a stub raised (`grpc.RpcError` or `grpc.aio.AioRpcError`).

        Returns:
            An instance of the subclass for the error's code (and, for RESOURCE_EXHAUSTED, its reason).
        """
        code = _call_value(error, "code", grpc.StatusCode.UNKNOWN)
        message = _call_value(error, "details", "") or ""
        fields: dict[str, Any] = {"code": code, "message": message, "call_request_id": _request_id_of(error)}
        status = _rich_status(error)
        details = _parsed_details(status.details) if status is not None else {}
        subclass = _subclass_for(code, str(details.get("reason", "")))
        return subclass(**fields, **details)


class BadRequest(AdGenError):
    """INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE: fix the request (see `field_violations`)."""


class NotFound(AdGenError):
    """NOT_FOUND: a named resource (a model id, say; see `resource`) does not exist."""


class Unauthenticated(AdGenError):
    """UNAUTHENTICATED: the call carried no valid token (reason TOKEN_MISSING, TOKEN_INVALID or TOKEN_EXPIRED)."""


class PermissionDenied(AdGenError):
    """PERMISSION_DENIED: the caller may not do this (reason ROLE_REQUIRED; `metadata["required_role"]`)."""


class RateLimited(AdGenError):
    """RESOURCE_EXHAUSTED: too many requests (reason RATE_LIMITED, retried by the client like QUEUE_FULL) or
    too large a request; `retry_after_s` says when to retry."""


class QueueFull(RateLimited):
    """RESOURCE_EXHAUSTED with reason QUEUE_FULL: the GPU queue is full (clients retry these themselves)."""


class Timeout(AdGenError):
    """DEADLINE_EXCEEDED: the call's `timeout` ran out before the answer."""


class Unavailable(AdGenError):
    """UNAVAILABLE: the server (or a service behind it) cannot be reached; retrying later may work."""


_SUBCLASSES: dict[grpc.StatusCode, type[AdGenError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: BadRequest,
    grpc.StatusCode.FAILED_PRECONDITION: BadRequest,
    grpc.StatusCode.OUT_OF_RANGE: BadRequest,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def _subclass_for(code: grpc.StatusCode, reason: str) -> type[AdGenError]:
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason == _QUEUE_FULL:
        return QueueFull
    return _SUBCLASSES.get(code, AdGenError)


def _parsed_details(details: Iterable[any_pb2.Any]) -> dict[str, Any]:
    """The AdGenError fields the known detail types fill; unknown types are skipped."""
    parsed: dict[str, Any] = {}
    info, bad, retry, resource = (
        error_details_pb2.ErrorInfo(),
        error_details_pb2.BadRequest(),
        error_details_pb2.RetryInfo(),
        error_details_pb2.ResourceInfo(),
    )
    for detail in details:
        if detail.Unpack(info):
            parsed.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif detail.Unpack(bad):
            violations = bad.field_violations
            parsed["field_violations"] = [FieldViolation(v.field, v.description, v.reason) for v in violations]
        elif detail.Unpack(retry):
            parsed["retry_after_s"] = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Unpack(resource):
            parsed["resource"] = (resource.resource_type, resource.resource_name)
    return parsed


def _call_value(error: grpc.RpcError, method: str, default: Any) -> Any:
    getter = getattr(error, method, None)
    return getter() if callable(getter) else default


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The status in the `grpc-status-details-bin` trailer; a corrupt one, or one that disagrees with the
    call's code or message, carries no details we can trust."""
    if not callable(getattr(error, "trailing_metadata", None)):
        return None
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)
    except (DecodeError, ValueError):
        return None
    return status


def _request_id_of(error: grpc.RpcError) -> str:
    """The `x-request-id` the server sent back, in trailing (else initial) metadata."""
    for method in ("trailing_metadata", "initial_metadata"):
        for key, value in _call_value(error, method, None) or ():
            if key == REQUEST_ID_METADATA_KEY and isinstance(value, str):
                return value
    return ""
