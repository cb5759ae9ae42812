"""A network partition (the transport's fault hooks, RINGKV.FAULT), writes on both sides at
W=1, heal: anti-entropy makes every replica identical and the concurrent writes survive as
siblings."""

from __future__ import annotations

import pytest
import redis

from ringkv.testing.launcher import LocalCluster

pytestmark = pytest.mark.timeout(120)


def _local_versions(r: redis.Redis, key: str):
    """This node's own copy: at ONE the local replica answers first."""
    return r.execute_command("RINGKV.AT", "ONE", "RINGKV.GETV", key)


def _values(versions) -> list[bytes]:
    return sorted(s[0] for s in versions[1]) if versions and versions[1] else []


def test_both_sides_of_a_partition_write_and_heal_into_identical_replicas_with_siblings(tmp_path):
    # Hints expire at once and reads do not repair: only anti-entropy can heal.
    with LocalCluster(tmp_path, nodes=3, replicas=3, partitions=16, fault_injection="true",
                      max_hint_window_ms=1, read_repair="off", anti_entropy_interval_ms=0,
                      gossip_interval_ms=200) as cluster:
        n1, n2, n3 = (redis.Redis(port=n.resp_port) for n in cluster.nodes)
        n1.set("shared", "before")
        n1.execute_command("RINGKV.FAULT", "PARTITION", "n2", "n3")
        n2.execute_command("RINGKV.FAULT", "PARTITION", "n1")
        n3.execute_command("RINGKV.FAULT", "PARTITION", "n1")
        # QUORUM cannot be met on n1's side; ONE can, on both sides.
        with pytest.raises(redis.ResponseError, match="needed 2 replicas"):
            n1.set("shared", "x")
        n1.execute_command("RINGKV.CONSISTENCY", "ONE")
        n2.execute_command("RINGKV.CONSISTENCY", "ONE")
        assert n1.set("shared", "left")
        assert n2.set("shared", "right")
        for i in range(20):
            n1.set(f"left{i}", "L")
            n2.set(f"right{i}", "R")
        # Before healing, the sides disagree.
        assert _values(_local_versions(n1, "shared")) != _values(_local_versions(n3, "shared"))
        for r in (n1, n2, n3):
            r.execute_command("RINGKV.FAULT", "HEAL")
        summary = n1.execute_command("RINGKV.REPAIR")
        assert b'"error_count": 0' in summary
        n2.execute_command("RINGKV.REPAIR")
        keys = ["shared"] + [f"left{i}" for i in range(20)] + [f"right{i}" for i in range(20)]
        for key in keys:
            copies = [_local_versions(r, key) for r in (n1, n2, n3)]
            assert copies[0] == copies[1] == copies[2], key
        # The two concurrent writes are both kept, and the older "before" is gone.
        assert _values(_local_versions(n3, "shared")) == [b"left", b"right"]
        # A write with the merged context resolves them, everywhere.
        context = n3.execute_command("RINGKV.GETV", "shared")[0]
        n3.execute_command("RINGKV.AT", "ALL", "RINGKV.PUTV", "shared", "resolved", "CONTEXT", context)
        for r in (n1, n2, n3):
            assert _values(_local_versions(r, "shared")) == [b"resolved"]


def test_fault_commands_are_refused_unless_enabled(tmp_path):
    with LocalCluster(tmp_path, nodes=1, replicas=1) as cluster:
        r = redis.Redis(port=cluster.nodes[0].resp_port)
        with pytest.raises(redis.ResponseError, match="fault injection is disabled"):
            r.execute_command("RINGKV.FAULT", "PARTITION", "n2")
