"""The linearizability checker, as someone reading a saved history uses it: the classic
anomalies (a stale read, a lost increment, two CASes that cannot both succeed) are rejected
with an explanation that names the operation; what a linearizable store may do (overlapping
writes read either way, a timed-out write that did or did not happen) is accepted; histories
built from a sequential run are accepted and a single broken output in them is caught; and a
history too hard for the budget is reported undecided, not wrong."""

from __future__ import annotations

import dataclasses
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.chaos import linearizability as lin
from ringkv.chaos.history import FAIL, OK, UNKNOWN
from ringkv.chaos.history import Op as ChaosOp
from ringkv.chaos.linearizability import (
    CounterModel,
    Operation,
    RegisterModel,
    VersionedRegisterModel,
)

REGISTER = RegisterModel()
COUNTER = CounterModel()
VERSIONED = VersionedRegisterModel()


def op(client, kind, input=None, output=None, at=(0.0, 1.0), key=None, index=None):
    """An operation invoked at at[0] and returned at at[1] (None: the outcome is unknown)."""
    return Operation(client, kind, input, output, at[0], at[1], key, index)


# ------------------------------------------------------------------ registers, by hand


def test_a_read_after_a_completed_write_that_returns_the_old_value_is_rejected():
    history = [
        op(1, "write", 1, at=(0, 1), index=0),
        op(2, "write", 2, at=(2, 3), index=1),
        op(3, "read", output=1, at=(4, 5), index=2),
    ]
    result = lin.check(history, REGISTER)
    assert result.ok is False
    (failure,) = result.failures
    assert failure.culprit is history[2]
    assert failure.rejected_states == (2,)
    assert "client 3's read -> 1 (op #2, invoked 4, returned 5)" in result.explanation
    assert "the register held 2" in result.explanation


def test_overlapping_writes_may_be_read_in_either_order():
    for first, second in ((1, 2), (2, 1)):
        history = [
            op(1, "write", 1, at=(0, 10)),
            op(2, "write", 2, at=(1, 9)),
            op(3, "read", output=first, at=(2, 3)),
            op(3, "read", output=second, at=(11, 12)),
        ]
        assert lin.check(history, REGISTER).ok is True, (first, second)


def test_two_reads_after_overlapping_writes_completed_must_agree():
    history = [
        op(1, "write", 1, at=(0, 10)),
        op(2, "write", 2, at=(1, 9)),
        op(3, "read", output=1, at=(11, 12)),
        op(4, "read", output=2, at=(13, 14)),
    ]
    assert lin.check(history, REGISTER).ok is False


def test_a_read_may_not_see_a_write_invoked_after_it_returned():
    history = [op(1, "read", output=7, at=(0, 1)), op(2, "write", 7, at=(2, 3))]
    assert lin.check(history, REGISTER).ok is False


def test_a_write_ending_when_a_read_starts_counts_as_concurrent_with_it():
    # Equal times on one clock cannot order two operations: the read may come first.
    history = [op(1, "write", 1, at=(0, 1)), op(2, "read", output=None, at=(1, 2))]
    assert lin.check(history, REGISTER).ok is True


def test_a_timed_out_write_that_a_later_read_saw_took_effect():
    history = [
        op(1, "write", 1, at=(0, 1)),
        op(2, "write", 2, at=(2, None)),  # timed out: may or may not have happened
        op(3, "read", output=2, at=(10, 11)),
    ]
    result = lin.check(history, REGISTER)
    assert result.ok is True
    assert [o.input for o in result.keys[0].witness if o.kind == "write"] == [1, 2]


def test_a_timed_out_write_that_no_read_saw_did_not_take_effect():
    history = [
        op(1, "write", 1, at=(0, 1)),
        op(2, "write", 2, at=(2, float("inf"))),
        op(3, "read", output=1, at=(10, 11)),
    ]
    assert lin.check(history, REGISTER).ok is True


def test_a_timed_out_write_cannot_be_seen_before_it_was_invoked():
    history = [
        op(1, "write", 1, at=(0, 1)),
        op(3, "read", output=2, at=(2, 3)),
        op(2, "write", 2, at=(4, None)),
    ]
    assert lin.check(history, REGISTER).ok is False


def test_a_timed_out_write_takes_effect_once_not_on_and_off():
    history = [
        op(1, "write", 1, at=(0, 1)),
        op(2, "write", 2, at=(2, None)),
        op(3, "read", output=2, at=(3, 4)),
        op(3, "read", output=1, at=(5, 6)),
    ]
    assert lin.check(history, REGISTER).ok is False


def test_two_cas_operations_expecting_the_same_value_cannot_both_succeed():
    history = [
        op(1, "write", "a", at=(0, 1)),
        op(2, "cas", ("a", "b"), True, at=(2, 5), index=1),
        op(3, "cas", ("a", "c"), True, at=(2, 5), index=2),
    ]
    result = lin.check(history, REGISTER)
    assert result.ok is False
    assert "cas('a', 'c') -> True" in result.explanation or "cas('a', 'b') -> True" in result.explanation


def test_a_cas_that_fails_while_its_expected_value_is_held_is_rejected():
    history = [op(1, "write", "a", at=(0, 1)), op(2, "cas", ("a", "b"), False, at=(2, 3))]
    assert lin.check(history, REGISTER).ok is False


def test_a_delete_makes_the_key_absent_for_reads_and_cas():
    history = [
        op(1, "write", "a", at=(0, 1)),
        op(1, "delete", output=True, at=(2, 3)),
        op(2, "read", output=None, at=(4, 5)),
        op(2, "cas", (None, "b"), True, at=(6, 7)),
        op(3, "read", output="b", at=(8, 9)),
    ]
    assert lin.check(history, REGISTER).ok is True
    assert lin.check([*history[:2], op(2, "delete", output=True, at=(4, 5))], REGISTER).ok is False


def test_histories_of_different_keys_are_judged_separately():
    history = [
        op(1, "write", 1, at=(0, 1), key="a"),
        op(2, "read", output=1, at=(2, 3), key="a"),
        op(1, "write", 1, at=(0, 1), key="b"),
        op(2, "read", output=None, at=(2, 3), key="b"),
    ]
    result = lin.check(history, REGISTER)
    assert result.ok is False
    assert [k.key for k in result.failures] == ["b"]
    assert result.explanation.startswith("key 'b': not linearizable")
    assert lin.check({"a": history[:2]}, REGISTER).ok is True


def test_an_operation_the_model_does_not_know_is_refused_with_the_known_ones_named():
    with pytest.raises(ValueError, match="knows only cas, delete, read, write, not 'incr'"):
        lin.check([op(1, "incr", 1, 1)], REGISTER)


def test_an_operation_that_returned_before_it_was_invoked_is_refused():
    with pytest.raises(ValueError, match="returned before it was invoked"):
        op(1, "read", output=1, at=(5, 4))


def test_a_timed_out_write_no_read_saw_can_still_explain_a_failed_cas():
    # The write of 2 is never read, but without it the CAS from 1 would have had to succeed.
    history = [
        op(1, "write", 1, at=(0, 1)),
        op(2, "write", 2, at=(2, None)),
        op(3, "cas", (1, 3), False, at=(3, 4)),
    ]
    assert lin.check(history, REGISTER).ok is True
    assert lin.check([history[0], history[2]], REGISTER).ok is False


def test_timed_out_writes_no_one_could_have_seen_are_set_aside():
    history = [op(1, "write", 1, at=(0, 1))]
    history += [op(10 + n, "write", 100 + n, at=(2 + n, None)) for n in range(40)]
    history.append(op(2, "read", output=1, at=(50, 51)))
    result = lin.check(history, REGISTER)
    assert result.ok is True
    assert result.keys[0].unknown_dropped == 40


def test_a_history_of_only_unknown_outcomes_is_linearizable():
    history = [op(1, "write", 1, at=(0, None)), op(2, "cas", (1, 2), at=(1, None))]
    assert lin.check(history, REGISTER).ok is True


# ------------------------------------------------------------------ counters, by hand


def test_a_lost_increment_is_caught():
    history = [
        op(1, "incr", 1, 1, at=(0, 1)),
        op(2, "incr", 1, 2, at=(2, 3)),
        op(1, "incr", 1, 2, at=(4, 5), index=2),  # two serializers: the same answer twice
    ]
    result = lin.check(history, COUNTER)
    assert result.ok is False
    assert result.failures[0].culprit is history[2]
    assert "the counter held 2" in result.explanation


def test_concurrent_increments_may_answer_in_either_order():
    history = [op(1, "incr", 1, 2, at=(0, 5)), op(2, "incr", 1, 1, at=(1, 4)),
               op(3, "read", output=2, at=(6, 7))]
    assert lin.check(history, COUNTER).ok is True


def test_timed_out_increments_explain_a_higher_count_but_not_a_lower_one():
    history = [op(9, "incr", 1, at=(0, None)) for _ in range(30)]
    history.append(op(1, "incr", 1, 31, at=(1, 2)))
    assert lin.check(history, COUNTER).ok is True
    history[-1] = op(1, "incr", 1, 32, at=(1, 2))
    result = lin.check(history, COUNTER)
    assert result.ok is False
    # 30 interchangeable timed-out INCRs are a count, not 2^30 subsets.
    assert result.keys[0].steps < 2_000


def test_a_set_to_the_value_already_held_still_counts_where_it_is():
    # set(5) while the counter is 5 changes nothing there, but it must be placed after the
    # INCR to 6 for the second INCR to answer 6 again: a set is not a read.
    history = [
        op(1, "incr", 5, 5, at=(0, 1)),
        op(2, "set", 5, at=(2, 10)),
        op(3, "incr", 1, 6, at=(3, 4)),
        op(3, "incr", 1, 6, at=(11, 12)),
    ]
    assert lin.check(history, COUNTER).ok is True


def test_a_missing_counter_reads_as_zero():
    history = [op(1, "read", output=None, at=(0, 1)), op(1, "set", 5, at=(2, 3)),
               op(2, "read", output=5, at=(4, 5))]
    assert lin.check(history, COUNTER).ok is True


# ------------------------------------------------------------------ versioned registers


def test_a_cas_on_a_version_already_replaced_is_rejected():
    history = [
        op(1, "write", ("a", "v1"), at=(0, 1)),
        op(2, "read", output=("a", "v1"), at=(2, 3)),
        op(3, "write", ("b", "v2"), at=(4, 5)),
        op(2, "cas", ("v1", "c", "v3"), True, at=(6, 7)),
    ]
    assert lin.check(history, VERSIONED).ok is False
    assert lin.check([*history[:3], op(2, "cas", ("v1", "c", "v3"), False, at=(6, 7))],
                     VERSIONED).ok is True


def test_the_version_of_a_timed_out_write_is_taken_from_the_read_that_saw_it():
    history = [
        op(1, "write", ("a", "v1"), at=(0, 1), index=0),
        op(2, "write", ("b", None), at=(2, None), index=1),
        op(3, "read", output=("b", "v2"), at=(3, 4), index=2),
        op(1, "delete", None, at=(5, None), index=3),
    ]
    resolved = lin.resolve_versions(history)
    assert resolved[1].input == ("b", "v2")
    assert resolved[3].input == lin.UnseenVersion(3)
    assert lin.check(resolved, VERSIONED).ok is True


# ------------------------------------------------------------------ adapters


def test_a_chaos_register_read_that_saw_siblings_is_not_linearizable():
    def chaos(index, f, value, start, outcome, result=None):
        return ChaosOp(index, index, "register", f, "reg:0", value, start, "n1", True, None,
                       start + 0.5, outcome, result)

    ops = [
        chaos(0, "write", "w1", 0.0, OK),
        chaos(1, "write", "w2", 1.0, UNKNOWN),
        chaos(2, "write", "w3", 2.0, FAIL),  # never sent: left out
        chaos(3, "read", None, 3.0, OK, ["w1", "w2"]),
    ]
    history = lin.from_chaos(ops, "register")
    assert [o.index for o in history] == [0, 1, 3]
    assert history[1].unknown
    assert history[2].output == ("w1", "w2")
    assert lin.check(history, REGISTER).ok is False
    ops[3].result = ["w2"]
    assert lin.check(lin.from_chaos(ops, "register"), REGISTER).ok is True


def test_a_chaos_operation_the_adapter_cannot_convert_is_refused_not_skipped():
    # Skipping a CAS would leave its value unexplained: a wrong verdict, not a partial one.
    cas = ChaosOp(4, 1, "register", "cas", "reg:0", [None, "w9"], 0.0, "n1", True, None, 0.5,
                  OK, [True, "0a"])
    with pytest.raises(ValueError, match="op #4 of 'reg:0' is a 'cas'"):
        lin.from_chaos([cas], "register")


def test_a_simulated_read_that_missed_an_acknowledged_write_is_caught():
    from ringkv.cluster.quorum import ConsistencyLevel
    from ringkv.testing.sim.history import History
    from ringkv.testing.sim.kv import KvSettings, KvSimulation
    from ringkv.testing.sim.network import NetworkConditions

    sim = KvSimulation(5, 3, NetworkConditions(min_delay_ms=1, max_delay_ms=1), kv=KvSettings())
    history = History()
    key = b"k"
    pref, _ = sim.placement(key)
    w = history.invoke(0, "write", key, pref[0], sim.now_ms, value=b"v")
    sim.client_write(pref[0], key, b"v", lambda result: history.complete(w, result, sim.now_ms))
    sim.run_for(100)
    r = history.invoke(1, "read", key, pref[1], sim.now_ms)
    sim.client_read(pref[1], key, ConsistencyLevel.QUORUM,
                    lambda result: history.complete(r, result, sim.now_ms))
    sim.run_for(100)
    assert lin.check(lin.from_sim(history), REGISTER).ok is True
    r.record = None  # the same read, had it returned nothing
    assert lin.check(lin.from_sim(history), REGISTER).ok is False


# ------------------------------------------------------------------ generated histories


def sequential_history(rng: random.Random, model: str, n_ops: int, clients: int,
                       unknown_p: float, sets: bool = True) -> list[Operation]:
    """A history that is linearizable by construction: operations run on the model one after
    another at t = 1, 2, 3, ..., and each gets an interval around its point, so up to
    `clients` overlap. With chance `unknown_p` an operation times out (its client goes on as a
    new one); half of those did not take effect. Written values are unique, never None."""
    state: object = {"register": None, "counter": 0, "versioned": (None, None)}[model]
    free_at = [0.0] * clients
    names = list(range(clients))
    fresh = iter(range(10**9))
    out: list[Operation] = []
    t = 0.0
    while len(out) < n_ops:
        t += 1.0
        idle = [c for c in range(clients) if free_at[c] < t]
        if not idle:
            continue
        c = rng.choice(idle)
        invoked = rng.uniform(max(free_at[c], t - clients), t)
        returned = t + rng.uniform(0.0, clients)
        roll = rng.random()
        if model == "register":
            if roll < 0.4:
                kind, arg, new, output = "read", None, state, state
            elif roll < 0.7:
                kind, new = "write", next(fresh)
                arg, output = new, None
            elif roll < 0.95:
                expected = state if rng.random() < 0.5 else rng.choice([None, next(fresh)])
                kind, swapped = "cas", state == expected
                arg = (expected, next(fresh))
                new, output = (arg[1] if swapped else state), swapped
            else:
                kind, arg, new, output = "delete", None, None, state is not None
        elif model == "counter":
            if roll < 0.5:
                kind, arg = "incr", rng.randint(1, 3)
                new = output = state + arg
            elif roll < 0.9 or not sets:
                kind, arg, new, output = "read", None, state, state
            else:
                kind, arg, new, output = "set", rng.randint(0, 20), None, None
                new = arg
        else:
            if roll < 0.4:
                kind, arg, new, output = "read", None, state, state
            elif roll < 0.7:
                kind, arg, output = "write", (next(fresh), f"v{next(fresh)}"), None
                new = arg
            elif roll < 0.95:
                expected = state[1] if rng.random() < 0.5 else f"v{next(fresh)}"
                kind, swapped = "cas", state[1] == expected
                arg = (expected, next(fresh), f"v{next(fresh)}")
                new, output = ((arg[1], arg[2]) if swapped else state), swapped
            else:
                kind, arg, output = "delete", f"v{next(fresh)}", None
                new = (None, arg)
        if rng.random() < unknown_p:
            if rng.random() < 0.5:
                state = new
            out.append(Operation(names[c], kind, arg, None, invoked, None, index=len(out)))
            names[c] = clients + len(out)  # as in Jepsen: the client goes on as a new one
            free_at[c] = t
            continue
        state = new
        out.append(Operation(names[c], kind, arg, output, invoked, returned, index=len(out)))
        free_at[c] = returned
    return out


def assert_witness_is_a_linearization(history, model, witness):
    """The checker's witness must contain every known operation once, respect real time and
    be accepted by the model step by step: a checker bug would rather show here."""
    assert {id(o) for o in history if not o.unknown} <= {id(o) for o in witness}
    state = model.init()
    for n, o in enumerate(witness):
        ok, state = model.step(state, o)
        assert ok, o.describe()
        for later in witness[n + 1:]:
            assert later.returned_at is None or later.returned_at >= o.invoked_at


MODELS = {"register": REGISTER, "counter": COUNTER, "versioned": VERSIONED}


def histories(model: str | None = None, min_ops: int = 1, sets: bool = True):
    """(model name, a history linearizable by construction) for hypothesis."""
    return st.builds(
        lambda name, rng, n, clients, unknown_p: (
            name, sequential_history(rng, name, n, clients, unknown_p, sets)),
        st.sampled_from(sorted(MODELS)) if model is None else st.just(model),
        st.randoms(use_true_random=False),
        st.integers(min_ops, 80),
        st.integers(1, 6),
        st.sampled_from([0.0, 0.1, 0.3]),
    )


def mutate(history, n, **changes):
    out = list(history)
    out[n] = dataclasses.replace(out[n], **changes)
    return out


@settings(max_examples=150, deadline=None)
@given(case=histories())
def test_a_history_run_sequentially_on_the_model_is_accepted(case):
    name, history = case
    result = lin.check(history, MODELS[name])
    assert result.ok is True, result.explanation
    assert_witness_is_a_linearization(history, MODELS[name], result.keys[0].witness)


@settings(max_examples=80, deadline=None)
@given(case=histories("register"), data=st.data())
def test_a_register_read_of_a_value_never_written_is_rejected(case, data):
    _, history = case
    history = [*history, Operation(99, "read", None, None, 10**6, 10**6 + 1)]
    reads = [n for n, o in enumerate(history) if o.kind == "read" and not o.unknown]
    n = data.draw(st.sampled_from(reads))
    mutated = mutate(history, n, output="never written")
    result = lin.check(mutated, REGISTER)
    assert result.ok is False
    assert result.failures[0].culprit is mutated[n]


@settings(max_examples=80, deadline=None)
@given(case=histories("register"), data=st.data())
def test_a_second_cas_from_the_same_value_succeeding_is_rejected(case, data):
    # Every value is written once, so after a CAS from "a" succeeds the register never holds
    # "a" again: a second CAS from "a" cannot also succeed, wherever it stands (and if the
    # operation turned into it was the write of "a", the first cannot succeed either).
    _, history = case
    history = [Operation(98, "write", "a", None, -3, -2),
               Operation(98, "cas", ("a", "b"), True, -1, -0.5), *history]
    won = [n for n, o in enumerate(history)
           if o.kind == "cas" and o.output is True and o.input[0] is not None]
    first = data.draw(st.sampled_from(won))
    second = data.draw(st.sampled_from(
        [n for n, o in enumerate(history) if not o.unknown and n != first]))
    mutated = mutate(history, second, kind="cas", input=(history[first].input[0], "fresh"),
                     output=True)
    assert lin.check(mutated, REGISTER).ok is False


@settings(max_examples=80, deadline=None)
@given(case=histories("counter"), data=st.data())
def test_a_counter_answer_below_zero_is_rejected(case, data):
    # Increments are positive and sets non-negative: no order reaches -1.
    _, history = case
    history = [*history, Operation(99, "read", None, 0, 10**6, 10**6 + 1)]
    answered = [n for n, o in enumerate(history) if o.kind in ("incr", "read") and not o.unknown]
    n = data.draw(st.sampled_from(answered))
    assert lin.check(mutate(history, n, output=-1), COUNTER).ok is False


@settings(max_examples=80, deadline=None)
@given(case=histories("counter", min_ops=2, sets=False), data=st.data())
def test_two_increments_answering_the_same_value_are_rejected(case, data):
    # Without `set` the counter only grows, so no value is answered by two increments: the
    # lost-increment anomaly of two serializers at once.
    _, history = case
    incrs = [n for n, o in enumerate(history) if o.kind == "incr" and not o.unknown]
    if len(incrs) < 2:
        return
    first, second = data.draw(st.lists(st.sampled_from(incrs), min_size=2, max_size=2,
                                       unique=True))
    mutated = mutate(history, second, output=history[first].output)
    assert lin.check(mutated, COUNTER).ok is False


# ------------------------------------------------------------------ budgets and speed


def test_a_history_too_hard_for_the_budget_is_undecided_not_wrong():
    # 18 writes all overlapping and a read of a value none of them wrote, but a later write
    # did (so no shortcut sees it impossible): refuting it means trying the orders of the
    # writes; the budget runs out long before.
    history = [op(c, "write", c, at=(0, 100)) for c in range(18)]
    history.append(op(99, "read", output=-1, at=(101, 102)))
    history.append(op(99, "write", -1, at=(103, 104)))
    started = time.monotonic()
    result = lin.check(history, REGISTER, max_steps=20_000)
    assert time.monotonic() - started < 5.0
    assert result.ok is None
    assert "the budget ran out (max_steps=20000" in result.explanation
    again = lin.check(history, REGISTER, max_steps=20_000)
    assert again.keys[0].steps == result.keys[0].steps  # a step budget replays exactly
    small = lin.check(history, REGISTER, max_states=1_000)
    assert small.ok is None and "max_states=1000" in small.explanation


def test_a_read_of_a_value_nothing_wrote_is_refuted_without_a_search():
    # The history above without its last write: the register never holds -1, whatever the
    # order, so the verdict needs no search however many writes overlap (and a CAS from a
    # value never held cannot succeed either).
    history = [op(c, "write", c, at=(0, 100)) for c in range(18)]
    history.append(op(99, "read", output=-1, at=(101, 102)))
    result = lin.check(history, REGISTER, max_steps=20_000)
    assert result.ok is False and result.keys[0].steps == 0
    assert result.failures[0].culprit is history[-1]
    assert "never holds what it needs" in result.explanation
    cas = [op(1, "write", 1, at=(0, 1)), op(2, "cas", (7, 8), output=True, at=(2, 3))]
    assert lin.check(cas, REGISTER).failures[0].culprit is cas[1]


def test_a_long_history_of_eight_clients_checks_in_seconds():
    rng = random.Random(7)
    for model in ("register", "counter", "versioned"):
        history = sequential_history(rng, model, 2_000, 8, 0.02)
        started = time.monotonic()
        result = lin.check(history, MODELS[model])
        assert result.ok is True, result.explanation
        assert time.monotonic() - started < 10.0


# ------------------------------------------------------------------ against brute force


def brute_force(history, model) -> bool:
    """Every order of the known operations, with every subset of the unknown ones slotted
    in: the definition of linearizability, with none of the search's shortcuts."""

    def must_precede(a, b):
        return a.returned_at is not None and a.returned_at < b.invoked_at

    def extend(state, left):
        if all(o.unknown for o in left):
            return True  # the unknown ones left did not take effect
        for o in left:
            if any(must_precede(other, o) for other in left if other is not o):
                continue
            ok, new = model.step(state, o)
            if ok and extend(new, [x for x in left if x is not o]):
                return True
        return False

    return extend(model.init(), list(history))


def small_history(rng: random.Random, name: str) -> list[Operation]:
    """A few operations with random intervals and outputs from a tiny domain, so that values
    collide and most histories are not linearizable."""
    values = [None, 1, 2]
    out = []
    for n in range(rng.randint(1, 6)):
        start = rng.randint(0, 8)
        end = None if rng.random() < 0.25 else start + rng.randint(0, 4)
        if name == "register":
            kind = rng.choice(["read", "read", "write", "cas", "cas", "delete"])
            arg = {"read": None, "write": rng.choice([1, 2]), "delete": None,
                   "cas": (rng.choice(values), rng.choice([1, 2]))}[kind]
            output = {"read": rng.choice(values), "write": None,
                      "delete": rng.choice([None, True, False]),
                      "cas": rng.choice([True, False])}[kind]
        elif name == "counter":
            kind = rng.choice(["incr", "incr", "read", "set"])
            arg = {"incr": rng.choice([0, 1, 2]), "read": None, "set": rng.choice([0, 1])}[kind]
            output = rng.randint(0, 3) if kind != "set" else None
        else:
            kind = rng.choice(["read", "write", "cas", "cas", "delete"])
            versions = [None, "v1", "v2"]
            arg = {"read": None, "write": (rng.choice([1, 2]), rng.choice(versions[1:])),
                   "delete": rng.choice(versions[1:]),
                   "cas": (rng.choice(versions), rng.choice([1, 2]), rng.choice(versions[1:]))}[kind]
            output = {"read": (rng.choice(values), rng.choice(versions)), "write": None,
                      "delete": None, "cas": rng.choice([True, False])}[kind]
        out.append(Operation(n, kind, arg, output, start, end, index=n))
    return out


@settings(max_examples=1_000, deadline=None)
@given(rng=st.randoms(use_true_random=False), name=st.sampled_from(sorted(MODELS)))
def test_the_search_agrees_with_trying_every_order(rng, name):
    # Every shortcut of the search (memoization, dominance, forced reads, dropping unneeded
    # timeouts, guards, absorption) must leave the verdict what the definition gives.
    history = small_history(rng, name)
    result = lin.check(history, MODELS[name])
    assert result.ok is brute_force(history, MODELS[name]), [o.describe() for o in history]
    if result.ok:
        assert_witness_is_a_linearization(history, MODELS[name], result.keys[0].witness)
