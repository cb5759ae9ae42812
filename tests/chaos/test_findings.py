"""What chaos runs found, each pinned down as a small deterministic scenario
(docs/reliability.md, "Findings"). A scenario marked xfail is a bug still open: when it is
fixed the test passes, xfail(strict) turns that into a failure, and the mark comes off."""

from __future__ import annotations

import json

import pytest
import redis

from ringkv.cluster.ring import Member, Ring
from ringkv.testing.launcher import LocalCluster
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(120)


def _down(r: redis.Redis) -> set[str]:
    value = r.info("ringkv").get("nodes_down", "")
    # redis-py turns a comma-separated INFO value into a list
    names = value if isinstance(value, list) else str(value).split(",")
    return {str(n) for n in names} - {""}


def _hears_everyone(r: redis.Redis) -> bool:
    """Its failure detector has heard every node: a node never heard from is not held down."""
    nodes = json.loads(r.execute_command("RINGKV.STATUS"))["nodes"]
    return all(n.get("detector") == "up" and n.get("heartbeat", 0) > 1 for n in nodes)


# Found by `ringkv chaos --seed 20261123 --nodes 5` as read-your-writes anomalies: a write that
# reached a node holding no replica of its key was forwarded with its R and W but not its
# STRICT flag, so the replica that ran it accepted stand-ins. Forward now carries it.
def test_a_strict_write_through_a_node_that_is_no_replica_refuses_stand_ins(tmp_path):
    with LocalCluster(tmp_path, nodes=4, replicas=3, partitions=16, gossip_interval_ms=200) as cluster:
        ring = Ring([Member(n.node_id) for n in cluster.nodes], 16, 3)
        key = next(k for k in (f"k{i}" for i in range(1000))
                   if "n4" not in ring.preference_list(ring.partition_for_key(b"", k.encode())))
        first, *others = ring.preference_list(ring.partition_for_key(b"", key.encode()))
        on_replica = redis.Redis(port=cluster.node(first).resp_port)
        via_n4 = redis.Redis(port=cluster.node("n4").resp_port)
        wait_until(lambda: _hears_everyone(on_replica) and _hears_everyone(via_n4), 30,
                   f"{first} and n4 to hear every node's gossip")
        for node_id in others:
            cluster.node(node_id).kill()
        wait_until(lambda: set(others) <= _down(on_replica) and set(others) <= _down(via_n4), 30,
                   f"gossip to mark {', '.join(others)} down on {first} and n4")
        # Two of the key's three replicas are down: a STRICT QUORUM write has one replica and
        # no stand-in to count, on the replica itself...
        with pytest.raises(redis.ResponseError, match="needed 2 replicas"):
            on_replica.execute_command("RINGKV.AT", "QUORUM", "STRICT", "SET", key, "v")
        # ...and through n4, which forwards it to that replica.
        with pytest.raises(redis.ResponseError, match="needed 2 replicas"):
            via_n4.execute_command("RINGKV.AT", "QUORUM", "STRICT", "SET", key, "v")
