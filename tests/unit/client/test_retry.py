"""The SDK retries QUEUE_FULL after the server's RetryInfo delay, within the call's deadline, as configured."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import error_reason_pb2
from adgen_client import AdGenClient, AdGenError, AsyncAdGenClient, RetryPolicy
from adgen_runtime import Context
from adgen_runtime.errors import BadField, ResourceExhausted, ServiceError, invalid_fields
from adgen_runtime.server import RunningServer, ServiceBinding, start_server
from adgen_runtime.settings import ServerSettings

_R = error_reason_pb2
DELAY_S = 0.3


def queue_full(retry_after_s: float | None = DELAY_S) -> ResourceExhausted:
    return ResourceExhausted(_R.ERROR_REASON_QUEUE_FULL, "The GPU queue is full.", retry_after_s=retry_after_s)


@dataclass
class ScriptedAdService(ad_grpc.AdServiceServicer):
    """Fails each attempt with the next scripted error (None: answers), and records when attempts came.

    `after_copy` fails streams only after their first event, as a full queue met by a later variant would.
    """

    script: list[ServiceError | None] = field(default_factory=list)
    after_copy: bool = False
    attempts: list[float] = field(default_factory=list)

    def _next(self) -> None:
        self.attempts.append(time.monotonic())
        failure = self.script.pop(0) if self.script else None
        if failure is not None:
            raise failure

    async def ListModels(self, request: ad_pb.ListModelsRequest, context: Context) -> ad_pb.ListModelsResponse:
        return ad_pb.ListModelsResponse()

    async def CreateAd(self, request: ad_pb.CreateAdRequest, context: Context) -> ad_pb.CreateAdResponse:
        self._next()
        return ad_pb.CreateAdResponse(model_id="flux2-klein-4b", request_id=request.request_id)

    async def StreamCreateAd(
        self, request: ad_pb.StreamCreateAdRequest, context: Context
    ) -> AsyncIterator[ad_pb.StreamCreateAdResponse]:
        if not self.after_copy:
            self._next()
        yield ad_pb.StreamCreateAdResponse(copy=ad_pb.AdCopy(caption="딸기"))
        if self.after_copy:
            self._next()
        yield ad_pb.StreamCreateAdResponse(result=ad_pb.CreateAdResponse(model_id="flux2-klein-4b"))

    async def EditAd(self, request: ad_pb.EditAdRequest, context: Context) -> ad_pb.EditAdResponse:
        self._next()
        return ad_pb.EditAdResponse(model_id="qwen-image-edit-2511")

    async def StreamEditAd(
        self, request: ad_pb.StreamEditAdRequest, context: Context
    ) -> AsyncIterator[ad_pb.StreamEditAdResponse]:
        self._next()
        yield ad_pb.StreamEditAdResponse(result=ad_pb.EditAdResponse(model_id="qwen-image-edit-2511"))


@dataclass
class Scripted:
    service: ScriptedAdService
    running: RunningServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def expect(self, *script: ServiceError | None, after_copy: bool = False) -> None:
        self.service.script, self.service.after_copy, self.service.attempts = list(script), after_copy, []

    @property
    def gaps(self) -> list[float]:
        """Seconds between consecutive attempts."""
        times = self.service.attempts
        return [later - earlier for earlier, later in itertools.pairwise(times)]


@pytest.fixture(scope="module")
async def scripted() -> AsyncIterator[Scripted]:
    service = ScriptedAdService()
    binding = ServiceBinding(
        "adgen.ad.v1.AdService", lambda server: ad_grpc.add_AdServiceServicer_to_server(service, server)
    )
    running = await start_server(ServerSettings(port=0), [binding])
    yield Scripted(service, running)
    await running.stop(None)


async def test_queue_full_is_retried_after_the_retry_info_delay_until_it_succeeds(scripted: Scripted) -> None:
    scripted.expect(queue_full(), queue_full())
    async with AsyncAdGenClient(scripted.target, timeout=30) as client:
        ad = await client.create_ad("딸기")
    assert ad.model_id == "flux2-klein-4b" and len(scripted.service.attempts) == 3
    # Never sooner than asked, and at most the 10% jitter (plus scheduling) later.
    assert all(DELAY_S <= gap < DELAY_S * 1.1 + 0.25 for gap in scripted.gaps)


async def test_rate_limited_is_retried_after_its_retry_info_delay_like_queue_full(scripted: Scripted) -> None:
    rate_limited = ResourceExhausted(_R.ERROR_REASON_RATE_LIMITED, "Too many requests.", retry_after_s=DELAY_S)
    scripted.expect(rate_limited, None)
    async with AsyncAdGenClient(scripted.target, timeout=30) as client:
        ad = await client.create_ad("딸기")
    assert ad.model_id == "flux2-klein-4b" and len(scripted.service.attempts) == 2
    assert DELAY_S <= scripted.gaps[0] < DELAY_S * 1.1 + 0.25


async def test_the_blocking_client_retries_the_same_way(scripted: Scripted) -> None:
    scripted.expect(queue_full(), None)

    def edit() -> ad_pb.EditAdResponse:
        with AdGenClient(scripted.target, timeout=30) as client:
            return client.edit_ad(b"\x89PNG", "밝게")

    edited = await asyncio.to_thread(edit)
    assert edited.model_id == "qwen-image-edit-2511" and len(scripted.service.attempts) == 2
    assert scripted.gaps[0] >= DELAY_S


async def test_after_max_attempts_the_queue_full_reaches_the_caller_with_its_retry_info(scripted: Scripted) -> None:
    scripted.expect(*[queue_full()] * 5)
    async with AsyncAdGenClient(scripted.target, timeout=30) as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad("딸기")
    assert len(scripted.service.attempts) == RetryPolicy().max_attempts == 3
    assert raised.value.reason == "QUEUE_FULL" and raised.value.retry_after_s == DELAY_S


async def test_max_attempts_is_configurable(scripted: Scripted) -> None:
    scripted.expect(*[queue_full(0.05)] * 4)
    async with AsyncAdGenClient(scripted.target, timeout=30, retry=RetryPolicy(max_attempts=5)) as client:
        await client.create_ad("딸기")
    assert len(scripted.service.attempts) == 5


async def test_retries_can_be_turned_off(scripted: Scripted) -> None:
    scripted.expect(queue_full(), None)
    async with AsyncAdGenClient(scripted.target, timeout=30, retry=RetryPolicy(enabled=False)) as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad("딸기")
    assert raised.value.reason == "QUEUE_FULL" and len(scripted.service.attempts) == 1


async def test_a_delay_that_would_pass_the_deadline_is_not_waited_out(scripted: Scripted) -> None:
    scripted.expect(queue_full(2.0), None)
    started = time.monotonic()
    async with AsyncAdGenClient(scripted.target, timeout=1.0) as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad("딸기")
    assert raised.value.reason == "QUEUE_FULL" and len(scripted.service.attempts) == 1
    assert time.monotonic() - started < 0.5  # Told at once, not at the deadline.


async def test_a_delay_longer_than_max_delay_reaches_the_caller_at_once(scripted: Scripted) -> None:
    scripted.expect(queue_full(RetryPolicy().max_delay_s + 1), None)
    async with AsyncAdGenClient(scripted.target, timeout=60) as client:
        with pytest.raises(AdGenError):
            await client.create_ad("딸기")
    assert len(scripted.service.attempts) == 1


async def test_a_stream_turned_away_before_its_first_event_is_retried(scripted: Scripted) -> None:
    scripted.expect(queue_full(0.05), None)
    async with AsyncAdGenClient(scripted.target, timeout=30) as client:
        kinds = [event.WhichOneof("event") async for event in client.stream_create_ad("딸기")]
    assert kinds == ["copy", "result"] and len(scripted.service.attempts) == 2

    scripted.expect(queue_full(0.05), None)

    def stream() -> list[str | None]:
        with AdGenClient(scripted.target, timeout=30) as client:
            return [event.WhichOneof("event") for event in client.stream_create_ad("딸기")]

    assert await asyncio.to_thread(stream) == ["copy", "result"] and len(scripted.service.attempts) == 2


async def test_a_stream_that_already_sent_events_is_not_retried(scripted: Scripted) -> None:
    scripted.expect(queue_full(0.05), None, after_copy=True)
    seen: list[str | None] = []
    async with AsyncAdGenClient(scripted.target, timeout=30) as client:
        with pytest.raises(AdGenError) as raised:
            async for event in client.stream_create_ad("딸기"):
                seen.append(event.WhichOneof("event"))
    assert seen == ["copy"] and raised.value.reason == "QUEUE_FULL" and len(scripted.service.attempts) == 1


@pytest.mark.parametrize(
    "failure",
    [
        invalid_fields([BadField("keyword", "must not be empty")], _R.ERROR_REASON_EMPTY_KEYWORD),
        ResourceExhausted(_R.ERROR_REASON_MESSAGE_TOO_LARGE, "too large", retry_after_s=0.05),
    ],
    ids=["invalid-argument", "resource-exhausted-without-queue-full"],
)
async def test_other_errors_are_not_retried(scripted: Scripted, failure: ServiceError) -> None:
    scripted.expect(failure, None)
    async with AsyncAdGenClient(scripted.target, timeout=30) as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad("딸기")
    assert raised.value.code == failure.code and len(scripted.service.attempts) == 1


def test_a_policy_needs_at_least_the_first_attempt() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


async def test_max_retries_on_the_constructor_sets_the_attempts_and_zero_disables(scripted: Scripted) -> None:
    scripted.expect(*[queue_full(0.05)] * 4)
    async with AsyncAdGenClient(scripted.target, timeout=30, max_retries=1) as client:
        with pytest.raises(AdGenError):
            await client.create_ad("딸기")
    assert len(scripted.service.attempts) == 2
    scripted.expect(queue_full(0.05), None)
    with AdGenClient(scripted.target, timeout=30, max_retries=0) as blocking, pytest.raises(AdGenError):
        await asyncio.to_thread(blocking.create_ad, "딸기")
    assert len(scripted.service.attempts) == 1


async def test_the_waits_between_attempts_stop_at_the_total_wait(scripted: Scripted) -> None:
    scripted.expect(*[queue_full(0.2)] * 5)
    async with AsyncAdGenClient(scripted.target, timeout=30, max_retries=5, max_retry_wait_s=0.5) as client:
        with pytest.raises(AdGenError):
            await client.create_ad("딸기")
    # 0.2s plus up to 10% jitter fits twice in 0.5s, not three times.
    assert len(scripted.service.attempts) == 3


def test_negative_retry_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy.with_max_retries(-1)
    with pytest.raises(ValueError, match="max_total_wait_s"):
        RetryPolicy(max_total_wait_s=-1)
    assert RetryPolicy.with_max_retries(0).enabled is False
