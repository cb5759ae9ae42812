"""Fault injection for tests and the chaos suite (`fault_injection = true` only).

`RINGKV.FAULT PARTITION n2 n3` makes this node unable to talk to n2 and n3 in both directions:
its calls to them fail at once as if refused ("partitioned by fault injection"), and their
requests to it are answered with an error, which their coordinators count as a failed replica.
Run it on every node of one side (the chaos suite does) for a symmetric partition.
`RINGKV.FAULT HEAL` ends it. `RINGKV.FAULT CLOCK_SKEW ms` shifts the physical clock this
node's hybrid logical clock reads by `ms` (negative: behind), as a node with a wrong clock.

A node with `fault_injection = false` (the default) refuses every RINGKV.FAULT command.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ringkv.errors import PeerUnavailableError, RingkvError
from ringkv.net.rpc import NOT_HANDLED
from ringkv.net.transport import Transport

PARTITIONED = "partitioned by fault injection"


class FaultState:
    """What the faults injected into one node are right now."""

    def __init__(self) -> None:
        self.blocked: set[str] = set()

    def blocks(self, peer: str) -> bool:
        return peer in self.blocked


class FaultyTransport(Transport):
    """A transport that refuses calls to the peers a FaultState blocks."""

    def __init__(self, inner: Transport, faults: FaultState):
        self.inner = inner
        self.faults = faults
        self.node_id = inner.node_id

    async def start(self, handler, fast_handler=None, before_reply=None) -> None:
        faults = self.faults

        async def guarded(peer: str, body: Any) -> Any:
            if faults.blocks(peer):
                raise RingkvError(PARTITIONED)
            return await handler(peer, body)

        def guarded_now(peer: str, body: Any) -> Any:
            if faults.blocks(peer):
                return NOT_HANDLED  # the async handler refuses it
            return fast_handler(peer, body) if fast_handler is not None else NOT_HANDLED

        await self.inner.start(guarded, guarded_now, before_reply)

    async def call(self, peer: str, body: Any, timeout_ms: float) -> Any:
        if self.faults.blocks(peer):
            await asyncio.sleep(0)
            raise PeerUnavailableError(peer, PARTITIONED)
        return await self.inner.call(peer, body, timeout_ms)

    def start_call(self, peer: str, body: Any, timeout_ms: float):
        if self.faults.blocks(peer):
            return None  # the caller falls back to call(), which refuses
        return self.inner.start_call(peer, body, timeout_ms)

    def set_peer_address(self, node_id: str, host: str, port: int) -> None:
        self.inner.set_peer_address(node_id, host, port)

    @property
    def address(self):
        return self.inner.address

    async def close(self) -> None:
        await self.inner.close()


class SkewedClock:
    """A hybrid logical clock reading a physical clock `skew_ms` off (CLOCK_SKEW)."""

    def __init__(self, inner, skew_ms: int = 0):
        self.inner = inner
        self.skew_ms = skew_ms

    def now(self, physical_ms: int) -> int:
        return self.inner.now(physical_ms + self.skew_ms)

    def observe(self, timestamp: int, physical_ms: int) -> int:
        return self.inner.observe(timestamp, physical_ms + self.skew_ms)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
