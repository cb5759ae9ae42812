"""The stored record: writes, merges under both policies, the winner rule, the byte format."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.errors import CorruptionError
from ringkv.versioning.dvv import MAX_ACTOR_BYTES, MAX_COUNTER, Dot
from ringkv.versioning.hlc import make_timestamp
from ringkv.versioning.record import (
    FORMAT_VERSION,
    ConflictPolicy,
    DottedValue,
    Record,
    apply_write,
    decode_record,
    encode_record,
    merge,
    pick_winner,
)

N1, N2, N3 = b"n1\x00\x01", b"n2\x00\x01", b"n3\x00\x01"
T0 = 1_700_000_000_000
LWW = ConflictPolicy.LWW


def ts(ms_after_t0: int, logical: int = 0) -> int:
    return make_timestamp(T0 + ms_after_t0, logical)


def write(stored, actor, value, at, context=None, **kw):
    return apply_write(stored, actor=actor, context=context, value=value, timestamp=at, **kw)


def values(record: Record) -> list[bytes | None]:
    return sorted(s.value for s in record.siblings if s.value is not None)


# --- writes and merges under `siblings` -----------------------------------------------------


def test_two_blind_concurrent_writes_become_siblings():
    on_n1 = write(None, N1, b"red", ts(0))
    on_n2 = write(None, N2, b"blue", ts(1))
    merged = merge(on_n1, on_n2)
    assert values(merged) == [b"blue", b"red"]
    assert merged.context == {N1: 1, N2: 1}


def test_a_blind_write_on_the_same_replica_still_becomes_a_sibling():
    stored = write(None, N1, b"red", ts(0))
    after = write(stored, N1, b"blue", ts(1))
    assert values(after) == [b"blue", b"red"]
    assert [s.dot for s in after.siblings] == [Dot(N1, 1), Dot(N1, 2)]


def test_a_write_with_the_merged_context_resolves_the_siblings():
    merged = merge(write(None, N1, b"red", ts(0)), write(None, N2, b"blue", ts(1)))
    resolved = write(merged, N3, b"purple", ts(2), context=merged.context)
    assert values(resolved) == [b"purple"]
    # Replicas still holding a sibling learn it was replaced when they merge.
    assert values(merge(write(None, N1, b"red", ts(0)), resolved)) == [b"purple"]


def test_a_write_with_a_stale_context_keeps_the_value_it_did_not_see():
    first = write(None, N1, b"v1", ts(0))
    stale_context = first.context
    second = write(first, N1, b"v2", ts(1), context=first.context)
    third = write(second, N1, b"v3", ts(2), context=stale_context)
    assert values(third) == [b"v2", b"v3"]


def test_a_delete_with_context_leaves_a_tombstone_that_reads_as_not_found():
    stored = write(None, N1, b"v1", ts(0))
    deleted = write(stored, N1, None, ts(1), context=stored.context)
    assert len(deleted.siblings) == 1 and deleted.siblings[0].is_tombstone
    assert deleted.winner(now_ms=T0 + 2) is None
    assert deleted.live_siblings(now_ms=T0 + 2) == []


# --- the winner rule ------------------------------------------------------------------------


def test_highest_timestamp_wins_a_plain_read():
    merged = merge(write(None, N1, b"old", ts(5)), write(None, N2, b"new", ts(9)))
    assert merged.winner(now_ms=T0 + 10).value == b"new"


def test_equal_timestamps_are_broken_by_the_dot():
    merged = merge(write(None, N1, b"from-n1", ts(5)), write(None, N2, b"from-n2", ts(5)))
    assert merged.winner(now_ms=T0 + 10).value == b"from-n2"


def test_a_newer_concurrent_tombstone_hides_an_older_live_value():
    merged = merge(write(None, N1, b"v", ts(1)), write(None, N2, None, ts(2)))
    assert merged.winner(now_ms=T0 + 3) is None
    assert [s.value for s in merged.live_siblings(now_ms=T0 + 3)] == [b"v"]


def test_an_expired_winner_reads_as_not_found():
    record = write(None, N1, b"session", ts(0), expire_at_ms=T0 + 1_000)
    assert record.winner(now_ms=T0 + 999).value == b"session"
    assert record.winner(now_ms=T0 + 1_000) is None
    assert record.live_siblings(now_ms=T0 + 1_000) == []


siblings_strategy = st.lists(
    st.builds(
        DottedValue,
        dot=st.builds(Dot, st.sampled_from([N1, N2, N3]), st.integers(1, 3)),
        value=st.none() | st.binary(max_size=8),
        timestamp=st.integers(0, 3),
        expire_at_ms=st.sampled_from([0, 1, 2]),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda s: s.dot,
)


@given(siblings_strategy, st.randoms(use_true_random=False), st.integers(0, 3))
def test_winner_does_not_depend_on_sibling_order(siblings, rnd, now_ms):
    shuffled = list(siblings)
    rnd.shuffle(shuffled)
    assert pick_winner(siblings) == pick_winner(shuffled)
    first = Record({}, tuple(siblings)).winner(now_ms)
    assert first == Record({}, tuple(shuffled)).winner(now_ms)


# --- lww ------------------------------------------------------------------------------------


def test_lww_keeps_only_the_latest_write():
    merged = merge(write(None, N1, b"old", ts(1)), write(None, N2, b"new", ts(2)), policy=LWW)
    assert [s.value for s in merged.siblings] == [b"new"]


def test_lww_blind_write_replaces_the_stored_value():
    stored = write(None, N1, b"old", ts(1), policy=LWW)
    after = write(stored, N1, b"new", ts(2), policy=LWW)
    assert [s.value for s in after.siblings] == [b"new"]


def test_lww_write_with_an_older_timestamp_than_the_stored_one_loses():
    # The HLC orders lww writes, not the context: a write stamped behind what is stored loses.
    stored = write(None, N2, b"ahead", ts(10), policy=LWW)
    after = write(stored, N1, b"behind", ts(5), context=stored.context, policy=LWW)
    assert [s.value for s in after.siblings] == [b"ahead"]
    assert after.context == {N1: 1, N2: 1}


# --- convergence under both policies --------------------------------------------------------

write_step = st.tuples(
    st.integers(0, 2),  # replica (and actor) coordinating the write
    st.none() | st.integers(0, 100),  # context: none, or some earlier state's clock
    st.none() | st.binary(min_size=1, max_size=4),  # value or delete
    st.integers(0, 20),  # ms after T0
)
sync_step = st.tuples(st.integers(0, 2), st.integers(0, 2))


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(list(ConflictPolicy)),
    st.lists(st.one_of(write_step, sync_step), min_size=1, max_size=20),
)
def test_replicas_converge_to_the_same_bytes_in_any_merge_order(policy, steps):
    actors = [N1, N2, N3]
    replicas: list[Record | None] = [None, None, None]
    seen: list[Record] = []
    for step in steps:
        if len(step) == 4:
            i, pick, value, ms = step
            context = seen[pick % len(seen)].context if pick is not None and seen else None
            replicas[i] = write(replicas[i], actors[i], value, ts(ms), context, policy=policy)
        else:
            i, j = step
            if replicas[i] is None or replicas[j] is None:
                replicas[i] = replicas[i] or replicas[j]
            else:
                replicas[i] = merge(replicas[i], replicas[j], policy)
        if replicas[step[0]] is not None:
            seen.append(replicas[step[0]])
    present = [r for r in replicas if r is not None]
    if not present:
        return
    results = set()
    for order in itertools.permutations(present):
        folded = order[0]
        for r in order[1:]:
            folded = merge(folded, r, policy)
        assert folded.siblings, "a merge never empties a record"
        if policy is LWW:
            assert len(folded.siblings) == 1
        results.add(encode_record(folded))
    assert len(results) == 1


# --- liveness and compaction ----------------------------------------------------------------


def test_record_with_only_tombstones_and_expired_values_is_dead():
    deleted = write(None, N1, None, ts(0))
    expiring = write(None, N2, b"v", ts(0), expire_at_ms=T0 + 50)
    both = merge(deleted, expiring)
    assert not both.is_dead(now_ms=T0 + 49)
    assert both.is_dead(now_ms=T0 + 50)


def test_dead_record_is_kept_until_the_grace_period_has_passed():
    deleted = write(None, N1, None, ts(100))
    assert not deleted.is_dead(now_ms=T0 + 150, grace_ms=60_000)
    assert deleted.is_dead(now_ms=T0 + 100 + 60_000, grace_ms=60_000)


def test_a_live_value_without_expiry_keeps_the_record_alive():
    record = merge(write(None, N1, None, ts(0)), write(None, N2, b"v", ts(0)))
    assert not record.is_dead(now_ms=T0 + 10**9)


# --- encoding -------------------------------------------------------------------------------

records = st.builds(
    lambda clock, sibs: Record(
        dict(sorted({**clock, **{s.dot.actor: s.dot.counter for s in sibs}}.items())),
        tuple(sorted(sibs, key=lambda s: s.dot)),
    ),
    st.dictionaries(st.binary(max_size=MAX_ACTOR_BYTES), st.integers(1, MAX_COUNTER), max_size=3),
    st.lists(
        st.builds(
            DottedValue,
            dot=st.builds(Dot, st.binary(min_size=1, max_size=12), st.integers(1, MAX_COUNTER)),
            value=st.none() | st.binary(max_size=300),
            timestamp=st.integers(0, 2**64 - 1),
            expire_at_ms=st.integers(0, 2**48 - 1),
        ),
        min_size=1,
        max_size=4,
        unique_by=lambda s: s.dot.actor,
    ),
)


@given(records)
def test_record_round_trips_through_its_bytes(record):
    data = encode_record(record)
    assert data[0] == FORMAT_VERSION
    assert decode_record(data) == record
    assert decode_record(memoryview(data)) == record
    assert decode_record(bytearray(data)) == record


def test_large_values_round_trip():
    record = write(None, N1, b"x" * 100_000, ts(0))
    assert decode_record(encode_record(record)) == record


def test_one_sibling_record_layout_matches_the_format_document():
    record = Record({b"n1": 1}, (DottedValue(Dot(b"n1", 1), b"hi", make_timestamp(T0, 3)),))
    assert encode_record(record).hex() == (
        "01"  # format version
        "92"  # array(2): clock, siblings
        "81c4026e3101"  # map(1): bin(2) "n1" -> 1
        "91"  # array(1) of siblings
        "94"  # array(4): one sibling
        "92c4026e3101"  # dot = [bin "n1", 1]
        "c4026869"  # value: bin(2) "hi"
        "cf018bcfe568000003"  # timestamp: uint64 (T0 << 16) | 3
        "00"  # expire_at_ms: 0 = never
    )


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_garbage_raises_corruption_error(data):
    try:
        record = decode_record(data)
    except CorruptionError:
        return
    assert encode_record(record) == data  # valid by chance: then it is a real record


@given(records)
def test_every_truncation_raises_corruption_error(record):
    data = encode_record(record)
    for cut in range(len(data)):
        with pytest.raises(CorruptionError):
            decode_record(data[:cut])


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: b"", "empty"),
        (lambda d: bytes([FORMAT_VERSION + 1]) + d[1:], "format version 2"),
        (lambda d: d + b"\x00", "trailing"),
        (lambda d: d[:1] + b"\x92\x80\x90", "no siblings"),
        (lambda d: d.replace(b"\x81\xc4\x02n1\x01", b"\x81\xc4\x02n1\x00", 1), "does not decode"),
        (lambda d: d.replace(b"\x81\xc4\x02n1\x01", b"\x81\xc4\x02n2\x01", 1), "does not cover"),
    ],
    ids=["empty", "wrong-version", "trailing-bytes", "no-siblings", "zero-counter", "uncovered"],
)
def test_corrupt_record_names_what_is_wrong(mangle, message):
    data = encode_record(Record({b"n1": 1}, (DottedValue(Dot(b"n1", 1), b"hi", 5),)))
    with pytest.raises(CorruptionError, match=message):
        decode_record(mangle(data))
