"""Container health probe: exits 0 when a service reports SERVING over grpc.health.v1.

Usage: python -m adgen_runtime.healthcheck [--target HOST:PORT] [--service NAME] [--timeout S]
                                           [--ca FILE [--cert FILE --key FILE]]

`--ca` checks over TLS, trusting that CA; with `--cert` and `--key`, over mTLS. Health needs no token.

`--service ""` asks liveness (the process serves); a service name asks readiness (that service can take
work now: the orchestrator's follows its downstreams, and every name is NOT_SERVING while a drain runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adgen_runtime.tls import client_channel_credentials
from adgen_wire.channel import create_channel, grpc_options


def is_serving(target: str, service: str, timeout_s: float, credentials: grpc.ChannelCredentials | None = None) -> bool:
    """Whether `service` ("" = the process) at `target` answers SERVING within the timeout (over TLS with
    `credentials`)."""
    if credentials is None:
        opened = create_channel(target)
    else:
        opened = grpc.secure_channel(target, credentials, options=grpc_options())
    with opened as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--service", default="", help="service name (readiness); empty checks the process (liveness)")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--ca", type=Path, help="PEM CA to trust: check over TLS")
    parser.add_argument("--cert", type=Path, help="PEM client certificate, for a server that wants mTLS")
    parser.add_argument("--key", type=Path, help="PEM private key of --cert")
    options = parser.parse_args()
    if (options.cert is None) != (options.key is None) or (options.cert is not None and options.ca is None):
        parser.error("--cert and --key go together, and need --ca")
    credentials = client_channel_credentials(options.ca, options.cert, options.key) if options.ca else None
    raise SystemExit(0 if is_serving(options.target, options.service, options.timeout, credentials) else 1)


if __name__ == "__main__":
    main()
