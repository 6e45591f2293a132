"""An unknown 5,000-character model id stays NOT_FOUND with its details on every service and front end."""

from __future__ import annotations

import base64
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen_runtime.errors import MAX_MESSAGE_BYTES
from tests.live_services import Services

pytestmark = pytest.mark.integration

LONG_IDS = ["m" * 5000, "모" * 5000]
IDS = ["ascii", "korean"]


def _error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details), "no ErrorInfo"
    return info


async def _not_found(call: aio.Call) -> status_pb2.Status:
    with pytest.raises(aio.AioRpcError) as raised:
        await call  # type: ignore[misc]  # Unary calls are awaitable.
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()
    assert len((raised.value.details() or "").encode()) <= MAX_MESSAGE_BYTES
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    return status


@pytest.mark.parametrize("model_id", LONG_IDS, ids=IDS)
async def test_the_diffusion_service_answers_not_found_naming_the_model_resource(
    services: Services, model_id: str
) -> None:
    # A stock channel, with gRPC's default 8 KiB limit on the metadata it receives.
    async with aio.insecure_channel(services.diffusion) as channel:
        stub = df_grpc.DiffusionServiceStub(channel)
        status = await _not_found(stub.Generate(df_pb.GenerateRequest(model_id=model_id, prompt="a cup")))
        assert _error_info(status).reason == "MODEL_NOT_FOUND"
        resource = error_details_pb2.ResourceInfo()
        assert any(detail.Unpack(resource) for detail in status.details)
        assert resource.resource_type == "adgen.diffusion.v1.Model" and resource.resource_name.startswith(model_id[:8])
        load = await _not_found(stub.LoadModel(df_pb.LoadModelRequest(model_id=model_id)))
        assert _error_info(load).reason == "MODEL_NOT_FOUND"


@pytest.mark.parametrize("model_id", LONG_IDS, ids=IDS)
async def test_the_orchestrator_answers_not_found_over_grpc(services: Services, model_id: str) -> None:
    async with aio.insecure_channel(services.orchestrator) as channel:
        stub = ad_grpc.AdServiceStub(channel)
        status = await _not_found(stub.CreateAd(ad_pb.CreateAdRequest(keyword="딸기 주스", model_id=model_id)))
    assert _error_info(status).reason == "MODEL_NOT_FOUND"


async def test_the_orchestrator_answers_not_found_over_http(services: Services) -> None:
    async with httpx.AsyncClient(base_url=services.orchestrator_http, timeout=30) as http:
        reply = await http.post(
            "/adgen.ad.v1.AdService/CreateAd", json={"keyword": "딸기 주스", "modelId": "모" * 5000}
        )
    assert reply.status_code == 404
    error: dict[str, Any] = reply.json()
    assert error["code"] == "not_found" and len(error["message"].encode()) <= MAX_MESSAGE_BYTES
    (info,) = [d for d in error["details"] if d["type"] == "google.rpc.ErrorInfo"]
    assert error_details_pb2.ErrorInfo.FromString(base64.b64decode(info["value"] + "==")).reason == "MODEL_NOT_FOUND"
