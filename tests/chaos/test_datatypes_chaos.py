"""The chaos proof of the Redis data types (issue 15): the `set-crdt` workload (SADD/SREM on
sets, HSET/HDEL on hashes) and the `list-push` workload (RPUSH/LPOP), their checkers
(chaos/typed_checker.py) on hand-written histories, each anomaly caught and what the store
may do not reported, and short live runs under faults (docs/reliability.md)."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from ringkv.chaos import typed_checker
from ringkv.chaos.checker import FinalRead
from ringkv.chaos.history import OK, UNKNOWN, Op
from ringkv.chaos.runner import ChaosConfig, run
from ringkv.cli import main


class Script:
    """A history built by hand: each operation given its interval."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def op(self, workload: str, f: str, key: str, value, t0: float, t1: float, outcome=OK,
           result=None, process: int = 0, serial: bool = False) -> Op:
        op = Op(len(self.ops), process, workload, f, key, value, t0, "n1", True, None,
                t1, outcome, result, serial=serial)
        self.ops.append(op)
        return op

    def sadd(self, key, e, t0, t1, result=1, outcome=OK, process=0):
        return self.op("set-crdt", "sadd", key, e, t0, t1, outcome, result, process)

    def srem(self, key, e, t0, t1, result=1, outcome=OK, process=0):
        return self.op("set-crdt", "srem", key, e, t0, t1, outcome, result, process)

    def hset(self, key, field, value, t0, t1, result=1, outcome=OK):
        return self.op("set-crdt", "hset", key, [field, value], t0, t1, outcome, result)

    def hdel(self, key, field, t0, t1, result=1, outcome=OK):
        return self.op("set-crdt", "hdel", key, field, t0, t1, outcome, result)

    def zadd(self, key, member, score, t0, t1, result=1, outcome=OK):
        return self.op("set-crdt", "zadd", key, [member, score], t0, t1, outcome, result)

    def zrem(self, key, member, t0, t1, result=1, outcome=OK):
        return self.op("set-crdt", "zrem", key, member, t0, t1, outcome, result)

    def read(self, workload, key, items, t0, t1, serial=True, process=-1):
        return self.op(workload, "read", key, None, t0, t1, OK, list(items), process, serial)

    def push(self, key, v, t0, t1, length=None, outcome=OK, process=0):
        return self.op("list-push", "push", key, v, t0, t1, outcome, length, process)

    def pop(self, key, t0, t1, value=None, outcome=OK, process=0):
        return self.op("list-push", "pop", key, None, t0, t1, outcome, value, process)


def kinds(anomalies) -> list[str]:
    return sorted(a.kind for a in anomalies)


def sets(s: Script, final: dict[str, list[str]]):
    return typed_checker.check_set_crdt(s.ops, {k: FinalRead(v) for k, v in final.items()})


def lists(s: Script, final: dict[str, list[str]]):
    return typed_checker.check_list_push(s.ops, {k: FinalRead(v) for k, v in final.items()})


# ------------------------------------------------------------------ set-crdt


def test_set_history_that_keeps_its_last_words_passes():
    s = Script()
    s.sadd("sc:0", "e1", 0, 1)
    s.sadd("sc:0", "e2", 0, 1)
    s.srem("sc:0", "e2", 2, 3)
    s.sadd("sc:0", "e1", 4, 5, result=0)  # already there
    s.srem("sc:0", "e3", 4, 5, result=0)  # never there
    s.read("set-crdt", "sc:0", ["e1"], 6, 7)
    assert sets(s, {"sc:0": ["e1"]}) == []


def test_a_lost_add_is_caught():
    s = Script()
    add = s.sadd("sc:0", "e1", 0, 1)
    s.sadd("sc:0", "e2", 0, 1)
    found = sets(s, {"sc:0": ["e2"]})
    assert kinds(found) == ["lost-add"]
    assert found[0].ops == [add.index] and "e1" in found[0].detail
    # With the SERIAL read after healing in the history, the element's history is not
    # linearizable either: the add answered 1 and nothing removed it.
    s.read("set-crdt", "sc:0", ["e2"], 2, 3)
    assert kinds(sets(s, {"sc:0": ["e2"]})) == ["linearizability", "lost-add"]


def test_a_remove_undone_is_caught():
    s = Script()
    s.sadd("sc:0", "e1", 0, 1)
    s.srem("sc:0", "e1", 2, 3)
    assert kinds(sets(s, {"sc:0": ["e1"]})) == ["lost-remove"]


def test_an_unknown_or_overlapping_write_may_have_the_last_word():
    s = Script()
    s.sadd("sc:0", "e1", 0, 1)
    s.srem("sc:0", "e1", 2, None, outcome=UNKNOWN, result=None)
    s.sadd("sc:0", "e2", 0, 2)
    s.srem("sc:0", "e2", 1, 3)  # overlaps the add: either order
    for final in (["e1", "e2"], [], ["e1"], ["e2"]):
        assert sets(s, {"sc:0": final}) == [], final


def test_a_reply_that_no_order_explains_is_caught():
    s = Script()
    s.sadd("sc:0", "e1", 0, 1, result=1)
    s.sadd("sc:0", "e1", 2, 3, result=1)  # it was there already: must answer 0
    assert kinds(sets(s, {"sc:0": ["e1"]})) == ["linearizability"]


def test_two_removes_at_once_may_both_count_but_one_after_the_other_may_not():
    """Sets and hashes converge without consensus: two replicas that each run an HDEL of one
    field at once (a partition) both saw it, and both answer 1. One after the other, the
    second must answer 0, and a SERIAL read must still fit the order."""
    s = Script()
    s.hset("hc:0", "f1", "h0.1", 0, 1)
    s.hdel("hc:0", "f1", 2, 4)
    s.hdel("hc:0", "f1", 3, 5)  # overlaps the first: both may count
    assert sets(s, {"hc:0": []}) == []
    s.hdel("hc:0", "f1", 6, 7)  # after both: the field is gone
    assert kinds(sets(s, {"hc:0": []})) == ["linearizability"]
    s = Script()
    s.hset("hc:0", "f1", "h0.1", 0, 1)
    s.hdel("hc:0", "f1", 2, 4)
    s.hdel("hc:0", "f1", 3, 5)
    s.read("set-crdt", "hc:0", ["f1=h0.1"], 6, 7)  # a remove's effect cannot be undone
    assert kinds(sets(s, {"hc:0": []})) == ["linearizability"]


def test_hash_fields_lost_deleted_back_and_invented_are_caught():
    s = Script()
    s.hset("hc:0", "f1", "h0.1", 0, 1)
    s.hset("hc:0", "f1", "h0.2", 2, 3, result=0)
    s.hset("hc:0", "f2", "h0.3", 0, 1)
    s.hdel("hc:0", "f2", 2, 3)
    assert sets(s, {"hc:0": ["f1=h0.2"]}) == []
    assert kinds(sets(s, {"hc:0": ["f1=h0.1"]})) == ["lost-field-write"]  # an older value won
    assert kinds(sets(s, {"hc:0": ["f1=h0.2", "f2=h0.3"]})) == ["lost-field-delete"]
    assert kinds(sets(s, {"hc:0": ["f1=h0.2", "f3=h9.9"]})) == ["phantom"]


def test_sorted_set_members_are_checked_as_fields_with_their_scores_as_values():
    s = Script()
    s.zadd("zc:0", "f1", "10000001", 0, 1)
    s.zadd("zc:0", "f1", "10000002", 2, 3, result=0)
    s.zadd("zc:0", "f2", "10000003", 0, 1)
    s.zrem("zc:0", "f2", 2, 3)
    s.read("set-crdt", "zc:0", ["f1=10000002"], 4, 5)
    assert sets(s, {"zc:0": ["f1=10000002"]}) == []
    assert kinds(sets(s, {"zc:0": ["f1=10000001"]})) == ["lost-field-write"]  # an older score won
    assert kinds(sets(s, {"zc:0": ["f1=10000002", "f2=10000003"]})) == ["lost-field-delete"]
    assert kinds(sets(s, {"zc:0": ["f1=10000002", "f3=99"]})) == ["phantom"]
    s.read("set-crdt", "zc:0", ["f1=10000001"], 6, 7)  # a SERIAL read after the second ZADD
    assert "linearizability" in kinds(sets(s, {"zc:0": ["f1=10000002"]}))


# ------------------------------------------------------------------ list-push


def _clean_list() -> Script:
    s = Script()
    s.push("lp:0", "v0.1", 0, 1, 1)
    s.push("lp:0", "v1.1", 0.5, 1.5, 2, process=1)
    s.push("lp:0", "v0.2", 2, 3, 3)
    s.pop("lp:0", 4, 5, "v0.1")
    return s


def test_list_history_that_keeps_every_push_passes():
    s = _clean_list()
    s.read("list-push", "lp:0", ["v1.1", "v0.2"], 6, 7)
    assert lists(s, {"lp:0": ["v1.1", "v0.2"]}) == []


def test_a_lost_push_is_caught():
    s = _clean_list()
    found = lists(s, {"lp:0": ["v1.1"]})
    assert "lost-push" in kinds(found)
    lost = next(a for a in found if a.kind == "lost-push")
    assert lost.ops == [2] and "v0.2" in lost.detail


def test_a_push_taken_by_a_pop_of_unknown_outcome_is_not_lost_unless_it_was_never_at_the_head():
    s = _clean_list()
    s.pop("lp:0", 6, None, outcome=UNKNOWN)
    # v1.1 missing: the unknown pop may have taken it (it was at the head after v0.1's pop).
    assert lists(s, {"lp:0": ["v0.2"]}) == []
    # v0.2 missing while v1.1, pushed before it, is still there: it never was at the head.
    assert kinds(lists(s, {"lp:0": ["v1.1"]})) == ["lost-push"]


def test_a_duplicated_push_is_caught():
    s = _clean_list()
    found = lists(s, {"lp:0": ["v1.1", "v0.2", "v0.2"]})
    assert kinds(found) == ["duplicated-push"] and "v0.2" in found[0].detail
    # in the final list and returned by a pop
    found = lists(s, {"lp:0": ["v0.1", "v1.1", "v0.2"]})
    assert kinds(found) == ["duplicated-push"] and found[0].ops == [3]


def test_pushes_out_of_order_are_caught():
    s = _clean_list()
    found = lists(s, {"lp:0": ["v0.2", "v1.1"]})  # v1.1 completed before v0.2 was invoked
    assert kinds(found) == ["push-order"]


def test_an_empty_pop_and_an_invented_value_are_caught():
    s = _clean_list()
    s.pop("lp:0", 6, 7, None)  # v1.1 and v0.2 were there
    # (the queue model sees it too: nothing popped v1.1 or v0.2 before it)
    assert kinds(lists(s, {"lp:0": ["v1.1", "v0.2"]})) == ["empty-pop", "linearizability"]
    s = _clean_list()
    s.pop("lp:0", 6, 7, "v9.9")
    assert "phantom" in kinds(lists(s, {"lp:0": ["v0.2"]}))


def test_the_queue_model_checks_the_lengths_and_values_answered():
    s = Script()
    s.push("lp:0", "v0.1", 0, 1, 1)
    s.push("lp:0", "v0.2", 2, 3, 1)  # the list held one value already: must answer 2
    assert kinds(lists(s, {"lp:0": ["v0.1", "v0.2"]})) == ["linearizability"]


def test_the_queue_search_presumes_unseen_unknown_operations_void_only_while_that_explains_it():
    s = _clean_list()
    s.push("lp:0", "v2.1", 3.5, None, outcome=UNKNOWN)  # never seen: presumed void
    s.pop("lp:0", 5.5, None, outcome=UNKNOWN)
    s.read("list-push", "lp:0", ["v1.1", "v0.2"], 6, 7)  # the SERIAL read after healing
    stats: dict = {}
    assert typed_checker.check_list_push(s.ops, {"lp:0": FinalRead(["v1.1", "v0.2"])}, stats=stats) == []
    assert stats["list-push"]["ok"] is True and stats["list-push"]["searched_in_full"] == []
    # v1.1 gone: only the unknown pop can have taken it, which the next search finds.
    s.ops[-1].result = ["v0.2"]
    assert typed_checker.check_list_push(s.ops, {"lp:0": FinalRead(["v0.2"])}, stats=stats) == []
    assert stats["list-push"]["ok"] is True
    # and a pop that returned v1.1 after a SERIAL read without it: no search finds an order
    s.pop("lp:0", 7.5, 8, "v1.1")
    found = typed_checker.check_list_push(s.ops, {"lp:0": FinalRead([])}, stats=stats)
    assert "linearizability" in kinds(found) and stats["list-push"]["searched_in_full"] == ["lp:0"]
    s.ops.pop()
    # the unknown push's value at the end: it took effect, before the read returned
    s.ops[-1].result = ["v0.2", "v2.1"]
    assert typed_checker.check_list_push(s.ops, {"lp:0": FinalRead(["v0.2", "v2.1"])}) == []
    s.ops[-1].result = ["v2.1", "v0.2"]  # but not before v0.2, pushed before it was invoked
    assert kinds(typed_checker.check_list_push(s.ops, {"lp:0": FinalRead(["v2.1", "v0.2"])})) == \
        ["linearizability", "push-order"]


def test_reads_pin_the_order_of_pushes_the_lengths_leave_open():
    # v1 and v2 pushed concurrently with a pop between them: both answer length 2 in either
    # order; the read that shows [v1, v2] settles it, and a pop answering v2 first is wrong.
    s = Script()
    s.push("lp:0", "v0", 0, 1, 1)
    s.push("lp:0", "v1", 2, 5, 2, process=1)
    s.pop("lp:0", 2, 5, "v0", process=2)
    s.push("lp:0", "v2", 2, 5, 2, process=3)
    s.read("list-push", "lp:0", ["v1", "v2"], 6, 7, serial=False, process=4)
    assert typed_checker.pushed_after(s.ops) == {"v2": "v1"}
    assert lists(s, {"lp:0": ["v1", "v2"]}) == []
    s.pop("lp:0", 8, 9, "v2")  # v1 is the head
    assert "linearizability" in kinds(lists(s, {"lp:0": ["v1"]}))


def _random_queue_history(rng: random.Random, n: int) -> Script:
    """A linearizable list history: operations applied one at a time to a real list at
    instants 1 s apart, each given an interval around its instant that overlaps others."""
    s, items, counter = Script(), [], 0
    for i in range(n):
        t = float(i)
        t0, t1 = t - rng.uniform(0, 2.5), t + rng.uniform(0, 2.5)
        r = rng.random()
        if r < 0.45:
            counter += 1
            items.append(f"v{counter}")
            s.push("lp:0", items[-1], t0, t1, len(items), process=i)
        elif r < 0.85:
            s.pop("lp:0", t0, t1, items.pop(0) if items else None, process=i)
        else:
            s.read("list-push", "lp:0", items, t0, t1, serial=rng.random() < 0.5, process=i)
    s.read("list-push", "lp:0", items, n + 3, n + 4)
    return s


def test_random_linearizable_list_histories_pass_and_a_swapped_pop_fails():
    rng = random.Random(15)
    for _ in range(60):
        s = _random_queue_history(rng, 40)
        final = s.ops[-1].result
        assert lists(s, {"lp:0": final}) == [], [(o.f, o.value, o.result) for o in s.ops]
        pops = [o for o in s.ops if o.f == "pop" and o.result is not None]
        if len(pops) >= 2:
            a, b = pops[0], pops[-1]
            a.result, b.result = b.result, a.result
            if a.complete_s < b.invoke_s:  # then no order explains it
                assert "linearizability" in kinds(lists(s, {"lp:0": final}))


# ------------------------------------------------------------------ live runs


def _assert_clean(result, min_faults: int) -> None:
    s = result.stats
    assert s["faults"]["applied"] == s["faults"]["begun"] >= min_faults, s["faults"]
    assert result.anomalies == [], result.summary()
    doc = json.loads(result.history_path.read_text())
    for workload, fs in (("set-crdt", ("sadd", "srem", "hset", "hdel", "zadd", "zrem")), ("list-push", ("push", "pop"))):
        for f in fs:
            done = [o for o in doc["ops"] if o["workload"] == workload and o["f"] == f and o["outcome"] == "ok"]
            assert len(done) > 10, (workload, f, len(done))
        assert s["linearizability"][workload]["ok"] is True, s["linearizability"]
    assert doc["converge_s"] is not None


@pytest.mark.timeout(150)
def test_data_types_under_kill_and_partition_leave_no_anomaly(tmp_path):
    result = run(ChaosConfig(seed=14, nodes=3, duration_s=6, nemesis=("kill", "partition"),
                             workloads=("set-crdt", "list-push"), clients=4,
                             hold_s=(1.5, 3.0), gap_s=(0.5, 1.5), workdir=str(tmp_path / "chaos")),
                 log=print)
    print(result.summary())
    _assert_clean(result, min_faults=2)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_data_types_under_every_nemesis_leave_no_anomaly(tmp_path):
    result = run(ChaosConfig(seed=7, nodes=3, duration_s=30, nemesis=("kill", "pause", "partition", "skew"),
                             workloads=("set-crdt", "list-push"), clients=6,
                             workdir=str(tmp_path / "chaos")), log=print)
    print(result.summary())
    _assert_clean(result, min_faults=6)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_planted_bug_in_the_data_type_workloads_is_caught(tmp_path):
    # Every fifth write of each client recorded as acknowledged and never sent (SADD, SREM,
    # HSET, HDEL, ZADD, ZREM answering 1, RPUSH a length of 1, LPOP nil).
    result = run(ChaosConfig(seed=14, nodes=3, duration_s=5, nemesis=(), workloads=("set-crdt", "list-push"),
                             clients=4, lie_every=5, workdir=str(tmp_path / "chaos")), log=print)
    print(result.summary())
    found = {a.kind for a in result.anomalies}
    assert {"lost-push", "empty-pop", "linearizability"} <= found, result.summary()
    assert found & {"lost-add", "lost-remove", "lost-field-write", "lost-field-delete"}, result.summary()
    assert {a.key.split(":")[0] for a in result.anomalies if a.kind == "linearizability"} == {"sc", "hc", "zc", "lp"}


def test_chaos_command_knows_the_data_type_workloads():
    out = CliRunner().invoke(main, ["chaos", "--workload", "set-crdt,lists", "--duration-s", "1"])
    assert out.exit_code == 2
    assert "unknown workload lists" in out.output and "set-crdt,list-push" in out.output
