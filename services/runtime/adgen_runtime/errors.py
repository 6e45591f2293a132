"""Domain errors and the one mapping from them to rich `google.rpc.Status`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from adgen.type.v1 import error_reason_pb2

ERROR_DOMAIN = "adgen.dev"
Reason: TypeAlias = error_reason_pb2.ErrorReason.ValueType


def reason_name(reason: Reason) -> str:
    """The string carried in `ErrorInfo.reason`: the enum name without its prefix."""
    return error_reason_pb2.ErrorReason.Name(reason).removeprefix("ERROR_REASON_")


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, named by its proto path (e.g. ``request.width``)."""

    field: str
    description: str
    reason: str = ""


class AdGenError(Exception):
    """Base of every error a servicer may raise on purpose.

    ``message`` is shown to callers, so it must be written for them: no tracebacks, paths,
    keys or exception reprs. Subclasses fix the gRPC code.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        field_violations: Sequence[FieldViolation] = (),
        retry_after_s: float | None = None,
        resource: tuple[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field_violations = tuple(field_violations)
        self.retry_after_s = retry_after_s
        self.resource = resource
        self.metadata = dict(metadata or {})

    def to_status(self) -> grpc.Status:
        """The rich status: ErrorInfo always, plus BadRequest, RetryInfo, ResourceInfo when set."""
        details = [
            error_details_pb2.ErrorInfo(reason=reason_name(self.reason), domain=ERROR_DOMAIN, metadata=self.metadata)
        ]
        if self.field_violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=v.reason
                        )
                        for v in self.field_violations
                    ]
                )
            )
        if self.retry_after_s is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after_s * 1e9))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        if self.resource is not None:
            resource_type, resource_name = self.resource
            details.append(error_details_pb2.ResourceInfo(resource_type=resource_type, resource_name=resource_name))
        packed = []
        for detail in details:
            wrapper = any_pb2.Any()
            wrapper.Pack(detail)
            packed.append(wrapper)
        code_number: int = self.code.value[0]  # StatusCode values are (number, name) pairs.
        status = status_pb2.Status(code=code_number, message=self.message, details=packed)
        converted: grpc.Status = rpc_status.to_status(status)
        return converted


class InvalidArgument(AdGenError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AdGenError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(AdGenError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(AdGenError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(AdGenError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(AdGenError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(AdGenError):
    code = grpc.StatusCode.CANCELLED


class Internal(AdGenError):
    code = grpc.StatusCode.INTERNAL


def invalid_fields(violations: Sequence[FieldViolation], reason: Reason | None = None) -> InvalidArgument:
    """One INVALID_ARGUMENT naming every bad field, so callers can fix them all at once."""
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return InvalidArgument(
        reason if reason is not None else error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT,
        f"Invalid request: {summary}",
        field_violations=violations,
    )


def internal_error(request_id: str) -> Internal:
    """What callers see for a bug: a generic message and the id to find the log entry by."""
    return Internal(
        error_reason_pb2.ERROR_REASON_INTERNAL,
        f"Internal error; quote request id {request_id} when reporting it.",
        metadata={"request_id": request_id},
    )
