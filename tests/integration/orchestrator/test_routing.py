"""A balanced diffusion target over two fake replicas on loopback: round robin, health checks, QUEUE_FULL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.type.v1 import error_reason_pb2
from adgen_orchestrator.downstream import CallBudget, DiffusionClient, DownstreamHealth
from adgen_orchestrator.routing import DIFFUSION_SERVICE, DiffusionRouter, RouteTable
from adgen_runtime.errors import ResourceExhausted
from adgen_runtime.server import RunningServer
from tests.support.orchestrator_fakes import FakeCopywriter, FakeDiffusion, serve_fakes

T2I = df_pb.MODEL_TASK_TEXT_TO_IMAGE
# Longer than any call here may take: a job that went to the waiting room instead of the other replica fails.
QUEUE_RETRY_AFTER_S = 60.0
CALL_DEADLINE_S = 10.0


@dataclass
class Replica:
    diffusion: FakeDiffusion
    server: RunningServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@dataclass
class Fleet:
    first: Replica
    second: Replica
    client: DiffusionClient
    router: DiffusionRouter


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    replicas = []
    for _ in range(2):
        diffusion = FakeDiffusion()
        replicas.append(Replica(diffusion, await serve_fakes(FakeCopywriter(), diffusion)))
    first, second = replicas
    router = DiffusionRouter(
        RouteTable({"text-to-image": f"ipv4:{first.address},{second.address}"}, "127.0.0.1:1"), 4 * 1024 * 1024, 30.0
    )
    try:
        client = router.client_for("flux2-klein-4b", T2I)
        fleet = Fleet(first, second, client, router)
        await _until_both_replicas_took_a_job(fleet)
        yield fleet
    finally:
        await router.close()
        for replica in replicas:
            await replica.server.stop(None)


def _budget() -> CallBudget:
    return CallBudget(request_id="routing-test", deadline=time.monotonic() + CALL_DEADLINE_S)


async def _generate(client: DiffusionClient) -> df_pb.GenerateResponse:
    request = df_pb.GenerateRequest(model_id="flux2-klein-4b", prompt="juice", width=32, height=32, seed=1)
    async for event in client.stream_generate(request, _budget()):
        if event.HasField("result"):
            return event.result
    raise AssertionError("the stream ended without a result")


async def _until_both_replicas_took_a_job(fleet: Fleet) -> None:
    """Round robin reaches a replica once its connection is up: a few jobs show both are in rotation."""
    for _ in range(20):
        await _generate(fleet.client)
        if fleet.first.diffusion.calls and fleet.second.diffusion.calls:
            fleet.first.diffusion.reset()
            fleet.second.diffusion.reset()
            return
    raise AssertionError("round robin never sent a job to both replicas")


async def test_jobs_are_spread_over_both_replicas_by_round_robin(fleet: Fleet) -> None:
    for _ in range(4):
        await _generate(fleet.client)
    assert len(fleet.first.diffusion.calls) == len(fleet.second.diffusion.calls) == 2


async def test_a_queue_full_replica_is_passed_over_for_the_other_within_the_deadline(fleet: Fleet) -> None:
    fleet.first.diffusion.failure = ResourceExhausted(
        error_reason_pb2.ERROR_REASON_QUEUE_FULL, "GPU queue is full", retry_after_s=QUEUE_RETRY_AFTER_S
    )
    started = time.monotonic()
    results = [await _generate(fleet.client) for _ in range(4)]
    assert len(results) == 4
    assert fleet.first.diffusion.calls, "the full replica was never tried, so nothing was rerouted"
    assert len(fleet.second.diffusion.calls) == 4
    assert time.monotonic() - started < CALL_DEADLINE_S  # No job waited for the full replica's RetryInfo delay.
    assert fleet.client.waiting_room.waiting == 0


async def _until_jobs_skip(replica: Replica, client: DiffusionClient) -> None:
    """Returns once six jobs in a row went past `replica`; round robin over two ready replicas never does that."""
    consecutive_elsewhere = 0
    for _ in range(40):
        before = len(replica.diffusion.calls)
        await _generate(client)
        consecutive_elsewhere = consecutive_elsewhere + 1 if len(replica.diffusion.calls) == before else 0
        if consecutive_elsewhere == 6:
            return
    raise AssertionError("jobs kept reaching the NOT_SERVING replica")


async def test_a_replica_set_not_serving_gets_no_new_jobs(fleet: Fleet) -> None:
    await fleet.first.server.set_ready(DIFFUSION_SERVICE, False)
    # The health watch reaches the channel asynchronously; once it has, every job lands on the other replica.
    await _until_jobs_skip(fleet.first, fleet.client)


async def test_a_balanced_target_is_ready_while_at_least_one_replica_serves(fleet: Fleet) -> None:
    changes: asyncio.Queue[bool] = asyncio.Queue()

    async def record(ready: bool) -> None:
        await changes.put(ready)

    [watched] = [service for service in fleet.router.watched("diffusion") if service.by_connectivity]
    health = DownstreamHealth([watched], record)
    health.start()
    try:
        assert await asyncio.wait_for(changes.get(), CALL_DEADLINE_S) is True
        await fleet.first.server.set_ready(DIFFUSION_SERVICE, False)
        await _until_jobs_skip(fleet.first, fleet.client)  # The channel has seen it...
        assert changes.empty()  # ...and one replica NOT_SERVING did not make the target unready.
        await fleet.second.server.set_ready(DIFFUSION_SERVICE, False)
        assert await asyncio.wait_for(changes.get(), CALL_DEADLINE_S) is False
        await fleet.second.server.set_ready(DIFFUSION_SERVICE, True)
        assert await asyncio.wait_for(changes.get(), CALL_DEADLINE_S) is True
    finally:
        await health.close()
