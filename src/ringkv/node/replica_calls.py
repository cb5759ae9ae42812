"""Calls from this node to its peers, failing at once for a peer believed down.

Every request a coordinator makes of a replica goes through `ReplicaCalls.send`: a peer the
failure detector believes down fails immediately with `PeerUnavailableError` (it may be
partitioned away rather than refusing connections, and waiting out a timeout would hold the
client for nothing; stand-ins and hints take it from there). Otherwise the transport's fast
path starts the call without a task, or, while connecting, a task runs the full path. The
reply (or the failure) arrives on the returned future. Each call's duration and failure
is counted for its peer (`figures`, node/latency.py, exported by /metrics).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import Any

from ringkv.errors import PeerUnavailableError, RemoteError, RpcTimeoutError
from ringkv.net.transport import Transport
from ringkv.node.latency import CallFigures, PeerFigures


def failure_reason(exc: BaseException) -> str:
    """A replica's failure as QuorumError lists it after the node id."""
    if isinstance(exc, RpcTimeoutError):
        return f"timed out after {exc.timeout_ms:g} ms"
    if isinstance(exc, PeerUnavailableError):
        return f"unavailable ({exc.reason})"
    if isinstance(exc, RemoteError):
        return f"failed: {exc.remote_message}"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return f"failed: {exc}"


def outcome(fut: asyncio.Future) -> tuple[bool, Any]:
    """(True, reply) or (False, reason) of a finished call."""
    if fut.cancelled():
        return False, "cancelled"
    exc = fut.exception()
    if exc is None:
        return True, fut.result()
    return False, failure_reason(exc)


class ReplicaCalls:
    def __init__(self, node_id: str, transport: Transport, liveness: Liveness, timeout_ms: float):
        self.node_id = node_id
        self.transport = transport
        self.liveness = liveness
        self.timeout_ms = timeout_ms
        self.figures = CallFigures()  # per-peer calls; quorum latencies (the read and write paths')

    def is_up(self, node: str) -> bool:
        return self.liveness.is_up(node)

    @property
    def up(self) -> Callable[[str], bool]:
        """`is_up` as the failure detector answers it, with no frame of ours (for plans, which
        ask it per replica)."""
        return self.liveness.is_up

    def send(self, node: str, body: Any, timeout_ms: float | None = None, *, known_up: bool = False,
             on_done: Callable[[asyncio.Future], None] | None = None) -> asyncio.Future:
        """Start a call to `node`; its future holds the reply or the error, and `on_done(future)`
        is called once it is done (never before `send` returns). A node held down fails at
        once, unless the caller asked the failure detector this moment (`known_up`: a plan
        that just did, so that it is not asked twice per send)."""
        timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        if not known_up and not self.liveness.is_up(node):
            self.figures.peer(node).failures["unavailable"] += 1
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(PeerUnavailableError(node, self.liveness.why_down(node)))
            if on_done is not None:
                fut.add_done_callback(on_done)
            return fut
        timed = _Timed(self.figures.peers.get(node) or self.figures.peer(node), on_done)
        # The loop is looked up only where it is needed: asyncio.get_running_loop() is a
        # getpid() system call (CPython checks for a fork), twice per request otherwise.
        fut = self.transport.start_call(node, body, timeout, timed)
        if fut is None:  # connecting, or no free slot: the full path, in a task
            fut = asyncio.get_running_loop().create_task(self.transport.call(node, body, timeout))
            fut.add_done_callback(timed)
        return fut

    async def call(self, node: str, body: Any, timeout_ms: float | None = None) -> Any:
        """A call awaited in a task of its own, whatever the failure detector says: the RESP
        adapter drives commands outside any task, and the RPC client's connect path needs one
        (asyncio.timeout)."""
        timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        return await asyncio.get_running_loop().create_task(self.transport.call(node, body, timeout))


class _Timed:
    """A call's done callback: its duration and, when it failed, the reason, for its peer;
    then the caller's `then`. A class with slots rather than a closure: one small object per
    call, no cell objects."""

    __slots__ = ("peer", "started", "then")

    def __init__(self, peer: PeerFigures, then: Callable[[asyncio.Future], None] | None):
        self.peer = peer
        self.then = then
        self.started = perf_counter()

    def __call__(self, fut: asyncio.Future) -> None:
        latency = self.peer.latency  # Histogram.observe, inlined: once per replica call
        seconds = perf_counter() - self.started
        latency.counts[bisect_left(latency.bounds_s, seconds)] += 1
        latency.sum_s += seconds
        # A cancelled call is one the caller gave up on (the answer was no longer needed): not
        # the peer's failure.
        if not fut.cancelled():
            exc = fut.exception()
            if exc is not None:
                reason = ("timeout" if isinstance(exc, RpcTimeoutError)
                          else "unavailable" if isinstance(exc, PeerUnavailableError) else "error")
                self.peer.failures[reason] += 1
        if self.then is not None:
            self.then(fut)


class Liveness:
    """Whether this node believes a peer up: the gossiper's failure detectors once gossip runs
    (node/gossiper.py plugs them in with `watch`), every peer up before that."""

    def __init__(self) -> None:
        self._is_up: Callable[[str], bool] | None = None
        self._phi: Callable[[str], float] | None = None

    def watch(self, is_up: Callable[[str], bool], phi: Callable[[str], float]) -> None:
        self._is_up = is_up
        self._phi = phi
        self.is_up = is_up  # type: ignore[method-assign]  # asked per replica of every request: no frame of ours

    def is_up(self, node: str) -> bool:
        return self._is_up is None or self._is_up(node)

    def why_down(self, node: str) -> str:
        return "down (failure detector)" if self._phi is None else f"down (phi {self._phi(node):.1f})"
