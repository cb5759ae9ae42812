"""Namespaces on a real cluster: each keeps its own N through writes, anti-entropy, node
failures and a join, and its own conflict policy; RESP, HTTP and the Python client pick them."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
import redis

from ringkv.client import Client
from ringkv.errors import ConfigError
from ringkv.testing.launcher import LocalCluster, NodeProcess
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(240)

# The default namespace keeps 2 copies, "important" 3 and "cache" 1 (last writer wins).
SETTINGS = dict(replicas=2, partitions=64, gossip_interval_ms=200, membership_settle_ms=1000,
                anti_entropy_interval_ms=0, namespaces="important:replicas=3,cache:replicas=1:conflict_policy=lww")
COPIES = {"default": 2, "important": 3, "cache": 1}
KEYS = 40


def _conn(node: NodeProcess, namespace: str = "default") -> redis.Redis:
    r = redis.Redis(port=node.resp_port, socket_timeout=30, single_connection_client=True)
    assert r.execute_command("RINGKV.NAMESPACE", namespace) == b"OK"
    return r


def _stored_keys(cluster: LocalCluster) -> dict[str, int]:
    """Live keys each node holds itself, all namespaces together."""
    doc = json.loads(redis.Redis(port=cluster.nodes[0].resp_port).execute_command("RINGKV.STATUS"))
    return {n["node_id"]: n["keys"] for n in doc["nodes"] if "keys" in n}


def _settled_on(nodes, ring: list[str]) -> bool:
    """Every one of `nodes` has `ring` as its ring and no membership change pending."""
    for node in nodes:
        membership = json.loads(redis.Redis(port=node.resp_port).execute_command("RINGKV.STATUS"))["membership"]
        if membership["ring"] != ring or membership["pending"]:
            return False
    return True


def _repair_everywhere(nodes) -> None:
    for node in nodes:
        summary = json.loads(redis.Redis(port=node.resp_port, socket_timeout=60).execute_command("RINGKV.REPAIR"))
        assert summary["error_count"] == 0, summary


def _write_each_namespace(cluster: LocalCluster) -> None:
    # Through a different coordinator for each namespace.
    for i, namespace in enumerate(COPIES):
        r = _conn(cluster.nodes[i % len(cluster.nodes)], namespace)
        for k in range(KEYS):
            assert r.set(f"k{k}", f"{namespace}-{k}") is True


def test_each_namespace_keeps_its_own_number_of_copies(tmp_path):
    with LocalCluster(tmp_path, nodes=3, **SETTINGS) as cluster:
        r = redis.Redis(port=cluster.nodes[0].resp_port)
        assert r.execute_command("RINGKV.NAMESPACES") == [
            [b"default", 2, b"siblings"], [b"important", 3, b"siblings"], [b"cache", 1, b"lww"]]
        assert r.execute_command("RINGKV.NAMESPACE") == b"default"
        with pytest.raises(redis.ResponseError, match="unknown namespace 'nope'; this cluster has: default, "
                                                      "important, cache"):
            r.execute_command("RINGKV.NAMESPACE", "nope")

        _write_each_namespace(cluster)
        expected_total = KEYS * sum(COPIES.values())
        # A write is acknowledged at W=2 of its N: a third copy of an "important" key may
        # still be on its way.
        wait_until(lambda: sum(_stored_keys(cluster).values()) == expected_total, 30,
                   f"{expected_total} copies stored in all", interval_s=0.2)
        # Anti-entropy compares every pair of replicas and copies nothing to a node outside a
        # key's namespace's replica set.
        _repair_everywhere(cluster.nodes)
        assert sum(_stored_keys(cluster).values()) == expected_total

        # Each namespace is its own keyspace, through any node.
        for namespace in COPIES:
            rn = _conn(cluster.nodes[2], namespace)
            assert rn.dbsize() == KEYS
            assert sorted(rn.keys("*")) == sorted(f"k{k}".encode() for k in range(KEYS))
            assert rn.mget(["k0", "k1", "absent"]) == [f"{namespace}-0".encode(), f"{namespace}-1".encode(), None]
            # ALL is every replica of the namespace: 1, 2 or 3 of them.
            assert rn.execute_command("RINGKV.AT", "ALL", "GET", "k5") == f"{namespace}-5".encode()
            cursor, seen = 0, set()
            while True:
                cursor, page = rn.scan(cursor, count=7)
                seen.update(page)
                if cursor == 0:
                    break
            assert len(seen) == KEYS

        # One node down: "important" (3 copies) still answers every key at QUORUM; "cache"
        # (1 copy) fails for the keys that node held, naming it; the others read fine.
        cluster.nodes[2].kill()
        important, cache = _conn(cluster.nodes[0], "important"), _conn(cluster.nodes[0], "cache")
        assert [important.get(f"k{k}") for k in range(KEYS)] == [f"important-{k}".encode() for k in range(KEYS)]
        failed = 0
        for k in range(KEYS):
            try:
                assert cache.get(f"k{k}") == f"cache-{k}".encode()
            except redis.ResponseError as exc:
                assert "needed 1" in str(exc) and "n3" in str(exc), exc
                failed += 1
        assert 0 < failed < KEYS
        # Cleanup drops data only from a settled ring with every member up.
        def cleanup_refused() -> bool:
            try:
                r.execute_command("RINGKV.ADMIN", "CLEANUP")
            except redis.ResponseError as exc:
                assert "n3 down: cleanup runs only when every member of the ring is up" in str(exc)
                return True
            return False  # n1 has not detected n3 down yet

        wait_until(cleanup_refused, 30, "cleanup to be refused with n3 down", interval_s=0.5)


# CI's short mode leaves it out: joins and decommissions run in test_membership_processes.py; this one adds per-namespace replica sets (30 s).
@pytest.mark.slow
def test_join_and_decommission_move_each_namespace_to_its_own_replica_sets(tmp_path):
    with LocalCluster(tmp_path, nodes=3, **SETTINGS) as cluster:
        _write_each_namespace(cluster)
        n4 = NodeProcess(tmp_path / "n4", node_id="n4", join="true", **SETTINGS, **cluster.secret_settings)
        n4.settings["members"] = cluster.nodes[0].settings["members"].split(",")[0] + f",n4@127.0.0.1:{n4.rpc_port}"
        with n4:
            r4 = redis.Redis(port=n4.resp_port)
            wait_until(lambda: json.loads(r4.execute_command("RINGKV.ADMIN", "STATUS"))["local_status"] == "normal",
                       60, "n4 finished joining", interval_s=0.2)
            wait_until(lambda: _settled_on((*cluster.nodes, n4), ["n1", "n2", "n3", "n4"]), 30,
                       "every node to learn that n4 is normal", interval_s=0.2)
            # Every key is on all of its namespace's replicas in the new ring, n4 included.
            for node in (*cluster.nodes, n4):
                for namespace in COPIES:
                    rn = _conn(node, namespace)
                    got = [rn.execute_command("RINGKV.AT", "ALL", "GET", f"k{k}") for k in range(KEYS)]
                    assert got == [f"{namespace}-{k}".encode() for k in range(KEYS)], (node.node_id, namespace)
            # n4 holds only keys it is a replica of: about its share of each namespace's copies.
            held = _stored_keys(cluster)["n4"]
            assert 0 < held < KEYS * sum(COPIES.values()) * 0.5

            # n2 leaves: it is the only holder of some "cache" keys, and hands each to the
            # node that is first in that key's list after it (which may not be new to the list).
            doc = json.loads(redis.Redis(port=cluster.nodes[1].resp_port, socket_timeout=120).execute_command(
                "RINGKV.ADMIN", "DECOMMISSION"))
            assert doc["status"] == "left" and doc["errors"] == 0, doc
            remaining = (cluster.nodes[0], cluster.nodes[2], n4)
            wait_until(lambda: _settled_on(remaining, ["n1", "n3", "n4"]), 30,
                       "every remaining node to learn that n2 has left", interval_s=0.2)
            cluster.nodes[1].stop()
            for node in remaining:
                for namespace in COPIES:
                    rn = _conn(node, namespace)
                    got = [rn.execute_command("RINGKV.AT", "ALL", "GET", f"k{k}") for k in range(KEYS)]
                    assert got == [f"{namespace}-{k}".encode() for k in range(KEYS)], (node.node_id, namespace)

            # The old owners still hold copies they are no longer replicas of; cleanup drops
            # exactly those: each key ends with its namespace's number of copies, all readable.
            assert sum(_stored_keys(cluster).values()) > KEYS * sum(COPIES.values())
            for node in remaining:
                out = subprocess.run([sys.executable, "-m", "ringkv.cli", "admin", "cleanup", "--timeout-ms", "60000", "--port",
                                      str(node.resp_port), "--json"], capture_output=True, text=True, timeout=60)
                assert out.returncode == 0, out.stderr
                assert json.loads(out.stdout)["records_removed"] >= 0
            assert sum(_stored_keys(cluster).values()) == KEYS * sum(COPIES.values())
            for namespace in COPIES:
                rn = _conn(n4, namespace)
                got = [rn.execute_command("RINGKV.AT", "ALL", "GET", f"k{k}") for k in range(KEYS)]
                assert got == [f"{namespace}-{k}".encode() for k in range(KEYS)], namespace


def test_conflict_policy_flushdb_http_and_client_per_namespace(tmp_path):
    with LocalCluster(tmp_path, nodes=3, **SETTINGS) as cluster:
        n1, n2, n3 = cluster.nodes
        # Two writes with the same context through two coordinators: siblings in the default
        # namespace, one value (the later) in "cache", whose policy is last-writer-wins.
        for namespace, expected in (("default", 2), ("cache", 1)):
            r1, r2 = _conn(n1, namespace), _conn(n2, namespace)
            r1.set("c", "v0")
            context, _ = r1.execute_command("RINGKV.GETV", "c")
            r1.execute_command("RINGKV.PUTV", "c", "a", "CONTEXT", context)
            r2.execute_command("RINGKV.PUTV", "c", "b", "CONTEXT", context)
            _, siblings = _conn(n3, namespace).execute_command("RINGKV.AT", "ALL", "RINGKV.GETV", "c")
            assert len(siblings) == expected, (namespace, siblings)

        # FLUSHDB empties the connection's namespace everywhere and leaves the others.
        _write_each_namespace(cluster)
        assert _conn(n2, "cache").flushdb() is True
        assert _conn(n3, "cache").dbsize() == 0
        assert _conn(n3, "cache").execute_command("RINGKV.AT", "ALL", "GET", "k1") is None
        assert _conn(n3, "important").dbsize() == KEYS and _conn(n3).dbsize() == KEYS + 1  # and "c"

        # HTTP: ?namespace= on every key route; GET /namespaces lists them.
        base = f"http://127.0.0.1:{n2.http_port}/api/v1"
        listed = httpx.get(base + "/namespaces").json()["namespaces"]
        assert [(n["name"], n["replicas"], n["conflict_policy"]) for n in listed] == [
            ("default", 2, "siblings"), ("important", 3, "siblings"), ("cache", 1, "lww")]
        assert httpx.get(base + "/keys/k3", params={"namespace": "important"}).json()["value"] == "important-3"
        put = httpx.put(base + "/keys/h", params={"namespace": "cache"}, json={"value": "h"})
        assert put.status_code == 200
        assert httpx.get(base + "/keys/h").status_code == 404  # not in the default namespace
        bad = httpx.get(base + "/keys/h", params={"namespace": "nope"})
        assert bad.status_code == 400 and bad.json()["type"] == "urn:ringkv:problem:unknown-namespace"
        assert "default, important, cache" in bad.json()["detail"]

        # The Python client: one namespace per client, sent on each new connection.
        with Client(port=n3.resp_port, namespace="cache") as c:
            assert c.get("h") == b"h"
            c.set("from-client", b"x")
        assert _conn(n1, "cache").get("from-client") == b"x"
        assert _conn(n1).get("from-client") is None
        with pytest.raises(ConfigError, match="unknown namespace 'nope'"), \
                Client(port=n3.resp_port, namespace="nope", retries=0) as c:
            c.get("h")
        with pytest.raises(ConfigError, match="namespace"):
            Client(port=n3.resp_port, namespace="not a name")
