"""Counts (DBSIZE, a namespace's keys and bytes) stay right when compaction, not a write of
the node's, collects an expired record: the compaction filter and time-window's whole-table
drops remove records behind the store's back (docs/compaction.md)."""

from __future__ import annotations

import asyncio

from ringkv.clock import Clock
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import Replica, storage_key
from ringkv.storage import Engine, Options


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
