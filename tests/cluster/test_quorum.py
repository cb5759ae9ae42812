"""Quorum decisions as the coordinator sees them: replies arrive in any order, the outcome is
decided at the first moment it is certain, late replies are still taken in, and read repair
goes to exactly the replicas that answered with something older."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.cluster.quorum import ConsistencyLevel, ReadQuorum, WriteQuorum, resolve
from ringkv.errors import ConfigError, QuorumError

REASONS = ["timed out after 500 ms", "connection refused", "disk full"]


# --- consistency levels -----------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 8))
def test_levels_resolve_to_one_majority_or_all(n):
    assert resolve(ConsistencyLevel.ONE, n) == 1
    assert resolve(ConsistencyLevel.QUORUM, n) == n // 2 + 1
    assert resolve(ConsistencyLevel.ALL, n) == n
    assert [resolve(k, n, field="r") for k in range(1, n + 1)] == list(range(1, n + 1))


@pytest.mark.parametrize(
    ("value", "field"), [(0, "w"), (4, "w"), (-1, "r"), (True, "r"), ("2", "w")]
)
def test_an_explicit_r_or_w_outside_1_to_n_names_the_field(value, field):
    with pytest.raises(ConfigError) as info:
        resolve(value, 3, field=field)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_n_must_be_positive():
    with pytest.raises(ConfigError) as info:
        resolve(ConsistencyLevel.ONE, 0)
    assert info.value.field == "n"


def test_levels_parse_from_their_wire_names():
    assert ConsistencyLevel("quorum") is ConsistencyLevel.QUORUM


# --- the decision -----------------------------------------------------------------------------


@st.composite
def answers(draw):
    """Replicas, a required count, and every replica's single answer in arrival order."""
    n = draw(st.integers(1, 5))
    replicas = tuple(f"n{i}" for i in range(1, n + 1))
    needed = draw(st.integers(1, n))
    order = draw(st.permutations(replicas))
    outcome = [(node, draw(st.booleans()), draw(st.sampled_from(REASONS))) for node in order]
    return replicas, needed, outcome


def feed(quorum, node, ok, reason):
    return quorum.on_success(node, frozenset({node})) if ok else quorum.on_failure(node, reason)


@settings(max_examples=300)
@given(answers(), st.booleans())
def test_decided_exactly_when_w_succeed_or_success_becomes_impossible(case, reading):
    replicas, needed, outcome = case
    if reading:
        quorum = ReadQuorum(replicas, needed, frozenset.union, frozenset.__eq__)
    else:
        quorum = WriteQuorum(replicas, needed)
    ok_count = failed = 0
    decided_at = None
    for i, (node, ok, reason) in enumerate(outcome):
        ok_count += ok
        failed += not ok
        decisive = feed(quorum, node, ok, reason)
        certain = ok_count >= needed or len(replicas) - failed < needed
        if decided_at is None and certain:
            decided_at = i
            assert decisive
            assert quorum.succeeded == (ok_count >= needed)
        else:
            assert not decisive
        assert quorum.done == (decided_at is not None)
    assert quorum.done
    if not quorum.succeeded:
        assert quorum.error is not None
    else:
        assert quorum.error is None


@settings(max_examples=300)
@given(answers())
def test_a_failed_quorum_names_every_failed_replica_and_why(case):
    replicas, needed, outcome = case
    quorum = WriteQuorum(replicas, needed)
    failures_at_decision: dict[str, str] = {}
    pending_at_decision: tuple[str, ...] = ()
    successes = 0
    for node, ok, reason in outcome:
        was_done = quorum.done
        feed(quorum, node, ok, reason)
        if not was_done:
            successes += ok
            if not ok:
                failures_at_decision[node] = reason
            if quorum.done:
                pending_at_decision = quorum.pending
    if quorum.succeeded:
        return
    error = quorum.error
    assert isinstance(error, QuorumError)
    detail = "; ".join(
        f"{node} {failures_at_decision[node]}" for node in sorted(failures_at_decision)
    )
    if pending_at_decision:
        detail += f" ({', '.join(sorted(pending_at_decision))} had not answered yet)"
    assert str(error) == f"needed {needed} replicas, {successes} answered: {detail}"
    assert error.pending == tuple(sorted(pending_at_decision))
    assert error.failures == dict(sorted(failures_at_decision.items()))


def test_the_error_reads_as_the_operator_expects():
    quorum = WriteQuorum(("n1", "n3"), 2)
    quorum.on_success("n1")
    assert quorum.on_failure("n3", "timed out after 500 ms")
    assert str(quorum.error) == "needed 2 replicas, 1 answered: n3 timed out after 500 ms"

    quorum = WriteQuorum(("n1", "n2", "n3"), 2)
    quorum.on_failure("n3", "timed out after 500 ms")
    quorum.on_failure("n1", "connection refused")
    assert str(quorum.error) == (
        "needed 2 replicas, 0 answered: n1 connection refused; n3 timed out after 500 ms"
        " (n2 had not answered yet)"
    )


def test_late_replies_are_accepted_but_do_not_change_the_outcome():
    quorum = WriteQuorum(("a", "b", "c"), 2)
    quorum.on_failure("a", "connection refused")
    assert quorum.on_failure("b", "timed out after 500 ms")
    assert quorum.done and not quorum.succeeded
    # Replies after the decision: recorded, never decisive, outcome and error unchanged.
    assert not quorum.on_success("c")
    assert not quorum.on_success("b")
    assert not quorum.succeeded
    assert "b timed out after 500 ms" in str(quorum.error)
    assert quorum.failures == {"a": "connection refused"}

    quorum = WriteQuorum(("a", "b", "c"), 1)
    assert quorum.on_success("b")
    assert not quorum.on_failure("a", "disk full")
    assert not quorum.on_success("c")
    assert quorum.succeeded and quorum.pending == ()


def test_a_replica_that_timed_out_then_answered_counts_while_undecided():
    quorum = WriteQuorum(("a", "b", "c"), 2)
    quorum.on_failure("a", "timed out after 500 ms")
    quorum.on_success("b")
    assert not quorum.done
    assert quorum.on_success("a")  # its late acknowledgement: the write is on a
    assert quorum.succeeded
    assert quorum.failures == {}


def test_repeated_answers_from_one_replica_count_once():
    quorum = WriteQuorum(("a", "b", "c"), 2)
    quorum.on_success("a")
    quorum.on_success("a")
    assert not quorum.done
    quorum.on_failure("b", "connection refused")
    quorum.on_failure("b", "connection refused")
    assert not quorum.done
    assert quorum.pending == ("c",)


def test_answers_from_nodes_that_were_not_asked_are_refused():
    quorum = WriteQuorum(("a", "b"), 1)
    with pytest.raises(ValueError, match="'z' is not a replica"):
        quorum.on_success("z")


@pytest.mark.parametrize(
    ("replicas", "w", "field"),
    [((), 1, "replicas"), (("a", "a"), 1, "replicas"), (("a", "b"), 3, "w"), (("a",), 0, "w")],
)
def test_invalid_requests_are_refused_naming_the_field(replicas, w, field):
    with pytest.raises(ConfigError) as info:
        WriteQuorum(replicas, w)
    assert info.value.field == field


def test_a_read_names_r_in_its_errors():
    with pytest.raises(ConfigError) as info:
        ReadQuorum(("a", "b"), 3, max, int.__eq__)
    assert info.value.field == "r"


# --- reads: merge and read repair -------------------------------------------------------------


@st.composite
def read_replies(draw):
    """Replicas, r, and for each replica either a version (a set of writes seen) or a failure."""
    n = draw(st.integers(1, 5))
    replicas = tuple(f"n{i}" for i in range(1, n + 1))
    r = draw(st.integers(1, n))
    versions = st.frozensets(st.integers(0, 3), max_size=3)
    replies = {node: draw(st.none() | versions) for node in replicas}  # None: the replica failed
    order = draw(st.permutations(replicas))
    return replicas, r, replies, order


@settings(max_examples=300)
@given(read_replies())
def test_stale_replicas_are_exactly_those_whose_reply_differs_from_the_merge(case):
    replicas, r, replies, order = case
    quorum = ReadQuorum(replicas, r, frozenset.union, frozenset.__eq__)
    for node in order:
        if replies[node] is None:
            quorum.on_failure(node, "timed out after 500 ms")
        else:
            quorum.on_success(node, replies[node])
    answered = {node: v for node, v in replies.items() if v is not None}
    if not answered:
        assert not quorum.has_result and quorum.stale_replicas() == ()
        return
    merged = frozenset().union(*answered.values())
    assert quorum.result == merged  # whatever the arrival order
    assert quorum.stale_replicas() == tuple(
        n for n in replicas if n in answered and answered[n] != merged
    )


def test_a_late_reply_joins_the_merge_and_read_repair():
    quorum = ReadQuorum(("a", "b", "c"), 2, max, int.__eq__)
    quorum.on_success("a", 5)
    assert quorum.on_success("b", 5)
    assert quorum.succeeded and quorum.result == 5 and quorum.stale_replicas() == ()
    quorum.on_success("c", 7)  # newer, and late: the client got 5, repair must now spread 7
    assert quorum.result == 7
    assert quorum.stale_replicas() == ("a", "b")


def test_a_read_has_no_result_before_any_replica_answers():
    quorum = ReadQuorum(("a",), 1, max, int.__eq__)
    assert not quorum.has_result
    with pytest.raises(RuntimeError):
        _ = quorum.result
    quorum.on_failure("a", "connection refused")
    assert quorum.done and not quorum.succeeded and not quorum.has_result
