"""Python SDK and CLI for the AdGen ad API."""

from adgen_client.client import AdGenClient, AsyncAdGenClient, ProgressCallback, RetryPolicy
from adgen_client.connection import tls_credentials
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
from adgen_client.requests import Brand, CreateAdOptions, EditAdOptions, Facts

__all__ = [
    "AdGenClient",
    "AdGenError",
    "AsyncAdGenClient",
    "BadRequest",
    "Brand",
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
    "tls_credentials",
]
