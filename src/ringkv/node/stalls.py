"""How late the event loop runs: a callback scheduled every STALL_PROBE_MS, and its delay.

A node serves everything from one loop, so a stall is latency for every client at once; INFO
and /metrics report the longest stalls since start.
"""

from __future__ import annotations

import asyncio

STALL_PROBE_MS = 50
MAX_LONGEST_STALLS = 8


class StallMonitor:
    def __init__(self) -> None:
        self.max_stall_ms = 0.0
        self.recent: list[float] = []  # the longest stalls, ms, longest first
        self.samples = 0
        self.over_5ms = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = STALL_PROBE_MS / 1000
        while True:
            start = loop.time()
            await asyncio.sleep(interval)
            self.observe((loop.time() - start - interval) * 1000)

    def observe(self, late_ms: float) -> None:
        self.samples += 1
        if late_ms > 5:
            self.over_5ms += 1
        if late_ms > self.max_stall_ms:
            self.max_stall_ms = late_ms
        if len(self.recent) < MAX_LONGEST_STALLS or late_ms > self.recent[-1]:
            self.recent.append(late_ms)
            self.recent.sort(reverse=True)
            del self.recent[MAX_LONGEST_STALLS:]

    def info(self) -> dict:
        return {
            "loop_stall_max_ms": round(self.max_stall_ms, 2),
            "loop_stalls_over_5ms": self.over_5ms,
            "loop_stall_samples": self.samples,
            "loop_stall_longest_ms": ",".join(f"{x:.1f}" for x in self.recent),
        }
