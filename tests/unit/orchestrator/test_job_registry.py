"""The job registry's byte budget: a running total of the results it keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adgen_orchestrator.idempotency import JobRegistry


async def _events(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_the_byte_budget_forgets_the_results_of_expired_ids() -> None:
    now = [0.0]
    registry: JobRegistry[str] = JobRegistry(
        window_s=60, max_entries=10, max_bytes=10, size_of=len, clock=lambda: now[0]
    )
    first = registry.job_for("a", b"x", lambda: _events("123456"))
    [_ async for _ in first.follow()]
    now[0] = 30.0
    second = registry.job_for("b", b"x", lambda: _events("abcdef"))
    [_ async for _ in second.follow()]
    now[0] = 61.0
    registry.job_for("c", b"x", lambda: _events("z"))  # "a" expired, so only 6 bytes are held
    assert registry.job_for("b", b"x", lambda: _events("new")) is second
    assert len(registry) == 2


async def test_the_byte_budget_counts_only_results_that_finished_well() -> None:
    async def failing() -> AsyncIterator[str]:
        yield "0123456789abcdef"
        raise RuntimeError("downstream failed")

    registry: JobRegistry[str] = JobRegistry(window_s=60, max_entries=10, max_bytes=10, size_of=len)
    kept = registry.job_for("a", b"x", lambda: _events("123456"))
    [_ async for _ in kept.follow()]
    failed = registry.job_for("b", b"x", failing)
    with pytest.raises(RuntimeError):
        [_ async for _ in failed.follow()]
    registry.job_for("c", b"x", lambda: _events("z"))  # the failed 16 bytes are not held
    assert registry.job_for("a", b"x", lambda: _events("new")) is kept
