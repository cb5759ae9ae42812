"""The hot-key summary (cluster/hotkeys.py): Space-Saving's guarantees over any stream, its
bound on memory, decay, sampling and the hot set."""

from __future__ import annotations

import collections

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ringkv.cluster.hotkeys import READ, WRITE, HotKeys


class Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


streams = st.lists(st.integers(0, 40).map(lambda i: b"k%d" % i), max_size=400)


@settings(max_examples=200)
@given(streams, st.integers(1, 16))
def test_space_saving_guarantees_hold_for_any_stream(stream, capacity):
    sketch = HotKeys(Clock(), capacity=capacity, sample_every=1)
    for key in stream:
        sketch.count(key)
    truth = collections.Counter(stream)
    top = {h.key: h for h in sketch.top()}
    assert len(top) == len(sketch) <= capacity  # bounded memory
    assert sum(h.count for h in top.values()) == len(stream) == sketch.total
    for key, h in top.items():
        assert h.count - h.error <= truth[key] <= h.count
    for key, n in truth.items():
        if n * capacity > len(stream):  # more than m / capacity: never missed
            assert key in top, (key, n, len(stream))


# Hot keys among cold ones, and now and then a decay that lets counts fall and keys leave.
events = st.lists(st.integers(0, 99).map(
    lambda i: None if i == 0 else b"hot%d" % (i % 4) if i < 40 else b"cold%d" % (i % 21)), max_size=600)


@settings(max_examples=300)
@given(events, st.integers(1, 8))
# A key at the smallest count when the summary was last scanned, counted again since: it must
# not be the one evicted while another is still at the smallest count.
@example([b"a", b"b", b"c", b"d", b"b", b"e"], 3)
def test_a_new_key_always_takes_the_place_of_a_key_of_the_smallest_count(stream, capacity):
    # The property Space-Saving's guarantees rest on, checked at every eviction: the evicted
    # key's count (what the newcomer inherits as its error) is the smallest of all counted.
    clock = Clock()
    sketch = HotKeys(clock, capacity=capacity, sample_every=1, half_life_ms=1_000)
    evictions = 0
    for key in stream:
        if key is None:
            clock.ms += 1_000
            sketch.top()  # a report runs the decay
            continue
        before = {h.key: h.count for h in sketch.top()}
        sketch.count(key)
        if key not in before and len(before) == capacity:
            evictions += 1
            after = {h.key: h for h in sketch.top()}
            (evicted,) = set(before) - set(after)
            assert before[evicted] == min(before.values()), (key, evicted, before)
            assert after[key].error == before[evicted]  # what it inherits: what the evicted had
            assert len(after) == capacity
    if len({key for key in stream if key}) > capacity and None not in stream:
        assert evictions  # more keys than room, and none left by decay


@given(streams)
def test_the_top_is_ordered_by_count_then_key(stream):
    sketch = HotKeys(Clock(), capacity=8, sample_every=1)
    for key in stream:
        sketch.count(key)
    ranked = [(-h.count, h.key) for h in sketch.top()]
    assert ranked == sorted(ranked)
    assert sketch.top(3) == sketch.top()[:3]


def test_reads_and_writes_are_told_apart():
    sketch = HotKeys(Clock(), sample_every=1)
    for _ in range(5):
        sketch.count(b"a", READ)
    sketch.count(b"a", WRITE)
    [a] = sketch.top()
    assert (a.count, a.reads, a.writes) == (6, 5, 1)


def test_a_key_that_stops_being_asked_for_decays_out():
    clock = Clock()
    sketch = HotKeys(clock, sample_every=1, half_life_ms=1000, min_count=4)
    for _ in range(64):
        sketch.count(b"old")
    assert sketch.is_hot(b"old")
    clock.ms = 1000
    assert {h.key: h.count for h in sketch.top()} == {b"old": 32}  # a report halves first
    sketch.count(b"new")
    assert {h.key: h.count for h in sketch.top()} == {b"old": 32, b"new": 1}
    clock.ms = 7000  # six more half-lives: 32 >> 6 = 0, and 1 >> 6 too
    assert sketch.top() == []
    assert not sketch.is_hot(b"old") and sketch.total == 0
    sketch.count(b"new")
    assert [(h.key, h.count) for h in sketch.top()] == [(b"new", 1)]


def test_the_hot_set_needs_a_share_and_a_floor():
    sketch = HotKeys(Clock(), capacity=32, sample_every=1, min_share=0.2, min_count=8)
    for _ in range(7):
        sketch.count(b"few")
    for i in range(64):  # refreshes the hot set (every 64 samples)
        sketch.count(b"hot" if i % 2 else b"k%d" % i)
    assert sketch.hot == {b"hot"}  # 32 of 71; "few" has 7 < 8, the others one each


def test_sampling_counts_about_one_in_sample_every():
    sketch = HotKeys(Clock(), sample_every=8, seed=7)
    for _ in range(80_000):
        sketch.offer(b"k")
    assert 9_000 < sketch.total < 11_000


@pytest.mark.parametrize("seconds", [3, 10, 25, 60])
def test_the_rate_estimate_of_a_steady_load_is_right_young_or_old(seconds):
    clock = Clock()
    sketch = HotKeys(clock, sample_every=8, half_life_ms=10_000, seed=3)
    for ms in range(seconds * 1000):  # 500 requests per second of "a", 100 of "b"
        clock.ms = ms
        if ms % 2 == 0:
            sketch.offer(b"a")
        if ms % 10 == 0:
            sketch.offer(b"b")
    clock.ms = seconds * 1000
    rates = {h.key: h.per_s for h in sketch.top()}
    assert 400 < rates[b"a"] < 600 and 70 < rates[b"b"] < 130, rates


def test_clear_forgets_everything():
    sketch = HotKeys(Clock(), sample_every=1)
    for _ in range(100):
        sketch.count(b"k")
    sketch.clear()
    assert sketch.top() == [] and sketch.total == 0 and not sketch.hot


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"capacity": 5000}, {"sample_every": 0},
                                    {"min_share": 1.5}, {"half_life_ms": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        HotKeys(Clock(), **kwargs)
