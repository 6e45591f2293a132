"""TLS and mTLS on real servers over loopback: what a client without the right credentials meets, and
certificates rotated under a running server."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as cw_grpc
from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.server import create_server as create_copywriter
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import create_server as create_orchestrator
from adgen_runtime.healthcheck import is_serving
from adgen_runtime.server import RunningServer
from adgen_runtime.tls import client_channel_credentials
from tests.integration.security.conftest import Pki, write_server_cert
from tests.live_services import unused_loopback_port

pytestmark = pytest.mark.integration

COPYWRITER = "adgen.copywriter.v1.CopywriterService"


async def _health(channel: aio.Channel, timeout_s: float = 5.0) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
    )
    return int(reply.status)


def _tls(ca_pem: bytes, pki: Pki | None = None) -> grpc.ChannelCredentials:
    if pki is None:
        return grpc.ssl_channel_credentials(root_certificates=ca_pem)
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem,
        private_key=pki.client_key_file.read_bytes(),
        certificate_chain=pki.client_cert_file.read_bytes(),
    )


def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def tls_copywriter(pki: Pki) -> AsyncIterator[RunningServer]:
    settings = CopywriterSettings(
        port=0, backend=BackendChoice.TEMPLATE, tls_cert_file=pki.cert_file, tls_key_file=pki.key_file
    )
    running = await create_copywriter(settings)
    yield running
    await running.stop(None)


@pytest.fixture
async def mtls_copywriter(pki: Pki) -> AsyncIterator[RunningServer]:
    settings = CopywriterSettings(
        port=0,
        backend=BackendChoice.TEMPLATE,
        tls_cert_file=pki.cert_file,
        tls_key_file=pki.key_file,
        tls_client_ca_file=pki.ca_file,
    )
    running = await create_copywriter(settings)
    yield running
    await running.stop(None)


async def test_a_plaintext_client_to_a_tls_port_fails(tls_copywriter: RunningServer, pki: Pki) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{tls_copywriter.port}") as channel:
        with pytest.raises(aio.AioRpcError) as refused:
            await _health(channel, timeout_s=2.0)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    async with aio.secure_channel(f"127.0.0.1:{tls_copywriter.port}", _tls(pki.ca.cert_pem.bytes())) as channel:
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_a_client_that_does_not_trust_the_ca_fails(tls_copywriter: RunningServer) -> None:
    stranger = trustme.CA()
    async with aio.secure_channel(f"127.0.0.1:{tls_copywriter.port}", _tls(stranger.cert_pem.bytes())) as channel:
        with pytest.raises(aio.AioRpcError) as refused:
            await _health(channel, timeout_s=2.0)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_a_client_without_a_certificate_and_serves_one_with(
    mtls_copywriter: RunningServer, pki: Pki
) -> None:
    target = f"127.0.0.1:{mtls_copywriter.port}"
    async with aio.secure_channel(target, _tls(pki.ca.cert_pem.bytes())) as channel:
        with pytest.raises(aio.AioRpcError) as refused:
            await _health(channel, timeout_s=2.0)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    async with aio.secure_channel(target, _tls(pki.ca.cert_pem.bytes(), pki)) as channel:
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_a_rotated_server_certificate_reaches_new_grpc_connections_without_a_restart(tmp_path: Path) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    write_server_cert(old_ca, cert_file, key_file)
    running = await create_copywriter(
        CopywriterSettings(port=0, backend=BackendChoice.TEMPLATE, tls_cert_file=cert_file, tls_key_file=key_file)
    )
    target = f"127.0.0.1:{running.port}"
    try:
        async with aio.secure_channel(target, _tls(old_ca.cert_pem.bytes())) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        write_server_cert(new_ca, cert_file, key_file)
        async with aio.secure_channel(target, _tls(new_ca.cert_pem.bytes())) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        async with aio.secure_channel(target, _tls(old_ca.cert_pem.bytes())) as channel:
            with pytest.raises(aio.AioRpcError):
                await _health(channel, timeout_s=2.0)
    finally:
        await running.stop(None)


async def test_the_http_edge_serves_https_and_follows_a_rotated_certificate(tmp_path: Path) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    write_server_cert(old_ca, cert_file, key_file)
    orchestrator = await create_orchestrator(
        OrchestratorSettings(
            port=0,
            http_port=0,
            copywriter_target=f"127.0.0.1:{unused_loopback_port()}",
            diffusion_target=f"127.0.0.1:{unused_loopback_port()}",
            tls_cert_file=cert_file,
            tls_key_file=key_file,
        )
    )
    url = f"https://127.0.0.1:{orchestrator.http_port}/adgen.ad.v1.AdService/ListModels"
    try:
        async with httpx.AsyncClient(verify=_trusting(old_ca)) as client:
            answered = await client.post(url, json={}, headers={"Content-Type": "application/json"})
        assert answered.status_code > 0  # Any HTTP answer: the handshake with the first certificate passed.
        with pytest.raises(httpx.TransportError):  # The server hangs up on a plaintext request.
            async with httpx.AsyncClient() as plaintext:
                await plaintext.post(url.replace("https://", "http://"), json={})
        write_server_cert(new_ca, cert_file, key_file)
        async with httpx.AsyncClient(verify=_trusting(new_ca)) as client:
            answered = await client.post(url, json={}, headers={"Content-Type": "application/json"})
        assert answered.status_code > 0
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            async with httpx.AsyncClient(verify=_trusting(old_ca)) as client:
                await client.post(url, json={})
    finally:
        await orchestrator.stop(None)


async def test_the_health_port_answers_plaintext_probes_and_nothing_else(pki: Pki) -> None:
    running = await create_copywriter(
        CopywriterSettings(
            port=0,
            backend=BackendChoice.TEMPLATE,
            tls_cert_file=pki.cert_file,
            tls_key_file=pki.key_file,
            tls_client_ca_file=pki.ca_file,
            health_port=0,
        )
    )
    try:
        assert running.health_port is not None
        async with aio.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=COPYWRITER), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(aio.AioRpcError) as absent:
                await cw_grpc.CopywriterServiceStub(channel).GenerateCopy(
                    cw_pb.GenerateCopyRequest(keyword="딸기"), timeout=5
                )
            assert absent.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await running.stop(None)


async def test_the_container_healthcheck_speaks_tls_and_mtls(mtls_copywriter: RunningServer, pki: Pki) -> None:
    target = f"127.0.0.1:{mtls_copywriter.port}"
    with_cert = client_channel_credentials(pki.ca_file, pki.client_cert_file, pki.client_key_file)
    assert await asyncio.to_thread(is_serving, target, COPYWRITER, 5.0, with_cert)
    assert not await asyncio.to_thread(is_serving, target, COPYWRITER, 2.0, client_channel_credentials(pki.ca_file))
    assert not await asyncio.to_thread(is_serving, target, COPYWRITER, 2.0)
