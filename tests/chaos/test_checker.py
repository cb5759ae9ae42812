"""The chaos checkers on hand-written histories: each anomaly they exist to catch is caught,
and what the store is allowed to do (replace a value it saw, keep siblings, lose an unknown
write, delete what a delete saw) is not reported."""

from __future__ import annotations

from ringkv.chaos import checker
from ringkv.chaos.checker import FinalRead
from ringkv.chaos.history import FAIL, OK, UNKNOWN, History, Op


class Script:
    """Builds a history one completed operation at a time, each 1 s after the last."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.t = 0.0

    def op(self, process: int, workload: str, f: str, key: str, value=None, outcome=OK,
           result=None, observed=None, strict=True, serial=False, version=None) -> Op:
        op = Op(len(self.ops), process, workload, f, key, value, self.t, "n1", strict, observed,
                self.t + 0.5, outcome, result, serial=serial, version=version)
        self.t += 1.0
        self.ops.append(op)
        return op

    def write(self, p, key, value, observed=None, outcome=OK, strict=True):
        return self.op(p, "register", "write", key, value, outcome, None, observed, strict)

    def read(self, p, key, values, workload="register", strict=True):
        return self.op(p, workload, "read", key, None, OK, list(values), strict=strict)

    def add(self, p, key, element, outcome=OK, strict=True, observed=None):
        return self.op(p, "set", "add", key, element, outcome, observed=observed, strict=strict)

    def delete(self, p, key, token, observed, workload="register", outcome=OK, strict=True):
        return self.op(p, workload, "delete", key, token, outcome, None, list(observed), strict)

    def incr(self, p, key, outcome=OK, result=None, by=1):
        return self.op(p, "counter", "incr", key, by, outcome, result)

    def counter_read(self, p, key, value):
        return self.op(p, "counter", "read", key, None, OK, [] if value is None else [str(value)],
                       serial=True)

    def serial_read(self, p, key, value, version):
        return self.op(p, "cas-register", "read", key, None, OK, [] if value is None else [value],
                       serial=True, version=version)

    def cas(self, p, key, expected, new, outcome=OK, result=None):
        return self.op(p, "cas-register", "cas", key, [expected, new], outcome, result)


def kinds(anomalies) -> list[str]:
    return sorted(a.kind for a in anomalies)


# ------------------------------------------------------------------ registers


def test_a_value_replaced_by_a_write_that_saw_it_is_not_lost():
    s = Script()
    s.write(0, "r", "a", observed=[])
    s.write(1, "r", "b", observed=["a"])
    s.write(2, "r", "c", observed=["b"], outcome=UNKNOWN)
    # "c" replaced "b", which replaced "a": the final "c" accounts for both.
    assert checker.check_registers(s.ops, {"r": FinalRead(["c"])}) == []


def test_an_acknowledged_write_that_vanished_without_a_successor_is_lost():
    s = Script()
    w = s.write(0, "r", "a", observed=[])
    s.write(1, "r", "b", observed=[])  # concurrent: did not see "a"
    anomalies = checker.check_registers(s.ops, {"r": FinalRead(["b"])})
    assert kinds(anomalies) == ["lost-write"]
    assert anomalies[0].ops == [w.index]


def test_concurrent_writes_kept_as_siblings_are_both_present():
    s = Script()
    s.write(0, "r", "a", observed=[])
    s.write(1, "r", "b", observed=[])
    assert checker.check_registers(s.ops, {"r": FinalRead(["a", "b"])}) == []


def test_an_unknown_or_failed_write_may_vanish():
    s = Script()
    s.write(0, "r", "a", observed=[], outcome=UNKNOWN)
    s.write(1, "r", "b", observed=[], outcome=FAIL)
    assert checker.check_registers(s.ops, {"r": FinalRead([])}) == []


def test_a_value_nobody_wrote_is_a_phantom():
    s = Script()
    s.write(0, "r", "a", observed=[])
    s.read(1, "r", ["zz"])
    anomalies = checker.check_registers(s.ops, {"r": FinalRead(["a", "yy"])})
    assert kinds(anomalies) == ["phantom", "phantom"]


def test_a_strict_process_must_read_its_own_write_or_a_successor():
    s = Script()
    s.write(0, "r", "a", observed=[])
    s.read(0, "r", [])  # stale: saw nothing after its acknowledged write
    s.write(1, "r", "b", observed=["a"])
    s.read(0, "r", ["b"])  # fine: "b" replaced "a" having seen it
    anomalies = checker.check_registers(s.ops, {"r": FinalRead(["b"])})
    assert kinds(anomalies) == ["read-your-writes"]
    assert anomalies[0].ops == [0, 1]


def test_a_value_removed_by_a_delete_that_saw_it_is_not_lost():
    s = Script()
    s.write(0, "r", "a", observed=[])
    s.delete(1, "r", "d1", observed=["a"], outcome=UNKNOWN)
    # The delete may have taken effect: "a" may be gone, and a reader may see nothing.
    s.read(0, "r", [])
    assert checker.check_registers(s.ops, {"r": FinalRead([])}) == []


def test_a_value_a_delete_replaced_that_is_back_after_healing_was_resurrected():
    s = Script()
    s.write(0, "r", "a", observed=[])
    d = s.delete(1, "r", "d1", observed=["a"])
    copies = {"r": {"n1": {"context": "aa", "siblings": [["a", 1, -1]]},
                    "n2": {"context": "bb", "siblings": []}}}
    anomalies = checker.check_registers(s.ops, {"r": FinalRead(["a"])}, replicas=copies)
    assert kinds(anomalies) == ["resurrected"]
    assert anomalies[0].ops == [d.index]
    assert "the final read" in anomalies[0].detail and "n1's copy" in anomalies[0].detail


def test_a_delete_of_unknown_outcome_may_have_left_the_value():
    s = Script()
    s.write(0, "r", "a", observed=[])
    s.delete(1, "r", "d1", observed=["a"], outcome=UNKNOWN)
    assert checker.check_registers(s.ops, {"r": FinalRead(["a"])}) == []


def test_a_delete_that_was_never_sent_excuses_nothing():
    s = Script()
    s.write(0, "r", "a", observed=[])
    s.delete(1, "r", "d1", observed=["a"], outcome=FAIL)
    assert kinds(checker.check_registers(s.ops, {"r": FinalRead([])})) == ["lost-write"]


def test_a_strict_process_must_not_read_back_what_it_deleted():
    s = Script()
    s.write(0, "r", "a", observed=[])
    s.delete(0, "r", "d1", observed=["a"])
    s.read(0, "r", ["a"])
    anomalies = checker.check_registers(s.ops, {"r": FinalRead([])})
    assert kinds(anomalies) == ["read-your-writes"]
    assert "deleted ['a']" in anomalies[0].detail


def test_read_your_writes_is_not_asked_of_sloppy_processes_or_other_processes():
    s = Script()
    s.write(0, "r", "a", observed=[], strict=False)
    s.read(0, "r", [], strict=False)
    s.write(2, "r", "b", observed=[])
    s.read(3, "r", [])
    assert checker.check_registers(s.ops, {"r": FinalRead(["a", "b"])}) == []
    assert checker.check_registers(s.ops, {"r": FinalRead(["a", "b"])},
                                   read_your_writes=False) == []


# ------------------------------------------------------------------ sets


def test_every_acknowledged_element_must_be_in_the_union_of_the_final_siblings():
    s = Script()
    s.add(0, "s", "e1")
    s.add(1, "s", "e2")
    s.add(2, "s", "e3", outcome=UNKNOWN)
    assert checker.check_sets(s.ops, {"s": FinalRead(["e1", "e2"])}) == []
    anomalies = checker.check_sets(s.ops, {"s": FinalRead(["e1 e3"])})
    assert kinds(anomalies) == ["lost-element"]
    assert "e2" in anomalies[0].detail


def test_elements_a_delete_of_the_set_saw_may_be_gone_but_not_come_back():
    s = Script()
    s.add(0, "s", "e1", observed=[])
    s.add(1, "s", "e2", observed=["e1"])
    s.delete(2, "s", "d1", observed=["e1 e2"], workload="set")
    s.add(0, "s", "e3", observed=[])  # concurrent with nothing: after the delete
    assert checker.check_sets(s.ops, {"s": FinalRead(["e3"])}) == []
    back = checker.check_sets(s.ops, {"s": FinalRead(["e1 e2", "e3"])})
    assert kinds(back) == ["resurrected"]
    # An element the delete did not see must survive it.
    s.add(3, "s", "e4", observed=[])
    assert kinds(checker.check_sets(s.ops, {"s": FinalRead(["e3"])})) == ["lost-element"]


def test_a_strict_reader_of_a_set_sees_its_own_acknowledged_elements():
    s = Script()
    s.add(0, "s", "e1")
    s.read(0, "s", ["e0"], workload="set")
    anomalies = checker.check_sets(s.ops, {"s": FinalRead(["e1"])})
    assert kinds(anomalies) == ["phantom", "read-your-writes"]


# ------------------------------------------------------------------ counters


def test_a_counter_is_exact_when_nothing_is_unknown():
    s = Script()
    for i in range(5):
        s.incr(0, "c", result=i + 1)
    assert checker.check_counters(s.ops, {"c": FinalRead(["5"])}) == []
    assert kinds(checker.check_counters(s.ops, {"c": FinalRead(["4"])})) == ["counter"]


def test_a_counter_stays_within_acknowledged_and_acknowledged_plus_unknown_increments():
    s = Script()
    s.incr(0, "c", result=1)
    s.incr(0, "c", result=4, by=3)
    s.incr(1, "c", outcome=UNKNOWN, by=2)
    s.incr(2, "c", outcome=FAIL, by=5)
    for final in ("4", "5", "6"):
        assert checker.check_counters(s.ops, {"c": FinalRead([final])}) == []
    too_high = checker.check_counters(s.ops, {"c": FinalRead(["7"])})
    assert kinds(too_high) == ["counter"] and "applied twice" in too_high[0].detail
    too_low = checker.check_counters(s.ops, {"c": FinalRead(["3"])})
    assert kinds(too_low) == ["counter"] and "1 lost" in too_low[0].detail


def test_two_increments_answering_the_same_value_or_siblings_are_anomalies_under_any_faults():
    # Once the documented caveat of the old serializer; the consensus path has no excuse.
    s = Script()
    s.incr(0, "c", result=6)
    s.incr(1, "c", result=6)
    low = checker.check_counters(s.ops, {"c": FinalRead(["1", "1"])})
    assert sorted(a.detail.split()[0] for a in low) == ["1", "final", "siblings"]
    assert low[0].ops == [0, 1]


def test_a_counter_history_is_checked_for_linearizability_with_its_serial_reads():
    s = Script()
    s.incr(0, "c", result=1)
    s.counter_read(1, "c", 1)
    s.incr(0, "c", result=3, by=2)
    assert checker.check_linearizable(s.ops) == []
    s.counter_read(1, "c", 1)  # stale: after the second increment returned
    anomalies = checker.check_linearizable(s.ops)
    assert kinds(anomalies) == ["linearizability"]
    assert "client 1's read -> 1" in anomalies[0].detail


# ------------------------------------------------------------------ cas registers


def test_a_cas_register_history_of_reads_and_swaps_is_linearizable():
    s = Script()
    s.cas(0, "k", None, "a", result=[True, "v1"])
    s.serial_read(1, "k", "a", "v1")
    s.cas(1, "k", "v1", "b", result=[True, "v2"])
    s.cas(0, "k", "v1", "c", result=[False, "v2"])  # lost the race: the version moved on
    s.op(0, "cas-register", "cad", "k", "v2", OK, True)
    s.serial_read(1, "k", None, None)
    s.cas(1, "k", None, "d", result=[True, "v3"])  # absent again: CAS from "no live value"
    stats = {}
    assert checker.check_linearizable(s.ops, stats=stats) == []
    assert stats["cas-register"]["operations"] == 7 and stats["cas-register"]["ok"] is True


def test_two_cas_from_one_version_that_both_succeed_are_not_linearizable():
    s = Script()
    s.cas(0, "k", None, "a", result=[True, "v1"])
    s.cas(1, "k", "v1", "b", result=[True, "v2"])
    s.cas(2, "k", "v1", "c", result=[True, "v3"])
    anomalies = checker.check_linearizable(s.ops)
    assert kinds(anomalies) == ["linearizability"]
    assert anomalies[0].key == "k" and 2 in anomalies[0].ops


def test_a_cas_of_unknown_outcome_gets_its_version_from_a_read_that_saw_it():
    s = Script()
    s.cas(0, "k", None, "a", outcome=UNKNOWN)
    s.serial_read(1, "k", "a", "v1")
    s.cas(1, "k", "v1", "b", result=[True, "v2"])
    assert checker.check_linearizable(s.ops) == []
    history = checker.cas_register_history(s.ops)
    assert history[0].input == (None, "a", "v1") and history[0].unknown


def test_quorum_reads_of_a_cas_register_are_not_held_to_linearizability():
    s = Script()
    s.cas(0, "k", None, "a", result=[True, "v1"])
    s.cas(0, "k", "v1", "b", result=[True, "v2"])
    s.op(1, "cas-register", "read", "k", None, OK, ["a"], version="v1")  # stale, at QUORUM
    assert checker.check_linearizable(s.ops) == []
    s.serial_read(1, "k", "a", "v1")  # the same, at SERIAL: not allowed
    assert kinds(checker.check_linearizable(s.ops)) == ["linearizability"]


# ------------------------------------------------------------------ convergence, final reads


def test_replicas_that_differ_after_repair_diverge():
    same = {"n1": {"context": "ab", "siblings": [["a", 1, -1]]},
            "n2": {"context": "ab", "siblings": [["a", 1, -1]]}}
    other = dict(same, n3={"context": "ac", "siblings": [["a", 1, -1]]})
    assert checker.check_convergence({"k": same}) == []
    assert kinds(checker.check_convergence({"k": other})) == ["divergence"]


def test_a_key_unreadable_at_all_after_healing_is_reported():
    anomalies = checker.check([], {"k": FinalRead(None, "needed 3 replicas")}, {})
    assert kinds(anomalies) == ["final-read"]


def test_history_records_outcomes_in_real_time_order():
    h = History()
    a = h.invoke(0, "register", "write", "k", "v", "n1", True, [])
    h.complete(a, OK)
    b = h.invoke(0, "register", "read", "k", None, "n1", True)
    h.complete(b, OK, result=["v"])
    assert a.complete_s <= b.invoke_s <= b.complete_s
    assert [o.index for o in h.ops] == [0, 1]
