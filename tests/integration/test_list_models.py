"""AdService.ListModels through the real services: the diffusion registry, as callers see it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen_client import AdGenClient, AsyncAdGenClient
from adgen_wire.channel import create_aio_channel
from tests.live_services import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_TASK_NAMES = {df_pb.MODEL_TASK_TEXT_TO_IMAGE: "TEXT_TO_IMAGE", df_pb.MODEL_TASK_IMAGE_EDIT: "IMAGE_EDIT"}


async def _registry(services: Services) -> list[df_pb.Model]:
    async with create_aio_channel(services.diffusion) as channel:
        reply = await df_grpc.DiffusionServiceStub(channel).ListModels(df_pb.ListModelsRequest(), timeout=30)
    return sorted(reply.models, key=lambda model: model.id)


async def test_list_models_shows_each_registry_model_with_its_licence_and_fit(services: Services) -> None:
    registry = await _registry(services)
    async with AsyncAdGenClient(services.orchestrator, timeout=30) as client:
        models = await client.list_models()
    assert [model.id for model in models] == [model.id for model in registry] and models
    for public, internal in zip(models, registry, strict=True):
        assert public.display_name == internal.display_name
        assert [ad_pb.ModelTask.Name(task) for task in public.tasks] == [
            f"MODEL_TASK_{_TASK_NAMES[task]}" for task in internal.tasks
        ]
        assert (public.license, public.commercial_use) == (internal.license, internal.commercial_use)
        assert (public.fits, public.plan_summary) == (internal.plan.fits, internal.plan.summary)
    assert any(ad_pb.MODEL_TASK_TEXT_TO_IMAGE in model.tasks for model in models)
    assert any(ad_pb.MODEL_TASK_IMAGE_EDIT in model.tasks for model in models)


async def test_the_sync_client_and_the_http_edge_list_the_same_models(services: Services) -> None:
    grpc_ids = await asyncio.to_thread(_sync_model_ids, services.orchestrator)
    async with httpx.AsyncClient(base_url=services.orchestrator_http, timeout=30) as http:
        reply = await http.post("/adgen.ad.v1.AdService/ListModels", json={})
    assert reply.status_code == 200, reply.text
    http_models = reply.json()["models"]
    assert [model["id"] for model in http_models] == grpc_ids
    assert all(model["tasks"] for model in http_models)


def _sync_model_ids(target: str) -> list[str]:
    # The sync client blocks, so it runs off the event loop the services share.
    with AdGenClient(target, timeout=30) as client:
        return [model.id for model in client.list_models()]
