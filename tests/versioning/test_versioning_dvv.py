"""Dotted version vectors: writes replace exactly what their context saw; merge is a join.

The property tests run random histories: 1-4 actors, each the coordinator on its own replica,
writing with contexts read earlier from any replica (stale ones included) or with none, and
replicas syncing pairwise. A model that knows nothing of clocks tracks, for every write, the
writes its client had seen; after all replicas merge, in any order, exactly the writes no
later write saw must remain.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.errors import InvalidContextError
from ringkv.versioning import dvv
from ringkv.versioning.dvv import Dot

A, B, C = b"node-a", b"node-b", b"node-c"


@dataclass(frozen=True)
class Value:
    dot: Dot
    write_id: int


@dataclass(frozen=True)
class State:
    clock: dict[bytes, int]
    siblings: tuple[Value, ...]
    seen: frozenset[int]
    """Model: ids of every write this state has (causally) seen."""


EMPTY = State({}, (), frozenset())


@dataclass
class History:
    replicas: list[State]
    snapshots: list[State] = field(default_factory=list)
    seen_by_write: dict[int, frozenset[int]] = field(default_factory=dict)


def _merge(x: State, y: State) -> State:
    clock, siblings = dvv.merge(x.clock, x.siblings, y.clock, y.siblings)
    return State(clock, tuple(siblings), x.seen | y.seen)


def _fold(states) -> State:
    out = EMPTY
    for s in states:
        out = _merge(out, s)
    return out


def _run(actors: int, ops) -> History:
    history = History(replicas=[EMPTY] * actors, snapshots=[EMPTY])
    for op in ops:
        if op[0] == "write":
            _, changed, pick = op
            changed %= actors
            context = EMPTY if pick is None else history.snapshots[pick % len(history.snapshots)]
            stored = history.replicas[changed]
            write_id = len(history.seen_by_write)
            dot, clock, survivors = dvv.write(
                stored.clock, stored.siblings, bytes([changed]) * 3, context.clock
            )
            survivors.append(Value(dot, write_id))
            history.seen_by_write[write_id] = context.seen
            history.replicas[changed] = State(
                clock,
                tuple(dvv.in_dot_order(survivors)),
                stored.seen | context.seen | {write_id},
            )
        else:
            _, changed, source = op
            changed, source = changed % actors, source % actors
            history.replicas[changed] = _merge(history.replicas[changed], history.replicas[source])
        history.snapshots.append(history.replicas[changed])
    return history


write_op = st.tuples(st.just("write"), st.integers(0, 3), st.none() | st.integers(0, 1000))
sync_op = st.tuples(st.just("sync"), st.integers(0, 3), st.integers(0, 3))
histories = st.builds(
    _run, st.integers(1, 4), st.lists(st.one_of(write_op, write_op, sync_op), max_size=30)
)


def _canonical(state: State) -> tuple:
    return tuple(state.clock.items()), state.siblings


@settings(max_examples=150, deadline=None)
@given(histories, st.data())
def test_no_write_is_lost_unless_a_later_write_saw_it(history, data):
    order = data.draw(st.permutations(history.replicas))
    final = _fold(order)
    superseded = set().union(*history.seen_by_write.values())
    expected = set(history.seen_by_write) - superseded
    survivors = [v.write_id for v in final.siblings]
    assert sorted(survivors) == sorted(expected)
    # The merged clock covers every write ever made, so its context supersedes them all.
    assert all(dvv.covers(final.clock, v.dot) for s in history.snapshots for v in s.siblings)


@settings(max_examples=150, deadline=None)
@given(histories, st.data())
def test_merge_is_commutative_associative_and_idempotent(history, data):
    pick = st.sampled_from(history.snapshots + history.replicas)
    x, y, z = data.draw(pick), data.draw(pick), data.draw(pick)
    assert _canonical(_merge(x, y)) == _canonical(_merge(y, x))
    assert _canonical(_merge(_merge(x, y), z)) == _canonical(_merge(x, _merge(y, z)))
    assert _canonical(_merge(x, x)) == _canonical(x)


@settings(max_examples=100, deadline=None)
@given(histories)
def test_every_state_is_canonical(history):
    for state in history.snapshots:
        assert list(state.clock) == sorted(state.clock)
        assert all(count > 0 for count in state.clock.values())
        assert [v.dot for v in state.siblings] == sorted(v.dot for v in state.siblings)


# --- scenarios ------------------------------------------------------------------------------


def test_two_blind_writes_to_different_replicas_become_siblings():
    dot_a, clock_a, _ = dvv.write({}, [], A, None)
    dot_b, clock_b, _ = dvv.write({}, [], B, None)
    clock, siblings = dvv.merge(clock_a, [Value(dot_a, 1)], clock_b, [Value(dot_b, 2)])
    assert [v.write_id for v in siblings] == [1, 2]
    assert clock == {A: 1, B: 1}


def test_a_write_with_the_merged_context_replaces_both_siblings():
    siblings = [Value(Dot(A, 1), 1), Value(Dot(B, 1), 2)]
    dot, clock, kept = dvv.write({A: 1, B: 1}, siblings, A, {A: 1, B: 1})
    assert kept == []
    assert dot == Dot(A, 2)
    assert clock == {A: 2, B: 1}


def test_a_write_with_a_stale_context_keeps_what_it_did_not_see():
    siblings = [Value(Dot(A, 1), 1), Value(Dot(A, 2), 2)]
    dot, clock, kept = dvv.write({A: 2}, siblings, A, {A: 1})
    assert [v.write_id for v in kept] == [2]
    assert dot == Dot(A, 3)
    assert clock == {A: 3}


def test_the_new_dot_is_past_both_the_object_and_the_context():
    assert dvv.next_dot(A, {A: 3}, {A: 5}) == Dot(A, 6)
    assert dvv.next_dot(A, {A: 7}, {A: 5}) == Dot(A, 8)
    assert dvv.next_dot(C, {A: 7}, {}) == Dot(C, 1)


def test_clock_relations():
    assert dvv.descends({A: 2, B: 1}, {A: 1})
    assert dvv.descends({A: 1}, {})
    assert dvv.dominates({A: 2}, {A: 1})
    assert not dvv.dominates({A: 1}, {A: 1})
    assert dvv.concurrent({A: 1}, {B: 1})
    assert not dvv.concurrent({A: 2, B: 1}, {B: 1})
    assert dvv.equal({A: 1, B: 0}, {A: 1})
    assert not dvv.equal({A: 1}, {A: 2})


def test_join_is_pointwise_max_in_actor_order_without_zeros():
    joined = dvv.join({B: 3, A: 1, C: 0}, {A: 4, C: 2})
    assert joined == {A: 4, B: 3, C: 2}
    assert list(joined) == [A, B, C]


# --- contexts -------------------------------------------------------------------------------


@given(st.dictionaries(st.binary(max_size=dvv.MAX_ACTOR_BYTES), st.integers(1, dvv.MAX_COUNTER),
                       max_size=dvv.MAX_CLOCK_ACTORS))
def test_context_round_trips(clock):
    assert dvv.decode_context(dvv.encode_context(clock)) == clock


def test_context_of_an_unwritten_key_is_empty_not_missing():
    assert dvv.decode_context(dvv.encode_context({})) == {}


def test_context_bytes_do_not_depend_on_insertion_order():
    assert dvv.encode_context({A: 1, B: 2}) == dvv.encode_context({B: 2, A: 1})


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_garbage_context_raises_a_typed_error(data):
    try:
        clock = dvv.decode_context(data)
    except InvalidContextError:
        return
    # A few byte strings are valid contexts by chance; then they decode to a real clock.
    assert dvv.encode_context(clock) == data


def test_truncated_context_raises_a_typed_error():
    encoded = dvv.encode_context({A: 3, B: 7})
    for cut in range(len(encoded)):
        with pytest.raises(InvalidContextError):
            dvv.decode_context(encoded[:cut])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x02\x80", "format version 2"),
        (b"\x01\x81\xc4\x01a\x00", "not valid"),  # counter 0
        (b"\x01\x81\xa1a\x01", "not valid"),  # str actor, not bytes
        (b"\x01" + b"\x00" * dvv.MAX_CONTEXT_BYTES, "limit"),
    ],
)
def test_malformed_context_names_what_is_wrong(data, message):
    with pytest.raises(InvalidContextError, match=message):
        dvv.decode_context(data)


def test_context_with_an_oversized_actor_is_refused():
    with pytest.raises(InvalidContextError):
        dvv.decode_context(dvv.encode_context({b"x" * (dvv.MAX_ACTOR_BYTES + 1): 1}))


def test_all_merge_orders_of_three_replicas_agree():
    # A small exhaustive check next to the property test: three replicas, one stale write.
    a1 = (Dot(A, 1), 1)
    _, clock_b, _ = dvv.write({A: 1}, [Value(*a1)], B, {A: 1})
    states = [
        State({A: 1}, (Value(*a1),), frozenset()),
        State(clock_b, (Value(Dot(B, 1), 2),), frozenset()),
        State({C: 1}, (Value(Dot(C, 1), 3),), frozenset()),
    ]
    results = {_canonical(_fold(order)) for order in itertools.permutations(states)}
    assert len(results) == 1
    ((clock_items, siblings),) = results
    assert [v.write_id for v in siblings] == [2, 3]
    assert clock_items == ((A, 1), (B, 1), (C, 1))
