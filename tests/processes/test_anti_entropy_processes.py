"""Anti-entropy with real processes: a replica that missed writes (hints expired) is healed by
Merkle-tree comparison, by `ringkv repair` on demand and by the background rounds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from ringkv.testing.launcher import LocalCluster
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(180)


def _alone_has_all(cluster, node_id: str, keys: list[str]) -> bool:
    """Stop the other nodes, read every key at ONE through `node_id` (its own copy answers
    first), restart them."""
    others = [n for n in cluster.nodes if n.node_id != node_id]
    for n in others:
        n.stop()
    try:
        r = redis.Redis(port=cluster.node(node_id).resp_port)
        return all(r.execute_command("RINGKV.AT", "ONE", "GET", k) == b"v-" + k.encode() for k in keys)
    finally:
        for n in others:
            n.start(wait=False)
        for n in others:
            n.wait_ready()


def test_repair_heals_a_replica_that_missed_writes_and_then_finds_everything_in_sync(tmp_path):
    with LocalCluster(tmp_path, nodes=3, replicas=3, partitions=64, max_hint_window_ms=1,
                      anti_entropy_interval_ms=0, read_repair="off") as cluster:
        n1, _, n3 = cluster.nodes
        r1 = redis.Redis(port=n1.resp_port)
        n3.kill()
        keys = [f"k{i}" for i in range(200)]
        for k in keys:
            r1.set(k, "v-" + k)
        n3.start()
        wait_until(lambda: r1.info("ringkv")["hints_pending"] == 0, 30,
                   "n1 to drop its hints for n3 (window 1 ms), not deliver them", interval_s=0.2)
        assert r1.info("ringkv")["hints_delivered"] == 0
        out = subprocess.run(
            [sys.executable, "-m", "ringkv.cli", "repair", "--port", str(n1.resp_port), "--timeout-ms", "60000",
             "--json"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["keys_pushed"] == 200 and summary["error_count"] == 0
        assert summary["partitions"] == 64 and summary["comparisons"] == 128
        again = json.loads(r1.execute_command("RINGKV.REPAIR"))
        assert again["keys_pushed"] == 0 and again["keys_pulled"] == 0
        assert again["in_sync"] == again["comparisons"] == 128
        # An in-sync check costs a root digest per partition and peer: a few KB in all.
        assert again["traffic_bytes"] < 128 * 200
        assert _alone_has_all(cluster, "n3", keys)


def test_background_rounds_heal_without_any_read_or_request(tmp_path):
    with LocalCluster(tmp_path, nodes=3, replicas=3, partitions=16, max_hint_window_ms=1,
                      anti_entropy_interval_ms=50, read_repair="off") as cluster:
        n1, _, n3 = cluster.nodes
        r1 = redis.Redis(port=n1.resp_port)
        n3.kill()
        keys = [f"bg{i}" for i in range(100)]
        for k in keys:
            r1.set(k, "v-" + k)
        n3.start()
        r3 = redis.Redis(port=n3.resp_port)

        def n3_keys() -> int:
            status = json.loads(r3.execute_command("RINGKV.STATUS"))
            return next(n for n in status["nodes"] if n["node_id"] == "n3")["keys"]

        wait_until(lambda: n3_keys() >= 100, 60, "background rounds to bring n3 all 100 keys",
                   interval_s=0.25)
        assert n3_keys() == 100
        moved = r3.info("ringkv")["ae_keys_pulled"] + r1.info("ringkv")["ae_keys_pushed"]
        assert moved >= 1  # anti-entropy did it (hints were dropped, nothing was read)
        assert _alone_has_all(cluster, "n3", keys)
