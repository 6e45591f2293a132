"""Python SDK and CLI for the AdGen ad API."""

from adgen_client.client import AdGenClient, AsyncAdGenClient, ProgressCallback, RetryPolicy
from adgen_client.errors import (
    AdGenError,
    BadRequest,
    FieldViolation,
    NotFound,
    PermissionDenied,
    QueueFull,
    RateLimited,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from adgen_client.progress import ProgressEvent, Stage
from adgen_client.requests import CreateAdOptions, EditAdOptions, Facts

__all__ = [
    "AdGenClient",
    "AdGenError",
    "AsyncAdGenClient",
    "BadRequest",
    "CreateAdOptions",
    "EditAdOptions",
    "Facts",
    "FieldViolation",
    "NotFound",
    "PermissionDenied",
    "ProgressCallback",
    "ProgressEvent",
    "QueueFull",
    "RateLimited",
    "RetryPolicy",
    "Stage",
    "Timeout",
    "Unauthenticated",
    "Unavailable",
]
