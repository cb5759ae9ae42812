"""The durable membership record (node/membership.py, MembershipRecord): what a node keeps of
the cluster's decisions, what it refuses, and what `cluster up` reads back."""

from __future__ import annotations

import json

from ringkv.cluster.gossip import MAX_COUNTER, NodeState, NodeStatus
from ringkv.node.config import MemberAddress
from ringkv.node.membership import FORMER_MEMBER, MembershipRecord, merge_records


def state(node: str, generation: int, status: NodeStatus, port: int = 7000, version: int = 1) -> NodeState:
    return NodeState(node, generation, version, status, "127.0.0.1", port)


def test_a_new_node_starts_with_the_command_lines_members(tmp_path):
    record = MembershipRecord(str(tmp_path / "membership.json"), "n1")
    seeds = [MemberAddress("n1", "127.0.0.1", 7001), MemberAddress("n2", "127.0.0.1", 7002)]
    assert record.start_members(seeds, seeds[0]) == seeds
    assert record.start_problem(str(tmp_path)) is None


def test_a_record_that_knows_only_this_node_keeps_the_command_lines_members(tmp_path):
    # Found on a fresh clone: n1 recorded only itself (gossip had not yet told it of the
    # others), was restarted alone, and came back with a ring of one, taking every key as its
    # only replica. The seeds it does not know stay members; the ones it recorded as gone do not.
    path = str(tmp_path / "membership.json")
    record = MembershipRecord(path, "n1")
    record.set_own("normal", 1, rpc="127.0.0.1:7001", generation=10)
    seeds = [MemberAddress("n1", "127.0.0.1", 7001), MemberAddress("n2", "127.0.0.1", 7002),
             MemberAddress("n3", "127.0.0.1", 7003)]
    again = MembershipRecord(path, "n1")
    assert again.start_members(seeds, seeds[0]) == seeds
    again.note(state("n2", 20, NodeStatus.NORMAL, 7002), 2)
    again.note(NodeState("n3", 30, MAX_COUNTER, NodeStatus.REMOVED), 3)
    later = MembershipRecord(path, "n1")
    n5 = MemberAddress("n5", "127.0.0.1", 7005)
    assert later.start_members([*seeds, n5], seeds[0]) == [seeds[0], seeds[1], n5]


def test_a_restarted_node_starts_with_what_it_recorded_not_the_command_line(tmp_path):
    path = str(tmp_path / "membership.json")
    record = MembershipRecord(path, "n1")
    record.set_own("normal", 1, rpc="127.0.0.1:7001", generation=10)
    record.note(state("n2", 20, NodeStatus.NORMAL, 7002), 2)
    record.note(state("n4", 40, NodeStatus.JOINING, 7004), 3)
    record.note(state("n4", 40, NodeStatus.NORMAL, 7004, version=9), 4)
    record.note(state("n3", 30, NodeStatus.NORMAL, 7003), 5)
    record.note(NodeState("n3", 30, MAX_COUNTER, NodeStatus.REMOVED), 6)

    again = MembershipRecord(path, "n1")
    me = MemberAddress("n1", "127.0.0.1", 7101)  # the configured address wins for this node
    stale_seeds = [me, MemberAddress("n3", "127.0.0.1", 7003)]
    assert again.start_members(stale_seeds, me) == [me, MemberAddress("n2", "127.0.0.1", 7002),
                                                     MemberAddress("n4", "127.0.0.1", 7004)]
    assert FORMER_MEMBER in again.refusal("n3") and again.refusal("n2") is None
    assert set(again.refused) == {"n3"}  # a removed node's RPCs are refused too
    known = {s.node_id: s.status for s in again.known_states()}
    assert known == {"n2": NodeStatus.NORMAL, "n3": NodeStatus.REMOVED, "n4": NodeStatus.NORMAL}


def test_heartbeats_do_not_write_the_record(tmp_path):
    path = tmp_path / "membership.json"
    record = MembershipRecord(str(path), "n1")
    assert record.note(state("n2", 20, NodeStatus.NORMAL), 1)
    written = path.stat().st_mtime_ns, record.epoch
    assert not record.note(state("n2", 20, NodeStatus.NORMAL, version=50), 2)
    assert (path.stat().st_mtime_ns, record.epoch) == written


def test_a_node_that_left_refuses_to_start_on_its_old_data(tmp_path):
    path = str(tmp_path / "membership.json")
    MembershipRecord(path, "n2").set_own("left", 1, generation=5)
    problem = MembershipRecord(path, "n2").start_problem(str(tmp_path))
    assert "n2 left the cluster" in problem and "wipe its data directory" in problem and str(tmp_path) in problem


def test_a_former_members_old_incarnation_is_refused_and_a_wiped_one_rejoining_is_taken(tmp_path):
    record = MembershipRecord(str(tmp_path / "membership.json"), "n1")
    record.note(state("n2", 20, NodeStatus.NORMAL), 1)
    record.note(NodeState("n2", 20, MAX_COUNTER, NodeStatus.LEFT), 2)
    restarted_with_old_data = state("n2", 25, NodeStatus.NORMAL)
    assert FORMER_MEMBER in record.admit(restarted_with_old_data)
    # Its RPCs are not: the incarnation that left may coordinate requests until it is stopped.
    assert record.refused == {}
    assert not record.note(restarted_with_old_data, 3)  # never undoes the leave
    assert record.admit(NodeState("n2", 20, MAX_COUNTER, NodeStatus.LEFT)) is None
    wiped_and_joining = state("n2", 30, NodeStatus.JOINING)
    assert record.admit(wiped_and_joining) is None
    assert record.note(wiped_and_joining, 4)
    assert record.refusal("n2") is None


def test_cluster_up_reads_the_newest_decision_of_every_node(tmp_path):
    n1 = {"members": {"n1": {"status": "normal", "generation": 10}, "n2": {"status": "left", "generation": 20},
                      "n3": {"status": "removed", "generation": 30}}}
    # n3's own record never heard of its removal, and a restart gave it a larger generation.
    n3 = {"members": {"n3": {"status": "normal", "generation": 35}}}
    n2 = {"members": {"n2": {"status": "leaving", "generation": 20}}}
    merged = merge_records([n1, n2, n3])
    assert {n: e["status"] for n, e in merged.items()} == {"n1": "normal", "n2": "left", "n3": "removed"}


def test_a_record_from_before_membership_was_recorded_still_reads(tmp_path):
    path = tmp_path / "membership.json"
    path.write_text(json.dumps({"status": "normal", "synced": [1, 2]}))
    record = MembershipRecord(str(path), "n1")
    assert record.status == "normal" and record.members == {}
    seeds = [MemberAddress("n1", "h", 1), MemberAddress("n2", "h", 2)]
    assert record.start_members(seeds, seeds[0]) == seeds
