"""The chaos checkers on hand-written histories: each anomaly they exist to catch is caught,
and what the store is allowed to do (replace a value it saw, keep siblings, lose an unknown
write) is not reported."""

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
           result=None, observed=None, strict=True) -> Op:
        op = Op(len(self.ops), process, workload, f, key, value, self.t, "n1", strict, observed,
                self.t + 0.5, outcome, result)
        self.t += 1.0
        self.ops.append(op)
        return op

    def write(self, p, key, value, observed=None, outcome=OK, strict=True):
        return self.op(p, "register", "write", key, value, outcome, None, observed, strict)

    def read(self, p, key, values, workload="register", strict=True):
        return self.op(p, workload, "read", key, None, OK, list(values), strict=strict)

    def add(self, p, key, element, outcome=OK, strict=True):
        return self.op(p, "set", "add", key, element, outcome, strict=strict)

    def incr(self, p, key, outcome=OK, result=None):
        return self.op(p, "counter", "incr", key, 1, outcome, result)


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


def test_a_strict_reader_of_a_set_sees_its_own_acknowledged_elements():
    s = Script()
    s.add(0, "s", "e1")
    s.read(0, "s", ["e0"], workload="set")
    anomalies = checker.check_sets(s.ops, {"s": FinalRead(["e1"])})
    assert kinds(anomalies) == ["phantom", "read-your-writes"]


# ------------------------------------------------------------------ counters


def test_a_counter_without_faults_is_exact():
    s = Script()
    for i in range(5):
        s.incr(0, "c", result=i + 1)
    assert checker.check_counters(s.ops, {"c": FinalRead(["5"])}, faults=False) == []
    assert kinds(checker.check_counters(s.ops, {"c": FinalRead(["4"])}, faults=False)) == ["counter"]


def test_a_counter_under_faults_stays_within_acknowledged_and_acknowledged_plus_unknown():
    s = Script()
    for i in range(3):
        s.incr(0, "c", result=i + 1)
    s.incr(1, "c", outcome=UNKNOWN)
    s.incr(1, "c", outcome=UNKNOWN)
    for final in ("3", "4", "5"):
        assert checker.check_counters(s.ops, {"c": FinalRead([final])}, faults=True) == []
    too_high = checker.check_counters(s.ops, {"c": FinalRead(["6"])}, faults=True)
    assert kinds(too_high) == ["counter"] and too_high[0].known is None


def test_lost_increments_with_the_traces_of_two_serializers_match_the_documented_caveat():
    s = Script()
    s.incr(0, "c", result=6)
    s.incr(1, "c", result=6)  # two serializers both went from 5 to 6
    low = checker.check_counters(s.ops, {"c": FinalRead(["1", "1"])}, faults=True)
    assert kinds(low) == ["counter"]
    assert low[0].known == checker.RMW_CAVEAT
    # Without faults the same history is a plain anomaly.
    assert all(a.known is None for a in checker.check_counters(s.ops, {"c": FinalRead(["1"])},
                                                                faults=False))


# ------------------------------------------------------------------ convergence, final reads


def test_replicas_that_differ_after_repair_diverge():
    same = {"n1": {"context": "ab", "siblings": [["a", 1, -1]]},
            "n2": {"context": "ab", "siblings": [["a", 1, -1]]}}
    other = dict(same, n3={"context": "ac", "siblings": [["a", 1, -1]]})
    assert checker.check_convergence({"k": same}) == []
    assert kinds(checker.check_convergence({"k": other})) == ["divergence"]


def test_a_key_unreadable_at_all_after_healing_is_reported():
    anomalies = checker.check([], {"k": FinalRead(None, "needed 3 replicas")}, {}, faults=True)
    assert kinds(anomalies) == ["final-read"]


def test_history_records_outcomes_in_real_time_order():
    h = History()
    a = h.invoke(0, "register", "write", "k", "v", "n1", True, [])
    h.complete(a, OK)
    b = h.invoke(0, "register", "read", "k", None, "n1", True)
    h.complete(b, OK, result=["v"])
    assert a.complete_s <= b.invoke_s <= b.complete_s
    assert [o.index for o in h.ops] == [0, 1]
