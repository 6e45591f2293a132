"""Shared runtime of the AdGen services: server bootstrap, errors, health, settings, logging."""

from typing import Any

from grpc import aio

# The context type servicer methods receive; the generated stubs accept any message types.
Context = aio.ServicerContext[Any, Any]
