"""What chaos runs found, each pinned down as a small deterministic scenario
(docs/reliability.md, "Findings"). A scenario marked xfail is a bug still open: when it is
fixed the test passes, xfail(strict) turns that into a failure, and the mark comes off."""

from __future__ import annotations

import time

import pytest
import redis

from ringkv.cluster.ring import Member, Ring
from ringkv.testing.launcher import LocalCluster

pytestmark = pytest.mark.timeout(120)


# Found by `ringkv chaos --seed 20261123 --nodes 5` as read-your-writes anomalies: a write that
# reached a node holding no replica of its key was forwarded with its R and W but not its
# STRICT flag, so the replica that ran it accepted stand-ins. Forward now carries it.
def test_a_strict_write_through_a_node_that_is_no_replica_refuses_stand_ins(tmp_path):
    with LocalCluster(tmp_path, nodes=4, replicas=3, partitions=16, gossip_interval_ms=200) as cluster:
        ring = Ring([Member(n.node_id) for n in cluster.nodes], 16, 3)
        key = next(k for k in (f"k{i}" for i in range(1000))
                   if "n4" not in ring.preference_list(ring.partition_for_key(b"", k.encode())))
        first, *others = ring.preference_list(ring.partition_for_key(b"", key.encode()))
        for node_id in others:
            cluster.node(node_id).kill()
        time.sleep(2)  # gossip marks them down
        on_replica = redis.Redis(port=cluster.node(first).resp_port)
        via_n4 = redis.Redis(port=cluster.node("n4").resp_port)
        # Two of the key's three replicas are down: a STRICT QUORUM write has one replica and
        # no stand-in to count, on the replica itself...
        with pytest.raises(redis.ResponseError, match="needed 2 replicas"):
            on_replica.execute_command("RINGKV.AT", "QUORUM", "STRICT", "SET", key, "v")
        # ...and through n4, which forwards it to that replica.
        with pytest.raises(redis.ResponseError, match="needed 2 replicas"):
            via_n4.execute_command("RINGKV.AT", "QUORUM", "STRICT", "SET", key, "v")
