"""The coordinator's hot-key cache (node/hot_cache.py): an entry lives `hot_cache_ms`, a write
through the node hides nothing, and it never holds more than its bound."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.node.hot_cache import MISS, RECENT_DROPS, HotCache


def test_an_entry_answers_until_it_expires():
    cache = HotCache(4)
    assert cache.get(b"k", 0) is MISS
    assert cache.put(b"k", b"rec", 100, 0, cache.generation)
    assert cache.get(b"k", 99) == b"rec"
    assert cache.get(b"k", 100) is MISS
    assert cache.put(b"gone", None, 100, 0, cache.generation)  # "no record" is cached too
    assert cache.get(b"gone", 50) is None
    assert (cache.hits, cache.misses) == (2, 2)


def test_a_read_that_overlapped_a_write_of_its_key_keeps_nothing():
    cache = HotCache(4)
    started = cache.generation
    cache.drop(b"other")  # a write of another key: no matter
    assert cache.put(b"a", b"old", 100, 0, started)
    started = cache.generation
    cache.drop(b"a")  # the write of this key
    assert not cache.put(b"a", b"old", 100, 0, started)
    assert cache.get(b"a", 1) is MISS


def test_past_the_writes_it_remembers_a_late_read_keeps_nothing():
    cache = HotCache(4)
    started = cache.generation
    for i in range(RECENT_DROPS + 1):
        cache.drop(b"k%d" % i)
    assert not cache.put(b"unrelated", b"v", 100, 0, started)


def test_clear_hides_every_read_in_flight():
    cache = HotCache(4)
    started = cache.generation
    cache.clear()
    assert not cache.put(b"a", b"v", 100, 0, started)


def test_it_holds_at_most_its_bound_and_makes_room_from_expired_entries():
    cache = HotCache(2)
    assert cache.put(b"a", b"1", 10, 0, cache.generation)
    assert cache.put(b"b", b"2", 20, 0, cache.generation)
    assert not cache.put(b"c", b"3", 30, 5, cache.generation)  # full of live entries
    assert cache.put(b"c", b"3", 30, 15, cache.generation)  # "a" expired at 10: its place
    assert len(cache) == 2 and cache.get(b"a", 15) is MISS and cache.get(b"c", 15) == b"3"


ops = st.lists(st.tuples(st.sampled_from(["start", "drop", "put", "clear", "get"]), st.sampled_from([b"a", b"b", b"c"]),
                         st.integers(0, 5)), max_size=60)


@settings(max_examples=300)
@given(ops)
def test_it_never_answers_what_a_write_through_it_replaced(script):
    # Model: a read started at some moment may only be kept if no write of its key (or
    # clear) came after that moment; and an answer is always the newest kept value.
    cache = HotCache(2)
    started: list[tuple[int, int]] = []  # (generation, step) of reads in flight
    written_at: dict[bytes, int] = {}  # key -> step of its last write (clear: every key)
    kept: dict[bytes, int] = {}  # key -> step its cached read started
    for step, (op, key, i) in enumerate(script):
        if op == "start":
            started.append((cache.generation, step))
        elif op == "drop":
            cache.drop(key)
            written_at[key] = step
            kept.pop(key, None)
        elif op == "clear":
            cache.clear()
            for k in (b"a", b"b", b"c"):
                written_at[k] = step
            kept.clear()
        elif op == "put" and started:
            generation, began = started[i % len(started)]
            if cache.put(key, b"%d" % began, 1_000, 0, generation):
                assert written_at.get(key, -1) < began, "kept a read that overlapped a write of its key"
                kept[key] = began
        elif op == "get":
            got = cache.get(key, 1)
            assert got is MISS or got == b"%d" % kept[key]
        assert len(cache) <= 2
