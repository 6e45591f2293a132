"""gRPC channels with the message limits and keepalive the AdGen servers are configured for."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc
from grpc import aio

# Callers may name their request with this metadata key; servers answer it in the trailing
# metadata and tag their logs with it.
REQUEST_ID_METADATA_KEY = "x-request-id"

# Images travel as raw bytes; a 4-variant ad at 1080×1920 PNG passes the 4 MiB default.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Retry only UNAVAILABLE (the server never started the work); never DEADLINE_EXCEEDED,
# because image generation is not idempotent.
_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.2s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


def grpc_options(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    *,
    server: bool = False,
    retry_unavailable: bool = True,
    service_config: dict[str, Any] | None = None,
) -> list[tuple[str, Any]]:
    """Channel or server options; servers and clients must agree on the message limits.

    Hops inside AdGen pass `retry_unavailable=False`: a service answers UNAVAILABLE after its own
    retries, and a retry at every hop multiplies them; the caller's SDK retries once, at the edge.
    `service_config` adds keys to the channel's gRPC service config (e.g. `loadBalancingConfig`,
    `healthCheckConfig`); the retry policy, when on, stays its `methodConfig`.
    """
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if server:
        # Accept client keepalive pings down to every 5 s (clients send one every 10 s), idle or not, so no
        # channel is sent GOAWAY too_many_pings. This is the name core reads for the minimum *received*
        # interval (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS); a "min_recv" spelling is silently ignored.
        options += [
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
    else:
        options += [
            # A peer that vanished without closing its connection (a partition, a frozen host) is
            # noticed within 15 s, idle or not, and the channel reconnects instead of waiting on it.
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # gRPC's default reconnect backoff starts at 1 s and grows to 120 s, so calls kept failing for
            # seconds after a restarted server was back. Retrying the connection from 100 ms, at most 1 s
            # apart, finds it within a second; a connection attempt costs little.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1_000),
            ("grpc.enable_retries", 1),
        ]
        config = {**(_SERVICE_CONFIG if retry_unavailable else {}), **(service_config or {})}
        if config:
            options.append(("grpc.service_config", json.dumps(config)))
    return options


def create_channel(
    target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, *, retry_unavailable: bool = True
) -> grpc.Channel:
    """A blocking channel to an AdGen server (plaintext; put TLS in front for the internet)."""
    return grpc.insecure_channel(target, options=grpc_options(max_message_bytes, retry_unavailable=retry_unavailable))


def create_aio_channel(
    target: str,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    *,
    retry_unavailable: bool = True,
    service_config: dict[str, Any] | None = None,
    interceptors: Sequence[aio.ClientInterceptor] = (),
) -> aio.Channel:
    """An asyncio channel to an AdGen server (or, with a balancing `service_config`, to a set of replicas).

    `interceptors` wrap every call, e.g. the OpenTelemetry client interceptors that carry a trace downstream.
    """
    options = grpc_options(max_message_bytes, retry_unavailable=retry_unavailable, service_config=service_config)
    return aio.insecure_channel(target, options=options, interceptors=interceptors or None)
