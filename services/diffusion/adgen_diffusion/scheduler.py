"""Swap-aware job ordering: run waiting jobs for the resident model before switching, with an aging bound."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Ticket:
    """A waiting job as the scheduler sees it. `model_id` None means "any model" (e.g. an unload)."""

    model_id: str | None
    priority: int = 0
    steps: int = 0
    payload: Any = None
    # Set by the queue on push: arrivals are ordered within one queue.
    arrival: int = 0
    overtaken: int = 0


class SwapAwareQueue:
    """Picks the next job: aged jobs first, then the highest priority, preferring the resident model.

    A job that has been overtaken `max_overtakes` times by later arrivals runs next, so affinity can
    delay a job by at most that many others. `max_overtakes=0` is plain FIFO (priority ignored).
    """

    def __init__(self, max_overtakes: int) -> None:
        self.max_overtakes = max_overtakes
        self._waiting: list[Ticket] = []
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._waiting)

    def push(self, ticket: Ticket) -> None:
        ticket.arrival = next(self._arrivals)
        self._waiting.append(ticket)

    def remove(self, ticket: Ticket) -> bool:
        """Drops a waiting ticket; False when it already left the queue."""
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            return True
        return False

    def waiting(self) -> list[Ticket]:
        """The waiting tickets in arrival order."""
        return sorted(self._waiting, key=lambda t: t.arrival)

    def pop_next(self, resident_model: str | None) -> Ticket | None:
        chosen = _choose(self._waiting, resident_model, self.max_overtakes)
        if chosen is None:
            return None
        self.take(chosen)
        return chosen

    def take(self, chosen: Ticket) -> None:
        """Removes a waiting ticket to run it now; every earlier arrival it passes counts one more overtake."""
        self._waiting.remove(chosen)
        for ticket in self._waiting:
            if ticket.arrival < chosen.arrival:
                ticket.overtaken += 1

    def predicted_order(self, resident_model: str | None) -> list[Ticket]:
        """The order the waiting jobs would run in if nothing else arrived."""
        shadow = [Ticket(t.model_id, t.priority, t.steps, t, t.arrival, t.overtaken) for t in self._waiting]
        order: list[Ticket] = []
        model = resident_model
        while shadow:
            chosen = _choose(shadow, model, self.max_overtakes)
            assert chosen is not None
            shadow.remove(chosen)
            for ticket in shadow:
                if ticket.arrival < chosen.arrival:
                    ticket.overtaken += 1
            order.append(chosen.payload)
            model = chosen.model_id or model
        return order


def _choose(waiting: list[Ticket], resident_model: str | None, max_overtakes: int) -> Ticket | None:
    if not waiting:
        return None
    aged = [t for t in waiting if t.overtaken >= max_overtakes]
    if aged:
        return min(aged, key=lambda t: t.arrival)
    top = max(t.priority for t in waiting)
    candidates = [t for t in waiting if t.priority == top]
    resident = [t for t in candidates if t.model_id in (resident_model, None)]
    return min(resident or candidates, key=lambda t: t.arrival)
