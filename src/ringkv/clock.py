"""The node's wall clock: milliseconds since the Unix epoch, plus a skew.

Everything in a node that asks what time it is (TTL expiry, the hybrid logical clock, the
failure detector, the hint window, tombstone collection) reads one `Clock`, handed to it at
construction. Fault injection (RINGKV.FAULT CLOCK_SKEW, the chaos suite's skew nemesis) moves
`skew_ms`, so a skewed node is skewed everywhere at once, as a node with a wrong clock is.
Durations (timeouts, rate limits) are measured with the monotonic clock and are not skewed.
"""

from __future__ import annotations

import time


class Clock:
    __slots__ = ("skew_ms",)

    def __init__(self, skew_ms: int = 0) -> None:
        self.skew_ms = skew_ms

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.skew_ms


SYSTEM_CLOCK = Clock()  # for callers with no node to ask (tests, tools); never skewed
