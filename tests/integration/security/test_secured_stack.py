"""All three services with TLS and authentication on: the orchestrator reaches the copywriter and diffusion
with its service identity (a service token over mTLS), callers reach it with tokens over gRPC and HTTPS,
its rate limit holds, and no secret reaches a log line."""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.server import create_server as create_copywriter
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.server import create_server as create_diffusion
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import OrchestratorServer
from adgen_orchestrator.server import create_server as create_orchestrator
from adgen_runtime.server import RunningServer
from tests.integration.security.conftest import ApiKeySet, Jwks, Pki

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE_PER_S = 2.0
BURST = 5


@dataclass(frozen=True)
class SecuredStack:
    orchestrator: str
    orchestrator_https: str
    diffusion: str
    service_token_file: Path


@pytest.fixture(scope="module")
async def stack(
    tiny_models_dir: Path, pki: Pki, api_keys: ApiKeySet, jwks: Jwks, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SecuredStack]:
    token_file = tmp_path_factory.mktemp("orchestrator") / "service-token"
    token_file.write_text(api_keys.service + "\n")
    started: list[RunningServer] = []
    try:
        diffusion = await create_diffusion(
            DiffusionSettings(
                port=0,
                tiny=True,
                models_dir=tiny_models_dir,
                device="cpu",
                api_keys_file=api_keys.file,
                tls_cert_file=pki.cert_file,
                tls_key_file=pki.key_file,
                tls_client_ca_file=pki.ca_file,
            )
        )
        started.append(diffusion)
        copywriter = await create_copywriter(
            CopywriterSettings(
                port=0,
                backend=BackendChoice.TEMPLATE,
                api_keys_file=api_keys.file,
                tls_cert_file=pki.cert_file,
                tls_key_file=pki.key_file,
                tls_client_ca_file=pki.ca_file,
            )
        )
        started.append(copywriter)
        orchestrator: OrchestratorServer = await create_orchestrator(
            OrchestratorSettings(
                port=0,
                http_port=0,
                copywriter_target=f"127.0.0.1:{copywriter.port}",
                diffusion_target=f"127.0.0.1:{diffusion.port}",
                tls_cert_file=pki.cert_file,
                tls_key_file=pki.key_file,
                api_keys_file=api_keys.file,
                jwt_jwks_url=jwks.url,
                rate_limit_per_s=RATE_PER_S,
                rate_limit_burst=BURST,
                downstream_token_file=token_file,
                downstream_tls_ca_file=pki.ca_file,
                downstream_tls_cert_file=pki.client_cert_file,
                downstream_tls_key_file=pki.client_key_file,
            )
        )
        started.append(orchestrator)
        yield SecuredStack(
            f"127.0.0.1:{orchestrator.port}",
            f"https://127.0.0.1:{orchestrator.http_port}",
            f"127.0.0.1:{diffusion.port}",
            token_file,
        )
    finally:
        for server in reversed(started):
            await server.stop(None)


@pytest.fixture
async def orchestrator(stack: SecuredStack, pki: Pki) -> AsyncIterator[ad_grpc.AdServiceAsyncStub]:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_file.read_bytes())
    async with aio.secure_channel(stack.orchestrator, credentials) as channel:
        yield ad_grpc.AdServiceStub(channel)


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _small_ad() -> ad_pb.CreateAdRequest:
    return ad_pb.CreateAdRequest(keyword="딸기 주스", width=128, height=128, num_inference_steps=2, seed=1)


def _error_details(error: aio.AioRpcError) -> tuple[str, float | None]:
    status = rpc_status.from_call(error)
    assert status is not None
    reason, delay = "", None
    for detail in status.details:
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(retry):
            delay = retry.retry_delay.ToNanoseconds() / 1e9
    return reason, delay


def _trusting(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context()
    pki.ca.configure_trust(context)
    return context


async def test_a_user_token_creates_an_ad_through_the_orchestrators_service_identity(
    orchestrator: ad_grpc.AdServiceAsyncStub, api_keys: ApiKeySet
) -> None:
    reply = await orchestrator.CreateAd(_small_ad(), metadata=_bearer(api_keys.user), timeout=120)
    assert reply.images and reply.images[0].image.data
    assert reply.copy.headline


async def test_a_caller_without_a_token_is_refused_by_the_orchestrator(
    orchestrator: ad_grpc.AdServiceAsyncStub,
) -> None:
    with pytest.raises(aio.AioRpcError) as refused:
        await orchestrator.ListModels(ad_pb.ListModelsRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _error_details(refused.value)[0] == "TOKEN_MISSING"


async def test_the_downstreams_refuse_a_caller_without_the_service_identity(stack: SecuredStack, pki: Pki) -> None:
    # Reaching diffusion directly takes a client certificate and a token, as the orchestrator has.
    plain_tls = grpc.ssl_channel_credentials(root_certificates=pki.ca_file.read_bytes())
    async with aio.secure_channel(stack.diffusion, plain_tls) as channel:
        with pytest.raises(aio.AioRpcError) as refused:
            await df_grpc.DiffusionServiceStub(channel).ListModels(df_pb.ListModelsRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # No client certificate: no handshake.
    mtls = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_file.read_bytes(),
        private_key=pki.client_key_file.read_bytes(),
        certificate_chain=pki.client_cert_file.read_bytes(),
    )
    async with aio.secure_channel(stack.diffusion, mtls) as channel:
        stub = df_grpc.DiffusionServiceStub(channel)
        with pytest.raises(aio.AioRpcError) as refused:
            await stub.ListModels(df_pb.ListModelsRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = stack.service_token_file.read_text().strip()
        assert (await stub.ListModels(df_pb.ListModelsRequest(), metadata=_bearer(token), timeout=30)).models


async def test_the_https_edge_takes_the_same_bearer_tokens(stack: SecuredStack, pki: Pki, jwks: Jwks) -> None:
    url = f"{stack.orchestrator_https}/adgen.ad.v1.AdService/ListModels"
    async with httpx.AsyncClient(verify=_trusting(pki), timeout=30) as client:
        refused = await client.post(url, json={})
        token = jwks.token(role="user", sub="https-caller")
        answered = await client.post(url, json={}, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthenticated"
    assert refused.json()["details"][0]["debug"]["reason"] == "TOKEN_MISSING"
    assert answered.status_code == 200, answered.text
    assert answered.json()["models"]


async def test_the_rate_limit_holds_and_its_retry_delay_is_when_the_next_call_passes(
    orchestrator: ad_grpc.AdServiceAsyncStub, jwks: Jwks
) -> None:
    token = jwks.token(role="user", sub=f"rate-{secrets.token_hex(4)}")
    for _ in range(BURST):
        await orchestrator.ListModels(ad_pb.ListModelsRequest(), metadata=_bearer(token), timeout=30)
    with pytest.raises(aio.AioRpcError) as refused:
        await orchestrator.ListModels(ad_pb.ListModelsRequest(), metadata=_bearer(token), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reason, delay = _error_details(refused.value)
    assert reason == "RATE_LIMITED"
    assert delay is not None and 0 < delay <= 1 / RATE_PER_S
    # Another caller has a bucket of its own.
    other = jwks.token(role="user", sub=f"rate-{secrets.token_hex(4)}")
    await orchestrator.ListModels(ad_pb.ListModelsRequest(), metadata=_bearer(other), timeout=30)
    await asyncio.sleep(delay)  # The delay the server gave, not a guess: by then a token is back.
    await orchestrator.ListModels(ad_pb.ListModelsRequest(), metadata=_bearer(token), timeout=30)


async def test_no_token_key_or_hash_reaches_the_logs(
    orchestrator: ad_grpc.AdServiceAsyncStub,
    stack: SecuredStack,
    pki: Pki,
    api_keys: ApiKeySet,
    jwks: Jwks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    expired, wrong = jwks.token(expires_in_s=-60, sub="log-check"), api_keys.user[::-1]
    for token in (api_keys.user, api_keys.admin, expired, wrong):
        try:
            await orchestrator.CreateAd(_small_ad(), metadata=_bearer(token), timeout=120)
        except aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    async with httpx.AsyncClient(verify=_trusting(pki), timeout=30) as client:
        for token in (api_keys.service, wrong):
            await client.post(
                f"{stack.orchestrator_https}/adgen.ad.v1.AdService/ListModels",
                json={},
                headers={"Authorization": f"Bearer {token}"},
            )
    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert "done /adgen.ad.v1.AdService/CreateAd" in logged  # The logs were captured at all.
    for secret in [*api_keys.all_secrets, expired, wrong]:
        assert secret not in logged
        assert secret[:16] not in logged
