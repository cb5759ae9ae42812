"""Read and write plans as a coordinator runs them: replicas held down are not asked, a failed
replica gets one stand-in whose ack counts in its place, the outcome is decided once, the
coordinator learns exactly which nodes need a hint, and a read repairs exactly the replicas
that answered with less than the merge, whatever order the answers came in."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.cluster.plans import DOWN_REASON, ReadPlan, Send, WritePlan
from ringkv.cluster.quorum import DcNeed
from ringkv.cluster.ring import Member, Ring
from ringkv.errors import ConfigError

ABC = ("a", "b", "c")


def everyone_up(node: str) -> bool:
    return True


def down(*nodes: str):
    return lambda node: node not in nodes


class Walk:
    """Ring.fallbacks for a list `pref` with `beyond` the nodes met walking on, in order:
    the available primaries, then for each failed primary in preference order the next node
    of the walk. Records the failed sets it was asked with."""

    def __init__(self, pref: Sequence[str], beyond: Sequence[str]):
        self.pref = tuple(pref)
        self.beyond = tuple(beyond)
        self.asked: list[frozenset[str]] = []

    def __call__(self, failed: frozenset[str]) -> list[tuple[str, str | None]]:
        self.asked.append(failed)
        out: list[tuple[str, str | None]] = [(n, None) for n in self.pref if n not in failed]
        walk = iter(n for n in self.beyond if n not in failed)
        for primary in (n for n in self.pref if n in failed):
            node = next(walk, None)
            if node is None:
                break
            out.append((node, primary))
        return out


def union(a: frozenset | None, b: frozenset | None) -> frozenset | None:
    """A merge that is commutative and associative, as the record merge is."""
    if a is None:
        return b
    if b is None:
        return a
    return a | b


def same(a: object, b: object) -> bool:
    return a == b


# --- writes: scenarios ---------------------------------------------------------------------------


def test_the_coordinator_counts_its_own_copy_at_once_and_still_sends_to_the_others():
    plan = WritePlan(ABC, 1, me="a", is_up=everyone_up)
    assert plan.done and plan.succeeded  # W = 1: decided before anything is sent
    sends = plan.start()
    assert sends == [Send("b"), Send("c")]
    assert not plan.finished
    plan.on_ack(sends[0])
    plan.on_failure(sends[1], "timed out after 500 ms")
    assert plan.finished
    assert plan.hints() == ["c"]


def test_a_quorum_write_succeeds_at_the_second_ack_and_hints_the_replica_that_timed_out():
    plan = WritePlan(ABC, 2, me="a", is_up=everyone_up)
    b, c = plan.start()
    assert not plan.done
    plan.on_ack(b)
    assert plan.done and plan.succeeded
    assert plan.on_failure(c, "timed out after 500 ms") == []
    assert plan.hints() == ["c"]
    assert plan.acked_by == {"a": "a", "b": "b"}


def test_a_replica_held_down_is_not_asked_and_fails_at_once_with_the_detectors_reason():
    plan = WritePlan(ABC, 3, me="a", is_up=down("c"))
    assert plan.start() == [Send("b")]
    assert plan.done and not plan.succeeded  # ALL cannot be met any more
    assert plan.error.failures == {"c": DOWN_REASON}
    assert str(plan.error) == "needed 3 replicas, 1 answered: c down (failure detector) (b had not answered yet)"


def test_the_reason_for_a_replica_held_down_can_name_its_phi():
    plan = WritePlan(ABC, 3, me="a", is_up=down("c"), down_reason=lambda n: f"unavailable (down (phi {9.25:.1f}))")
    plan.start()
    assert plan.error.failures == {"c": "unavailable (down (phi 9.2))"}


def test_a_stand_in_ack_counts_toward_w_in_place_of_the_failed_replica():
    walk = Walk(ABC, ("x", "y"))
    plan = WritePlan(ABC, 2, me="a", is_up=everyone_up, fallbacks=walk)
    b, c = plan.start()
    stand_in = plan.on_failure(b, "timed out after 500 ms")
    assert stand_in == [Send("x", hint_for="b")]
    assert not plan.done  # b is waiting on its stand-in, not failed
    plan.on_ack(stand_in[0])
    assert plan.done and plan.succeeded
    assert plan.on_failure(c, "timed out after 500 ms") == [Send("y", hint_for="c")]
    assert plan.stand_ins == {"b": "x"}
    assert not plan.finished  # c's stand-in has not answered


def test_with_two_of_three_replicas_down_a_quorum_write_succeeds_through_their_stand_ins():
    walk = Walk(ABC, ("x", "y"))
    plan = WritePlan(ABC, 2, me="a", is_up=down("b", "c"), fallbacks=walk)
    sends = plan.start()
    assert sends == [Send("x", hint_for="b"), Send("y", hint_for="c")]
    plan.on_ack(sends[1])
    assert plan.succeeded
    plan.on_ack(sends[0])
    assert plan.finished and plan.hints() == []  # the stand-ins hold the hints, not the coordinator


def test_a_failed_stand_in_fails_its_replica_with_both_reasons_and_the_coordinator_keeps_the_hint():
    plan = WritePlan(ABC, 3, me="a", is_up=everyone_up, fallbacks=Walk(ABC, ("x",)))
    b, c = plan.start()
    plan.on_ack(c)
    (x,) = plan.on_failure(b, "timed out after 500 ms")
    assert plan.on_failure(x, "unavailable (connection refused)") == []
    assert plan.done and not plan.succeeded
    assert plan.error.failures == {"b": "timed out after 500 ms, and stand-in x unavailable (connection refused)"}
    assert plan.hints() == ["b"]


def test_fallbacks_are_asked_with_every_replica_failed_so_far():
    walk = Walk(ABC, ("x", "y"))
    plan = WritePlan(ABC, 2, me="a", is_up=everyone_up, fallbacks=walk)
    b, c = plan.start()
    plan.on_failure(b, "timed out after 500 ms")
    plan.on_failure(c, "timed out after 500 ms")
    assert walk.asked == [frozenset({"b"}), frozenset({"b", "c"})]


def test_a_stand_in_already_used_for_one_replica_is_not_reused_for_another():
    # c fails first and gets x. When b fails, the ring pairs x with b (b comes first in the
    # list) and y with c: the node takes the first fallback not used yet, y, for b.
    walk = Walk(ABC, ("x", "y"))
    plan = WritePlan(ABC, 3, me="a", is_up=everyone_up, fallbacks=walk)
    b, c = plan.start()
    assert plan.on_failure(c, "timed out after 500 ms") == [Send("x", hint_for="c")]
    assert walk(frozenset({"b", "c"})) == [("a", None), ("x", "b"), ("y", "c")]
    assert plan.on_failure(b, "timed out after 500 ms") == [Send("y", hint_for="b")]


def test_a_replica_gets_no_stand_in_when_the_ring_has_no_node_left():
    plan = WritePlan(ABC, 2, me="a", is_up=everyone_up, fallbacks=Walk(ABC, ("x",)))
    b, c = plan.start()
    (x,) = plan.on_failure(b, "timed out after 500 ms")
    assert plan.on_failure(c, "timed out after 500 ms") == []  # x is taken: nobody for c
    assert not plan.done  # a, and b's stand-in still out: W = 2 can still be met
    plan.on_ack(x)
    assert plan.succeeded and plan.hints() == ["c"]


def test_a_stand_in_is_asked_once_per_replica_even_if_it_fails():
    plan = WritePlan(ABC, 2, me="a", is_up=everyone_up, fallbacks=Walk(ABC, ("x", "y")))
    b, c = plan.start()
    (x,) = plan.on_failure(b, "timed out after 500 ms")
    assert plan.on_failure(x, "timed out after 500 ms") == []  # no second stand-in for b
    (y,) = plan.on_failure(c, "timed out after 500 ms")
    assert y == Send("y", hint_for="c")  # x failed, but was used: never asked again
    plan.on_ack(y)
    assert plan.succeeded and plan.hints() == ["b"]


def test_a_strict_write_asks_no_stand_in_and_keeps_hints_for_every_replica_that_missed_it():
    plan = WritePlan(ABC, 2, me="a", is_up=down("c"), fallbacks=None)
    (b,) = plan.start()
    plan.on_failure(b, "timed out after 500 ms")
    assert plan.done and not plan.succeeded
    assert plan.hints() == ["b", "c"]


def test_a_moving_partitions_new_owner_gets_the_write_without_counting_and_is_hinted_if_it_fails():
    plan = WritePlan(ABC, 2, me="a", is_up=down("d"), extra=("d", "a"))
    sends = plan.start()
    # Sent even though held down, as node/cluster._write_extra does; never to the coordinator.
    assert sends == [Send("b"), Send("c"), Send("d", counts=False)]
    plan.on_ack(sends[2])
    assert not plan.done  # the new owner's ack does not count toward W
    plan.on_ack(sends[0])
    assert plan.succeeded
    plan2 = WritePlan(ABC, 2, me="a", is_up=everyone_up, extra=("d",))
    b, c, d = plan2.start()
    plan2.on_ack(b)
    plan2.on_ack(c)
    assert plan2.succeeded and not plan2.finished
    plan2.on_failure(d, "timed out after 500 ms")
    assert plan2.hints() == ["d"]


def test_a_duplicate_or_late_answer_changes_nothing():
    plan = WritePlan(ABC, 3, me="a", is_up=everyone_up)
    b, c = plan.start()
    plan.on_failure(b, "timed out after 500 ms")
    plan.on_ack(b)  # the reply that came after the timeout: the RPC layer has dropped the call
    assert plan.done and not plan.succeeded
    plan.on_ack(c)
    plan.on_ack(c)
    assert plan.finished and plan.hints() == ["b"]
    with pytest.raises(ValueError):
        plan.on_ack(Send("zz"))


def test_hints_are_not_known_before_every_send_is_answered():
    plan = WritePlan(ABC, 1, me="a", is_up=everyone_up, fallbacks=Walk(ABC, ("x",)))
    b, c = plan.start()
    plan.on_ack(c)
    plan.on_failure(b, "timed out after 500 ms")  # its stand-in x is still out
    with pytest.raises(RuntimeError):
        plan.hints()


def test_a_coordinator_that_is_not_a_replica_counts_nobody_at_once():
    plan = WritePlan(ABC, 2, me="z", is_up=everyone_up)
    assert plan.start() == [Send("a"), Send("b"), Send("c")]
    assert not plan.done


def test_a_plan_starts_once():
    plan = WritePlan(ABC, 2, me="a", is_up=everyone_up)
    plan.start()
    with pytest.raises(RuntimeError):
        plan.start()


def test_w_outside_the_preference_list_is_refused_naming_the_field():
    with pytest.raises(ConfigError) as info:
        WritePlan(ABC, 4, me="a", is_up=everyone_up)
    assert info.value.field == "w"


def test_with_the_real_ring_a_write_with_two_replicas_down_goes_to_the_next_nodes_clockwise():
    ring = Ring([Member(f"n{i}") for i in range(1, 6)], partitions=16)
    pref = ring.preference_list(0)
    held_down = set(pref[1:])

    def fallbacks(failed):
        return [(r.node_id, r.hint_for) for r in ring.fallbacks(0, failed, len(pref))]

    plan = WritePlan(pref, 2, me=pref[0], is_up=lambda n: n not in held_down, fallbacks=fallbacks)
    sends = plan.start()
    expected = [r for r in ring.fallbacks(0, held_down, 3) if r.hint_for is not None]
    assert [(s.node, s.hint_for) for s in sends] == [(r.node_id, r.hint_for) for r in expected]
    assert not ({s.node for s in sends} & set(pref))


# --- writes: properties --------------------------------------------------------------------------


NODES = tuple(f"n{i}" for i in range(1, 8))


class WriteRun(NamedTuple):
    ring: Ring
    partition: int
    pref: tuple[str, ...]
    w: int
    me: str | None
    held_down: frozenset[str]
    answers_ok: dict[str, bool]  # node -> whether it acks what it is sent
    sloppy: bool
    extra: tuple[str, ...]


class ReadRun(NamedTuple):
    pref: tuple[str, ...]
    r: int
    me: str | None
    held_down: frozenset[str]
    records: dict[str, frozenset | None]  # what each replica holds
    fails: dict[str, bool]  # node -> whether its answer fails


@st.composite
def write_runs(draw):
    """A ring, a key's preference list, who the detector holds down, who answers well, the
    write's settings, and the order answers come in (drawn as the run goes)."""
    members = NODES[: draw(st.integers(1, len(NODES)))]
    ring = Ring([Member(n) for n in members], partitions=16, replicas=3)
    partition = draw(st.integers(0, 15))
    n = draw(st.integers(1, min(3, len(ring.preference_list(partition)))))
    pref = ring.preference_list(partition)[:n]
    w = draw(st.integers(1, n))
    me = draw(st.sampled_from([None, *pref, *members]))
    held_down = frozenset(draw(st.sets(st.sampled_from(members))) - {me})
    answers_ok = {node: draw(st.booleans()) for node in members}
    sloppy = draw(st.booleans()) and len(members) > n
    others = [m for m in members if m not in pref]
    extra = tuple(draw(st.lists(st.sampled_from(others), unique=True, max_size=2))) if others else ()
    return WriteRun(ring, partition, pref, w, me, held_down, answers_ok, sloppy, extra)


def run_write(data, ring, partition, pref, w, me, held_down, answers_ok, sloppy, extra):
    asked: list[frozenset[str]] = []

    def fallbacks(failed):
        asked.append(failed)
        return [(r.node_id, r.hint_for) for r in ring.fallbacks(partition, failed, len(pref))]

    plan = WritePlan(pref, w, me=me, is_up=lambda node: node not in held_down,
                     fallbacks=fallbacks if sloppy else None, extra=extra)
    decisions = [plan.done]
    sent: list[Send] = []
    pending = plan.start()
    sent.extend(pending)
    decisions.append(plan.done)
    while pending:
        send = pending.pop(data.draw(st.integers(0, len(pending) - 1)))
        if answers_ok[send.node] and send.node not in held_down:
            more = plan.on_ack(send)
        else:
            more = plan.on_failure(send, "timed out after 500 ms")
        sent.extend(more)
        pending.extend(more)
        decisions.append(plan.done)
    return plan, sent, decisions, asked


@given(write_runs(), st.data())
def test_a_write_plan_decides_exactly_once_and_succeeds_iff_w_targets_acked(run, data):
    pref, w, me, held_down, answers_ok = run.pref, run.w, run.me, run.held_down, run.answers_ok
    plan, sent, decisions, _ = run_write(data, *run)
    assert plan.finished
    # decided exactly once: False ... False True ... True
    assert decisions.count(True) == 0 or decisions[decisions.index(True):] == [True] * (len(decisions) - decisions.index(True))
    assert plan.done
    # A replica's write counts when it, or the stand-in sent for it, acked.
    acked = {r for r in pref if r == me or (answers_ok[r] and r not in held_down and Send(r) in sent)}
    for s in sent:
        if s.hint_for is not None and answers_ok[s.node] and s.node not in held_down:
            acked.add(s.hint_for)
    assert set(plan.acked_by) == acked
    assert plan.succeeded == (len(acked) >= w)
    assert (plan.error is None) == plan.succeeded
    # A session may count the write settled only when every replica acked it itself.
    itself = {r for r in pref if r == me or (answers_ok[r] and r not in held_down and Send(r) in sent)}
    assert plan.held_by_every_replica == (itself == set(pref))


@given(write_runs(), st.data())
def test_a_write_plan_sends_to_a_node_held_down_only_as_a_stand_in_and_never_twice_for_a_replica(run, data):
    pref, me, held_down, answers_ok = run.pref, run.me, run.held_down, run.answers_ok
    _, sent, _, asked = run_write(data, *run)
    assert len(set(sent)) == len(sent)
    for s in sent:
        assert s.node != me
        if s.node in held_down:
            assert s.hint_for is not None or not s.counts
    replicas = [s for s in sent if s.counts and s.hint_for is None]
    stand_ins = [s for s in sent if s.hint_for is not None]
    extras = [s for s in sent if not s.counts]
    assert [s.node for s in replicas] == [r for r in pref if r != me and r not in held_down]
    assert sorted(s.node for s in extras) == sorted(x for x in run.extra if x != me)
    # One stand-in at most per replica, each node standing in once, only for a failed replica,
    # never a replica of the key, and only when sloppy.
    assert len({s.hint_for for s in stand_ins}) == len(stand_ins)
    assert len({s.node for s in stand_ins}) == len(stand_ins)
    assert not stand_ins or run.sloppy
    for s in stand_ins:
        assert s.node not in pref
        assert s.hint_for in held_down or not answers_ok[s.hint_for]
    # fallbacks() was asked with growing sets of failed replicas, one more each time
    for before, after in itertools.pairwise(asked):
        assert before < after and len(after) == len(before) + 1


@given(write_runs(), st.data())
def test_hints_are_exactly_the_replicas_without_an_ack_for_them_and_the_failed_new_owners(run, data):
    held_down, answers_ok = run.held_down, run.answers_ok
    plan, sent, _, _ = run_write(data, *run)
    missed = [r for r in run.pref if r not in plan.acked_by]
    failed_extra = {s.node for s in sent if not s.counts and (s.node in held_down or not answers_ok[s.node])}
    hints = plan.hints()
    assert hints[: len(missed)] == missed
    assert set(hints[len(missed):]) == failed_extra
    assert run.me not in hints


@given(write_runs(), st.data())
def test_stand_ins_are_the_first_unused_fallbacks_for_the_failures_so_far(run, data):
    # The node's rule (node/cluster._StandIns), as an independent model.
    ring, partition, pref, me = run.ring, run.partition, run.pref, run.me
    _, sent, _, asked = run_write(data, *run)
    used: set[str] = set()
    stand_ins = iter(s for s in sent if s.hint_for is not None)
    for failed in asked:
        candidates = [r.node_id for r in ring.fallbacks(partition, failed, len(pref))
                      if r.hint_for is not None and r.node_id not in used and r.node_id != me]
        if candidates:
            s = next(stand_ins)
            assert s.node == candidates[0]
            used.add(s.node)
    assert next(stand_ins, None) is None


# --- reads: scenarios ----------------------------------------------------------------------------


def test_a_replica_at_quorum_reads_its_own_copy_and_asks_one_other():
    plan = ReadPlan(ABC, 2, me="a", is_up=everyone_up, merge=union, same=same)
    assert plan.local
    plan.on_record("a", frozenset({1}))
    assert plan.start() == ["b"]  # the local copy is one of the two
    assert not plan.done
    plan.on_record("b", frozenset({1}))
    assert plan.done and plan.succeeded and plan.result == {1}
    assert plan.finished and plan.repairs() == []  # c was not asked: nothing to wait for
    assert plan.speculate() is None  # decided: nobody more is asked


def test_a_replica_at_one_asks_nobody():
    plan = ReadPlan(ABC, 1, me="b", is_up=everyone_up, merge=union, same=same)
    plan.on_record("b", None)
    assert plan.done and plan.succeeded and plan.result is None
    assert plan.start() == []
    assert plan.finished and not plan.unanimous


def test_with_fanout_all_a_replica_reads_its_own_copy_and_asks_every_other():
    plan = ReadPlan(ABC, 2, me="a", is_up=everyone_up, merge=union, same=same, fanout="all")
    plan.on_record("a", frozenset({1}))
    assert plan.start() == ["b", "c"]
    plan.on_record("b", frozenset({1}))
    assert plan.done and plan.succeeded and plan.result == {1}
    assert not plan.finished
    assert plan.speculate() is None
    plan.on_record("c", frozenset({1}))
    assert plan.unanimous  # every replica answered alike: a session may settle its entry


def test_a_node_that_is_not_a_replica_asks_r_replicas_or_with_fanout_all_every_one():
    plan = ReadPlan(ABC, 2, me="z", is_up=everyone_up, merge=union, same=same)
    assert not plan.local
    assert plan.start() == ["a", "b"]
    every = ReadPlan(ABC, 2, me="z", is_up=everyone_up, merge=union, same=same, fanout="all")
    assert every.start() == ["a", "b", "c"]


def test_a_read_does_not_ask_a_replica_held_down():
    plan = ReadPlan(ABC, 2, me="a", is_up=down("b"), merge=union, same=same)
    plan.on_record("a", None)
    assert plan.start() == ["c"]
    assert plan.quorum.failures == {"b": DOWN_REASON}


def test_a_replica_that_fails_is_replaced_by_the_next_at_once():
    plan = ReadPlan(ABC, 2, me="a", is_up=everyone_up, merge=union, same=same)
    plan.on_record("a", frozenset({1}))
    assert plan.start() == ["b"]
    assert plan.on_failure("b", "timed out after 500 ms") == ["c"]
    assert not plan.done
    plan.on_record("c", frozenset({1}))
    assert plan.succeeded and plan.finished


def test_a_read_that_cannot_reach_r_fails_naming_every_replica_and_why():
    plan = ReadPlan(ABC, 2, me="a", is_up=down("c"), merge=union, same=same)
    plan.on_record("a", frozenset({1}))
    (b,) = plan.start()
    assert plan.on_failure(b, "timed out after 500 ms") == []  # c, the one left, is held down
    assert plan.done and not plan.succeeded
    assert str(plan.error) == (
        "needed 2 replicas, 1 answered: b timed out after 500 ms; c down (failure detector)"
    )


def test_a_slow_replica_makes_the_read_speculate_once_and_the_faster_answer_decides():
    plan = ReadPlan(ABC, 2, me="a", is_up=everyone_up, merge=union, same=same)
    plan.on_record("a", frozenset({1}))
    assert plan.start() == ["b"]
    assert plan.speculate() == "c"  # b is slower than its p99: the shell's timer fired
    assert plan.speculate() is None  # nobody left
    plan.on_record("c", frozenset({1}))
    assert plan.done and plan.succeeded and not plan.finished  # b may still answer
    plan.on_record("b", frozenset({2}))  # late, and newer: a and c missed it
    assert plan.finished and plan.result == {1, 2}
    assert plan.repairs() == ["a", "b", "c"]


def test_speculation_skips_replicas_held_down_and_ends_at_the_decision():
    up = {"a": True, "b": True, "c": True, "d": True}
    plan = ReadPlan(("a", "b", "c", "d"), 2, me="z", is_up=lambda n: up[n], merge=union, same=same)
    assert plan.start() == ["a", "b"]
    up["c"] = False
    assert plan.speculate() == "d"
    assert plan.quorum.failures == {"c": DOWN_REASON}
    plan.on_record("a", None)
    plan.on_record("d", None)
    assert plan.succeeded and plan.speculate() is None
    assert plan.on_failure("b", "timed out after 500 ms") == []  # decided: nobody replaces it


def test_a_read_repairs_the_replicas_that_answered_with_less_including_late_ones():
    plan = ReadPlan(ABC, 2, me="a", is_up=everyone_up, merge=union, same=same, fanout="all")
    plan.on_record("a", frozenset({1}))
    plan.start()
    plan.on_record("b", frozenset({1}))
    assert plan.succeeded and plan.repairs() == []
    plan.on_record("c", frozenset({2}))  # late, and newer: a and b missed it
    assert plan.finished
    assert plan.result == {1, 2}
    assert plan.repairs() == ["a", "b", "c"]


def test_at_quorum_a_replica_not_asked_is_not_repaired():
    # c holds less, but a QUORUM read from a asks b only: read repair cannot know about c
    # (anti-entropy heals it); with fanout "all" it would be repaired.
    plan = ReadPlan(ABC, 2, me="a", is_up=everyone_up, merge=union, same=same)
    plan.on_record("a", frozenset({1, 2}))
    plan.start()
    plan.on_record("b", frozenset({1}))
    assert plan.finished and plan.result == {1, 2} and plan.repairs() == ["b"]


def test_a_replica_that_answers_after_its_timeout_is_not_counted():
    plan = ReadPlan(ABC, 2, me=None, is_up=everyone_up, merge=union, same=same)
    assert plan.start() == ["a", "b"]
    plan.on_record("a", None)
    assert plan.on_failure("b", "timed out after 500 ms") == ["c"]
    plan.on_record("b", frozenset({1}))
    assert plan.on_failure("c", "timed out after 500 ms") == []
    assert plan.done and not plan.succeeded and plan.finished
    with pytest.raises(ValueError):
        plan.on_record("zz", None)


def test_the_order_to_ask_in_is_the_callers_and_errors_keep_the_preference_order():
    # Across datacenters the node asks its own datacenter's replicas first.
    plan = ReadPlan(("a", "b", "c", "d"), 3, me=None, is_up=down("b"), merge=union, same=same,
                    order=("c", "d", "a", "b"))
    assert plan.start() == ["c", "d", "a"]
    plan.on_failure("a", "timed out after 500 ms")
    assert plan.done and not plan.succeeded
    assert list(plan.quorum.failures) == ["a", "b"]
    with pytest.raises(ValueError):
        ReadPlan(ABC, 2, me=None, is_up=everyone_up, merge=union, same=same, order=("a", "b"))


def test_an_unknown_fanout_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match="read_fanout: must be quorum or all, got 'some'"):
        ReadPlan(ABC, 2, me=None, is_up=everyone_up, merge=union, same=same, fanout="some")


DC1, DC2 = frozenset({"a", "b", "c"}), frozenset({"d", "e", "f"})
EACH_QUORUM = (DcNeed("dc1", DC1, 2), DcNeed("dc2", DC2, 2))


def test_each_quorum_asks_enough_in_each_datacenter_and_replaces_a_failure_within_it():
    plan = ReadPlan(("a", "d", "b", "e", "c", "f"), 4, me="a", is_up=everyone_up, merge=union, same=same,
                    needs=EACH_QUORUM)
    plan.on_record("a", None)
    assert plan.start() == ["b", "d", "e"]  # a counts for dc1; two of dc2
    assert plan.on_failure("d", "timed out after 500 ms") == ["f"]  # dc2's next, not dc1's c
    plan.on_record("b", None)
    plan.on_record("e", None)
    assert not plan.done
    assert plan.speculate() is None  # f is asked already; c would not help dc2
    plan.on_record("f", None)
    assert plan.done and plan.succeeded


def test_each_quorum_speculates_only_in_a_datacenter_whose_need_is_not_met():
    plan = ReadPlan(("a", "d", "b", "e", "c", "f"), 4, me="a", is_up=everyone_up, merge=union, same=same,
                    needs=EACH_QUORUM)
    plan.on_record("a", None)
    plan.start()
    plan.on_record("b", None)  # dc1 met
    assert plan.speculate() == "f"  # c would not help
    assert plan.speculate() is None


def test_a_write_tells_each_datacenters_relay_how_many_copies_its_level_needs_there():
    pref = ("a", "d", "b", "e", "c", "f")
    each = WritePlan(pref, 4, me="a", is_up=everyone_up, needs=EACH_QUORUM)
    assert (each.copies_needed_in("dc1"), each.copies_needed_in("dc2")) == (2, 2)
    # LOCAL_QUORUM from dc1 needs nothing of dc2 by count: its relay waits for every answer.
    local = WritePlan(pref, 2, me="a", is_up=everyone_up, needs=(DcNeed("dc1", DC1, 2),))
    assert local.copies_needed_in("dc2") == 0
    # A count over every replica (QUORUM, ALL) needs each answer: 0, wait for all.
    assert WritePlan(pref, 4, me="a", is_up=everyone_up).copies_needed_in("dc2") == 0


# --- reads: properties ---------------------------------------------------------------------------


@st.composite
def read_runs(draw):
    n = draw(st.integers(1, 5))
    pref = tuple(f"n{i}" for i in range(1, n + 1))
    r = draw(st.integers(1, n))
    me = draw(st.sampled_from([None, "n9", *pref]))
    held_down = frozenset(draw(st.sets(st.sampled_from(pref))) - {me})
    # None is "no record"; a record is a set of write ids
    records = {node: draw(st.none() | st.frozensets(st.integers(0, 5), max_size=3)) for node in pref}
    fails = {node: draw(st.booleans()) and node != me for node in pref}
    return ReadRun(pref, r, me, held_down, records, fails)


FANOUTS = st.sampled_from(["quorum", "all"])


def run_read(order_seed: list[int], pref, r, me, held_down, records, fails, fanout="quorum"):
    """Answers in the order `order_seed` picks, replacements asked as the plan says, no
    speculation: the plan, who is still waiting, the decisions after each step, who was asked."""
    plan = ReadPlan(pref, r, me=me, is_up=lambda node: node not in held_down, merge=union, same=same,
                    fanout=fanout)
    decisions = []
    if plan.local:
        plan.on_record(me, records[me])
        decisions.append(plan.done)
    pending = plan.start()
    asked = list(pending)
    decisions.append(plan.done)
    steps = iter(order_seed)
    while pending:
        node = pending.pop(next(steps, 0) % len(pending))
        if fails[node]:
            more = plan.on_failure(node, "timed out after 500 ms")
            pending += more
            asked += more
        else:
            plan.on_record(node, records[node])
        decisions.append(plan.done)
    return plan, asked, decisions


def expected_read(pref, r, me, held_down, records, fails, fanout):
    """Who answers a read without speculation: the local copy, then the replicas up in
    preference order, as many as it takes to reach R (every one with fanout "all")."""
    answered = [me] if me in pref else []
    for node in pref:
        if node == me or node in held_down or (fanout == "quorum" and len(answered) >= r):
            continue
        if not fails[node]:
            answered.append(node)
    return answered


@given(read_runs(), FANOUTS, st.lists(st.integers(0, 10), min_size=6, max_size=6),
       st.lists(st.integers(0, 10), min_size=6, max_size=6))
def test_a_reads_merge_repairs_and_outcome_do_not_depend_on_the_order_of_answers(run, fanout, order1, order2):
    pref, r, me, held_down, records, fails = run
    one, asked1, decisions = run_read(order1, *run, fanout=fanout)
    two, asked2, _ = run_read(order2, *run, fanout=fanout)
    assert one.finished and two.finished and sorted(asked1) == sorted(asked2)
    assert decisions.count(True) == 0 or decisions[decisions.index(True):] == [True] * (len(decisions) - decisions.index(True))
    answered = expected_read(*run, fanout)
    assert one.succeeded == two.succeeded == (len(answered) >= r)
    if answered:
        merged = None
        for n in answered:
            merged = union(merged, records[n])
        assert one.result == two.result == merged
        assert one.repairs() == two.repairs() == [n for n in pref if n in answered and records[n] != merged]
    else:
        assert not one.has_result
    # Unanimous (a session may count the read settled): every replica answered, all alike.
    alike = len(answered) == len(pref) and len({records[n] for n in pref}) == 1
    assert one.unanimous == two.unanimous == alike
    assert one.done and (one.error is None) == one.succeeded
    # Never the coordinator nor a replica held down; every replica that answered was asked,
    # and so was each that failed on the way (it was replaced).
    assert me not in asked1 and not set(asked1) & held_down
    assert set(answered) - {me} <= set(asked1)
    assert all(fails[n] or n in answered for n in asked1)


@given(read_runs(), FANOUTS)
def test_a_read_never_asks_the_coordinator_nor_a_replica_held_down(run, fanout):
    pref, me, held_down = run.pref, run.me, run.held_down
    plan = ReadPlan(pref, run.r, me=me, is_up=lambda node: node not in held_down, merge=union, same=same,
                    fanout=fanout)
    if plan.local:
        plan.on_record(me, None)
    asked = plan.start()
    up = [n for n in pref if n != me and n not in held_down]
    if fanout == "all":
        assert asked == up
        assert set(plan.quorum.failures) == set(held_down)
    else:  # as many as R needs, the local copy counting as one
        assert asked == up[:max(0, run.r - plan.local)]
        assert set(plan.quorum.failures) <= set(held_down)


@st.composite
def dc_read_runs(draw):
    """A read at EACH_QUORUM over two datacenters (1-3 replicas each), or at R of all."""
    pref = tuple(draw(st.permutations(("a", "b", "c", "d", "e", "f")))[:draw(st.integers(2, 6))])
    dcs = (frozenset(n for n in pref if n in "abc"), frozenset(n for n in pref if n in "def"))
    needs = tuple(DcNeed(f"dc{i + 1}", members, len(members) // 2 + 1) for i, members in enumerate(dcs) if members)
    if draw(st.booleans()):
        needs = ()
    r = sum(n.needed for n in needs) if needs else draw(st.integers(1, len(pref)))
    me = draw(st.sampled_from([None, *pref]))
    held_down = frozenset(draw(st.sets(st.sampled_from(pref))) - {me})
    records = {node: draw(st.none() | st.frozensets(st.integers(0, 5), max_size=3)) for node in pref}
    fails = {node: draw(st.booleans()) and node != me for node in pref}
    return pref, r, needs, ReadRun(pref, r, me, held_down, records, fails)


@given(dc_read_runs(), FANOUTS, st.data())
def test_failures_and_speculation_ask_each_replica_at_most_once_never_one_held_down_until_r_or_none_left(
        drawn, fanout, data):
    """Answers, failures and speculative retries in any interleaving: a replica held down (or
    found down on the way) is never asked, none twice, `speculate` adds at most one and none
    once the read is decided; at the end R answered, or nobody that could help is left; the
    result is the merge of every answer; read repair targets answered replicas that hold less."""
    pref, r, needs, run = drawn
    _, _, me, held_down, records, fails = run
    went_down: set[str] = set()

    def is_up(node: str) -> bool:
        return node not in held_down and node not in went_down

    plan = ReadPlan(pref, r, me=me, is_up=is_up, merge=union, same=same, needs=needs, fanout=fanout)
    answered: list[str] = []
    if plan.local:
        plan.on_record(me, records[me])
        answered.append(me)
    pending = plan.start()
    asked = list(pending)
    if fanout == "all":
        assert asked == [n for n in pref if n != me and n not in held_down]
    for step in itertools.count():
        for node in asked:
            assert node != me and node in pref and node not in held_down
        assert len(asked) == len(set(asked))
        if step < 30:  # then the answers left, in order, so that every run ends
            action = data.draw(st.sampled_from(["answer", "speculate", "detector"]) if pending
                               else st.sampled_from(["stop", "speculate"]))
        else:
            action = "answer" if pending else "stop"
        if action == "stop":
            break
        if action == "detector":  # the failure detector holds one more node down from now on
            went_down.add(data.draw(st.sampled_from(pref)))
            continue
        if action == "speculate":
            was_done = plan.done
            extra = plan.speculate()
            if extra is not None:
                assert not was_done and extra not in asked and is_up(extra)
                asked.append(extra)
                pending.append(extra)
            continue
        node = pending.pop(data.draw(st.integers(0, len(pending) - 1)) if step < 30 else 0)
        if fails[node]:
            more = plan.on_failure(node, "timed out after 500 ms")
            assert all(is_up(n) for n in more)
            asked += more
            pending += more
        else:
            plan.on_record(node, records[node])
            answered.append(node)
    assert plan.finished and plan.done
    if plan.succeeded:
        if needs:
            assert all(len(n.members & set(answered)) >= n.needed for n in needs)
        else:
            assert len(answered) >= r
    else:
        # It gave up only once a need (R of all, without needs) could not be met any more: too
        # many of its replicas failed, each asked and failed or found down by the plan.
        failed = set(plan.quorum.failures)
        assert failed <= {n for n in asked if fails[n]} | held_down | went_down
        musts = [(n.members, n.needed) for n in needs] or [(frozenset(pref), r)]
        assert any(len(members - failed) < needed for members, needed in musts), (failed, plan.unasked)
    merged = None
    for n in answered:
        merged = union(merged, records[n])
    if answered:
        assert plan.result == merged
        assert plan.repairs() == [n for n in pref if n in answered and records[n] != merged]
    else:
        assert not plan.has_result and plan.repairs() == []


# --- digest reads ---------------------------------------------------------------------------------


def digest_of(record: frozenset | None) -> bytes:
    """A digest of a test record: equal records, equal digests; different ones, different."""
    return b"" if record is None else repr(sorted(record)).encode()


def digest_plan(r: int, me: str | None, **kw) -> ReadPlan:
    return ReadPlan(ABC, r, me=me, is_up=kw.pop("is_up", everyone_up), merge=union, same=same,
                    digest=digest_of, **kw)


def test_a_replica_coordinator_asks_the_others_for_digests_of_its_own_copy():
    plan = digest_plan(2, "a")
    plan.on_record("a", frozenset({1}))
    assert plan.start() == ["b"]
    assert plan.asks_digest("b") and plan.known == digest_of(frozenset({1}))
    assert plan.on_digest("b", digest_of(frozenset({1}))) == []
    assert plan.done and plan.succeeded and plan.result == {1}
    assert plan.finished and plan.repairs() == []


def test_a_replica_that_holds_another_record_answers_it_whole_and_is_repaired_or_repairs():
    plan = digest_plan(2, "a")
    plan.on_record("a", frozenset({1}))
    plan.start()
    # the replica's digest differs from `known`: it sends its record (one round trip)
    assert plan.on_record("b", frozenset({2})) == []
    assert plan.done and plan.result == {1, 2}
    assert plan.repairs() == ["a", "b"]


def test_without_a_local_copy_one_replica_sends_its_record_and_the_next_a_digest():
    plan = digest_plan(2, "z")
    assert plan.start() == ["a", "b"]
    assert not plan.asks_digest("a") and plan.asks_digest("b") and plan.known is None
    # the digest comes first: held until the record it is compared with
    assert plan.on_digest("b", digest_of(frozenset({1}))) == []
    assert not plan.done and not plan.finished
    assert plan.on_record("a", frozenset({1})) == []
    assert plan.done and plan.succeeded and plan.result == {1} and plan.finished


def test_a_digest_that_matches_no_record_has_its_replica_asked_for_the_record():
    plan = digest_plan(2, "z")
    plan.start()
    plan.on_record("a", frozenset({1}))
    assert plan.on_digest("b", digest_of(frozenset({2}))) == ["b"]
    assert not plan.done and not plan.asks_digest("b")  # asked again, for the record
    plan.on_record("b", frozenset({2}))
    assert plan.done and plan.result == {1, 2} and plan.repairs() == ["a", "b"]
    # A held digest that the record does not match: asked again when the record comes.
    held = digest_plan(2, "z")
    held.start()
    held.on_digest("b", digest_of(frozenset({2})))
    assert held.on_record("a", frozenset({1})) == ["b"]
    assert not held.done


def test_when_the_replica_asked_for_the_record_fails_a_held_digest_becomes_the_record_ask():
    plan = digest_plan(2, "z")
    plan.start()
    plan.on_digest("b", digest_of(None))
    assert plan.on_failure("a", "timed out after 500 ms") == ["b", "c"]
    assert not plan.asks_digest("b") and plan.asks_digest("c")  # b is asked for the record now
    assert plan.on_digest("c", digest_of(None)) == []
    assert not plan.done
    plan.on_record("b", None)
    assert plan.done and plan.succeeded and plan.result is None and plan.finished


def test_a_digest_answer_with_nothing_to_compare_and_no_record_asked_for_is_asked_again():
    plan = digest_plan(3, "z", fanout="all")
    assert plan.start() == ["a", "b", "c"]
    assert plan.on_failure("a", "refused") == []  # nobody unasked; b and c are digest asks
    assert plan.on_digest("b", digest_of(frozenset({1}))) == ["b"]
    assert plan.on_digest("c", digest_of(frozenset({1}))) == []  # held: b's record is on its way
    plan.on_record("b", frozenset({1}))
    assert plan.finished and plan.done and not plan.succeeded  # R = 3 and a failed
    assert plan.quorum.replies == {"b": {1}, "c": {1}}


def test_a_read_decided_by_the_coordinators_own_copy_computes_no_digest():
    computed = []

    def counting(record):
        computed.append(record)
        return digest_of(record)

    plan = ReadPlan(ABC, 1, me="a", is_up=everyone_up, merge=union, same=same, digest=counting)
    plan.on_record("a", frozenset({1}))
    assert plan.start() == [] and plan.done and computed == []


@given(dc_read_runs(), FANOUTS, st.data())
def test_digest_reads_count_a_replica_only_with_the_record_it_holds_and_always_finish(drawn, fanout, data):
    """Digest reads against replicas that answer as node/replica_service does (the digest
    when it matches `known` or none was sent, else the record), with failures, speculation
    and answers in any order: each replica counted toward R counted with the record it holds;
    a replica is asked at most twice, the second time for its record after its digest; the
    read always finishes; the result, outcome and repairs are those of the records counted."""
    pref, r, needs, run = drawn
    _, _, me, held_down, records, fails = run
    plan = ReadPlan(pref, r, me=me, is_up=lambda n: n not in held_down, merge=union, same=same,
                    needs=needs, fanout=fanout, digest=digest_of)
    asks: dict[str, list[str]] = {}
    pending: list[tuple[str, str, bytes | None]] = []  # (node, "digest" or "record", known)

    def ask(nodes):
        for node in nodes:
            kind = "digest" if plan.asks_digest(node) else "record"
            asks.setdefault(node, []).append(kind)
            pending.append((node, kind, plan.known))

    if plan.local:
        plan.on_record(me, records[me])
    ask(plan.start())
    for step in itertools.count():
        if step < 30 and pending and data.draw(st.booleans()):
            extra = plan.speculate()
            if extra is not None:
                ask([extra])
            continue
        if not pending:
            break
        node, kind, known = pending.pop(data.draw(st.integers(0, len(pending) - 1)) if step < 30 else 0)
        if fails[node]:
            ask(plan.on_failure(node, "timed out after 500 ms"))
        elif kind == "record" or (known is not None and known != digest_of(records[node])):
            ask(plan.on_record(node, records[node]))
        else:
            ask(plan.on_digest(node, digest_of(records[node])))
    assert plan.finished and plan.done
    for node, kinds in asks.items():
        assert node != me and node not in held_down
        assert kinds in (["record"], ["digest"], ["digest", "record"]), (node, kinds)
    counted = plan.quorum.replies
    assert all(counted[n] == records[n] for n in counted)
    if plan.succeeded:
        if needs:
            assert all(len(n.members & counted.keys()) >= n.needed for n in needs)
        else:
            assert len(counted) >= r
    if counted:
        merged = None
        for n in counted:
            merged = union(merged, records[n])
        assert plan.result == merged
        assert plan.repairs() == [n for n in pref if n in counted and records[n] != merged]
