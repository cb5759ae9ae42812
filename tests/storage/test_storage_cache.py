"""Caches: the block cache never holds more than its byte budget and evicts the least recently
used block first; the table cache never keeps more files open than it is allowed."""

from __future__ import annotations

import os

from ringkv.storage import Engine, Options
from ringkv.storage.cache import BlockCache, TableCache
from ringkv.storage.fs import PosixFileSystem


def test_block_cache_stays_within_its_byte_budget():
    cache = BlockCache(1000)
    for i in range(100):
        cache.put((1, i * 64), f"block {i}", 64 + i % 50)
        assert cache.used_bytes <= 1000
    assert cache.used_bytes > 800, "it fills up to the budget"


def test_block_cache_evicts_least_recently_used_first():
    cache = BlockCache(300)
    for name in ("a", "b", "c"):
        cache.put((1, name), name, 100)
    assert cache.get((1, "a")) == "a"  # "a" is now the most recently used; "b" the least
    cache.put((1, "d"), "d", 100)
    assert cache.get((1, "b")) is None
    assert [cache.get((1, n)) for n in ("a", "c", "d")] == ["a", "c", "d"]
    assert (cache.hits, cache.misses) == (4, 1)


def test_block_larger_than_the_cache_is_served_uncached():
    cache = BlockCache(100)
    cache.put((1, 0), "small", 60)
    cache.put((1, 1), "huge", 101)
    assert cache.get((1, 1)) is None
    assert cache.get((1, 0)) == "small", "a huge block does not flush the cache"


def test_deleted_table_releases_its_blocks():
    cache = BlockCache(10_000)
    for table in (7, 8):
        for off in range(0, 500, 100):
            cache.put((table, off), "x", 100)
    cache.evict_table(7)
    assert cache.used_bytes == 500
    assert cache.get((7, 0)) is None and cache.get((8, 0)) == "x"


def _files(directory, n):
    paths = []
    for i in range(n):
        p = os.path.join(directory, f"{i:06d}.sst")
        with open(p, "wb") as f:
            f.write(b"table %d" % i)
        paths.append(p)
    return paths


def test_table_cache_keeps_at_most_its_file_budget_open(tmp_path):
    cache = TableCache(PosixFileSystem(), capacity_files=4)
    paths = _files(str(tmp_path), 12)
    for _ in range(3):
        for number, p in enumerate(paths):
            assert cache.get(number, p).read(0, 100) == b"table %d" % number
            assert len(cache) <= 4
    cache.close()
    assert len(cache) == 0


def test_table_cache_keeps_recently_used_files(tmp_path):
    cache = TableCache(PosixFileSystem(), capacity_files=4)
    paths = _files(str(tmp_path), 5)
    for number in range(4):
        cache.get(number, paths[number])
    cache.get(0, paths[0])  # 0 is now the most recently used; 1 the least
    cache.get(4, paths[4])
    misses = cache.misses
    cache.get(0, paths[0])
    assert cache.misses == misses, "the recently used file stayed open"
    cache.get(1, paths[1])
    assert cache.misses == misses + 1, "the least recently used file was closed"


def test_reader_holding_an_evicted_file_can_still_read_it(tmp_path):
    cache = TableCache(PosixFileSystem(), capacity_files=4)
    paths = _files(str(tmp_path), 6)
    held = cache.get(0, paths[0])
    for number in range(1, 6):
        cache.get(number, paths[number])
    assert held.read(0, 7) == b"table 0"


def test_engine_with_many_tables_respects_both_cache_budgets(tmp_path):
    options = Options(
        background="thread",
        table_cache_files=4,
        block_cache_bytes=64 * 1024,
        block_bytes=512,
        level0_compaction_trigger_files=100,
        level0_stop_writes_files=100,
    )
    with Engine.open(str(tmp_path), options) as db:
        for table in range(10):
            for i in range(100):
                db.put(b"t%02d:%03d" % (table, i), b"v" * 100)
            db.flush()
        for _ in range(2):
            for table in range(10):
                for i in range(100):
                    assert db.get(b"t%02d:%03d" % (table, i)) == b"v" * 100
        stats = db.stats()
    assert stats["tables"] == 10
    assert stats["table_cache"]["open_files"] <= 4
    assert stats["block_cache"]["used_bytes"] <= 64 * 1024
    assert stats["block_cache"]["hits"] > 0


def test_a_grown_entry_is_charged_more_and_the_least_recently_used_go_first():
    cache = BlockCache(300)
    for key in ("a", "b", "c"):
        cache.put(key, key, 100)
    cache.get("a")  # order now b, c, a
    cache.grow("c", 50)  # 350 > 300: b, the least recently used, goes
    assert list(cache._entries) == ["c", "a"] and cache.used_bytes == 250
    assert cache.charge_of("c") == 150
    cache.grow("gone", 1_000)  # evicted or never cached: nothing changes
    assert cache.used_bytes == 250 and "gone" not in cache._entries
