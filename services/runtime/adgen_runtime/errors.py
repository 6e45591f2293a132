"""Domain errors and the one mapping from them to rich `google.rpc.Status`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from google.protobuf import any_pb2, duration_pb2, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from adgen.type.v1 import error_reason_pb2

ERROR_DOMAIN = "adgen.dev"
Reason: TypeAlias = error_reason_pb2.ErrorReason.ValueType
STATUS_DETAILS_METADATA_KEY = "grpc-status-details-bin"

# An error travels in the trailers, which clients cap at 8 KiB by default, and says its message twice: in
# grpc-message (percent-encoded, up to 9 bytes a Korean character) and inside the base64 Status. With these
# bounds the whole error stays under about 5 KiB, however long the values it echoes.
MAX_MESSAGE_BYTES = 512
MAX_ECHOED_VALUE_BYTES = 256  # Each string inside a detail: metadata values, resource names, descriptions.
MAX_STATUS_BYTES = 2048  # The serialized google.rpc.Status, message included.
_ELLIPSIS = "…"


def reason_name(reason: Reason) -> str:
    """The string carried in `ErrorInfo.reason`: the enum name without its prefix."""
    return error_reason_pb2.ErrorReason.Name(reason).removeprefix("ERROR_REASON_")


@dataclass(frozen=True)
class BadField:
    """One bad request field, named by its proto path (e.g. ``request.width``)."""

    field: str
    description: str
    reason: str = ""


class ServiceError(Exception):
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
        field_violations: Sequence[BadField] = (),
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
        code_number: int = self.code.value[0]  # StatusCode values are (number, name) pairs.
        status = status_pb2.Status(code=code_number, message=self.message, details=[_packed(d) for d in details])
        converted: grpc.Status = rpc_status.to_status(bounded_status(status))
        return converted


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AuthenticationRequired(ServiceError):
    """UNAUTHENTICATED: no bearer token, or one that is not valid (TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class AccessDenied(ServiceError):
    """PERMISSION_DENIED: the caller is known, but its role may not do this (ROLE_REQUIRED)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ServiceError):
    code = grpc.StatusCode.CANCELLED


class Internal(ServiceError):
    code = grpc.StatusCode.INTERNAL


def invalid_fields(violations: Sequence[BadField], reason: Reason | None = None) -> InvalidArgument:
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


@dataclass(frozen=True)
class GrpcStatus(grpc.Status):
    """A status to abort with: code, message and trailing metadata."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def bounded_grpc_status(status: grpc.Status) -> grpc.Status:
    """`status` with its message and rich details bounded, whoever built it (subclasses may override
    `to_status`); other trailing metadata is kept as it is."""
    rich: status_pb2.Status | None = None
    others: list[tuple[str, str | bytes]] = []
    for key, value in status.trailing_metadata:
        if key == STATUS_DETAILS_METADATA_KEY and isinstance(value, bytes) and rich is None:
            try:
                rich = status_pb2.Status.FromString(value)
            except DecodeError:  # Not ours to repair: send it without the unreadable details.
                continue
        else:
            others.append((key, value))
    if rich is None:
        return GrpcStatus(status.code, _bounded(status.details or "", MAX_MESSAGE_BYTES), tuple(others))
    bounded: grpc.Status = rpc_status.to_status(bounded_status(rich))
    return GrpcStatus(bounded.code, bounded.details, (*bounded.trailing_metadata, *others))


def bounded_status(status: status_pb2.Status) -> status_pb2.Status:
    """`status` with every echoed string cut to its bound and, if it is still too large for the trailers,
    the last field violations (then the other non-ErrorInfo details) left out.

    A cut value keeps its start and its end around "…", so a message still ends with its advice. Left-out
    violations are counted in `ErrorInfo.metadata["omitted_field_violations"]`.
    """
    details = [_unpacked(any_detail) for any_detail in status.details]
    for detail in details:
        if not isinstance(detail, any_pb2.Any):
            _bound_strings(detail)
    message = _bounded(status.message, MAX_MESSAGE_BYTES)
    info = next((d for d in details if isinstance(d, error_details_pb2.ErrorInfo)), None)
    bad_request = next((d for d in details if isinstance(d, error_details_pb2.BadRequest)), None)
    # Copies: the repeated field is cleared and refilled while searching.
    violations = [_copy(v) for v in bad_request.field_violations] if bad_request is not None else []

    omitted_key = "omitted_field_violations"

    def assembled(kept_violations: int) -> status_pb2.Status:
        if bad_request is not None:
            del bad_request.field_violations[:]
            bad_request.field_violations.extend(violations[:kept_violations])
        if info is not None and kept_violations < len(violations):
            info.metadata[omitted_key] = str(len(violations) - kept_violations)
        elif info is not None and omitted_key in info.metadata:
            del info.metadata[omitted_key]
        return status_pb2.Status(code=status.code, message=message, details=[_packed(d) for d in details])

    # The most violations that fit, found by bisection: a hostile request may carry thousands.
    # Each entry takes at least 2 bytes, which caps the search.
    fits, too_many = 0, min(len(violations), MAX_STATUS_BYTES // 2) + 1
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        fits, too_many = (middle, too_many) if assembled(middle).ByteSize() <= MAX_STATUS_BYTES else (fits, middle)
    bounded = assembled(fits)
    # Still too large only with many or large other details: drop them last first, then metadata.
    while bounded.ByteSize() > MAX_STATUS_BYTES and any(d is not info for d in details):
        del details[max(i for i, d in enumerate(details) if d is not info)]
        bounded = status_pb2.Status(code=status.code, message=message, details=[_packed(d) for d in details])
    while bounded.ByteSize() > MAX_STATUS_BYTES and info is not None and info.metadata:
        del info.metadata[max(info.metadata)]
        bounded = status_pb2.Status(code=status.code, message=message, details=[_packed(d) for d in details])
    return bounded


def _bounded(text: str, max_bytes: int) -> str:
    """`text` if it fits in `max_bytes` of UTF-8, else its start and end around "…"."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    room = max_bytes - len(_ELLIPSIS.encode())
    head, tail = room * 2 // 3, room - room * 2 // 3
    # Cutting may split a character; "ignore" drops its stray bytes at the cut.
    return encoded[:head].decode(errors="ignore") + _ELLIPSIS + encoded[len(encoded) - tail :].decode(errors="ignore")


def _bound_strings(message: Message) -> None:
    """Bounds every string in `message` and the messages inside it, in place."""
    for field, value in message.ListFields():
        if field.type == field.TYPE_STRING:
            if field.is_repeated:
                bounded = [_bounded(item, MAX_ECHOED_VALUE_BYTES) for item in value]
                del value[:]
                value.extend(bounded)
            else:
                setattr(message, field.name, _bounded(value, MAX_ECHOED_VALUE_BYTES))
        elif field.type == field.TYPE_MESSAGE and field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                for key in list(value):
                    if isinstance(value[key], str):
                        value[key] = _bounded(value[key], MAX_ECHOED_VALUE_BYTES)
            elif field.is_repeated:
                for item in value:
                    _bound_strings(item)
            else:
                _bound_strings(value)


# The google.rpc detail types, by full name, so any of them can be unpacked and bounded.
_DETAIL_TYPES: dict[str, type[Message]] = {
    descriptor.full_name: message_factory.GetMessageClass(descriptor)
    for descriptor in error_details_pb2.DESCRIPTOR.message_types_by_name.values()
}


def _unpacked(detail: any_pb2.Any) -> Message:
    """The detail as its google.rpc message, or the Any itself for a type this module does not know."""
    detail_type = _DETAIL_TYPES.get(detail.TypeName())
    if detail_type is None:
        return detail
    message = detail_type()
    return message if detail.Unpack(message) else detail


def _packed(detail: Message) -> any_pb2.Any:
    if isinstance(detail, any_pb2.Any):
        return detail
    wrapper = any_pb2.Any()
    wrapper.Pack(detail)
    return wrapper


def _copy(violation: error_details_pb2.BadRequest.FieldViolation) -> error_details_pb2.BadRequest.FieldViolation:
    copied = error_details_pb2.BadRequest.FieldViolation()
    copied.CopyFrom(violation)
    return copied
