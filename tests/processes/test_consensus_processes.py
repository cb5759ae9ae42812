"""The consensus path on real processes: what a client sees when replicas fail, and what a
plain write does to a key that is also changed by CAS and INCR (docs/consistency.md)."""

from __future__ import annotations

import pytest
import redis

from ringkv.testing.launcher import LocalCluster
from ringkv.testing.probes import hears_everyone, nodes_down
from ringkv.testing.wait import wait_until


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(tmp_path, nodes=3, replica_timeout_ms=300, gossip_interval_ms=200).start()
    yield c
    c.stop()


def clients(cluster) -> list[redis.Redis]:
    return [redis.Redis(port=n.resp_port, socket_timeout=10) for n in cluster.nodes]


def test_a_plain_set_acknowledged_at_quorum_is_the_base_of_the_next_incr(cluster):
    a, b, c = clients(cluster)
    for _ in range(5):
        a.incr("mixed")  # the proposer now holds the key's lease
    b.set("mixed", 100)  # the Dynamo path: a versioned overwrite at QUORUM, not a round
    # The leased round on a replica that has the SET is refused as stale, so the INCR reads
    # again and builds on the SET, whichever node coordinates it.
    assert [a.incr("mixed"), c.incr("mixed"), b.incr("mixed")] == [101, 102, 103]
    assert c.execute_command("RINGKV.AT", "SERIAL", "GET", "mixed") == b"103"


def test_a_cas_with_a_version_from_before_a_plain_set_is_refused(cluster):
    a, b, _ = clients(cluster)
    applied, version = a.execute_command("RINGKV.CAS", "doc", "", "v1")
    assert applied == 1
    b.set("doc", "overwritten")
    applied, current = a.execute_command("RINGKV.CAS", "doc", version, "v2")
    assert applied == 0 and current != version
    assert a.execute_command("RINGKV.CAS", "doc", current, "v3")[0] == 1
    assert b.execute_command("RINGKV.AT", "SERIAL", "GET", "doc") == b"v3"


def test_without_a_majority_nothing_is_applied_and_the_error_says_so(cluster):
    a = clients(cluster)[0]
    a.set("lonely", 1)
    wait_until(lambda: hears_everyone(a), 30, "n1 to hear every node")
    for node in cluster.nodes[1:]:
        node.kill()
    # Whichever replica the command is forwarded to, a majority of the key's three replicas
    # cannot promise: the round ends before anything is proposed.
    wait_until(lambda: nodes_down(a) == {"n2", "n3"}, 30, "n1 to hold n2 and n3 down")
    for command in (("INCR", "lonely"), ("RINGKV.CAS", "lonely", "", "x"), ("SET", "lonely", "2", "NX")):
        with pytest.raises(redis.ResponseError, match="nothing was applied") as err:
            a.execute_command(*command)
        assert "needs 2 of" in str(err.value)
    assert a.execute_command("RINGKV.AT", "ONE", "GET", "lonely") == b"1"
    for node in cluster.nodes[1:]:
        node.start()
    assert wait_until(lambda: _incr(a, "lonely"), 30, "INCR to work once the replicas are back") == 2


def _incr(r: redis.Redis, key: str):
    try:
        return r.incr(key)
    except redis.ResponseError:
        return None
