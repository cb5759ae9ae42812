"""When a consensus command answers (node/consensus.py, `Proposer._chosen`): only once the
command's write level W of the key's replicas store the chosen record as data, so that a plain
read at R with R + W > N sees it. Found as a flaky test under load: a DELETE acknowledged at
QUORUM, then a QUORUM HEAD of the two replicas its commit had not reached yet answered 200.

Node n1 proposes; n2 and n3 are real acceptors on real engines; the stand-in transport answers
Prepare and Propose at once and holds every Commit until the test lets it through."""

from __future__ import annotations

import asyncio

from ringkv.clock import Clock
from ringkv.cluster.ring import Member, Ring
from ringkv.errors import PeerUnavailableError
from ringkv.node.assembly import CLUSTER_STATS
from ringkv.node.commands import IncrBy
from ringkv.node.consensus import Acceptor, AcceptorStore, Proposer
from ringkv.node.handoff import HintStore
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import PaxosCommit, PaxosPrepare, PaxosPropose
from ringkv.node.namespaces import Namespaces
from ringkv.node.placement import Placement
from ringkv.node.replica import Replica, storage_key
from ringkv.node.replica_calls import Liveness, ReplicaCalls
from ringkv.storage import Engine, Options
from ringkv.versioning.record import decode_record

NODES = ("n1", "n2", "n3")


class HeldCommits:
    """The transport to n2 and n3: their acceptors answer Prepare and Propose at once; each
    Commit waits in `held` until `deliver` or `fail` is called for it."""

    def __init__(self, acceptors: dict[str, Acceptor]):
        self.acceptors = acceptors
        self.held: list[tuple[str, PaxosCommit, asyncio.Future]] = []
        self.proposals: list[tuple[str, bool, bool]] = []  # (node, leased, accepted) of each Propose

    def start_call(self, node: str, body, timeout_ms: float, on_done=None) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if on_done is not None:
            fut.add_done_callback(on_done)
        acceptor = self.acceptors[node]
        if type(body) is PaxosCommit:
            self.held.append((node, body, fut))
        elif type(body) is PaxosPrepare:
            fut.set_result(acceptor.prepare(body.skey, tuple(body.ballot), body.keys)[0])
        elif type(body) is PaxosPropose:
            reply = acceptor.propose(body.skey, tuple(body.ballot), body.value, body.base)[0]
            self.proposals.append((node, body.base is not None, reply.ok))
            fut.set_result(reply)
        else:
            raise AssertionError(f"unexpected message {body!r}")
        return fut

    def deliver(self, node: str) -> None:
        for i, (to, body, fut) in enumerate(self.held):
            if to == node:
                del self.held[i]
                self.acceptors[node].commit(body.skey, tuple(body.ballot), body.record)
                fut.set_result(None)
                return
        raise AssertionError(f"no commit held for {node}")

    def fail(self, node: str) -> None:
        for i, (to, _, fut) in enumerate(self.held):
            if to == node:
                del self.held[i]
                fut.set_exception(PeerUnavailableError(node, "connection refused"))
                return
        raise AssertionError(f"no commit held for {node}")


class Three:
    def __init__(self, root, nodes: tuple[str, ...] = NODES):
        self.namespaces = Namespaces(len(nodes), "siblings")
        self.engines: list[Engine] = []
        self.stores: dict[str, LocalStore] = {}
        acceptors: dict[str, Acceptor] = {}
        closers = []
        for node in nodes:
            engine = Engine.open(str(root / node / "data"), Options())
            self.engines.append(engine)
            store = LocalStore(Replica(engine, f"{node}@x".encode()), Clock(), namespaces=self.namespaces)
            states = AcceptorStore(str(root / node))
            closers.append(states)
            self.stores[node] = store
            acceptors[node] = Acceptor(states, store)
        self.hints = HintStore(str(root / "n1"))
        closers.append(self.hints)
        self.closers = closers
        self.transport = HeldCommits(acceptors)
        ring = Ring([Member(n) for n in nodes], 64, len(nodes))
        calls = ReplicaCalls("n1", self.transport, Liveness(), 1000)
        self.proposer = Proposer("n1", b"n1@x", Placement("n1", ring, self.namespaces), calls, self.stores["n1"],
                                 acceptors["n1"], self.hints, Clock(), dict.fromkeys(CLUSTER_STATS, 0))

    def value_at(self, node: str, key: bytes) -> bytes | None:
        data = self.stores[node].engine.get(storage_key(b"", key))
        return None if data is None else decode_record(bytes(data)).siblings[0].value

    def close(self) -> None:
        for c in self.closers:
            c.close()
        for e in self.engines:
            e.close()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_command_at_quorum_answers_once_one_other_replica_stores_its_value(tmp_path):
    async def main():
        three = Three(tmp_path)
        try:
            incr = asyncio.ensure_future(three.proposer.run(b"", b"counter", IncrBy(5), w=2))
            await _settle()
            assert not incr.done()  # chosen and stored here, but no other replica holds it yet
            assert three.value_at("n1", b"counter") == b"5"
            assert {node for node, _, _ in three.transport.held} == {"n2", "n3"}
            three.transport.deliver("n3")
            assert await asyncio.wait_for(incr, 1) == 5
            assert three.value_at("n3", b"counter") == b"5"
            assert three.value_at("n2", b"counter") is None  # still on its way: W was met without it
        finally:
            three.close()

    asyncio.run(main())


def test_a_command_at_all_waits_for_every_replica_and_at_one_for_none(tmp_path):
    async def main():
        three = Three(tmp_path)
        try:
            at_all = asyncio.ensure_future(three.proposer.run(b"", b"a", IncrBy(1), w=3))
            await _settle()
            three.transport.deliver("n2")
            await _settle()
            assert not at_all.done()
            three.transport.deliver("n3")
            assert await asyncio.wait_for(at_all, 1) == 1

            at_one = three.proposer.run(b"", b"b", IncrBy(1), w=1)
            assert await asyncio.wait_for(at_one, 1) == 1
            assert len(three.transport.held) == 2  # its commits left, unanswered
        finally:
            three.close()

    asyncio.run(main())


def test_a_chosen_value_whose_commits_fail_is_answered_and_hinted(tmp_path):
    # The value is decided: failing the command would tell the client a lie. The replicas
    # that missed the commit get the record as a hint instead.
    async def main():
        three = Three(tmp_path)
        try:
            incr = asyncio.ensure_future(three.proposer.run(b"", b"c", IncrBy(7), w=3))
            await _settle()
            three.transport.fail("n2")
            three.transport.deliver("n3")
            assert await asyncio.wait_for(incr, 1) == 7
            assert three.hints.pending("n2") == 1 and three.hints.pending("n3") == 0
            hint = three.hints.read(storage_key(b"", b"c"), ["n2"])
            assert hint is not None and decode_record(hint).siblings[0].value == b"7"
        finally:
            three.close()

    asyncio.run(main())


def test_with_five_replicas_a_leased_value_one_acceptor_took_does_not_hide_an_acknowledged_write(tmp_path):
    """N = 5: a plain SET acknowledged by n3, n4 and n5 (a majority) missed the proposer n1 and
    n2. The leased INCR, built on n1's record from before the SET, is accepted by n2 alone and
    refused as stale by the rest; the full round that follows finds n2's accepted value and
    the SET in its Prepare answers, and the INCR counts the SET (docs/consistency.md)."""
    async def main():
        five = Three(tmp_path, ("n1", "n2", "n3", "n4", "n5"))
        try:
            first = asyncio.ensure_future(five.proposer.run(b"", b"counter", IncrBy(5), w=3))
            await _settle()
            for node in ("n2", "n3", "n4", "n5"):
                five.transport.deliver(node)
            assert await asyncio.wait_for(first, 1) == 5
            skey = storage_key(b"", b"counter")
            record, _ = five.stores["n3"].overwrite_now(skey, b"100")  # the plain SET, at QUORUM
            for node in ("n4", "n5"):
                five.stores[node].apply_record(skey, record)
            second = asyncio.ensure_future(five.proposer.run(b"", b"counter", IncrBy(1), w=3))
            await _settle()
            for node in ("n2", "n3", "n4", "n5"):
                if any(to == node for to, _, _ in five.transport.held):
                    five.transport.deliver(node)
            assert await asyncio.wait_for(second, 1) == 101
            assert five.value_at("n1", b"counter") == b"101"
            # The case itself: the leased proposal was accepted by n2 alone, refused as stale by
            # the three that hold the SET, and a full round followed.
            leased = [(node, ok) for node, was_leased, ok in five.transport.proposals if was_leased]
            assert sorted(leased) == [("n2", True), ("n3", False), ("n4", False), ("n5", False)]
            assert five.proposer.stats["paxos_stale_leases"] == 3
        finally:
            five.close()

    asyncio.run(main())
