"""Counts (DBSIZE, a namespace's keys and bytes) stay right when compaction, not a write of
the node's, collects an expired record: the compaction filter and time-window's whole-table
drops remove records behind the store's back (docs/compaction.md)."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringkv.clock import Clock
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import Replica, storage_key
from ringkv.storage import Engine, Options
from ringkv.versioning.record import Record, apply_write, encode_record, merge


def _run(tmp_path, body):
    async def main():
        engine = Engine.open(str(tmp_path / "engine"), Options())
        clock = Clock()
        store = LocalStore(Replica(engine, b"a1", clock), clock, namespaces=Namespaces(1, "siblings"))
        try:
            await body(engine, clock, store, LocalService(store))
        finally:
            engine.close()

    asyncio.run(main())


def _collect(engine: Engine, key: bytes) -> None:
    """What the compaction filter does to an expired record: it is gone from the engine."""
    engine.delete(storage_key(b"", key))


def test_a_key_collected_by_compaction_leaves_the_counts_at_its_expiry(tmp_path):
    async def body(engine, clock, store, kv):
        now = clock.now_ms()
        await kv.set(b"gone", b"x" * 100, expire_at_ms=now + 1_000)
        await kv.set(b"kept", b"y")
        assert store.dbsize(b"") == 2
        _collect(engine, b"gone")
        clock.skew_ms += 2_000
        store.expire_cycle()
        assert store.dbsize(b"") == 1
        assert store.usage.keys(b"") == 1 and store.usage.bytes(b"") < 100
        # A second index entry of the same key (it was written twice) uncounts nothing more.
        store.expire_cycle()
        assert store.dbsize(b"") == 1

    _run(tmp_path, body)


def test_a_key_written_again_after_compaction_collected_it_counts_once(tmp_path):
    async def body(engine, clock, store, kv):
        now = clock.now_ms()
        await kv.set(b"k", b"v", expire_at_ms=now + 1_000)
        _collect(engine, b"k")
        clock.skew_ms += 2_000
        await kv.set(b"k", b"again")  # before active expiry came by
        assert store.dbsize(b"") == 1
        store.expire_cycle()
        assert store.dbsize(b"") == 1
        assert await kv.get(b"k") is not None

    _run(tmp_path, body)


def test_a_key_expired_and_removed_by_active_expiry_is_uncounted_once(tmp_path):
    async def body(engine, clock, store, kv):
        now = clock.now_ms()
        await kv.set(b"k", b"v1", expire_at_ms=now + 1_000)
        await kv.set(b"k", b"v2", expire_at_ms=now + 1_000)  # two index entries
        clock.skew_ms += 2_000
        assert store.expire_cycle() == 1
        store.expire_cycle()
        assert store.dbsize(b"") == 0

    _run(tmp_path, body)


# Records other replicas make, merged in by replication: concurrent writes from three actors
# (siblings), deletes (tombstones), values with and without a TTL, in any interleaving.
_peer_writes = st.lists(
    st.tuples(
        st.sampled_from([b"p1@1", b"p2@1", b"p3@1"]),  # the actor making the write
        st.sampled_from([b"a", b"b", b"c"]),  # the key
        st.one_of(st.none(), st.binary(max_size=40)),  # the value; None deletes
        st.sampled_from([0, 0, 1]),  # 1: the value expires (in the far future)
        st.booleans(),  # whether the actor first learns what this replica holds (its context)
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=_peer_writes)
def test_counts_kept_while_replicating_equal_a_recount_from_disk(tmp_path_factory, writes):
    # DBSIZE and a namespace's keys and bytes are kept up to date write by write; a node
    # restarted counts them again from what it stores. The two must agree, whatever mix of
    # siblings, tombstones and expiries the replicas sent.
    root = tmp_path_factory.mktemp("counts")
    engine = Engine.open(str(root / "engine"), Options())
    try:
        clock = Clock()
        store = LocalStore(Replica(engine, b"n1@1", clock), clock, namespaces=Namespaces(3, "siblings"))
        far = clock.now_ms() + 3_600_000
        peers: dict[tuple[bytes, bytes], Record | None] = {}
        for i, (actor, key, value, expires, synced) in enumerate(writes):
            skey = storage_key(b"", key)
            own = peers.get((actor, key))
            if synced:
                stored = store.replica.read_skey(skey)
                if stored is not None:
                    own = stored if own is None else merge(own, stored)
            own = apply_write(own, actor=actor, context=own.clock if own is not None and synced else None,
                              value=value, timestamp=1_000 + i, expire_at_ms=far if expires and value else 0)
            peers[(actor, key)] = own
            store.apply_record(skey, encode_record(own))
        recount = LocalStore(Replica(engine, b"n1@1", clock), clock, namespaces=Namespaces(3, "siblings"))
        recount.load()
        assert store.dbsize(b"") == recount.dbsize(b"")
        assert (store.usage.keys(b""), store.usage.bytes(b"")) == (recount.usage.keys(b""), recount.usage.bytes(b""))
        assert store.partition_keys() == recount.partition_keys()
    finally:
        engine.close()
