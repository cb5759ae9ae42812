"""The winner rule with collections stored one record per element (versioning/record.py,
docs/formats/elements.md): a clear marker reads as absent, and a live collection meta beats a
newer tombstone, marker or expired value; records without them keep the plain rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ringkv.versioning.dvv import Dot
from ringkv.versioning.record import (
    KIND_CLEARED,
    META_OFFSET,
    DottedValue,
    Record,
    Typed,
    pick_winner,
)

NOW = 1_000
META = Typed(META_OFFSET + 3, b"\x90")  # a set's meta, nothing cleared
MARKER = Typed(KIND_CLEARED, b"\x90")


def _record(*siblings: tuple[object, int, int]) -> Record:
    """Siblings (value, timestamp, expire_at_ms), each of its own actor."""
    dotted = tuple(DottedValue(Dot(b"a%d" % i, 1), value, ts, exp) for i, (value, ts, exp) in enumerate(siblings))
    return Record({d.dot.actor: 1 for d in dotted}, dotted)


plain_values = st.one_of(st.none(), st.binary(max_size=4), st.builds(Typed, st.integers(1, 4), st.binary(max_size=4)))


@given(st.lists(st.tuples(plain_values, st.integers(0, 50), st.sampled_from([0, 0, NOW - 1, NOW + 1])),
                min_size=1, max_size=6))
def test_records_without_metas_or_markers_keep_the_plain_rule(siblings):
    record = _record(*siblings)
    best = pick_winner(record.siblings)
    assert record.winner(NOW) == (best if best.is_live(NOW) else None)
    assert record.live_siblings(NOW) == [s for s in record.siblings if s.is_live(NOW)]


def test_a_clear_marker_reads_as_absent_alone_and_to_sibling_aware_reads():
    assert _record((MARKER, 5, 0)).winner(NOW) is None
    assert _record((MARKER, 5, 0), (b"old", 3, 0)).winner(NOW) is None  # newest wins, and is absent
    assert _record((MARKER, 5, 0), (b"v", 3, 0)).live_siblings(NOW)[0].value == b"v"
    assert len(_record((MARKER, 5, 0), (b"v", 3, 0)).live_siblings(NOW)) == 1


def test_a_live_meta_beats_a_newer_tombstone_marker_or_expired_value():
    for newer in ((None, 9, 0), (MARKER, 9, 0), (b"gone", 9, NOW - 1), (Typed(META_OFFSET + 1, b"\x90"), 9, NOW - 1)):
        winner = _record(newer, (META, 4, 0), (META, 2, 0)).winner(NOW)
        assert winner is not None and winner.value == META and winner.timestamp == 4


def test_a_newer_live_string_still_beats_a_meta_and_an_expired_meta_is_no_winner():
    assert _record((b"s", 9, 0), (META, 4, 0)).winner(NOW).value == b"s"
    assert _record((META, 9, 0), (b"s", 4, 0)).winner(NOW).value == META
    assert _record((None, 9, 0), (META, 4, NOW - 1)).winner(NOW) is None
