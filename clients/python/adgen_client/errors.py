"""AdGenError: a failed call with its rich `google.rpc.Status` details parsed for programs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_METADATA_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, as the server named it (e.g. ``keyword``, ``request.width``)."""

    field: str
    description: str
    reason: str = ""


@dataclass(eq=False)
class AdGenError(Exception):
    """A call that failed: the gRPC code and message, plus the ErrorInfo reason and details."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)
    retry_after_s: float | None = None
    resource: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    @property
    def request_id(self) -> str:
        """The request id the server logged the failure under, when it said."""
        return self.metadata.get("request_id", "")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> AdGenError:
        """Reads the code, message and rich details of a sync or asyncio gRPC error."""
        code = _call_value(error, "code", grpc.StatusCode.UNKNOWN)
        message = _call_value(error, "details", "") or ""
        parsed = cls(code=code, message=message)
        status = _rich_status(error, code)
        if status is not None:
            parsed.message = status.message or message
            for detail in status.details:
                parsed._absorb(detail)
        return parsed

    def _absorb(self, detail: any_pb2.Any) -> None:
        info, bad, retry, resource = (
            error_details_pb2.ErrorInfo(),
            error_details_pb2.BadRequest(),
            error_details_pb2.RetryInfo(),
            error_details_pb2.ResourceInfo(),
        )
        if detail.Unpack(info):
            self.reason, self.domain, self.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Unpack(bad):
            self.field_violations = [FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations]
        elif detail.Unpack(retry):
            self.retry_after_s = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Unpack(resource):
            self.resource = (resource.resource_type, resource.resource_name)


def _call_value(error: grpc.RpcError, method: str, default: Any) -> Any:
    getter = getattr(error, method, None)
    return getter() if callable(getter) else default


def _rich_status(error: grpc.RpcError, code: grpc.StatusCode) -> status_pb2.Status | None:
    """The status in the `grpc-status-details-bin` trailer, if it matches the call's code."""
    trailers = _call_value(error, "trailing_metadata", None)
    raw = None
    for key, value in trailers or ():
        if key == STATUS_DETAILS_METADATA_KEY:
            raw = value
    if not isinstance(raw, bytes):
        return None
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except DecodeError:  # A corrupt trailer carries no details we can trust.
        return None
    return status if status.code == code.value[0] else None
