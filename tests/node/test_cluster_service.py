"""The cluster data service's own rules, with the replicas stood in for: what reaches other
replicas, and when."""

from __future__ import annotations

import asyncio

from ringkv.clock import Clock
from ringkv.cluster.ring import Member, Ring
from ringkv.node.cluster_service import ClusterService, DataPath
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import Namespaces
from ringkv.node.placement import Placement
from ringkv.node.replica import Replica
from ringkv.service.contract import ServiceLimits
from ringkv.storage import Engine, Options
from ringkv.versioning.record import decode_record


class RecordingWrites:
    """Stands in for WritePath: notes what the log held when a record left for the replicas."""

    def __init__(self, store: LocalStore):
        self.store = store
        self.sent: list[tuple[bytes, bool]] = []  # (record, whether writes were still deferred)

    async def replicate(self, skey, data, pref, w, strict=False):
        self.sent.append((data, self.store.engine.has_deferred))


def test_a_set_reaches_other_replicas_only_once_it_is_in_this_nodes_log(tmp_path):
    # Else a crash between the send and the log write would let this node, restarted, make
    # its next write with the dot the replicas already hold for another value.
    async def main():
        engine = Engine.open(str(tmp_path / "engine"), Options())
        try:
            namespaces = Namespaces(3, "siblings")
            store = LocalStore(Replica(engine, b"n1@x"), Clock(), namespaces=namespaces)
            ring = Ring([Member("n1"), Member("n2"), Member("n3")], 64, 3)
            writes = RecordingWrites(store)
            path = DataPath("n1", Clock(), store, Placement("n1", ring, namespaces), None, writes, None, None,
                            ServiceLimits(1024, 100, True))
            service = ClusterService(path)
            await asyncio.gather(*(service.put(b"k%d" % i, b"v%d" % i) for i in range(20)))
            assert len(writes.sent) == 20
            assert not any(deferred for _, deferred in writes.sent)
            assert {decode_record(d).siblings[0].value for d, _ in writes.sent} == {b"v%d" % i for i in range(20)}
        finally:
            engine.close()

    asyncio.run(main())
