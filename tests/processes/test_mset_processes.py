"""MSET on a cluster: the keys a coordinator holds go to their other replicas in one
ReplicaPutMany per replica set; what a batch cannot place goes the single-key way, so the
guarantees of SET hold for every key (W, hints for a replica that missed it, the precise
error when too few replicas answer)."""

from __future__ import annotations

import httpx
import pytest
import redis

from ringkv.testing.launcher import LocalCluster
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(180)

SETTINGS = dict(replicas=3, partitions=64, gossip_interval_ms=200, replica_timeout_ms=1000,
                anti_entropy_interval_ms=0)


def _all(r: redis.Redis, keys: list[str]) -> list[bytes | None]:
    return r.execute_command("RINGKV.AT", "ALL", "MGET", *keys)


def test_mset_reaches_every_replica_and_survives_replicas_going_down(tmp_path):
    with LocalCluster(tmp_path, nodes=3, **SETTINGS) as cluster:
        n1, n2, n3 = cluster.nodes
        r1 = redis.Redis(port=n1.resp_port, socket_timeout=30)
        data = {f"m{i}": f"v{i}" for i in range(500)}
        assert r1.mset(data) is True
        for node in cluster.nodes:
            r = redis.Redis(port=node.resp_port, socket_timeout=30)
            assert _all(r, list(data)) == [v.encode() for v in data.values()]

        # Values past one batch's byte limit (4 MiB) travel in several batches.
        big = {f"big{i}": bytes([65 + i]) * 600_000 for i in range(10)}
        assert r1.mset(big) is True
        assert _all(redis.Redis(port=n3.resp_port, socket_timeout=30), list(big)) == list(big.values())

        # One replica down: W=2 is met by n1 and n2; n3 gets what it missed from hints.
        n3.kill()
        later = {f"late{i}": f"w{i}" for i in range(200)}
        assert r1.mset(later) is True
        n3.start()
        r3 = redis.Redis(port=n3.resp_port, socket_timeout=30)
        wait_until(lambda: _all(r3, list(later)) == [v.encode() for v in later.values()], 30,
                   "hints for the MSET to reach n3", interval_s=0.5)

        # The HTTP batch endpoint takes the same path (keys with a TTL are written alongside).
        ops = [{"key": f"h{i}", "value": f"hv{i}"} for i in range(300)]
        ops += [{"key": f"t{i}", "value_base64": "dA==", "ttl": 600} for i in range(20)]
        put = httpx.post(f"http://127.0.0.1:{n2.http_port}/api/v1/batch/put", json={"operations": ops}, timeout=30)
        assert put.status_code == 200, put.text
        doc = put.json()
        assert (doc["success_count"], doc["failed_keys"], doc["status"]) == (320, [], "success"), doc
        assert [r["key"] for r in doc["results"] if r["success"]] == [op["key"] for op in ops]
        assert _all(r3, [f"h{i}" for i in range(300)]) == [f"hv{i}".encode() for i in range(300)]
        assert _all(r3, [f"t{i}" for i in range(20)]) == [b"t"] * 20
        assert 0 < r3.ttl("t7") <= 600

        # Two down: QUORUM cannot be met, and the error says which replicas and why; ONE can.
        n2.kill()
        n3.kill()
        with pytest.raises(redis.ResponseError, match=r"needed 2 replicas, 1 answered: .*n2.*n3"):
            r1.mset({"x1": "a", "x2": "b"})
        assert r1.execute_command("RINGKV.AT", "ONE", "MSET", "y1", "a", "y2", "b") == b"OK"
