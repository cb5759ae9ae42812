"""A session's entries become settled once every home replica holds what the session wrote or
read, even when that is known only after the answer (node/session_reads.Settler): then the
token drops them first when it is full, and does not degrade. Node n1's real read, write and
session paths; n2 and n3 stood in by a transport that answers at once, or never for one node.

Why it matters (issue 19): a session that wrote or read more distinct keys than its token holds
had every entry unsettled at ONE, so the token degraded and every later read of a key it had
no entry for ran at QUORUM."""

from __future__ import annotations

import asyncio

from tests.node.test_cluster_service import RecordingTransport

from ringkv.clock import Clock
from ringkv.cluster.ring import Member, Ring
from ringkv.node.assembly import CLUSTER_STATS
from ringkv.node.cluster_service import ClusterService, DataPath
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import Namespaces
from ringkv.node.placement import Placement
from ringkv.node.read_path import ReadPath
from ringkv.node.replica import Replica
from ringkv.node.replica_calls import Liveness, ReplicaCalls
from ringkv.node.session_reads import SessionReads
from ringkv.node.write_path import WritePath
from ringkv.service.contract import ServiceLimits
from ringkv.service.session import SessionToken
from ringkv.storage import Engine, Options


class SilentNode(RecordingTransport):
    """As RecordingTransport, but `silent` never answers (a replica that is slow or gone)."""

    def __init__(self, store: LocalStore, silent: str):
        super().__init__(store)
        self.silent = silent

    def start_call(self, node, body, timeout_ms, on_done=None):
        if node != self.silent:
            return super().start_call(node, body, timeout_ms, on_done)
        fut = asyncio.get_running_loop().create_future()
        if on_done is not None:
            fut.add_done_callback(on_done)
        return fut  # never done


def _session_service(engine: Engine, silent: str | None = None) -> ClusterService:
    namespaces = Namespaces(3, "siblings")
    store = LocalStore(Replica(engine, b"n1@x"), Clock(), namespaces=namespaces)
    transport = RecordingTransport(store) if silent is None else SilentNode(store, silent)
    placement = Placement("n1", Ring([Member("n1"), Member("n2"), Member("n3")], 64, 3), namespaces)
    calls = ReplicaCalls("n1", transport, Liveness(), 1000)
    stats = dict.fromkeys(CLUSTER_STATS, 0)
    reads = ReadPath(placement, calls, store, stats)
    writes = WritePath(placement, calls, store, stats, None)
    path = DataPath("n1", Clock(), store, placement, reads, writes, None, None, ServiceLimits(1024, 100, True),
                    session_reads=SessionReads(reads, None, stats))
    return ClusterService(path).at(r="ONE", w="ONE")


def test_writes_at_one_acknowledged_by_every_replica_leave_the_token_whole(tmp_path):
    async def main():
        engine = Engine.open(str(tmp_path / "engine"), Options())
        try:
            token = SessionToken(max_keys=16)
            service = _session_service(engine).with_session(token)
            for i in range(50):  # more keys than the token holds
                await service.put(b"k%d" % i, b"v")
            await asyncio.sleep(0)  # the last acknowledgements
            assert not token.degraded
            assert len(token) == 16 and all(e.settled for e in token.entries.values())
        finally:
            engine.close()

    asyncio.run(main())


def test_reads_at_one_answered_alike_by_every_replica_leave_the_token_whole(tmp_path):
    async def main():
        engine = Engine.open(str(tmp_path / "engine"), Options())
        try:
            plain = _session_service(engine)
            for i in range(50):
                await plain.put(b"k%d" % i, b"v")
            token = SessionToken(max_keys=16)
            service = plain.with_session(token)
            for i in range(50):
                assert await service.get_value(b"k%d" % i) == b"v"
                # A read at ONE answers from this node's replica before the others have: their
                # answers come in the loop's next turns, as a client's next request does.
                await asyncio.sleep(0)
            assert not token.degraded and all(e.settled for e in token.entries.values())
        finally:
            engine.close()

    asyncio.run(main())


def test_a_replica_that_does_not_answer_leaves_the_entries_unsettled_and_the_token_degrades(tmp_path):
    # The guarantee is kept: an entry is settled only when every home replica is known to
    # hold the version.
    async def main():
        engine = Engine.open(str(tmp_path / "engine"), Options())
        try:
            token = SessionToken(max_keys=16)
            service = _session_service(engine, silent="n3").with_session(token)
            for i in range(17):
                await service.put(b"k%d" % i, b"v")
            assert not any(e.settled for e in token.entries.values())
            assert token.degraded
        finally:
            engine.close()

    asyncio.run(main())
