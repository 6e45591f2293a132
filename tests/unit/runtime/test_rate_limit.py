"""Token buckets per caller: bursts, refill, the retry delay they report, and bounded memory."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from adgen_runtime.rate_limit import RateLimited, TokenBuckets


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_caller_gets_its_burst_then_is_limited_with_the_delay_until_the_next_token() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(2.0, 3, clock=clock)
    for _ in range(3):
        buckets.take("alice")
    with pytest.raises(RateLimited) as limited:
        buckets.take("alice")
    assert limited.value.retry_after_s == pytest.approx(0.5)
    clock.now += 0.2  # 0.4 of a token back: 0.6 to go at 2 per second.
    with pytest.raises(RateLimited) as limited:
        buckets.take("alice")
    assert limited.value.retry_after_s == pytest.approx(0.3)
    clock.now += 0.3
    buckets.take("alice")


def test_callers_have_buckets_of_their_own() -> None:
    buckets = TokenBuckets(1.0, 1, clock=FakeClock())
    buckets.take("alice")
    buckets.take("bob")
    with pytest.raises(RateLimited):
        buckets.take("alice")


def test_a_bucket_refills_no_higher_than_its_burst() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(10.0, 2, clock=clock)
    buckets.take("alice")
    clock.now += 3600
    buckets.take("alice")
    buckets.take("alice")
    with pytest.raises(RateLimited):
        buckets.take("alice")


def test_memory_is_bounded_by_forgetting_the_least_recently_seen_caller() -> None:
    buckets = TokenBuckets(1.0, 1, max_callers=3, clock=FakeClock())
    for name in ("a", "b", "c", "d", "e"):
        buckets.take(name)
    assert len(buckets) == 3


def test_the_refusal_is_resource_exhausted_rate_limited_with_retry_info() -> None:
    status = status_pb2.Status.FromString(
        dict(RateLimited(0.25, 2.0, 3).to_status().trailing_metadata)["grpc-status-details-bin"]
    )
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and info.reason == "RATE_LIMITED"
    assert status.details[1].Unpack(retry) and retry.retry_delay.ToNanoseconds() == 250_000_000
