"""Sets, hashes and sorted sets stored one record per element (node/elements.py) on a real node's store:
what a command writes does not grow with the collection, a collection emptied or deleted is
gone whatever its size, one stored whole by an earlier release is rewritten per element by its
first write, and types are kept apart."""

from __future__ import annotations

import asyncio
import math

import pytest

from ringkv.clock import Clock
from ringkv.errors import CommandError
from ringkv.node.local_service import LocalService
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import Replica, element_storage_key, elements_range, storage_key
from ringkv.service.datatypes import codec
from ringkv.service.datatypes.base import KIND_HASH, KIND_SET, KIND_ZSET
from ringkv.service.datatypes.convergent import encode_score, meta_state, write_element
from ringkv.storage import Engine, Options
from ringkv.versioning.dvv import Dot
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


def _count_range_reads(monkeypatch) -> list[int]:
    """The first page size of each range read of a collection's elements a command makes
    from now on (0: full pages, a read of the whole collection)."""
    from ringkv.node import elements

    ranges: list[int] = []
    pages = elements.LocalBackend.pages

    def counted(self, start, end, first_records=0):
        ranges.append(first_records)
        return pages(self, start, end, first_records)

    monkeypatch.setattr(elements.LocalBackend, "pages", counted)
    return ranges


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


def test_a_write_to_a_large_hash_stores_only_the_fields_it_changes(tmp_path):
    async def body(store, kv):
        pairs = [x for i in range(5000) for x in (b"f%05d" % i, b"v%d" % i)]
        assert await kv.type_command("HSET", [b"big", *pairs]) == 5000
        assert _element_records(store, b"big") == 5000
        counting = Counting(store)
        assert await kv.type_command("HSET", [b"big", b"f00001", b"v1"]) == 0
        assert counting.writes == 0  # the same value: nothing written
        assert await kv.type_command("HSET", [b"big", b"f00001", b"changed"]) == 0
        assert counting.writes == 2  # the field (born again) and the hash's own record
        assert await kv.type_command("HINCRBY", [b"big", b"n", b"7"]) == 7
        assert counting.writes == 4
        assert await kv.type_command("HDEL", [b"big", b"f00002", b"absent"]) == 1
        assert counting.writes == 5  # a tombstone over one field
        assert await kv.type_command("HGET", [b"big", b"f00001"]) == b"changed"
        assert await kv.type_command("HMGET", [b"big", b"f00002", b"f00003", b"n"]) == [None, b"v3", b"7"]
        assert await kv.type_command("HEXISTS", [b"big", b"f00002"]) == 0
        assert await kv.type_command("HSTRLEN", [b"big", b"f00001"]) == 7
        assert await kv.type_command("HSETNX", [b"big", b"f00003", b"x"]) == 0
        assert await kv.type_command("HLEN", [b"big"]) == 5000
        assert counting.writes == 5
        whole = await kv.type_command("HGETALL", [b"big"])
        assert len(whole) == 5000 and whole[b"n"] == b"7" and b"f00002" not in whole
        assert await kv.delete([b"big"]) == 1
        assert counting.writes == 5 and _element_records(store, b"big") == 5001  # one clear marker; fields lazily dropped
        assert await kv.type_command("HGETALL", [b"big"]) == {}
        assert await kv.type_command("HGET", [b"big", b"f00003"]) is None
        assert await kv.type_command("HSET", [b"big", b"f00003", b"again"]) == 1
        assert await kv.type_command("HGETALL", [b"big"]) == {b"f00003": b"again"}

    _run(tmp_path, body)


def test_a_hash_stored_whole_is_read_and_then_rewritten_per_element(tmp_path):
    async def body(store, kv):
        skey = storage_key(b"", b"old")
        whole = Typed(KIND_HASH, codec.encode(KIND_HASH, {b"a": b"1", b"b": b"x"}))
        store.apply_record(skey, encode_record(apply_write(None, actor=b"old-build", context=None, value=whole,
                                                           timestamp=1)))
        assert await kv.type_command("HGETALL", [b"old"]) == {b"a": b"1", b"b": b"x"}
        assert await kv.type_command("HGET", [b"old", b"a"]) == b"1"
        assert _element_records(store, b"old") == 0
        assert await kv.type_command("HINCRBY", [b"old", b"a", b"2"]) == 3
        assert _element_records(store, b"old") == 2
        assert await kv.type_command("HGETALL", [b"old"]) == {b"a": b"3", b"b": b"x"}
        assert type(store.winner(skey).value) is Typed and store.winner(skey).value.kind != KIND_HASH

    _run(tmp_path, body)


def test_a_hash_emptied_is_gone_and_keeps_its_ttl_while_it_lives(tmp_path):
    async def body(store, kv):
        assert await kv.type_command("HSET", [b"h", b"a", b"1", b"b", b"2"]) == 2
        assert await kv.expire_at(b"h", kv.now_ms() + 100_000)
        assert await kv.type_command("HSET", [b"h", b"c", b"3"]) == 1
        assert 0 < await kv.ttl_ms(b"h") <= 100_000  # a write keeps the key's expiry, as in Redis
        assert await kv.type_command("HDEL", [b"h", b"a", b"b", b"c"]) == 3
        assert await kv.type_command("TYPE", [b"h"]) == "none"
        assert await kv.exists([b"h"]) == 0
        assert await kv.type_command("SADD", [b"h2", b"m"]) == 1
        with pytest.raises(CommandError, match="wrong kind"):
            await kv.type_command("HSET", [b"h2", b"f", b"v"])
        with pytest.raises(CommandError, match="wrong kind"):
            await kv.type_command("HINCRBY", [b"h2", b"f", b"1"])
        assert await kv.type_command("HINCRBY", [b"h", b"n", b"1"]) == 1
        assert await kv.ttl_ms(b"h") == -1  # a new hash: no expiry from the old one
        with pytest.raises(CommandError, match="not an integer"):
            await kv.type_command("HINCRBY", [b"h", b"n", b"x"])
        assert await kv.type_command("HSET", [b"h", b"s", b"text"]) == 1
        with pytest.raises(CommandError, match="hash value is not an integer"):
            await kv.type_command("HINCRBY", [b"h", b"s", b"1"])
        assert await kv.type_command("HINCRBYFLOAT", [b"h", b"n", b"0.5"]) == b"1.5"

    _run(tmp_path, body)


def test_concurrent_writes_of_one_field_are_siblings_with_the_newest_answered(tmp_path):
    """Two replicas that each set one field without seeing the other's write (a partition):
    the field's record holds both values; HGET answers the newest, RINGKV.HGETV both, and the
    next HSET of the field replaces both."""
    async def body(store, kv):
        assert await kv.type_command("HSET", [b"h", b"f", b"mine", b"g", b"1"]) == 2
        skey = storage_key(b"", b"h")
        state = meta_state(store.read(skey), kv.now_ms())
        other = write_element(None, state, None, actor=b"b2", timestamp=store.replica.hlc_now() + 10**9,
                              kind=KIND_HASH, birth=Dot(b"b2", 1), value=b"theirs")
        store.apply_record(element_storage_key(skey, b"f"), encode_record(other))
        assert await kv.type_command("HGET", [b"h", b"f"]) == b"theirs"  # the newer write
        versions = await kv.hash_field_versions(b"h", b"f")
        assert sorted(v.value for v in versions.siblings) == [b"mine", b"theirs"] and versions.context
        assert [v.value for v in (await kv.hash_field_versions(b"h", b"g")).siblings] == [b"1"]
        assert await kv.type_command("HSET", [b"h", b"f", b"resolved"]) == 0
        assert [v.value for v in (await kv.hash_field_versions(b"h", b"f")).siblings] == [b"resolved"]

    _run(tmp_path, body)


def test_a_write_to_a_large_sorted_set_stores_only_the_members_it_changes(tmp_path):
    async def body(store, kv):
        pairs = [x for i in range(5000) for x in (b"%d" % i, b"m%05d" % i)]
        assert await kv.type_command("ZADD", [b"big", *pairs]) == 5000
        assert _element_records(store, b"big") == 5000
        counting = Counting(store)
        assert await kv.type_command("ZADD", [b"big", b"1", b"m00001"]) == 0
        assert counting.writes == 0  # the same score: nothing written
        assert await kv.type_command("ZADD", [b"big", b"CH", b"-2.5", b"m00001"]) == 1
        assert counting.writes == 2  # the member (born again) and the sorted set's own record
        assert await kv.type_command("ZINCRBY", [b"big", b"7", b"new"]) == 7.0
        assert await kv.type_command("ZADD", [b"big", b"INCR", b"1", b"new"]) == 8.0
        assert counting.writes == 6
        assert await kv.type_command("ZADD", [b"big", b"NX", b"INCR", b"1", b"new"]) is None
        assert await kv.type_command("ZADD", [b"big", b"GT", b"0", b"m00003"]) == 0
        assert counting.writes == 6  # neither changed anything
        assert await kv.type_command("ZREM", [b"big", b"m00002", b"absent"]) == 1
        assert counting.writes == 7  # a tombstone over one member
        assert await kv.type_command("ZSCORE", [b"big", b"m00001"]) == -2.5
        assert await kv.type_command("ZMSCORE", [b"big", b"m00002", b"m00003", b"new"]) == [None, 3.0, 8.0]
        assert await kv.type_command("ZCARD", [b"big"]) == 5000
        assert await kv.type_command("ZRANGE", [b"big", b"0", b"2", b"WITHSCORES"]) == [
            b"m00001", -2.5, b"m00000", 0.0, b"m00003", 3.0]
        assert await kv.type_command("ZRANK", [b"big", b"new"]) == 8
        assert await kv.type_command("ZRANGEBYSCORE", [b"big", b"(4998", b"+inf"]) == [b"m04999"]
        assert counting.writes == 7
        assert await kv.type_command("ZPOPMAX", [b"big"]) == [b"m04999", 4999.0]
        assert await kv.delete([b"big"]) == 1
        assert _element_records(store, b"big") == 5001  # one clear marker; members lazily dropped
        assert await kv.type_command("ZSCORE", [b"big", b"m00003"]) is None
        assert await kv.type_command("ZADD", [b"big", b"XX", b"1", b"m00003"]) == 0
        assert await kv.exists([b"big"]) == 0
        assert await kv.type_command("ZADD", [b"big", b"1", b"m00003"]) == 1
        assert await kv.type_command("ZRANGE", [b"big", b"0", b"-1", b"WITHSCORES"]) == [b"m00003", 1.0]

    _run(tmp_path, body)


def test_a_sorted_set_stored_whole_is_read_and_then_rewritten_per_element(tmp_path):
    async def body(store, kv):
        skey = storage_key(b"", b"old")
        whole = Typed(KIND_ZSET, codec.encode(KIND_ZSET, {b"a": 1.0, b"b": 2.5}))
        store.apply_record(skey, encode_record(apply_write(None, actor=b"old-build", context=None, value=whole,
                                                           timestamp=1)))
        assert await kv.type_command("ZRANGE", [b"old", b"0", b"-1", b"WITHSCORES"]) == [b"a", 1.0, b"b", 2.5]
        assert [v.value for v in (await kv.zset_score_versions(b"old", b"b")).siblings] == [b"2.5"]
        assert _element_records(store, b"old") == 0
        assert await kv.type_command("ZINCRBY", [b"old", b"2", b"a"]) == 3.0
        assert _element_records(store, b"old") == 2
        assert await kv.type_command("ZRANGE", [b"old", b"0", b"-1", b"WITHSCORES"]) == [b"b", 2.5, b"a", 3.0]
        assert type(store.winner(skey).value) is Typed and store.winner(skey).value.kind != KIND_ZSET

    _run(tmp_path, body)


def test_concurrent_writes_of_one_member_are_siblings_with_the_newest_score_answered(tmp_path):
    """As a hash field's: two replicas that each set one member's score without seeing the
    other's write leave both; ZSCORE and the ranges use the newest, RINGKV.ZSCOREV shows both,
    and the next write of the member replaces both."""
    async def body(store, kv):
        assert await kv.type_command("ZADD", [b"z", b"1", b"m", b"5", b"n"]) == 2
        skey = storage_key(b"", b"z")
        state = meta_state(store.read(skey), kv.now_ms())
        other = write_element(None, state, None, actor=b"b2", timestamp=store.replica.hlc_now() + 10**9,
                              kind=KIND_ZSET, birth=Dot(b"b2", 1), value=encode_score(9.0))
        store.apply_record(element_storage_key(skey, b"m"), encode_record(other))
        assert await kv.type_command("ZSCORE", [b"z", b"m"]) == 9.0  # the newer write
        assert await kv.type_command("ZRANGE", [b"z", b"0", b"-1"]) == [b"n", b"m"]
        versions = await kv.zset_score_versions(b"z", b"m")
        assert sorted(v.value for v in versions.siblings) == [b"1", b"9"] and versions.context
        assert await kv.type_command("ZINCRBY", [b"z", b"1", b"m"]) == 10.0
        assert [v.value for v in (await kv.zset_score_versions(b"z", b"m")).siblings] == [b"10"]
        assert (await kv.zset_score_versions(b"z", b"absent")).siblings == []
        await kv.type_command("HSET", [b"h", b"f", b"v"])
        with pytest.raises(CommandError, match="wrong kind"):
            await kv.zset_score_versions(b"h", b"f")

    _run(tmp_path, body)


def test_walks_in_score_order_read_only_what_they_reach_through_the_score_index(tmp_path, monkeypatch):
    """With a score index (node/score_index.py), ZRANGE and ZREVRANGE from a non-negative rank,
    the score ranges either way, ZCOUNT, ZRANK, ZREVRANK, ZPOPMIN, ZPOPMAX and
    ZREMRANGEBYSCORE read the members they reach, not the set; an entry whose record no longer
    backs it is skipped and dropped; a restart rebuilds the index from the records."""
    from ringkv.node import elements
    from ringkv.node.score_index import ScoreIndex

    ranges = _count_range_reads(monkeypatch)

    async def main():
        clock = Clock()

        def open_store():
            engine = Engine.open(str(tmp_path / "engine"), Options())
            store = LocalStore(Replica(engine, b"a1", clock), clock, namespaces=Namespaces(1, "siblings"),
                               score_index=ScoreIndex.open(str(tmp_path)))
            store.load()
            return engine, store, LocalService(store)

        engine, store, kv = open_store()
        scores = {b"m%05d" % i: float((i * 7919) % 5000) - 2500.0 for i in range(5000)}
        flat = [x for m, sc in scores.items() for x in (repr(sc).encode(), m)]
        assert await kv.type_command("ZADD", [b"z", *flat]) == 5000
        order = sorted(scores, key=lambda m: (scores[m], m))
        assert await kv.type_command("ZRANGE", [b"z", b"0", b"4"]) == order[:5]
        assert await kv.type_command("ZRANGEBYSCORE", [b"z", b"(-10", b"10", b"LIMIT", b"1", b"2"]) == [
            m for m in order if -10 < scores[m] <= 10][1:3]
        assert await kv.type_command("ZCOUNT", [b"z", b"0", b"(100"]) == 100
        assert await kv.type_command("ZRANK", [b"z", order[42]]) == 42
        assert await kv.type_command("ZRANK", [b"z", b"absent"]) is None
        assert await kv.type_command("ZPOPMIN", [b"z", b"3"]) == [x for m in order[:3] for x in (m, scores[m])]
        assert await kv.type_command("ZREMRANGEBYSCORE", [b"z", b"-2497", b"-2496"]) == 2
        assert await kv.type_command("ZREMRANGEBYRANK", [b"z", b"0", b"0"]) == 1
        # No command read the whole set: the removals' emptiness probes read a first page only.
        assert set(ranges) == {elements.PROBE_PAGE_RECORDS}
        ranges.clear()
        left = order[6:]
        assert await kv.type_command("ZRANGE", [b"z", b"0", b"2", b"WITHSCORES"]) == [
            x for m in left[:3] for x in (m, scores[m])]
        # From the top, through the descending entries:
        assert await kv.type_command("ZREVRANGE", [b"z", b"0", b"2"]) == left[::-1][:3]
        assert await kv.type_command("ZREVRANK", [b"z", left[-10]]) == 9
        assert await kv.type_command("ZREVRANGEBYSCORE", [b"z", b"(10", b"-10", b"LIMIT", b"1", b"2"]) == [
            m for m in left[::-1] if -10 <= scores[m] < 10][1:3]
        assert await kv.type_command("ZPOPMAX", [b"z"]) == [left[-1], scores[left[-1]]]
        left = left[:-1]
        assert set(ranges) <= {elements.PROBE_PAGE_RECORDS}
        ranges.clear()
        assert await kv.type_command("ZREVRANGE", [b"z", b"-1", b"-1"]) == [left[0]] and ranges == [0]  # reads all
        # A member's record collected without a write of ours: its entry is skipped, then dropped.
        engine.delete(element_storage_key(storage_key(b"", b"z"), left[0]))
        assert await kv.type_command("ZRANGE", [b"z", b"0", b"0"]) == [left[1]]
        assert store.score_index.stale_dropped == 1
        # A new score moves the member; DEL then a new set: the old members' entries stay, unused.
        assert await kv.type_command("ZADD", [b"z", b"-9999", left[100]]) == 0
        assert await kv.type_command("ZRANGE", [b"z", b"0", b"1"]) == [left[100], left[1]]
        assert await kv.delete([b"z"]) == 1
        assert await kv.type_command("ZADD", [b"z", b"5", b"x", b"1", b"y"]) == 2
        assert await kv.type_command("ZRANGE", [b"z", b"0", b"9"]) == [b"y", b"x"]
        store.close()
        engine.close()
        # A restart: the index is rebuilt from the records.
        engine, store, kv = open_store()
        assert await kv.type_command("ZRANGE", [b"z", b"0", b"9", b"WITHSCORES"]) == [b"y", 1.0, b"x", 5.0]
        assert await kv.type_command("ZRANK", [b"z", b"x"]) == 1
        store.close()
        engine.close()

    asyncio.run(main())


def test_a_member_whose_score_changes_during_a_walk_is_in_it_at_its_new_score(tmp_path, monkeypatch):
    """A walk reads index entries, then the members' records: a ZADD between the two moves a
    member's entry where the walk has already read. The walk still answers it (at its new
    score, where that lies in the range), as every element present throughout must be."""
    from ringkv.node import elements
    from ringkv.node.score_index import ScoreIndex

    async def main():
        clock = Clock()
        engine = Engine.open(str(tmp_path / "engine"), Options())
        store = LocalStore(Replica(engine, b"a1", clock), clock, namespaces=Namespaces(1, "siblings"),
                           score_index=ScoreIndex.open(str(tmp_path)))
        kv = LocalService(store)
        try:
            assert await kv.type_command("ZADD", [b"z", *(x for i in range(10) for x in (b"%d" % i, b"m%d" % i))]) == 10
            records = elements.LocalBackend.records
            moves = [(b"m3", b"100"), (b"m6", b"-1"), (b"m8", b"50")]
            moving_now = []

            async def moving(self, skeys):
                if moves and not moving_now:  # another client's ZADD, after the walk read the entries
                    member, score = moves.pop(0)
                    moving_now.append(member)
                    await kv.type_command("ZADD", [b"z", score, member])
                    moving_now.clear()
                return await records(self, skeys)

            monkeypatch.setattr(elements.LocalBackend, "records", moving)
            assert await kv.type_command("ZRANGEBYSCORE", [b"z", b"-inf", b"+inf", b"WITHSCORES"]) == [
                b"m0", 0.0, b"m1", 1.0, b"m2", 2.0, b"m4", 4.0, b"m5", 5.0, b"m6", 6.0, b"m7", 7.0, b"m8", 8.0,
                b"m9", 9.0, b"m3", 100.0]  # m3 moved ahead: the index read had it at 3, the record at 100
            # m6 moved behind the walk, which read its entry at 6 and its record at -1:
            assert await kv.type_command("ZRANGE", [b"z", b"0", b"5"]) == [b"m6", b"m0", b"m1", b"m2", b"m4", b"m5"]
            # From the top: m8 moved from 8 to 50 while the walk read its entry.
            assert await kv.type_command("ZREVRANGE", [b"z", b"0", b"2"]) == [b"m3", b"m8", b"m9"]
            monkeypatch.setattr(elements.LocalBackend, "records", records)
            assert await kv.type_command("ZRANGE", [b"z", b"0", b"1", b"WITHSCORES"]) == [b"m6", -1.0, b"m0", 0.0]
        finally:
            store.close()
            engine.close()

    asyncio.run(main())


def test_an_entry_its_record_no_longer_backs_goes_after_a_grace_period(tmp_path):
    """The score index deletes a member's old entry GRACE_S after its score changed (walks
    under way may still read it), and keeps it when the score comes back in the meantime."""
    from ringkv.node import score_index
    from ringkv.node.score_index import ScoreIndex, walk_range
    from ringkv.versioning.record import overwrite

    now = [100.0]
    index = ScoreIndex(Engine.open(str(tmp_path / "zindex"), Options()), now_s=lambda: now[0])
    try:
        skey = storage_key(b"", b"z")
        eskey = element_storage_key(skey, b"m")
        state = meta_state(None, 0)

        def member(score, stored=None):
            return write_element(stored, state, None, actor=b"a1", timestamp=1, kind=KIND_ZSET, birth=Dot(b"a1", 1),
                                 value=encode_score(score))

        def scores():
            prefix = elements_range(skey)[0]
            up = [(sc, m) for _, sc, m in index.entries(*walk_range(prefix, -math.inf, math.inf, False))]
            down = [(sc, m) for _, sc, m in index.entries(*walk_range(prefix, -math.inf, math.inf, True))]
            assert down == up[::-1] and {m for _, m in up} <= {b"m"}
            return [sc for sc, _ in up]

        one = member(1.0)
        index.update(eskey, None, one)
        two = member(2.0, one)
        index.update(eskey, one, two)
        assert scores() == [1.0, 2.0]  # the old entry waits out the grace period
        now[0] += score_index.GRACE_S + 1
        index.update(storage_key(b"", b"other"), None, None)  # any update collects what is due
        assert scores() == [2.0]
        three = member(1.0, two)
        index.update(eskey, two, three)  # back to 1 ...
        back = member(2.0, three)
        index.update(eskey, three, back)  # ... and to 2 within the grace period: its entry stays
        now[0] += score_index.GRACE_S + 1
        index.update(eskey, back, overwrite(back, actor=b"a1", value=None, timestamp=2))  # removed
        assert scores() == [2.0]
        now[0] += score_index.GRACE_S + 1
        index.update(storage_key(b"", b"other"), None, None)
        assert scores() == []
    finally:
        index.close()


def test_restore_writes_a_set_hash_or_sorted_set_one_record_per_element(tmp_path):
    """RESTORE of a DUMP of a collection writes it per element, as its own commands would:
    the payload may be larger than max_value_bytes, which bounds a single record; a string is
    still one record."""
    async def main():
        clock = Clock()
        engine = Engine.open(str(tmp_path / "engine"), Options())
        store = LocalStore(Replica(engine, b"a1", clock), clock, namespaces=Namespaces(1, "siblings"),
                           max_value_bytes=1000)
        kv = LocalService(store)
        try:
            fields = [x for i in range(300) for x in (b"field%04d" % i, b"value%04d" % i)]
            assert await kv.type_command("HSET", [b"h", *fields]) == 300
            assert await kv.type_command("ZADD", [b"z", *(x for i in range(300) for x in (b"%d" % i, b"m%04d" % i))])
            assert await kv.type_command("SADD", [b"s", *(b"m%04d" % i for i in range(300))]) == 300
            for key, kind in ((b"h", KIND_HASH), (b"z", KIND_ZSET), (b"s", KIND_SET)):
                payload = await kv.type_command("DUMP", [key])
                assert len(payload) > 1000
                assert await kv.type_command("RESTORE", [key + b"2", b"0", payload]) == "OK"
                assert _element_records(store, key + b"2") == 300
                assert meta_state(store.read(storage_key(b"", key + b"2")), kv.now_ms()).kind == kind
                with pytest.raises(CommandError, match="already exists"):
                    await kv.type_command("RESTORE", [key + b"2", b"0", payload])
            assert await kv.type_command("HGET", [b"h2", b"field0299"]) == b"value0299"
            assert await kv.type_command("ZRANGE", [b"z2", b"0", b"1"]) == [b"m0000", b"m0001"]
            assert await kv.type_command("SCARD", [b"s2"]) == 300
            # REPLACE over a collection of the same kind: the elements the payload lacks go.
            small = await kv.type_command("DUMP", [b"h"])
            assert await kv.type_command("HDEL", [b"h", *(b"field%04d" % i for i in range(1, 300))]) == 299
            assert await kv.type_command("RESTORE", [b"h2", b"0", await kv.type_command("DUMP", [b"h"]),
                                                     b"REPLACE"]) == "OK"
            assert await kv.type_command("HGETALL", [b"h2"]) == {b"field0000": b"value0000"}
            assert await kv.type_command("RESTORE", [b"h3", b"5000", small]) == "OK"
            assert 0 < await kv.ttl_ms(b"h3") <= 5000 and await kv.type_command("HLEN", [b"h3"]) == 300
            await kv.set(b"str", b"x" * 900)
            assert await kv.type_command("RESTORE", [b"str2", b"0", await kv.type_command("DUMP", [b"str"])]) == "OK"
            assert await kv.get_value(b"str2") == b"x" * 900 and _element_records(store, b"str2") == 0
        finally:
            store.close()
            engine.close()

    asyncio.run(main())


def test_random_choices_of_a_large_set_read_only_the_members_they_draw(tmp_path, monkeypatch):
    """SRANDMEMBER, SPOP and HRANDFIELD without a count draw a member from the engine
    (storage/sampling.py) and read only it, once (in a cluster each read is a round trip);
    they read the whole collection only when draws keep finding removed members."""
    from ringkv.node import elements

    ranges = _count_range_reads(monkeypatch)
    reads = []
    record, records = elements.LocalBackend.record, elements.LocalBackend.records

    async def one(self, skey):
        reads.append(1)
        return await record(self, skey)

    async def many(self, skeys):
        reads.append(len(skeys))
        return await records(self, skeys)

    monkeypatch.setattr(elements.LocalBackend, "record", one)
    monkeypatch.setattr(elements.LocalBackend, "records", many)

    async def body(store, kv):
        members = [b"m%05d" % i for i in range(3000)]
        assert await kv.type_command("SADD", [b"big", *members]) == 3000
        store.engine.flush()  # some members in a table, the next ones in the memtable
        assert await kv.type_command("SADD", [b"big", *(b"n%05d" % i for i in range(1000))]) == 1000
        reads.clear()
        assert await kv.type_command("SRANDMEMBER", [b"big"]) in members + [b"n%05d" % i for i in range(1000)]
        assert len(reads) == 2  # the meta record, then the drawn members (one draw may repeat)
        drawn = [await kv.type_command("SRANDMEMBER", [b"big"]) for _ in range(400)]
        assert len(set(drawn)) > 300 and all(m.startswith((b"m", b"n")) for m in drawn)
        assert ranges == []  # no member read but the drawn ones
        popped = [await kv.type_command("SPOP", [b"big"]) for _ in range(200)]
        assert len(set(popped)) == 200 and await kv.type_command("SMISMEMBER", [b"big", *popped[:5]]) == [0] * 5
        assert set(ranges) == {elements.PROBE_PAGE_RECORDS}  # each pop's emptiness probe only
        ranges.clear()
        assert await kv.type_command("SCARD", [b"big"]) == 3800 and ranges == [0]
        ranges.clear()
        ten = await kv.type_command("SRANDMEMBER", [b"big", b"10"])
        assert len(set(ten)) == 10 and await kv.type_command("SMISMEMBER", [b"big", *ten]) == [1] * 10
        five = await kv.type_command("SPOP", [b"big", b"5"])
        assert len(five) == 5 and await kv.type_command("SMISMEMBER", [b"big", *five]) == [0] * 5
        assert set(ranges) <= {elements.PROBE_PAGE_RECORDS}  # draws, and the pop's emptiness probe
        with pytest.raises(CommandError, match="out of range"):
            await kv.type_command("SPOP", [b"big", b"-1"])
        assert len(await kv.type_command("SRANDMEMBER", [b"big", b"-300"])) == 300  # repeats: read whole

        assert await kv.type_command("SADD", [b"few", *members[:2000]]) == 2000
        assert await kv.type_command("SREM", [b"few", *members[3:2000]]) == 1997
        ranges.clear()
        left = {await kv.type_command("SRANDMEMBER", [b"few"]) for _ in range(30)}
        assert left <= set(members[:3]) and ranges  # draws found tombstones: the members were read
        assert sorted([await kv.type_command("SPOP", [b"few"]) for _ in range(3)]) == members[:3]
        assert await kv.type_command("SPOP", [b"few"]) is None and await kv.exists([b"few"]) == 0

        assert await kv.type_command("HSET", [b"h", *(x for i in range(500) for x in (b"f%d" % i, b"v"))]) == 500
        fields = {await kv.type_command("HRANDFIELD", [b"h"]) for _ in range(100)}
        assert len(fields) > 50 and all(f.startswith(b"f") for f in fields)
        pairs = await kv.type_command("HRANDFIELD", [b"h", b"3", b"WITHVALUES"])
        assert len(pairs) == 6 and len(set(pairs[::2])) == 3 and pairs[1::2] == [b"v"] * 3
        assert sorted(await kv.type_command("SRANDMEMBER", [b"few", b"5"])) == []  # gone: nothing to draw
        assert await kv.type_command("SADD", [b"three", b"a", b"b", b"c"]) == 3
        assert sorted(await kv.type_command("SRANDMEMBER", [b"three", b"5"])) == [b"a", b"b", b"c"]  # fewer: all

    _run(tmp_path, body)
