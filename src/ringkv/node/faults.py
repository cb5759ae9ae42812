"""Fault injection for tests and the chaos suite (`fault_injection = true` only).

`RINGKV.FAULT PARTITION n2 n3` makes this node unable to talk to n2 and n3 in both directions:
its calls to them fail at once as if refused ("partitioned by fault injection"), and their
requests to it are answered with an error, which their coordinators count as a failed replica.
Run it on every node of one side (the chaos suite does) for a symmetric partition.
`RINGKV.FAULT HEAL` ends it. `RINGKV.FAULT CLOCK_SKEW ms` sets this node's clock `ms` off
(negative: behind), as a node with a wrong clock: everything that reads the node's clock sees
it (ringkv/clock.py), the hybrid logical clock, TTL expiry, the failure detector and the hint
window among them. `RINGKV.FAULT BATCH_HOLD` stops every atomic batch this node coordinates
through the batch log right after it is logged (here and on its partner) and before any of its
keys is written, until `HEAL`: the moment a coordinator's crash is worst for the batch (tests
kill the node then and watch the replay finish it; docs/atomic-batches.md).

A node with `fault_injection = false` (the default) refuses every RINGKV.FAULT command.

`emulated_wan_delay_ms` (a setting, not a command: `ringkv cluster up --dcs 2 --wan-delay-ms
40`) makes datacenters on one machine as far apart as a WAN: `WanTransport` holds every
message to or from a node of another datacenter that long each way (docs/multi-dc.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ringkv.clock import Clock
from ringkv.errors import AdminRequestError, PeerUnavailableError, RingkvError
from ringkv.net.rpc import NOT_HANDLED
from ringkv.net.transport import Transport
from ringkv.node.messages import ReplicaPut, ReplicaPutMany, ReplicaPutRelay

_REPLICA_WRITES = (ReplicaPut, ReplicaPutMany, ReplicaPutRelay)

PARTITIONED = "partitioned by fault injection"


class FaultState:
    """What the faults injected into one node are right now."""

    def __init__(self, clock: Clock) -> None:
        self.blocked: set[str] = set()
        self.clock = clock
        self.hold_batches = False  # BATCH_HOLD: logged atomic batches wait in batch_gate

    async def batch_gate(self) -> None:
        """Where a logged atomic batch waits, between its logging and its first write, while
        BATCH_HOLD is on."""
        while self.hold_batches:
            await asyncio.sleep(0.05)

    def blocks(self, peer: str) -> bool:
        return peer in self.blocked

    def apply(self, argv: list[bytes]) -> str:
        """RINGKV.FAULT PARTITION node... | HEAL | CLOCK_SKEW ms; what it did, as a line."""
        what = argv[0].lower() if argv else b""
        if what == b"partition":
            self.blocked |= {a.decode() for a in argv[1:]}
            return f"blocked {','.join(sorted(self.blocked))}"
        if what == b"heal" and len(argv) == 1:
            self.blocked.clear()
            self.hold_batches = False
            return "healed"
        if what == b"batch_hold" and len(argv) == 1:
            self.hold_batches = True
            return "holding logged atomic batches before their writes"
        if what == b"clock_skew" and len(argv) == 2:
            try:
                skew = int(argv[1])
            except ValueError:
                raise AdminRequestError(f"CLOCK_SKEW takes milliseconds, got {argv[1][:32]!r}") from None
            self.clock.skew_ms = skew
            return f"clock skew {skew} ms"
        raise AdminRequestError("expected PARTITION node..., HEAL, CLOCK_SKEW ms or BATCH_HOLD")


class _Wrapping(Transport):
    """A transport in front of another: what it does not change goes straight through."""

    def __init__(self, inner: Transport):
        self.inner = inner
        self.node_id = inner.node_id

    def set_peer_address(self, node_id: str, host: str, port: int) -> None:
        self.inner.set_peer_address(node_id, host, port)

    @property
    def address(self):
        return self.inner.address

    def handshake_stats(self) -> dict[str, int]:
        return self.inner.handshake_stats()

    async def close(self) -> None:
        await self.inner.close()


class FaultyTransport(_Wrapping):
    """A transport that refuses calls to the peers a FaultState blocks."""

    def __init__(self, inner: Transport, faults: FaultState):
        super().__init__(inner)
        self.faults = faults

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

    def start_call(self, peer: str, body: Any, timeout_ms: float, on_done=None):
        if self.faults.blocks(peer):
            return None  # the caller falls back to call(), which refuses
        return self.inner.start_call(peer, body, timeout_ms, on_done)




class WanTransport(_Wrapping):
    """A transport that delays what it exchanges with nodes of other datacenters by
    `delay_ms` each way: a call waits before it is sent, and a request from such a node waits
    before it is handled, so a round trip between datacenters takes 2 x delay_ms more."""

    def __init__(self, inner: Transport, delay_ms: float, far: Callable[[str], bool]):
        super().__init__(inner)
        self._delay_s = delay_ms / 1000
        self._far = far  # far(peer): whether the peer is in another datacenter
        self.far_writes = 0  # replica writes sent to nodes of other datacenters (INFO datacenters)

    async def start(self, handler, fast_handler=None, before_reply=None) -> None:
        far, delay = self._far, self._delay_s

        async def delayed(peer: str, body: Any) -> Any:
            if far(peer):
                await asyncio.sleep(delay)
            return await handler(peer, body)

        def near_now(peer: str, body: Any) -> Any:
            if far(peer) or fast_handler is None:
                return NOT_HANDLED  # the async handler waits first
            return fast_handler(peer, body)

        await self.inner.start(delayed, near_now, before_reply)

    async def call(self, peer: str, body: Any, timeout_ms: float) -> Any:
        if self._far(peer):
            if type(body) in _REPLICA_WRITES:
                self.far_writes += 1
            await asyncio.sleep(self._delay_s)
        return await self.inner.call(peer, body, timeout_ms)

    def start_call(self, peer: str, body: Any, timeout_ms: float, on_done=None):
        if self._far(peer):
            return None  # the caller falls back to call(), which waits and counts it
        return self.inner.start_call(peer, body, timeout_ms, on_done)
