"""Python SDK and CLI for the AdGen ad API."""

from adgen_client.client import AdGenClient, AsyncAdGenClient, RetryPolicy
from adgen_client.errors import AdGenError, FieldViolation

__all__ = ["AdGenClient", "AdGenError", "AsyncAdGenClient", "FieldViolation", "RetryPolicy"]
