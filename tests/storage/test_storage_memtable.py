"""Memtable snapshots: a scan's view of recent writes is frozen when the snapshot is taken, so
puts of new keys, overwrites and deletes made afterwards are invisible to it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.storage.memtable import MemTable

keys = st.sampled_from([b"k%02d" % i for i in range(30)])
writes = st.lists(st.tuples(keys, st.one_of(st.none(), st.binary(max_size=8))), max_size=40)


def live(model: dict) -> list:
    """What a reader sees: tombstones (None) hidden by the merge above the memtable."""
    return sorted((k, v) for k, v in model.items() if v is not None)


def visible(snapshot, start=None, end=None) -> list:
    return [(k, v) for k, v in snapshot.items_from(start, end) if v is not None]


@settings(max_examples=150)
@given(before=writes, after=writes)
def test_snapshot_does_not_see_later_puts_overwrites_or_deletes(before, after):
    mem = MemTable(wal_number=1)
    model = {}
    for k, v in before:
        mem.put(k, v)
        model[k] = v
    snap = mem.snapshot()
    for k, v in after:
        mem.put(k, v)
    assert visible(snap) == live(model)
    assert list(snap.items_from(None, None)) == sorted(model.items()), "tombstones kept in order"
    snap.release()
    assert mem.data == {**model, **dict(after)}


def test_two_snapshots_each_see_their_own_moment():
    mem = MemTable(1)
    mem.put(b"a", b"1")
    first = mem.snapshot()
    mem.put(b"a", b"2")
    mem.put(b"b", b"2")
    second = mem.snapshot()
    mem.put(b"a", None)
    mem.put(b"b", b"3")
    mem.put(b"c", b"3")
    assert visible(first) == [(b"a", b"1")]
    assert visible(second) == [(b"a", b"2"), (b"b", b"2")]
    assert visible(mem.snapshot()) == [(b"b", b"3"), (b"c", b"3")]


def test_snapshot_range_is_start_inclusive_end_exclusive():
    mem = MemTable(1)
    for k in (b"a", b"b", b"c", b"d"):
        mem.put(k, k)
    snap = mem.snapshot()
    assert [k for k, _ in snap.items_from(b"b", b"d")] == [b"b", b"c"]
    assert [k for k, _ in snap.items_from(b"bb", None)] == [b"c", b"d"]
    assert list(snap.items_from(b"x", b"a")) == []


def test_released_snapshot_stops_costing_writers_undo_entries():
    mem = MemTable(1)
    mem.put(b"a", b"1")
    snap = mem.snapshot()
    snap.release()
    mem.put(b"a", b"2")
    assert snap.undo == {}


def test_snapshot_being_read_does_not_see_writes_made_meanwhile():
    mem = MemTable(1)
    for k in (b"a", b"b", b"c"):
        mem.put(k, b"old")
    items = mem.snapshot().items_from(None, None)
    assert next(items) == (b"a", b"old")
    mem.put(b"b", b"new")
    mem.put(b"c", None)
    assert list(items) == [(b"b", b"old"), (b"c", b"old")]
