"""The score index's keys (node/score_index.py): scores and members sort as Redis orders a
sorted set, ascending in one run and descending in the other, and every entry reads back."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from ringkv.node.replica import elements_range, storage_key
from ringkv.node.score_index import entry_keys, ordered_score, parse_entry, score_of, walk_range

scores = st.one_of(st.floats(allow_nan=False), st.integers(-3, 3).map(float)).map(lambda s: s + 0.0)
members = st.binary(max_size=6).map(lambda b: b.replace(b"\x01", b"\x00"))  # 00s, often
PREFIX = elements_range(storage_key(b"ns", b"board"))[0]


@given(scores, scores)
def test_ordered_scores_sort_as_the_numbers_and_read_back(a, b):
    assert score_of(ordered_score(a)) == a
    assert (ordered_score(a) < ordered_score(b)) == (a < b)


@given(scores, members, scores, members)
def test_entries_sort_by_score_then_member_ascending_and_descending(s1, m1, s2, m2):
    up1, down1 = entry_keys(PREFIX, s1, m1)
    up2, down2 = entry_keys(PREFIX, s2, m2)
    assert parse_entry(up1)[1:] == parse_entry(down1)[1:] == (s1, m1)
    if (s1, m1) < (s2, m2):
        assert up1 < up2 and down1 > down2
    lo, hi = min(s1, s2), max(s1, s2)
    for reverse, key in ((False, up1), (True, down1)):
        start, end = walk_range(PREFIX, lo, hi, reverse)
        assert start <= key < end  # every entry of a score in [lo, hi] lies in the walk's range
        start, end = walk_range(PREFIX, -math.inf, math.inf, not reverse)
        assert not start <= key < end  # and never in the other order's


@given(members)
def test_the_entries_of_a_set_stay_inside_its_elements_range(member):
    start, end = elements_range(storage_key(b"ns", b"board"))
    for key in entry_keys(PREFIX, 1.5, member):
        assert start <= key < end
    other = elements_range(storage_key(b"ns", b"boar"))
    assert not other[0] <= entry_keys(PREFIX, -math.inf, member)[0] < other[1]
