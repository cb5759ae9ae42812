"""Virtual time: an event queue ordered by (time, sequence number).

Nothing here reads a clock. `now_ms` moves only when an event is taken off the queue (or when
the caller advances it to a time with nothing due), so a run takes as long as its CPU work and
its outcome depends on nothing but the order of the events. Two events due at the same time
run in the order they were scheduled: the sequence number breaks the tie, so the heap never
compares the actions themselves.

Bounded: at most `max_pending` events wait at once (a run that schedules without end is a bug
of the scenario, and should fail loudly rather than eat the machine's memory).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from ringkv.errors import LimitError

DEFAULT_MAX_PENDING_EVENTS = 5_000_000


class EventQueue:
    """Actions due at virtual times. Not thread-safe; one simulation owns it."""

    __slots__ = ("_heap", "_seq", "max_pending", "now_ms", "processed")

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING_EVENTS):
        self._heap: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self._seq = 0
        self.max_pending = max_pending
        self.now_ms = 0.0
        self.processed = 0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, at_ms: float, action: Callable[..., Any], *args: Any) -> None:
        """Run `action(*args)` at virtual time `at_ms`.

        REQUIRES: at_ms >= now_ms (the past cannot be changed) and finite.
        """
        if not (math.isfinite(at_ms) and at_ms >= self.now_ms):
            raise ValueError(f"cannot schedule at {at_ms} ms: now is {self.now_ms} ms")
        if len(self._heap) >= self.max_pending:
            raise LimitError(
                f"event queue holds at most max_pending={self.max_pending} events "
                f"(at {self.now_ms:.0f} ms virtual)"
            )
        heapq.heappush(self._heap, (at_ms, self._seq, action, args))
        self._seq += 1

    def next_time_ms(self) -> float:
        """When the next event is due; inf if none is."""
        return self._heap[0][0] if self._heap else math.inf

    def run_until(self, until_ms: float) -> None:
        """Run every event due at or before `until_ms`, in order, then set now to `until_ms`.
        Events scheduled meanwhile run too if they are due in time."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= until_ms:
            at_ms, _, action, args = pop(heap)
            self.now_ms = at_ms
            self.processed += 1
            action(*args)
        if until_ms > self.now_ms:
            self.now_ms = until_ms
