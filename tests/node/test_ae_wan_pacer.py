"""Anti-entropy across datacenters is paced (anti_entropy_wan_bytes_per_s): a comparison that
moves more than the bucket holds waits for the rate, and one within it does not wait."""

from __future__ import annotations

import asyncio
import time

from ringkv.node.antientropy import WanPacer


def test_spending_within_the_burst_does_not_wait_and_beyond_it_waits_for_the_rate():
    async def run() -> tuple[float, float]:
        pacer = WanPacer(200_000, burst_bytes=20_000)
        started = time.monotonic()
        await pacer.spend(15_000)
        quick = time.monotonic() - started
        started = time.monotonic()
        for _ in range(10):
            await pacer.spend(10_000)  # 100 kB more than the 5 kB left: half a second at 200 kB/s
        return quick, time.monotonic() - started

    quick, paced = asyncio.run(run())
    assert quick < 0.05
    assert 0.4 <= paced < 2.0, paced


def test_the_pacer_records_how_long_it_held_comparisons_back():
    async def run() -> WanPacer:
        pacer = WanPacer(1_000_000, burst_bytes=1_000)
        await pacer.spend(101_000)
        return pacer

    pacer = asyncio.run(run())
    assert 0.09 <= pacer.waited_s <= 0.11
