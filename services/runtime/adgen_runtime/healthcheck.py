"""Container health probe: exits 0 when a service reports SERVING over grpc.health.v1.

Usage: python -m adgen_runtime.healthcheck [--target HOST:PORT] [--service NAME] [--timeout S]

`--service ""` asks liveness (the process serves); a service name asks readiness (that service can take
work now: the orchestrator's follows its downstreams, and every name is NOT_SERVING while a drain runs).
"""

from __future__ import annotations

import argparse

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adgen_wire.channel import create_channel


def is_serving(target: str, service: str, timeout_s: float) -> bool:
    """Whether `service` ("" = the process) at `target` answers SERVING within the timeout."""
    with create_channel(target) as channel:
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
    options = parser.parse_args()
    raise SystemExit(0 if is_serving(options.target, options.service, options.timeout) else 1)


if __name__ == "__main__":
    main()
