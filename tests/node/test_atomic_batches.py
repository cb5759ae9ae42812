"""Atomic batches (docs/atomic-batches.md): the timestamp rule, one WriteBatch per replica and
part, the batch log, and the protocol over several replica sets, on real engines.

The cluster tests run several nodes in one process: each has its own engine, store, ring
view, write path, ReplicaService and AtomicBatches, and their messages are handed from one
to another by `SimCalls` (a node in `down` refuses them, as a node the failure detector holds
down does). tests/processes/test_atomic_batch_processes.py runs the same protocol on real
processes, with a coordinator killed after logging.
"""

from __future__ import annotations

import asyncio
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.clock import Clock
from ringkv.cluster.ring import Member, Ring
from ringkv.errors import CommandError, PeerUnavailableError
from ringkv.node.assembly import CLUSTER_STATS
from ringkv.node.atomic_batches import AtomicBatches, group_by_replica_set
from ringkv.node.batchlog import (
    BatchLog,
    BatchLogEntry,
    BatchLogFullError,
    decode_entry,
    encode_entry,
)
from ringkv.node.cluster_service import ClusterService, DataPath
from ringkv.node.commands import Put
from ringkv.node.faults import FaultState
from ringkv.node.latency import CallFigures
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import Namespaces
from ringkv.node.placement import Placement
from ringkv.node.replica import Replica, storage_key
from ringkv.node.replica_service import ReplicaService
from ringkv.node.write_path import WritePath
from ringkv.service.contract import ServiceLimits
from ringkv.service.limits import MAX_ATOMIC_BATCH_ITEMS
from ringkv.storage import Engine, Options
from ringkv.storage.fs import FaultInjectingFileSystem
from ringkv.versioning.dvv import Dot
from ringkv.versioning.record import DottedValue, Record, encode_record, write_at

# ---------------------------------------------------------------------------- the timestamp rule


def _record(*siblings: tuple[bytes, int, int, bytes | None]) -> Record:
    clock = {}
    for actor, counter, _, _ in siblings:
        clock[actor] = max(clock.get(actor, 0), counter)
    return Record(dict(sorted(clock.items())),
                  tuple(DottedValue(Dot(a, c), v, ts) for a, c, ts, v in sorted(siblings)))


def test_a_batch_value_replaces_every_older_sibling_and_carries_the_batch_timestamp():
    stored = _record((b"n1", 1, 100, b"a"), (b"n2", 1, 200, b"b"))
    new = write_at(stored, actor=b"n3", value=b"batch", timestamp=300)
    assert [(s.value, s.timestamp, s.dot) for s in new.siblings] == [(b"batch", 300, Dot(b"n3", 1))]
    assert new.clock == {b"n1": 1, b"n2": 1, b"n3": 1}


@pytest.mark.parametrize("later", [300, 301])
def test_a_key_holding_a_write_at_or_after_the_batch_keeps_it(later):
    # A later write wins whatever order the replica sees them in; a tombstone counts too.
    assert write_at(_record((b"n1", 1, later, b"newer")), actor=b"n3", value=b"batch", timestamp=300) is None
    assert write_at(_record((b"n1", 1, later, None)), actor=b"n3", value=b"batch", timestamp=300) is None
    assert write_at(_record((b"n1", 1, 10, b"x"), (b"n2", 4, later, b"y")), actor=b"n3", value=b"batch",
                    timestamp=300) is None


def _store(path, actor=b"n1@1", **options) -> LocalStore:
    engine = Engine.open(str(path), Options(**options))
    return LocalStore(Replica(engine, actor, Clock()), Clock(), namespaces=Namespaces(3, "siblings"))


def test_applying_a_batch_twice_writes_once(tmp_path):
    store = _store(tmp_path)
    try:
        items = [(b"k%d" % i, b"v%d" % i, 0) for i in range(10)]
        first = store.write_atomic(b"", items)
        stored = {k: store.engine.get(k) for k, _ in first.written}
        again = store.write_atomic(b"", items, first.timestamp)
        assert again.written == [] and again.lsn == 0
        assert again.kept == first.written  # what the replay sends on: the records as they are
        assert {k: store.engine.get(k) for k, _ in first.written} == stored
        assert store.live_keys == 10
    finally:
        store.engine.close()


def test_a_write_made_after_the_batch_survives_its_replay(tmp_path):
    store = _store(tmp_path)
    try:
        first = store.write_atomic(b"", [(b"a", b"batch", 0), (b"b", b"batch", 0)])
        store.execute(b"", b"a", _put(b"later"))  # a SET after the batch: its HLC is past the batch's
        replay = store.write_atomic(b"", [(b"a", b"batch", 0), (b"b", b"batch", 0)], first.timestamp)
        assert replay.written == []
        assert store.get_value_now(b"", b"a") == b"later"
        assert store.get_value_now(b"", b"b") == b"batch"
    finally:
        store.engine.close()


def test_a_replica_observes_the_batch_timestamp_so_its_next_write_orders_after_it(tmp_path):
    store = _store(tmp_path)
    try:
        ahead = store.replica.hlc_now() + (300 << 16)  # a coordinator 300 ms ahead
        store.write_atomic(b"", [(b"k", b"batch", 0)], ahead)
        store.execute(b"", b"k", _put(b"after"))
        record = store.read(storage_key(b"", b"k"))
        assert record.siblings[0].value == b"after" and record.siblings[0].timestamp > ahead
    finally:
        store.engine.close()


def _put(value: bytes) -> Put:
    return Put(value)


# ---------------------------------------------------------------------------- one WriteBatch


@pytest.mark.parametrize("seed", range(12))
def test_a_power_cut_leaves_all_of_a_batch_or_none_of_it(tmp_path, seed):
    """The batch is one log record: a cut tears it whole or keeps it whole, never half."""
    fs = FaultInjectingFileSystem(seed)
    engine = Engine.open(str(tmp_path), Options(sync="never", background="thread"), fs=fs)
    store = LocalStore(Replica(engine, b"n1@1", Clock()), Clock(), namespaces=Namespaces(1, "siblings"))
    service = LocalService(store)
    asyncio.run(service.put(b"before", b"0"))
    engine.wait_durable(engine.flush_deferred())
    items = [(b"key:%03d" % i, b"v" * 300, 0) for i in range(60)]
    asyncio.run(service.write_atomic(items))
    fs.crash()
    engine.close()
    reopened = Engine.open(str(tmp_path), Options())
    try:
        present = [reopened.get(storage_key(b"", k)) is not None for k, _, _ in items]
        assert all(present) or not any(present), f"{sum(present)} of {len(items)} keys survived (seed {seed})"
        assert reopened.get(storage_key(b"", b"before")) is not None
    finally:
        reopened.close()


@pytest.mark.parametrize("seed", range(8))
def test_a_replica_applies_a_replica_put_many_as_one_write_batch(tmp_path, seed):
    fs = FaultInjectingFileSystem(100 + seed)
    engine = Engine.open(str(tmp_path), Options(sync="never", background="thread"), fs=fs)
    store = LocalStore(Replica(engine, b"n2@1", Clock()), Clock(), namespaces=Namespaces(1, "siblings"))
    records = [(storage_key(b"", b"k%d" % i),
                encode_record(Record({b"n1@1": 1}, (DottedValue(Dot(b"n1@1", 1), b"x" * 200, 7 << 16),))))
               for i in range(40)]
    store.apply_records(records, defer=True)
    store.commit_writes()
    fs.crash()
    engine.close()
    reopened = Engine.open(str(tmp_path), Options())
    try:
        present = [reopened.get(skey) is not None for skey, _ in records]
        assert all(present) or not any(present)
    finally:
        reopened.close()


def test_a_corrupt_record_in_a_replica_put_many_stores_none_of_them(tmp_path):
    store = _store(tmp_path, actor=b"n2@1")
    try:
        good = encode_record(Record({b"n1@1": 1}, (DottedValue(Dot(b"n1@1", 1), b"x", 7 << 16),)))
        with pytest.raises(Exception, match="record"):
            store.apply_records([(storage_key(b"", b"a"), good), (storage_key(b"", b"b"), b"\x01garbage")])
        assert store.engine.get(storage_key(b"", b"a")) is None and store.live_keys == 0
    finally:
        store.engine.close()


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad, limit", [
    ((b"k" * 70_000, b"v", 0), "key is 70000 bytes"),
    ((b"k", b"v" * 2_000_000, 0), "value is 2000000 bytes"),
    ((b"k", b"v", -1), "expire_at_ms must be an integer >= 0"),
])
def test_a_bad_item_anywhere_in_a_batch_writes_nothing(tmp_path, bad, limit):
    store = _store(tmp_path)
    try:
        items = [(b"a", b"1", 0), (b"b", b"2", 0), bad, (b"c", b"3", 0)]
        with pytest.raises(CommandError, match=limit):
            asyncio.run(LocalService(store).write_atomic(items))
        assert store.live_keys == 0 and store.engine.get(storage_key(b"", b"a")) is None
    finally:
        store.engine.close()


def test_a_batch_over_the_item_or_byte_limit_is_refused_whole(tmp_path):
    store = _store(tmp_path)
    try:
        service = LocalService(store)
        with pytest.raises(CommandError, match=f"the limit is {MAX_ATOMIC_BATCH_ITEMS}") as err:
            asyncio.run(service.write_atomic([(b"k%d" % i, b"v", 0) for i in range(MAX_ATOMIC_BATCH_ITEMS + 1)]))
        assert err.value.status == 413
        with pytest.raises(CommandError, match="bytes of keys and values"):
            asyncio.run(service.write_atomic([(b"k%d" % i, b"v" * 1_000_000, 0) for i in range(9)]))
        assert store.live_keys == 0
    finally:
        store.engine.close()


def test_a_key_named_twice_keeps_its_last_value(tmp_path):
    store = _store(tmp_path)
    try:
        service = LocalService(store)
        done = asyncio.run(service.write_atomic([(b"a", b"1", 0), (b"b", b"2", 0), (b"a", b"3", 0)]))
        assert done.pending == [] and not done.logged and done.timestamp > 0
        assert asyncio.run(service.mget([b"a", b"b"])) == [b"3", b"2"]
    finally:
        store.engine.close()


# ---------------------------------------------------------------------------- the batch log


def _entry(ts=1 << 30, coordinator="n1", copies=("n1", "n2"), items=None) -> BatchLogEntry:
    return BatchLogEntry(coordinator, b"", ts, 2, False, copies, items or [(b"k", b"v", 0)])


def test_the_batch_log_survives_a_restart(tmp_path):
    log = BatchLog(str(tmp_path))
    entry = _entry(items=[(b"a", b"1", 0), (b"b", b"2", 99)])
    log.add(encode_entry(entry), entry.batch_id)
    log.add(encode_entry(_entry(ts=2 << 30)), _entry(ts=2 << 30).batch_id)
    log.remove(_entry(ts=2 << 30).batch_id)
    before = log.stats
    log.engine.close()  # as a crash leaves it: no flush
    again = BatchLog(str(tmp_path))
    try:
        assert again.stats == before and before["batchlog_entries"] == 1
        assert again.get(entry.batch_id) == entry
        assert [bid for bid, _ in again.received()] == [entry.batch_id]
    finally:
        again.close()


def test_flushall_drops_the_batch_log_entries_of_flushed_namespaces_and_keeps_the_systems(tmp_path):
    # A replay after FLUSHALL would write the flushed keys again.
    log = BatchLog(str(tmp_path))
    try:
        user = _entry(ts=1 << 30)
        system = BatchLogEntry("n1", b"__system", 2 << 30, 2, False, ("n1", "n2"), [(b"u", b"1", 0)])
        for entry in (user, system):
            log.add(encode_entry(entry), entry.batch_id)
        assert log.forget(b"__system") == 1
        assert user.batch_id not in log and log.get(user.batch_id) is None
        assert log.get(system.batch_id) == system
        assert log.stats["batchlog_entries"] == 1
        assert log.stats["batchlog_bytes"] == len(encode_entry(system)) + 8
    finally:
        log.close()


def test_the_batch_log_refuses_entries_past_its_bounds(tmp_path):
    log = BatchLog(str(tmp_path), max_entries=2, max_bytes=10_000)
    try:
        for ts in (1, 2):
            log.add(encode_entry(_entry(ts=ts)), _entry(ts=ts).batch_id)
        with pytest.raises(BatchLogFullError, match="batchlog_max_entries=2") as err:
            log.add(encode_entry(_entry(ts=3)), _entry(ts=3).batch_id)
        assert err.value.status == 503 and "nothing was written" in str(err.value)
        log.add(encode_entry(_entry(ts=2)), _entry(ts=2).batch_id)  # the same batch again: replaced
        log.remove(_entry(ts=1).batch_id)
        big = _entry(ts=4, items=[(b"k", b"v" * 20_000, 0)])
        with pytest.raises(BatchLogFullError, match="batchlog_max_bytes=10000"):
            log.add(encode_entry(big), big.batch_id)
        assert log.stats["batchlog_entries"] == 1
    finally:
        log.close()


_names = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8)
_items = st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=200), st.integers(0, 2**63 - 1)),
                  min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(coordinator=_names, partner=_names, ns=st.binary(max_size=20), ts=st.integers(1, 2**64 - 1),
       w=st.integers(1, 5), strict=st.booleans(), items=_items)
def test_a_batch_log_entry_decodes_to_what_was_encoded(coordinator, partner, ns, ts, w, strict, items):
    entry = BatchLogEntry(coordinator, ns, ts, w, strict, (coordinator, partner), items)
    decoded = decode_entry(encode_entry(entry))
    assert decoded == entry and decoded.batch_id == entry.batch_id


@given(st.binary(max_size=64))
def test_garbage_is_never_taken_for_a_batch_log_entry(data):
    with pytest.raises(Exception, match="batch log entry"):
        decode_entry(b"\x01" + data)


@given(st.lists(st.permutations(["n1", "n2", "n3", "n4"]).map(lambda p: tuple(p[:3])), max_size=50))
def test_grouping_by_replica_set_puts_every_item_in_exactly_one_part_of_one_set(prefs):
    groups = group_by_replica_set(prefs)
    seen = sorted(i for _, indexes in groups for i in indexes)
    assert seen == list(range(len(prefs)))
    for pref, indexes in groups:
        assert indexes == sorted(indexes)  # batch order kept
        assert all(set(prefs[i]) == set(pref) for i in indexes)
        assert pref == prefs[indexes[0]]
    assert len({frozenset(p) for p, _ in groups}) == len(groups)


# ---------------------------------------------------------------------------- several nodes


class SimCalls:
    """Hands a node's messages to another node's ReplicaService in this process."""

    def __init__(self, me: str, cluster: SimCluster):
        self.node_id = me
        self.cluster = cluster
        self.timeout_ms = 200
        self.liveness = types.SimpleNamespace(why_down=lambda node: "down (test)")
        self.figures = CallFigures()  # the write path times its quorums into it
        self.sent: list[tuple[str, str]] = []

    def is_up(self, node: str) -> bool:
        return node not in self.cluster.down

    @property
    def up(self):
        return self.is_up

    def send(self, node: str, body, timeout_ms=None, *, known_up: bool = False, on_done=None) -> asyncio.Future:
        self.sent.append((node, type(body).__name__))
        loop = asyncio.get_running_loop()
        if node in self.cluster.down:
            fut = loop.create_future()
            fut.set_exception(PeerUnavailableError(node, "down (test)"))
        else:
            fut = loop.create_task(self.cluster.nodes[node].receive(self.node_id, body))
        if on_done is not None:
            fut.add_done_callback(on_done)
        return fut

    async def call(self, node: str, body, timeout_ms=None):
        return await self.send(node, body, timeout_ms)


class SimNode:
    def __init__(self, node_id: str, root, ring: Ring, cluster: SimCluster):
        self.node_id = node_id
        self.clock = Clock()
        self.engine = Engine.open(str(root / node_id / "engine"), Options(background="thread"))
        namespaces = Namespaces(ring.replicas, "siblings")
        self.store = LocalStore(Replica(self.engine, f"{node_id}@1".encode(), self.clock), self.clock,
                                namespaces=namespaces)
        self.placement = Placement(node_id, ring, namespaces)
        self.calls = SimCalls(node_id, cluster)
        self.stats = dict.fromkeys(CLUSTER_STATS, 0)
        self.writes = WritePath(self.placement, self.calls, self.store, self.stats, None)
        self.log = BatchLog(str(root / node_id))
        self.faults = FaultState(self.clock)
        self.batches = AtomicBatches(self.placement, self.calls, self.store, self.writes, self.log, self.faults,
                                     self.clock, replay_delay_ms=1_000, replay_interval_ms=100)
        none = types.SimpleNamespace(on_syn=None, on_digests=None, on_list=None, on_forward=None,
                                     on_forward_versioned=None, on_commit=None)
        self.peers = ReplicaService(self.placement, self.store, none, none, none, none, None, self.stats,
                                    lambda: None, batches=self.batches)
        limits = ServiceLimits(1024 * 1024, 1000, True)
        self.service = ClusterService(DataPath(node_id, self.clock, self.store, self.placement, None, self.writes,
                                               None, None, limits, self.batches))

    async def receive(self, sender: str, body):
        reply = await self.peers.handle(sender, body)
        self.peers.before_reply()
        return reply

    def value(self, key: bytes) -> bytes | None:
        return self.store.get_value_now(b"", key)

    def close(self):
        self.log.close()
        self.engine.close()


class SimCluster:
    def __init__(self, root, nodes: int, replicas: int = 3):
        ring = Ring([Member(f"n{i + 1}") for i in range(nodes)], 64, replicas)
        self.down: set[str] = set()
        self.nodes = {f"n{i + 1}": None for i in range(nodes)}
        for node_id in self.nodes:
            self.nodes[node_id] = SimNode(node_id, root, ring, self)
        self.ring = ring

    def holders(self, key: bytes) -> tuple[str, ...]:
        return self.ring.preference_list(self.nodes["n1"].placement.partition_of(storage_key(b"", key)))

    def close(self):
        for node in self.nodes.values():
            node.close()


@pytest.fixture
def sim(tmp_path):
    clusters = []

    def make(nodes: int, replicas: int = 3) -> SimCluster:
        clusters.append(SimCluster(tmp_path / f"c{len(clusters)}", nodes, replicas))
        return clusters[-1]

    yield make
    for c in clusters:
        c.close()


def _items(prefix: str, n: int) -> list[tuple[bytes, bytes, int]]:
    return [(f"{prefix}{i}".encode(), f"value-{prefix}{i}".encode(), 0) for i in range(n)]


def test_with_three_nodes_and_three_replicas_every_batch_is_one_replica_set(sim):
    # Every key's preference list holds the same three nodes: no batch log, one message per
    # other replica, and every replica holds every key.
    c = sim(3)
    n1 = c.nodes["n1"]
    done = asyncio.run(n1.service.write_atomic(_items("k", 50)))
    assert done.pending == [] and not done.logged
    assert n1.batches.stats["atomic_batches_logged"] == 0 and len(n1.log) == 0
    assert sorted(n1.calls.sent) == [("n2", "ReplicaPutMany"), ("n3", "ReplicaPutMany")]
    for node in c.nodes.values():
        assert [node.value(k) for k, _, _ in _items("k", 50)] == [v for _, v, _ in _items("k", 50)]
        record = node.store.read(storage_key(b"", b"k7"))
        assert record.siblings[0].timestamp == done.timestamp


def test_a_batch_over_several_replica_sets_is_logged_on_two_nodes_and_removed_once_written(sim):
    c = sim(4)
    n1 = c.nodes["n1"]
    items = _items("k", 60)

    async def run():
        done = await n1.service.write_atomic(items)
        await asyncio.sleep(0.05)  # the partner's removal is not waited for
        return done

    done = asyncio.run(run())
    assert done.logged and done.pending == []
    assert n1.batches.stats["atomic_batches_logged"] == 1
    assert any(kind == "BatchLogStore" for _, kind in n1.calls.sent)
    assert all(len(node.log) == 0 for node in c.nodes.values())
    for key, value, _ in items:
        holders = c.holders(key)
        assert [c.nodes[h].value(key) for h in holders] == [value] * 3  # W=2, and the third took it too
        assert all(c.nodes[n].value(key) is None for n in c.nodes if n not in holders)


def test_with_no_other_node_to_log_it_a_batch_is_refused_and_nothing_is_written(sim):
    c = sim(4)
    n1 = c.nodes["n1"]
    c.down |= {"n2", "n3", "n4"}
    with pytest.raises(CommandError, match="atomic batch refused, nothing was written") as err:
        asyncio.run(n1.service.write_atomic(_items("k", 40)))
    assert err.value.status == 503
    assert len(n1.log) == 0 and n1.store.live_keys == 0
    assert n1.batches.stats["atomic_batches_refused"] == 1


def test_a_full_batch_log_refuses_the_batch_and_nothing_is_written(sim):
    c = sim(4)
    n1 = c.nodes["n1"]
    n1.log.max_entries = 0
    with pytest.raises(CommandError, match="batchlog_max_entries=0") as err:
        asyncio.run(n1.service.write_atomic(_items("k", 40)))
    assert err.value.status == 503
    assert all(node.store.live_keys == 0 and len(node.log) == 0 for node in c.nodes.values())


def test_parts_short_of_w_are_pending_and_the_replay_finishes_them(sim):
    c = sim(4)
    n1, n2 = c.nodes["n1"], c.nodes["n2"]
    items = _items("k", 60)
    # n3 and n4 down: every key held by both of them misses W=2 (n1 and n2 are up)
    c.down |= {"n3", "n4"}
    done = asyncio.run(n1.service.write_atomic(items))
    short = {k for k, _, _ in items if len({"n1", "n2"} & set(c.holders(k))) < 2}
    assert done.logged and set(done.pending) == short and short
    assert len(n1.log) == 1 and len(n2.log) == 1  # n2: the only partner that could take it
    assert n1.batches.stats["atomic_keys_pending"] == len(short)

    c.down.clear()
    n1.clock.skew_ms = 5_000  # past the replay delay
    assert asyncio.run(n1.batches.replay_due()) == 1
    assert n1.batches.stats["batchlog_replayed"] == 1
    assert len(n1.log) == 0
    for key, value, _ in items:
        assert sum(c.nodes[h].value(key) == value for h in c.holders(key)) >= 2


def test_the_partner_replays_a_batch_whose_coordinator_died_after_logging_it(sim):
    c = sim(4)
    n1 = c.nodes["n1"]
    items = _items("k", 60)
    n1.faults.hold_batches = True  # stop right after logging, before any key is written

    async def crash_after_logging():
        task = asyncio.ensure_future(n1.service.write_atomic(items))
        while n1.batches.stats["atomic_batches_logged"] == 0:
            await asyncio.sleep(0.01)
        task.cancel()  # the coordinator is gone: its writes never start

    asyncio.run(crash_after_logging())
    assert all(node.store.live_keys == 0 for node in c.nodes.values())
    partner = next(node for node in c.nodes.values() if node is not n1 and len(node.log) == 1)
    c.down.add("n1")
    assert asyncio.run(partner.batches.replay_due()) == 0  # not due yet
    partner.clock.skew_ms = 1_500
    assert asyncio.run(partner.batches.replay_due()) == 1
    for key, value, _ in items:
        survivors = [h for h in c.holders(key) if h != "n1"]
        assert [c.nodes[h].value(key) for h in survivors] == [value] * len(survivors)

    # n1 restarts with its copy: its replay writes nothing new, and removes it.
    c.down.clear()
    n1.faults.hold_batches = False
    n1.clock.skew_ms = 1_500
    before = {(n, k): c.nodes[n].engine.get(storage_key(b"", k)) for k, _, _ in items for n in ("n2", "n3", "n4")}
    assert asyncio.run(n1.batches.replay_due()) == 1 and len(n1.log) == 0
    after = {(n, k): c.nodes[n].engine.get(storage_key(b"", k)) for k, _, _ in items for n in ("n2", "n3", "n4")}
    assert after == before  # the survivors' records are as the partner's replay left them
    for key, value, _ in items:
        if "n1" in c.holders(key):
            assert n1.value(key) == value  # n1 caught up with what it missed


def test_a_write_made_between_the_batch_and_its_replay_wins(sim):
    c = sim(4)
    n1 = c.nodes["n1"]
    items = _items("k", 60)
    n1.faults.hold_batches = True

    async def crash_after_logging():
        task = asyncio.ensure_future(n1.service.write_atomic(items))
        while n1.batches.stats["atomic_batches_logged"] == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        # a client overwrites k3 through n2 before the replay
        await c.nodes["n2"].service.put(b"k3", b"written-later")

    asyncio.run(crash_after_logging())
    n1.faults.hold_batches = False
    n1.clock.skew_ms = 1_500
    assert asyncio.run(n1.batches.replay_due()) == 1
    for h in c.holders(b"k3"):
        assert c.nodes[h].value(b"k3") in (b"written-later", None)
    assert sum(c.nodes[h].value(b"k3") == b"written-later" for h in c.holders(b"k3")) >= 2
    assert sum(c.nodes[h].value(b"k4") == b"value-k4" for h in c.holders(b"k4")) >= 2


def test_an_entry_older_than_the_tombstone_grace_period_is_dropped_unreplayed(sim):
    c = sim(4)
    n1 = c.nodes["n1"]
    n1.batches.max_age_ms = 1_000
    old = BatchLogEntry("n1", b"", n1.store.replica.hlc_now(), 2, False, ("n1", "n2"), _items("k", 5))
    n1.log.add(encode_entry(old), old.batch_id)
    n1.clock.skew_ms = 2_000
    assert asyncio.run(n1.batches.replay_due()) == 0
    assert len(n1.log) == 0 and n1.batches.stats["batchlog_expired"] == 1
    assert all(node.store.live_keys == 0 for node in c.nodes.values())


def test_a_batch_in_one_replica_set_the_coordinator_is_not_in_runs_on_a_replica(sim):
    c = sim(4)
    n1 = c.nodes["n1"]
    keys = [k for k, _, _ in _items("t", 400) if "n1" not in c.holders(k)]
    pref = set(c.holders(keys[0]))
    same = [k for k in keys if set(c.holders(k)) == pref][:10]
    done = asyncio.run(n1.service.write_atomic([(k, b"x", 0) for k in same]))
    assert not done.logged and done.pending == []
    assert [kind for _, kind in n1.calls.sent] == ["AtomicPart"]
    assert all(c.nodes[h].value(k) == b"x" for k in same for h in pref)
    assert n1.store.live_keys == 0
