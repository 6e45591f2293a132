"""A herd of SDK clients with default settings: every CreateAd succeeds, though the GPU queue overflows."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen_client import AsyncAdGenClient
from tests.live_services import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 64
CALLS_EACH = 3
KEYWORD = "여름 느낌 딸기 생과일 주스"


async def _client_session(target: str) -> list[ad_pb.CreateAdResponse]:
    """One client, created with the SDK's defaults, making its calls one after another."""
    async with AsyncAdGenClient(target) as client:
        return [await client.create_ad(KEYWORD, width=64, height=64, num_inference_steps=1) for _ in range(CALLS_EACH)]


@pytest.mark.timeout(300)
async def test_64_clients_with_sdk_defaults_all_get_their_three_ads(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adgen_orchestrator.downstream")
    started = time.monotonic()
    sessions = await asyncio.gather(
        *(_client_session(services.orchestrator) for _ in range(CLIENTS)), return_exceptions=True
    )
    elapsed = time.monotonic() - started
    failures = [result for result in sessions if isinstance(result, BaseException)]
    assert not failures, f"{len(failures)} of {CLIENTS} clients failed, first: {failures[0]!r}"
    ads = [ad for session in sessions if not isinstance(session, BaseException) for ad in session]
    assert len(ads) == CLIENTS * CALLS_EACH and all(len(ad.images) == 1 for ad in ads)
    # The herd really was bigger than the diffusion queue (16): jobs had to wait for room.
    assert any("diffusion queue full" in record.getMessage() for record in caplog.records)
    assert elapsed < 280
