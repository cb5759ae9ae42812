"""The Transport contract, held by TcpTransport and MemoryTransport alike, and the fault hooks
of the in-memory network the simulator will drive."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest

from ringkv.errors import (
    ClosedError,
    FrameTooLargeError,
    PeerUnavailableError,
    RemoteError,
    RpcTimeoutError,
)
from ringkv.net import (
    MemoryNetwork,
    MemoryTransport,
    MessageCodec,
    RpcLimits,
    TcpTransport,
    Transport,
)
from ringkv.net.envelope import ErrorCode
from ringkv.testing.wait import wait_until_async

pytestmark = pytest.mark.asyncio

CLUSTER = "blue"


class Put(msgspec.Struct, tag=True):
    key: bytes
    value: bytes


class Ack(msgspec.Struct, tag=True):
    node: str
    seen_from: str


class Crash(msgspec.Struct, tag=True):
    pass


class NotRegistered(msgspec.Struct, tag=True):
    pass


CODEC = MessageCodec([Put, Ack, Crash])


class Replica:
    """Stands in for a node: stores what it is sent and acknowledges it."""

    def __init__(self, node_id: str):
        self.node_id = node_id
        self.stored: dict[bytes, bytes] = {}
        self.bodies: list[Any] = []

    async def handle(self, peer: str, body: Any) -> Any:
        self.bodies.append(body)
        if isinstance(body, Crash):
            raise RuntimeError("replica bug")
        self.stored[body.key] = body.value
        return Ack(self.node_id, peer)


@asynccontextmanager
async def tcp_cluster(node_ids: list[str]) -> AsyncIterator[dict[str, tuple[Transport, Replica]]]:
    limits = RpcLimits(max_frame_bytes=64 * 1024)
    nodes = {n: (TcpTransport(n, CLUSTER, CODEC, limits=limits), Replica(n)) for n in node_ids}
    for transport, replica in nodes.values():
        await transport.start(replica.handle)
    for transport, _ in nodes.values():
        for other, _ in nodes.values():
            transport.set_peer_address(other.node_id, *other.address)
    try:
        yield nodes
    finally:
        for transport, _ in nodes.values():
            await transport.close()


@asynccontextmanager
async def memory_cluster(
    node_ids: list[str], network: MemoryNetwork | None = None
) -> AsyncIterator[dict[str, tuple[Transport, Replica]]]:
    network = network or MemoryNetwork(CODEC, random.Random(1), max_frame_bytes=64 * 1024)
    nodes = {n: (network.transport(n), Replica(n)) for n in node_ids}
    for transport, replica in nodes.values():
        await transport.start(replica.handle)
    try:
        yield nodes
    finally:
        for transport, _ in nodes.values():
            await transport.close()
        await network.close()


CLUSTERS = {"tcp": tcp_cluster, "memory": memory_cluster}


# -- the contract, on both transports ------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CLUSTERS))
async def test_call_reaches_the_peers_handler_and_returns_its_reply(kind):
    async with CLUSTERS[kind](["a", "b"]) as nodes:
        a, _ = nodes["a"]
        _, replica_b = nodes["b"]
        sent = Put(b"k", b"v")
        reply = await a.call("b", sent, 1000)
        assert reply == Ack("b", "a")
        assert replica_b.stored == {b"k": b"v"}
        # The body crossed as bytes: the peer got an equal copy, never the caller's object.
        assert replica_b.bodies[0] == sent and replica_b.bodies[0] is not sent


@pytest.mark.parametrize("kind", sorted(CLUSTERS))
async def test_handler_failure_is_a_remote_error(kind):
    async with CLUSTERS[kind](["a", "b"]) as nodes:
        a, _ = nodes["a"]
        with pytest.raises(RemoteError) as caught:
            await a.call("b", Crash(), 1000)
        assert caught.value.code == ErrorCode.HANDLER_FAILED
        assert caught.value.peer == "b"
        assert "RuntimeError: replica bug" in str(caught.value)


@pytest.mark.parametrize("kind", sorted(CLUSTERS))
async def test_unknown_peer_is_unavailable(kind):
    async with CLUSTERS[kind](["a"]) as nodes:
        a, _ = nodes["a"]
        with pytest.raises(PeerUnavailableError):
            await a.call("nobody", Put(b"k", b"v"), 200)


@pytest.mark.parametrize("kind", sorted(CLUSTERS))
async def test_unregistered_body_type_is_a_programming_error(kind):
    async with CLUSTERS[kind](["a", "b"]) as nodes:
        a, _ = nodes["a"]
        with pytest.raises(TypeError, match="NotRegistered is not a registered message type"):
            await a.call("b", NotRegistered(), 200)


@pytest.mark.parametrize("kind", sorted(CLUSTERS))
async def test_body_over_the_frame_limit_is_refused_before_sending(kind):
    async with CLUSTERS[kind](["a", "b"]) as nodes:
        a, _ = nodes["a"]
        _, replica_b = nodes["b"]
        with pytest.raises(FrameTooLargeError, match="to b is over max_frame_bytes=65536"):
            await a.call("b", Put(b"k", b"x" * 70_000), 1000)
        assert replica_b.bodies == []


@pytest.mark.parametrize("kind", sorted(CLUSTERS))
async def test_calling_after_close_is_refused(kind):
    async with CLUSTERS[kind](["a", "b"]) as nodes:
        a, _ = nodes["a"]
        await a.close()
        with pytest.raises(ClosedError):
            await a.call("b", Put(b"k", b"v"), 200)


# -- the in-memory network's faults ----------------------------------------------------------


def network(seed: int = 1, **faults: Any) -> MemoryNetwork:
    return MemoryNetwork(CODEC, random.Random(seed), **faults)


async def test_dropped_messages_make_the_caller_time_out():
    async with memory_cluster(["a", "b"], network(drop_probability=1.0)) as nodes:
        a, _ = nodes["a"]
        with pytest.raises(RpcTimeoutError, match="b timed out after 50 ms"):
            await a.call("b", Put(b"k", b"v"), 50)


async def test_the_same_seed_drops_the_same_messages():
    async def lost_calls(seed: int) -> list[int]:
        async with memory_cluster(["a", "b"], network(seed, drop_probability=0.3)) as nodes:
            a, _ = nodes["a"]
            outcomes = await asyncio.gather(
                *(a.call("b", Put(b"%d" % i, b"v"), 500) for i in range(60)),
                return_exceptions=True,
            )
            return [i for i, o in enumerate(outcomes) if isinstance(o, RpcTimeoutError)]

    first = await lost_calls(seed=5)
    assert first == await lost_calls(seed=5)
    # Request and reply are dropped independently: about 1 - 0.7**2 of calls fail.
    assert 10 <= len(first) <= 45


async def test_a_lost_reply_still_ran_the_request():
    # The ambiguity a coordinator must live with: a timeout does not mean "not applied".
    net = network(delay_ms=40)
    async with memory_cluster(["a", "b"], net) as nodes:
        a, _ = nodes["a"]
        _, replica_b = nodes["b"]
        with pytest.raises(RpcTimeoutError):
            await a.call("b", Put(b"k", b"v"), 60)  # the reply needs 80 ms in all
        await wait_until_async(lambda: replica_b.stored == {b"k": b"v"}, 10,
                               "the request whose reply was lost to run on b", interval_s=0.01)


async def test_partition_cuts_both_ways_until_healed():
    net = network()
    async with memory_cluster(["a", "b", "c"], net) as nodes:
        a, b, c = (nodes[n][0] for n in "abc")
        net.partition({"a"}, {"b", "c"})
        with pytest.raises(RpcTimeoutError):
            await a.call("b", Put(b"k", b"v"), 30)
        with pytest.raises(RpcTimeoutError):
            await c.call("a", Put(b"k", b"v"), 30)
        assert await b.call("c", Put(b"k", b"v"), 1000) == Ack("c", "b")  # same side
        assert not net.can_reach("b", "a")
        net.heal()
        assert await a.call("b", Put(b"k", b"v"), 1000) == Ack("b", "a")
        assert await c.call("a", Put(b"k", b"v"), 1000) == Ack("a", "c")


async def test_partition_that_starts_while_a_message_travels_loses_it():
    net = network(delay_ms=30)
    async with memory_cluster(["a", "b"], net) as nodes:
        a, _ = nodes["a"]
        call = asyncio.ensure_future(a.call("b", Put(b"k", b"v"), 150))
        # Sent, not arrived, however loaded the machine: the loop ran the send before this
        # timer, and its 30 ms delivery timer, due later, fires after this one.
        await asyncio.sleep(0.01)
        net.partition({"a"}, {"b"})
        with pytest.raises(RpcTimeoutError):
            await call
        await wait_until_async(lambda: net.messages_lost == 1, 10,
                               "the request cut off in flight to be counted lost", interval_s=0.01)


async def test_down_node_refuses_at_once_and_answers_again_when_up():
    net = network()
    async with memory_cluster(["a", "b"], net) as nodes:
        a, _ = nodes["a"]
        net.set_down("b")
        started = time.monotonic()
        with pytest.raises(PeerUnavailableError, match="b unavailable: connection refused"):
            await a.call("b", Put(b"k", b"v"), 30_000)
        assert time.monotonic() - started < 5  # refused, not waited out
        net.set_down("b", False)
        assert await a.call("b", Put(b"k", b"v"), 1000) == Ack("b", "a")


async def test_node_that_goes_down_mid_request_loses_the_connection():
    net = network(delay_ms=20)
    async with memory_cluster(["a", "b"], net) as nodes:
        a, _ = nodes["a"]
        call = asyncio.ensure_future(a.call("b", Put(b"k", b"v"), 1000))
        # Sent, not arrived (as in the partition test above: timers fire in deadline order).
        await asyncio.sleep(0.005)
        net.set_down("b")
        with pytest.raises(PeerUnavailableError, match="connection lost"):
            await call


async def test_delay_with_jitter_applies_each_way():
    net = network(delay_ms=20, delay_jitter_ms=10)
    async with memory_cluster(["a", "b"], net) as nodes:
        a, _ = nodes["a"]
        started = time.monotonic()
        await a.call("b", Put(b"k", b"v"), 30_000)
        elapsed_ms = (time.monotonic() - started) * 1000
        assert 40 <= elapsed_ms < 5_000  # at least 20 ms each way; the top is only a sanity bound


async def test_partition_sides_must_not_overlap():
    with pytest.raises(ValueError, match="both sides"):
        network().partition({"a", "b"}, {"b"})


async def test_node_id_is_registered_once_per_network():
    net = network()
    first = net.transport("a")
    assert net.transport("a") is first
    with pytest.raises(ValueError, match="already has a transport"):
        MemoryTransport("a", net)
