"""Rate limits per caller identity: a token bucket each, in bounded memory."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from adgen.type.v1 import error_reason_pb2
from adgen_runtime.errors import ResourceExhausted

# Callers remembered at once; the least recently seen are forgotten first (and start again with a full bucket).
MAX_TRACKED_CALLERS = 10_000


class RateLimited(ResourceExhausted):
    """RESOURCE_EXHAUSTED RATE_LIMITED, with RetryInfo: when the caller's bucket holds a token again."""

    def __init__(self, retry_after_s: float, rate_per_s: float, burst: int) -> None:
        super().__init__(
            error_reason_pb2.ERROR_REASON_RATE_LIMITED,
            f"Too many requests: this server takes {rate_per_s:g} per second from each caller "
            f"(bursts of {burst}); retry in {retry_after_s:.2f}s.",
            retry_after_s=retry_after_s,
            metadata={"rate_per_s": f"{rate_per_s:g}", "burst": str(burst)},
        )


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One bucket per caller identity, `burst` tokens deep, refilled at `rate_per_s`; a call takes one.

    Memory is bounded: past `max_callers` identities, the least recently seen one is forgotten.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        max_callers: int = MAX_TRACKED_CALLERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_callers = max_callers
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, identity: str) -> None:
        """Takes a token from `identity`'s bucket, or raises RateLimited saying when one will be there."""
        now = self._clock()
        bucket = self._buckets.get(identity)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[identity] = bucket
            if len(self._buckets) > self._max_callers:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(identity)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate_per_s)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        raise RateLimited((1.0 - bucket.tokens) / self.rate_per_s, self.rate_per_s, self.burst)
