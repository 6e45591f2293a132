"""Authentication and authorization on a real diffusion server (tiny models) with API keys and JWTs on:
who is refused, with which status and reason, and what stays open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as pb_grpc
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.server import create_server as create_diffusion
from adgen_runtime.server import RunningServer
from tests.integration.security.conftest import ApiKeySet, Jwks

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def diffusion(tiny_models_dir: Path, api_keys: ApiKeySet, jwks: Jwks) -> AsyncIterator[RunningServer]:
    settings = DiffusionSettings(
        port=0,
        tiny=True,
        models_dir=tiny_models_dir,
        device="cpu",
        api_keys_file=api_keys.file,
        jwt_jwks_url=jwks.url,
    )
    running = await create_diffusion(settings)
    yield running
    await running.stop(None)


@pytest.fixture
async def channel(diffusion: RunningServer) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(f"127.0.0.1:{diffusion.port}") as opened:
        yield opened


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _small_generate(priority: int = 0) -> pb.GenerateRequest:
    request = pb.GenerateRequest(prompt="a strawberry smoothie", width=64, height=64, seed=1, priority=priority)
    request.num_inference_steps = 1
    return request


def _refusal(error: aio.AioRpcError) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo]:
    status = rpc_status.from_call(error)
    assert status is not None, "a refusal carries rich details"
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    return error.code(), info


async def _list_models_refusal(
    channel: aio.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo]:
    with pytest.raises(aio.AioRpcError) as refused:
        await pb_grpc.DiffusionServiceStub(channel).ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=10)
    return _refusal(refused.value)


async def test_a_call_without_a_token_is_unauthenticated_token_missing(channel: aio.Channel) -> None:
    code, info = await _list_models_refusal(channel)
    assert (code, info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    code, info = await _list_models_refusal(channel, (("authorization", "Basic dXNlcjpwYXNz"),))
    assert (code, info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")


async def test_an_unknown_key_or_a_forged_jwt_is_unauthenticated_token_invalid(
    channel: aio.Channel, api_keys: ApiKeySet, jwks: Jwks
) -> None:
    code, info = await _list_models_refusal(channel, _bearer(api_keys.user + "x"))
    assert (code, info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    forged = Jwks()  # Same claims, a key the server's JWKS does not publish under that id's key material.
    try:
        code, info = await _list_models_refusal(channel, _bearer(forged.token(role="admin")))
    finally:
        forged.close()
    assert (code, info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_an_expired_jwt_is_unauthenticated_token_expired(channel: aio.Channel, jwks: Jwks) -> None:
    code, info = await _list_models_refusal(channel, _bearer(jwks.token(expires_in_s=-120)))
    assert (code, info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


async def test_a_valid_key_or_jwt_of_any_role_lists_models(
    channel: aio.Channel, api_keys: ApiKeySet, jwks: Jwks
) -> None:
    stub = pb_grpc.DiffusionServiceStub(channel)
    for token in (api_keys.user, api_keys.service, jwks.token(role="user"), jwks.token(role=["service"])):
        reply = await stub.ListModels(pb.ListModelsRequest(), metadata=_bearer(token), timeout=30)
        assert reply.models


async def test_a_jwt_without_a_known_role_is_permission_denied(channel: aio.Channel, jwks: Jwks) -> None:
    code, info = await _list_models_refusal(channel, _bearer(jwks.token(role="superuser")))
    assert (code, info.reason, info.metadata["required_role"]) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_REQUIRED",
        "user",
    )


async def test_a_non_admin_unloading_a_model_is_permission_denied(
    channel: aio.Channel, api_keys: ApiKeySet, jwks: Jwks
) -> None:
    stub = pb_grpc.DiffusionServiceStub(channel)
    for token in (api_keys.user, api_keys.service, jwks.token(role="user")):
        with pytest.raises(aio.AioRpcError) as refused:
            await stub.UnloadModel(pb.UnloadModelRequest(), metadata=_bearer(token), timeout=10)
        code, info = _refusal(refused.value)
        assert (code, info.reason, info.metadata["required_role"]) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ROLE_REQUIRED",
            "admin",
        )
    with pytest.raises(aio.AioRpcError) as refused:
        await stub.LoadModel(pb.LoadModelRequest(model_id="flux2-klein-4b"), metadata=_bearer(api_keys.user))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_admin_may_unload(channel: aio.Channel, api_keys: ApiKeySet, jwks: Jwks) -> None:
    stub = pb_grpc.DiffusionServiceStub(channel)
    await stub.UnloadModel(pb.UnloadModelRequest(), metadata=_bearer(api_keys.admin), timeout=60)
    await stub.UnloadModel(pb.UnloadModelRequest(), metadata=_bearer(jwks.token(role=["user", "admin"])), timeout=60)


async def test_a_non_admin_asking_for_priority_100_is_permission_denied(
    channel: aio.Channel, api_keys: ApiKeySet
) -> None:
    stub = pb_grpc.DiffusionServiceStub(channel)
    with pytest.raises(aio.AioRpcError) as refused:
        await stub.Generate(_small_generate(priority=100), metadata=_bearer(api_keys.user), timeout=30)
    code, info = _refusal(refused.value)
    assert (code, info.reason, info.metadata["required_role"]) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_REQUIRED",
        "admin",
    )
    stream = stub.StreamGenerate(
        pb.StreamGenerateRequest(request=_small_generate(priority=100)), metadata=_bearer(api_keys.service), timeout=30
    )
    with pytest.raises(aio.AioRpcError) as refused:
        async for _ in stream:
            pass
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_priority_0_runs_for_a_user_and_priority_100_for_an_admin(
    channel: aio.Channel, api_keys: ApiKeySet
) -> None:
    stub = pb_grpc.DiffusionServiceStub(channel)
    done = await stub.Generate(_small_generate(), metadata=_bearer(api_keys.user), timeout=120)
    assert len(done.images) == 1
    done = await stub.Generate(_small_generate(priority=100), metadata=_bearer(api_keys.admin), timeout=120)
    assert len(done.images) == 1


async def test_health_and_reflection_stay_open_without_a_token(channel: aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    services = [service.name async for reply in stream for service in reply.list_services_response.service]
    assert "adgen.diffusion.v1.DiffusionService" in services
