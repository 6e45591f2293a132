"""Shared jobs keyed by request id: a repeated request joins or replays the first one's work.

A job runs as its own task and records its events; every caller follows that record, so
a duplicate that arrives while the job runs sees the same events live, and one that
arrives later gets the final event only (what a replay needs, without keeping every
image twice). A failed or abandoned job is forgotten, so a retry runs afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

_LOGGER = logging.getLogger(__name__)

E = TypeVar("E")


class SharedJob(Generic[E]):
    """One run of an event stream that any number of callers can follow.

    The run is cancelled when its last follower leaves before it finishes, so a GPU job
    nobody waits for does not keep running.
    """

    def __init__(
        self,
        events: AsyncIterator[E],
        on_failure: Callable[[], None] = lambda: None,
        on_success: Callable[[E], None] = lambda final: None,
    ) -> None:
        self._events: list[E] = []
        self._final: E | None = None
        self._error: BaseException | None = None
        self._finished = False
        self._changed = asyncio.Event()
        self._followers = 0
        self._on_failure = on_failure
        self._on_success = on_success
        self._task = asyncio.create_task(self._run(events))

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def final(self) -> E | None:
        """The last event of a job that finished well (what replays send); None otherwise."""
        return self._final if self._finished and self._error is None else None

    async def follow(self) -> AsyncGenerator[E]:
        """The job's events from the start while it runs; only the final event once it has finished."""
        self._followers += 1
        try:
            if self._finished and self._error is None and self._final is not None:
                yield self._final
                return
            index = 0
            while True:
                while index < len(self._events):
                    index += 1
                    yield self._events[index - 1]
                if self._finished:
                    if self._error is not None:
                        raise self._error
                    return
                changed = self._changed
                await changed.wait()
        finally:
            self._followers -= 1
            if self._followers == 0:
                self._release()

    async def _run(self, events: AsyncIterator[E]) -> None:
        try:
            async for event in events:
                self._events.append(event)
                self._final = event
                self._notify()
        except BaseException as error:  # Followers re-raise it; cancellation included.
            self._error = error
            self._on_failure()
        else:
            if self._final is not None:
                self._on_success(self._final)
        finally:
            self._finished = True
            self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _release(self) -> None:
        if not self._finished:
            _LOGGER.info("every caller left; cancelling the job")
            self._on_failure()  # At once: a caller arriving now must not join a job being cancelled.
            self._task.cancel()
        else:
            self._events = []  # Replays need only the final event.


class RequestIdReusedError(Exception):
    """A request id already names a different request."""


@dataclass
class _Entry(Generic[E]):
    job: SharedJob[E]
    fingerprint: bytes
    created: float
    size: int = 0  # Bytes of its final event, counted in the registry's total once it has one.


class JobRegistry(Generic[E]):
    """Jobs by request id for `window_s` seconds; the least recently used go first once there
    are more than `max_entries`, or their final events hold more than `max_bytes`."""

    # Not a cachetools TTLCache: it has one size budget where this has two (entries and bytes), it
    # sizes an item once on insert while a result's size is known only when its job finishes, and it
    # refuses an item larger than the budget where this keeps the newest result whatever its size.

    def __init__(
        self,
        window_s: float,
        max_entries: int,
        *,
        max_bytes: int | None = None,
        size_of: Callable[[E], int] = lambda event: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[E]] = OrderedDict()
        self._bytes = 0  # A running total, so an insert need not re-measure every result.

    def job_for(self, key: str, fingerprint: bytes, start: Callable[[], AsyncIterator[E]]) -> SharedJob[E]:
        """The job already running or done under `key`, or a new one started from `start()`.

        Raises RequestIdReusedError when `key` is taken by a request with another fingerprint.
        """
        if not key or self._window_s <= 0:
            return SharedJob(start())
        self._expire()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise RequestIdReusedError(key)
            self._entries.move_to_end(key)
            _LOGGER.info("request id %s seen before; %s", key, "replaying" if entry.job.finished else "joining")
            return entry.job

        def forget() -> None:
            current = self._entries.get(key)
            if current is not None and current.job is job:
                self._remove(key)

        def count(final: E) -> None:
            current = self._entries.get(key)
            if current is not None and current.job is job:
                current.size = self._size_of(final)
                self._bytes += current.size

        job: SharedJob[E] = SharedJob(start(), on_failure=forget, on_success=count)
        self._entries[key] = _Entry(job, fingerprint, self._clock())
        while len(self._entries) > self._max_entries or self._over_max_bytes():
            self._remove(next(iter(self._entries)))
        return job

    def _over_max_bytes(self) -> bool:
        return self._max_bytes is not None and len(self._entries) > 1 and self._bytes > self._max_bytes

    def _remove(self, key: str) -> None:
        self._bytes -= self._entries.pop(key).size

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        oldest_kept = self._clock() - self._window_s
        for key in [key for key, entry in self._entries.items() if entry.created < oldest_kept]:
            self._remove(key)
