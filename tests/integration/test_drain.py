"""SIGTERM drains the orchestrator's gRPC and HTTP front ends together, within one grace period."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import OrchestratorServer, create_server
from adgen_runtime.server import CUT_SETTLE_S, RunningServer
from adgen_wire.channel import create_aio_channel
from tests.live_services import unused_loopback_port
from tests.support.orchestrator_fakes import FakeCopywriter, FakeDiffusion, serve_fakes

pytestmark = [pytest.mark.integration]

AD_SERVICE = "adgen.ad.v1.AdService"
GRACE_S = 1.5
# A drain may take this beyond its grace: the cut calls' settling, then each front end's close.
SLACK_S = 2 * CUT_SETTLE_S + 1.0
KEYWORD = "여름 느낌 딸기 생과일 주스"
SMALL: dict[str, Any] = {"keyword": KEYWORD, "width": 64, "height": 64}


def small_request() -> ad_pb.CreateAdRequest:
    return ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64)


@dataclass
class Downstream:
    """Fake copywriter and diffusion services on one real server; the diffusion can hang until cancelled."""

    copywriter: FakeCopywriter
    diffusion: FakeDiffusion
    running: RunningServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"


@pytest.fixture
async def downstream() -> AsyncIterator[Downstream]:
    copywriter, diffusion = FakeCopywriter(), FakeDiffusion(hang=True)
    running = await serve_fakes(copywriter, diffusion)
    yield Downstream(copywriter, diffusion, running)
    await running.stop(None)


@pytest.fixture
async def orchestrator(downstream: Downstream) -> AsyncIterator[OrchestratorServer]:
    server = await create_server(
        OrchestratorSettings(
            port=0,
            http_port=0,
            shutdown_grace_s=GRACE_S,
            copywriter_target=downstream.target,
            diffusion_target=downstream.target,
        )
    )
    yield server
    await server.stop(None)


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


async def frames(response: httpx.Response) -> AsyncIterator[tuple[int, bytes]]:
    """The (flags, payload) frames of a Connect-streaming or gRPC-Web body, as they arrive."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while len(buffer) >= 5:
            flags, length = struct.unpack_from(">BI", buffer)
            if len(buffer) < 5 + length:
                break
            yield flags, buffer[5 : 5 + length]
            buffer = buffer[5 + length :]


def connect_details(error: dict[str, Any]) -> tuple[str, float | None]:
    """The ErrorInfo reason and RetryInfo delay in a Connect error's details."""
    reason, delay = "", None
    for detail in error.get("details", []):
        value = base64.b64decode(detail["value"] + "==")
        if detail["type"] == "google.rpc.ErrorInfo":
            reason = error_details_pb2.ErrorInfo.FromString(value).reason
        elif detail["type"] == "google.rpc.RetryInfo":
            delay = error_details_pb2.RetryInfo.FromString(value).retry_delay.ToNanoseconds() / 1e9
    return reason, delay


def grpc_details(status: status_pb2.Status | None) -> tuple[str, float | None]:
    assert status is not None
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    delay = retry.retry_delay.ToNanoseconds() / 1e9 if any(d.Unpack(retry) for d in status.details) else None
    assert any(d.Unpack(info) for d in status.details)
    return info.reason, delay


async def _health(channel: aio.Channel, service: str) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def test_both_front_ends_drain_together_refuse_new_work_and_cut_streams_with_a_reason(
    orchestrator: OrchestratorServer, downstream: Downstream
) -> None:
    target, http_url = f"127.0.0.1:{orchestrator.port}", f"http://127.0.0.1:{orchestrator.http_port}"
    async with (
        create_aio_channel(target, retry_unavailable=False) as channel,
        httpx.AsyncClient(base_url=http_url, timeout=30) as http,
    ):
        stub = ad_grpc.AdServiceStub(channel)
        grpc_stream = stub.StreamCreateAd(ad_pb.StreamCreateAdRequest(request=small_request()))
        first = await grpc_stream.read()
        assert isinstance(first, ad_pb.StreamCreateAdResponse) and first.HasField("copy")
        body = envelope(json.dumps({"request": SMALL}).encode())
        headers = {"content-type": "application/connect+json"}
        async with http.stream("POST", f"/{AD_SERVICE}/StreamCreateAd", content=body, headers=headers) as streamed:
            http_frames = frames(streamed)
            assert (await anext(http_frames))[0] == 0  # The copy: the stream is running.

            started = time.monotonic()
            stopping = asyncio.create_task(orchestrator.stop(GRACE_S))
            await orchestrator.calls.drain_begun.wait()

            # Readiness and liveness say NOT_SERVING, and are still answered.
            assert await _health(channel, AD_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await _health(channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING
            # New work is refused at once over both front ends, with a reason and a retry delay.
            refused = await http.post(f"/{AD_SERVICE}/CreateAd", json=SMALL)
            assert refused.status_code == 503 and refused.json()["code"] == "unavailable"
            assert connect_details(refused.json()) == ("NOT_READY", 1.0)
            call = stub.CreateAd(small_request(), timeout=5)
            with pytest.raises(aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert grpc_details(await rpc_status.aio.from_call(call))[0] == "NOT_READY"
            assert time.monotonic() - started < GRACE_S  # All of that within the grace, not after it.

            # The running streams are cut at the end of the grace, each with a status that says why.
            with pytest.raises(aio.AioRpcError) as cut:
                while await grpc_stream.read() is not aio.EOF:
                    pass
            grpc_cut_at = time.monotonic() - started
            assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
            assert grpc_details(await rpc_status.aio.from_call(grpc_stream)) == ("NOT_READY", 1.0)
            last = [frame async for frame in http_frames][-1]
        assert last[0] & 0x02  # Connect's end-of-stream message
        error = json.loads(last[1])["error"]
        assert error["code"] == "unavailable" and connect_details(error) == ("NOT_READY", 1.0)
        await stopping
    stopped_at = time.monotonic() - started
    assert GRACE_S - 0.05 <= grpc_cut_at <= GRACE_S + CUT_SETTLE_S
    assert stopped_at <= GRACE_S + SLACK_S  # One grace for both front ends, not one each.
    assert downstream.diffusion.cancelled.is_set()  # The cut stopped the downstream job too.


async def test_grpc_web_requests_during_the_drain_are_refused_in_grpc_web_form(
    orchestrator: OrchestratorServer,
) -> None:
    request = small_request().SerializeToString()
    async with (
        create_aio_channel(f"127.0.0.1:{orchestrator.port}", retry_unavailable=False) as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{orchestrator.http_port}", timeout=30) as http,
    ):
        # A running stream keeps the drain open for its grace period.
        stream = ad_grpc.AdServiceStub(channel).StreamCreateAd(ad_pb.StreamCreateAdRequest(request=small_request()))
        assert isinstance(await stream.read(), ad_pb.StreamCreateAdResponse)
        stopping = asyncio.create_task(orchestrator.stop(GRACE_S))  # Refuses new work before its first await.
        for content_type, encode in (
            ("application/grpc-web+proto", lambda data: data),
            ("application/grpc-web-text", base64.b64encode),
        ):
            reply = await http.post(
                f"/{AD_SERVICE}/CreateAd", content=encode(envelope(request)), headers={"content-type": content_type}
            )
            body = base64.b64decode(reply.content) if "text" in content_type else reply.content
            flags, length = struct.unpack_from(">BI", body)
            trailers = dict(line.split(": ", 1) for line in body[5 : 5 + length].decode().splitlines() if line)
            assert reply.status_code == 200 and flags == 0x80
            assert trailers["grpc-status"] == str(grpc.StatusCode.UNAVAILABLE.value[0])
            status = status_pb2.Status.FromString(base64.b64decode(trailers["grpc-status-details-bin"] + "=="))
            assert grpc_details(status) == ("NOT_READY", 1.0)
            assert not stopping.done()
        stream.cancel()
        await stopping


def _orchestrator_environment(downstream: Downstream, port: int, http_port: int) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ADGEN_")}
    return environment | {
        "ADGEN_ORCHESTRATOR_PORT": str(port),
        "ADGEN_ORCHESTRATOR_HTTP_PORT": str(http_port),
        "ADGEN_ORCHESTRATOR_COPYWRITER_TARGET": downstream.target,
        "ADGEN_ORCHESTRATOR_DIFFUSION_TARGET": downstream.target,
        "ADGEN_ORCHESTRATOR_SHUTDOWN_GRACE_S": str(GRACE_S),
    }


async def _readiness(channel: aio.Channel) -> AsyncIterator[int]:
    """The process's readiness as it changes, waiting for it to listen first."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=AD_SERVICE), wait_for_ready=True, timeout=120
    )
    async for reply in watch:
        yield int(reply.status)


@pytest.mark.slow
async def test_a_real_sigterm_drains_the_process_within_its_grace_and_it_exits_cleanly(downstream: Downstream) -> None:
    port, http_port = unused_loopback_port(), unused_loopback_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from adgen_orchestrator.server import main; main()",
        env=_orchestrator_environment(downstream, port, http_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with (
            create_aio_channel(f"127.0.0.1:{port}", retry_unavailable=False) as channel,
            httpx.AsyncClient(timeout=10) as http,
        ):
            readiness = _readiness(channel)
            while await anext(readiness) != health_pb2.HealthCheckResponse.SERVING:
                pass  # Started, and its downstreams answered SERVING.
            stream = ad_grpc.AdServiceStub(channel).StreamCreateAd(
                ad_pb.StreamCreateAdRequest(request=small_request()), timeout=60
            )
            first = await stream.read()
            assert isinstance(first, ad_pb.StreamCreateAdResponse) and first.HasField("copy")

            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert await anext(readiness) == health_pb2.HealthCheckResponse.NOT_SERVING
            # The edge keeps its port during the drain and refuses new work at once, saying why.
            refused = await http.post(f"http://127.0.0.1:{http_port}/{AD_SERVICE}/CreateAd", json=SMALL)
            assert refused.status_code == 503 and connect_details(refused.json())[0] == "NOT_READY"
            assert time.monotonic() - started < GRACE_S
            with pytest.raises(aio.AioRpcError) as cut:
                while await stream.read() is not aio.EOF:
                    pass
            assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
            assert grpc_details(await rpc_status.aio.from_call(stream))[0] == "NOT_READY"
        exit_code = await asyncio.wait_for(process.wait(), GRACE_S + SLACK_S + 10)
        stopped_at = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = (await process.stdout.read()).decode(errors="replace") if process.stdout else ""
    assert exit_code == 0, output
    assert stopped_at <= GRACE_S + SLACK_S + 1.0, output  # + the interpreter's own exit
    assert "cut 1 call(s) still running" in output and "Traceback" not in output
