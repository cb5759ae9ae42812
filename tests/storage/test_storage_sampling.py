"""Engine.sample: a key of a range drawn at random without reading the range (what SPOP and
SRANDMEMBER of a large set use). Whatever the memtables and tables hold, a draw is a key that
was written in the range, and None only when the range holds none; over many draws every key
comes up about as often as the others, wherever it is stored."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.errors import ClosedError
from ringkv.storage import Engine, Options

KEYS = st.binary(min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(KEYS, st.booleans()), max_size=120), min_size=1, max_size=4),
       bounds=st.tuples(KEYS, KEYS), seed=st.integers(0, 2**32))
def test_a_draw_is_a_key_written_in_the_range_and_finds_one_when_there_is_one(tmp_path_factory, batches, bounds,
                                                                                 seed):
    start, end = sorted(bounds)
    rng = random.Random(seed)
    db = Engine.open(str(tmp_path_factory.mktemp("sample")), Options(background="thread", block_bytes=256))
    try:
        written = set()
        for i, batch in enumerate(batches):
            for key, delete in batch:
                if delete:
                    db.delete(key)
                else:
                    db.put(key, b"v")
                written.add(key)
            if i < len(batches) - 1:
                db.flush()  # the next batch lands in the memtable over tables
        inside = {k for k in written if start <= k < end}
        draws = [db.sample(start, end, rng) for _ in range(30)]
        assert all(d is None or d in inside for d in draws)
        assert all(d is None for d in draws) if not inside else None not in draws
    finally:
        db.close()


def test_draws_spread_evenly_over_keys_in_the_memtable_and_in_tables(tmp_path):
    db = Engine.open(str(tmp_path / "db"), Options(background="thread", memtable_bytes=64 * 1024))
    try:
        old = [b"k:%05d" % i for i in range(0, 3000, 2)]
        new = [b"k:%05d" % i for i in range(1, 3000, 2)]
        for key in old:
            db.put(key, b"x" * 20)
        db.flush()
        for key in new[:600]:
            db.put(key, b"x" * 20)
        db.flush()
        for key in new[600:]:  # still in the memtable
            db.put(key, b"x" * 20)
        db.put(b"a-before", b"v")
        db.put(b"z-after", b"v")
        rng = random.Random(7)
        counts = Counter(db.sample(b"k:", b"k;", rng) for _ in range(30_000))
        assert None not in counts and b"a-before" not in counts and b"z-after" not in counts
        assert len(counts) > 2900  # 3,000 keys, 10 draws each on average: nearly all drawn
        share_new_in_memtable = sum(counts[k] for k in new[600:]) / 30_000
        assert abs(share_new_in_memtable - 900 / 3000) < 0.03  # a place weighs what it holds
        assert max(counts.values()) < 40  # no key drawn far more often than the mean of 10
        assert db.sample(b"l", b"m", rng) is None
    finally:
        db.close()
    with pytest.raises(ClosedError):
        db.sample(b"a", b"b", random.Random())
