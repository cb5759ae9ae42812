"""Sets stored one record per element (node/elements.py) on a real node's store: what a
command writes does not grow with the set, a set emptied or deleted is gone whatever its size,
a set stored whole by an earlier release is rewritten per element by its first write, and
types are kept apart."""

from __future__ import annotations

import asyncio

import pytest

from ringkv.clock import Clock
from ringkv.errors import CommandError
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import Replica, elements_range, storage_key
from ringkv.service.datatypes import codec
from ringkv.service.datatypes.base import KIND_SET
from ringkv.storage import Engine, Options
from ringkv.versioning.record import Typed, apply_write, encode_record


class Counting:
    """Counts the records a store is asked to store."""

    def __init__(self, store: LocalStore):
        self.writes = 0
        put = store.store_record

        def counted(skey, stored, new, defer=False):
            self.writes += 1
            return put(skey, stored, new, defer)

        store.store_record = counted


def _run(tmp_path, body):
    async def main():
        clock = Clock()
        engine = Engine.open(str(tmp_path / "engine"), Options())
        store = LocalStore(Replica(engine, b"a1", clock), clock, namespaces=Namespaces(1, "siblings"))
        try:
            await body(store, LocalService(store))
        finally:
            engine.close()

    asyncio.run(main())


def _element_records(store: LocalStore, key: bytes) -> int:
    start, end = elements_range(storage_key(b"", key))
    with store.engine.scan(start, end) as it:
        return sum(1 for _ in it)


def _element_bytes(store: LocalStore, key: bytes) -> list[tuple[bytes, bytes]]:
    start, end = elements_range(storage_key(b"", key))
    with store.engine.scan(start, end) as it:
        return [(bytes(k), bytes(v)) for k, v in it]


def test_a_write_to_a_large_set_stores_only_what_it_changes(tmp_path):
    async def body(store, kv):
        members = [b"m%05d" % i for i in range(5000)]
        assert await kv.type_command("SADD", [b"big", *members]) == 5000
        assert _element_records(store, b"big") == 5000
        counting = Counting(store)
        assert await kv.type_command("SADD", [b"big", b"new"]) == 1
        assert counting.writes == 2  # the member and the set's own record
        assert await kv.type_command("SADD", [b"big", b"m00001"]) == 0
        assert counting.writes == 2  # a member already: nothing written
        assert await kv.type_command("SREM", [b"big", b"m00002", b"absent"]) == 1
        assert counting.writes == 3  # a tombstone over one member
        assert await kv.type_command("SISMEMBER", [b"big", b"m00002"]) == 0
        assert await kv.type_command("SMISMEMBER", [b"big", b"new", b"m00003"]) == [1, 1]
        assert await kv.type_command("SCARD", [b"big"]) == 5000

    _run(tmp_path, body)


def test_a_set_emptied_or_deleted_is_gone_and_a_new_one_starts_empty(tmp_path):
    async def body(store, kv):
        await kv.type_command("SADD", [b"s", b"a", b"b"])
        assert await kv.type_command("SREM", [b"s", b"a"]) == 1
        assert await kv.exists([b"s"]) == 1
        assert await kv.type_command("SREM", [b"s", b"b"]) == 1
        assert await kv.exists([b"s"]) == 0 and await kv.dbsize() == 0
        assert await kv.type_command("TYPE", [b"s"]) == "none"

        members = [b"x%04d" % i for i in range(2000)]
        await kv.type_command("SADD", [b"d", *members])
        before = _element_bytes(store, b"d")
        assert await kv.delete([b"d"]) == 1
        assert _element_bytes(store, b"d") == before  # one clear marker, no element rewritten
        assert await kv.exists([b"d"]) == 0 and await kv.dbsize() == 0
        assert await kv.type_command("SMEMBERS", [b"d"]) == set()
        assert await kv.type_command("SADD", [b"d", b"fresh", b"x0001"]) == 2
        assert await kv.type_command("SMEMBERS", [b"d"]) == {b"fresh", b"x0001"}

    _run(tmp_path, body)


def test_a_set_stored_whole_is_read_and_then_rewritten_per_element(tmp_path):
    async def body(store, kv):
        skey = storage_key(b"", b"old")
        whole = Typed(KIND_SET, codec.encode(KIND_SET, {b"a", b"b"}))
        store.apply_record(skey, encode_record(apply_write(None, actor=b"old-build", context=None, value=whole,
                                                           timestamp=1)))
        assert await kv.type_command("SMEMBERS", [b"old"]) == {b"a", b"b"}
        assert _element_records(store, b"old") == 0
        assert await kv.type_command("SADD", [b"old", b"c"]) == 1
        assert _element_records(store, b"old") == 3
        assert await kv.type_command("SMEMBERS", [b"old"]) == {b"a", b"b", b"c"}
        assert type(store.winner(skey).value) is Typed and store.winner(skey).value.kind != KIND_SET

    _run(tmp_path, body)


def test_types_stay_apart_and_ttls_stay_with_the_set(tmp_path):
    async def body(store, kv):
        await kv.type_command("SADD", [b"s", b"a"])
        with pytest.raises(CommandError, match="wrong kind of value"):
            await kv.type_command("HSET", [b"s", b"f", b"v"])
        with pytest.raises(CommandError, match="wrong kind of value"):
            await kv.get_value(b"s")
        await kv.set(b"str", b"x")
        with pytest.raises(CommandError, match="wrong kind of value"):
            await kv.type_command("SADD", [b"str", b"m"])
        now = kv.now_ms()
        assert await kv.expire_at(b"s", now + 60_000) is True
        await kv.type_command("SADD", [b"s", b"b"])
        assert 0 < await kv.ttl_ms(b"s") <= 60_000
        assert await kv.set(b"s", b"now a string") == (True, None)  # SET replaces any type
        assert await kv.get_value(b"s") == b"now a string"
        assert await kv.type_command("SADD", [b"s2", b"z"]) == 1
        assert await kv.type_command("RENAME", [b"s2", b"s"]) == "OK"
        assert await kv.type_command("SMEMBERS", [b"s"]) == {b"z"}  # not a or b: they went with the first set

    _run(tmp_path, body)


def test_a_large_set_read_whole_leaves_the_node_serving_and_concurrent_pops_take_distinct_members(tmp_path):
    async def body(store, kv):
        await kv.set(b"x", b"v")
        for start in range(0, 20_000, 2_000):
            await kv.type_command("SADD", [b"big", *(b"m%05d" % i for i in range(start, start + 2_000))])
        task = asyncio.get_running_loop().create_task(kv.type_command("SCARD", [b"big"]))
        await asyncio.sleep(0)
        assert not task.done()
        assert await kv.get_value(b"x") == b"v"  # served while the set is read page by page
        assert not task.done()
        assert await task == 20_000
        # SPOPs of one key wait for each other (they read the set across pages): none pops a
        # member another popped.
        first, second = await asyncio.gather(*(kv.type_command("SPOP", [b"big", b"10000"]) for _ in range(2)))
        assert len(first) == len(second) == 10_000 and not set(first) & set(second)
        assert await kv.type_command("SCARD", [b"big"]) == 0

    _run(tmp_path, body)
