"""A replica killed in the middle of a quorum write, deterministically (docs/reliability.md,
"Kill in the middle of a write"): what the chaos runs do by chance, pinned down.

The replica is frozen (SIGSTOP) just before the write, so the coordinator's request reaches
its socket and never its code, then killed with SIGKILL: it dies with the write unread. The
client's operations go through the chaos harness (Worker.request), so the test also pins how
the harness records them: the write the cluster acknowledged is `ok` and must survive, on
the replica that acknowledged it and then crashed too, and read back at QUORUM once the nodes
are back; the write no quorum took is `unknown` (never `ok`, never `fail`), and whether it
survived or not, the checkers find nothing lost.

Anti-entropy is off in this cluster, so that a copy read right after a restart is what that
node kept, not what a peer has pushed to it since.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from ringkv.chaos import checker
from ringkv.chaos.checker import FinalRead
from ringkv.chaos.history import FAIL, OK, UNKNOWN, History
from ringkv.chaos.nemesis import fault_commands
from ringkv.chaos.workloads import Endpoint, Worker
from ringkv.cluster.ring import Member, Ring
from ringkv.testing.launcher import LocalCluster
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 16


def _replicas(cluster: LocalCluster, key: str) -> tuple[str, ...]:
    ring = Ring([Member(n.node_id) for n in cluster.nodes], PARTITIONS, 3)
    return ring.preference_list(ring.partition_for_key(b"", key.encode()))


def _client(cluster: LocalCluster, node_id: str) -> redis.Redis:
    return redis.Redis(port=cluster.node(node_id).resp_port, socket_timeout=10)


def _hears_everyone(r: redis.Redis) -> bool:
    nodes = json.loads(r.execute_command("RINGKV.STATUS"))["nodes"]
    return all(n.get("detector") == "up" and n.get("heartbeat", 0) > 1 for n in nodes)


def _own_copy(cluster: LocalCluster, node_id: str, key: str) -> list[str]:
    """The values `node_id` itself holds for `key`: read at ONE while it reaches no peer."""
    node = cluster.node(node_id)
    others = [n.node_id for n in cluster.nodes if n.node_id != node_id]
    fault_commands(node, [("PARTITION", *others)])
    try:
        _, siblings = _client(cluster, node_id).execute_command("RINGKV.AT", "ONE", "RINGKV.GETV", key)
    finally:
        fault_commands(node, [("HEAL",)])
    return sorted(s[0].decode() for s in siblings)


def _everyone_hears_everyone(cluster: LocalCluster) -> None:
    wait_until(lambda: all(_hears_everyone(_client(cluster, n.node_id)) for n in cluster.nodes),
               30, "every node to hear every other")


def _answer(r: redis.Redis, *command, timeout_s: float = 15.0):
    """The command's answer once it stops failing: right after a restart, a peer's RPC
    client may still be in its reconnect back-off (up to a few seconds) although the
    failure detectors already hear the restarted node."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return r.execute_command(*command)
        except redis.ResponseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _crash_and_restart(cluster: LocalCluster, node_ids: list[str]) -> None:
    for n in node_ids:
        cluster.node(n).kill()  # SIGKILL, also of a stopped process
    for n in node_ids:
        cluster.node(n).start(wait=False)
    for n in node_ids:
        cluster.node(n).wait_ready()
    # Back as far as their peers are concerned too (failure detectors, RPC reconnects).
    _everyone_hears_everyone(cluster)


def test_a_replica_killed_in_the_middle_of_a_quorum_write_loses_no_acknowledged_write(tmp_path):
    with LocalCluster(tmp_path, nodes=3, replicas=3, partitions=PARTITIONS, gossip_interval_ms=200,
                      fault_injection="true", anti_entropy_interval_ms=0) as cluster:
        key = "mid:reg"
        first, second, third = _replicas(cluster, key)
        # A counter with the same replicas, first among them (the proposer of its rounds).
        counter = next(k for k in (f"mid:ctr{i}" for i in range(1000))
                       if _replicas(cluster, k) == (first, second, third))
        _everyone_hears_everyone(cluster)
        history = History()
        endpoints = [Endpoint(first, cluster.node(first).resp_port)]
        client, incrs = (Worker(i, 2, workload, endpoints, history, seed=0, stop=threading.Event(),
                                timeout_s=10.0) for i, workload in enumerate(("register", "counter")))

        # 1. `third` freezes just before the write: the coordinator sends it the write, and
        # the other two replicas acknowledge. Then `third` dies with it unread, and `second`,
        # which acknowledged, crashes right after.
        cluster.node(third).pause()
        w1, acked, _ = client.request("write", key, "v1", ("RINGKV.PUTV", key, "v1"), observed=[])
        assert acked, w1.error
        history.complete(w1, OK)
        i1, acked, value = incrs.request("incr", counter, 1, ("INCR", counter))
        assert acked and value == 1, i1.error
        history.complete(i1, OK, result=1)
        _crash_and_restart(cluster, [third, second])

        # What `second` acknowledged, it kept through its crash.
        assert _own_copy(cluster, second, key) == ["v1"]
        # Both read back, the write at QUORUM through the node that died with it unread.
        _, siblings = _answer(_client(cluster, third), "RINGKV.AT", "QUORUM", "RINGKV.GETV", key)
        assert [s[0] for s in siblings] == [b"v1"]
        assert _answer(_client(cluster, third), "RINGKV.AT", "SERIAL", "GET", counter) == b"1"

        # 2. Both other replicas freeze: the coordinator stores the write itself and waits in
        # vain for a second one. The harness must call that unknown: the write is on one
        # replica, it may or may not survive.
        ok, context, values = client._read(key)
        assert ok and values == ["v1"]
        cluster.node(second).pause()
        cluster.node(third).pause()
        w2, acked, _ = client.request("write", key, "v2", ("RINGKV.PUTV", key, "v2", "CONTEXT", context),
                                      observed=values)
        assert not acked and w2.outcome == UNKNOWN, w2
        # The consensus path with no majority either refuses outright (nothing applied:
        # failed) or cannot tell (unknown); never acknowledged.
        i2, acked, _ = incrs.request("incr", counter, 1, ("INCR", counter))
        assert not acked and i2.outcome in (FAIL, UNKNOWN), i2
        _crash_and_restart(cluster, [second, third])

        # 3. Healed and repaired: every replica holds what the checkers allow.
        for n in cluster.nodes:
            wait_until(lambda n=n: json.loads(_client(cluster, n.node_id).execute_command("RINGKV.REPAIR"))
                       .get("error_count", 1) == 0, 30, f"a clean repair on {n.node_id}")
        _, siblings = _answer(_client(cluster, first), "RINGKV.AT", "ALL", "RINGKV.GETV", key)
        final = sorted(s[0].decode() for s in siblings)
        assert final in (["v1"], ["v2"])  # v2 replaced v1 having seen it, if it survived
        assert all(_own_copy(cluster, n.node_id, key) == final for n in cluster.nodes)
        serial = history.invoke(-1, "counter", "read", counter, None, first, True, serial=True)
        value = _answer(_client(cluster, first), "RINGKV.AT", "SERIAL", "GET", counter)
        history.complete(serial, OK, result=[value.decode()])
        assert value in (b"1", b"2") and (value == b"1" or i2.outcome == UNKNOWN)
        counter_final = {counter: FinalRead([value.decode()])}
        assert checker.check_registers(history.ops, {key: FinalRead(final)}) == []
        assert checker.check_counters(history.ops, counter_final) == []
        assert checker.check_linearizable(history.ops) == []
