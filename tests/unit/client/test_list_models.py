"""AdGenClient.list_models and AsyncAdGenClient.list_models against a fake AdService over loopback."""

from __future__ import annotations

import asyncio

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen_client import AdGenClient, AsyncAdGenClient
from tests.unit.client.conftest import FakeServer


def _sync_models(target: str) -> list[ad_pb.Model]:
    with AdGenClient(target, timeout=30) as client:
        return client.list_models()


async def test_both_clients_return_the_servers_models(fake_ad_server: FakeServer) -> None:
    async with AsyncAdGenClient(fake_ad_server.target, timeout=30) as client:
        models = await client.list_models()
    # The sync client blocks, so it runs off the event loop the fake server shares.
    sync_models = await asyncio.to_thread(_sync_models, fake_ad_server.target)
    assert [(model.id, list(model.tasks)) for model in models] == [("tiny", [ad_pb.MODEL_TASK_TEXT_TO_IMAGE])]
    assert sync_models == models
