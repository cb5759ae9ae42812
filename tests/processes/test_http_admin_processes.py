"""Adding a node as the REST specification does it, with real processes: a 3-node cluster, a
fourth node started in joining mode knowing nobody, and the specification's request sent
literally to one member (`POST /api/v1/admin/cluster/nodes {"node_address": "host:port"}`).
The status then shows the new node joining, then four healthy members; keys written before are
readable through the new node, which holds exactly its share. The requests that cannot admit
a node are refused with a 4xx that says why."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
import redis

from ringkv.cluster.ring import Member, Ring, token
from ringkv.testing.launcher import LocalCluster, NodeProcess, free_port
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(240)

PARTITIONS = 64
SETTINGS = dict(replicas=3, partitions=PARTITIONS, gossip_interval_ms=200, membership_settle_ms=1000,
                replica_timeout_ms=2000)
KEYS = {f"user:{i}": f"value {i}" for i in range(300)}
SPEC_MEMBER_FIELDS = {"node_id", "address", "status", "role", "keys_count", "memory_used_mb"}


def _status(http_port: int) -> dict:
    answer = httpx.get(f"http://127.0.0.1:{http_port}/api/v1/admin/cluster/status", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _add_node(http_port: int, body) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{http_port}/api/v1/admin/cluster/nodes", json=body, timeout=60)


def _keys_held_by(node_id: str, nodes: list[str]) -> int:
    """How many of KEYS the ring of `nodes` places on `node_id` (default namespace, N=3)."""
    ring = Ring([Member(n) for n in nodes], PARTITIONS, 3)
    return sum(node_id in ring.preference_list(ring.partition_of(token(b"", k.encode()))) for k in KEYS)


def test_a_joining_node_admitted_by_its_address_becomes_a_healthy_member_holding_its_share(tmp_path):
    with LocalCluster(tmp_path, nodes=3, **SETTINGS) as cluster:
        n1, n2, _ = cluster.nodes
        r1 = redis.Redis(port=n1.resp_port, socket_timeout=30)
        for k, v in KEYS.items():
            r1.set(k, v)
        before = _status(n1.http_port)
        assert before["total_keys"] == len(KEYS) and before["replication_factor"] == 3
        assert [(m["node_id"], m["status"], m["role"], m["keys_count"]) for m in before["nodes"]] == [
            (n, "healthy", "member", len(KEYS)) for n in ("n1", "n2", "n3")]
        assert [m["address"] for m in before["nodes"]] == [f"127.0.0.1:{n.resp_port}" for n in cluster.nodes]
        assert all(m.keys() >= SPEC_MEMBER_FIELDS and m["memory_used_mb"] > 5 for m in before["nodes"])

        # n4 knows no member: `join` with no members waits to be admitted. A longer settle
        # than the others keeps it joining long enough to be seen joining.
        n4 = NodeProcess(tmp_path / "n4", node_id="n4", join="true",
                         **{**SETTINGS, "membership_settle_ms": 3000}, **cluster.secret_settings)
        with n4:
            r4 = redis.Redis(port=n4.resp_port, socket_timeout=30)
            assert json.loads(r4.execute_command("RINGKV.ADMIN", "STATUS"))["local_status"] == "joining"

            # The specification's request, literally, to one member (n2).
            answer = httpx.post(f"http://127.0.0.1:{n2.http_port}/api/v1/admin/cluster/nodes",
                                headers={"Content-Type": "application/json"},
                                json={"node_address": f"127.0.0.1:{n4.resp_port}"}, timeout=60)
            assert answer.status_code == 200, answer.text
            admitted = answer.json()
            assert admitted["node_id"] == "n4" and admitted["state"] == "joining"
            assert admitted["address"] == f"127.0.0.1:{n4.resp_port}"
            assert admitted["rpc_address"] == f"127.0.0.1:{n4.rpc_port}"
            assert admitted["admitted_by"] == "n2" and admitted["seeds"][0] == f"n2@127.0.0.1:{n2.rpc_port}"
            assert {s.split("@")[0] for s in admitted["seeds"]} == {"n1", "n2", "n3"}
            expected_partitions = len(Ring([Member(f"n{i}") for i in range(1, 5)], PARTITIONS, 3)
                                      .replica_partitions("n4"))
            assert admitted["partitions_to_receive"] == expected_partitions > 0
            assert admitted["move"]["kind"] == "join"

            seen_joining: list[dict] = []
            last: list[dict] = []

            def four_healthy_members() -> bool:
                doc = _status(n1.http_port)
                last[:] = [doc]
                n4_entry = next((m for m in doc["nodes"] if m["node_id"] == "n4"), None)
                if n4_entry is not None and n4_entry["status"] == "joining":
                    seen_joining.append(n4_entry)
                return [(m["node_id"], m["status"], m["role"]) for m in doc["nodes"]] == [
                    (f"n{i}", "healthy", "member") for i in range(1, 5)] and doc["membership"]["pending"] == []

            wait_until(four_healthy_members, 120, lambda: f"4 healthy members; last status: {last}",
                       interval_s=0.2)
            assert seen_joining, "n1's status never showed n4 joining"
            joining = seen_joining[-1]
            assert joining["role"] == "joining" and joining["address"] == f"127.0.0.1:{n4.resp_port}"
            assert joining["move"]["kind"] == "join" and "partitions_total" in joining["move"]

            # Every key written before is readable through the new node.
            assert {k: r4.get(k) for k in KEYS} == {k: v.encode() for k, v in KEYS.items()}

            # n4 holds its share, exactly: the keys the 4-node ring places on it. The others
            # still hold what they handed over (until cleanup), and total_keys counts each
            # key once all the same.
            share = _keys_held_by("n4", ["n1", "n2", "n3", "n4"])
            assert 0 < share < len(KEYS)

            def n4_holds_its_share() -> dict | None:
                doc = _status(n1.http_port)
                last[:] = [doc]
                n4_entry = next(m for m in doc["nodes"] if m["node_id"] == "n4")
                return doc if n4_entry["keys_count"] == share else None

            final = wait_until(n4_holds_its_share, 30, lambda: f"n4 to hold its {share} keys; last: {last}",
                               interval_s=0.3)
            assert final["total_keys"] == len(KEYS) and final["total_keys_unknown_partitions"] == 0
            assert final["cluster"]["members"] == 4
            n4_as_seen_by_n1 = next(m for m in final["nodes"] if m["node_id"] == "n4")
            assert n4_as_seen_by_n1["memory_used_mb"] > 5 and n4_as_seen_by_n1["in_ring"]

            # Asking again for a member is refused: it is one now.
            again = _add_node(n1.http_port, {"node_address": f"127.0.0.1:{n4.resp_port}"})
            assert again.status_code == 409 and "already a member" in again.json()["detail"]


# CI's short mode leaves it out: refusals of admission, each a node start (20 s).
@pytest.mark.slow
def test_requests_that_cannot_admit_a_node_are_refused_saying_why(tmp_path):
    with LocalCluster(tmp_path, nodes=3, **SETTINGS) as cluster:
        n1, n2, _ = cluster.nodes

        def refused(body, status: int) -> str:
            answer = _add_node(n1.http_port, body)
            assert answer.status_code == status, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            return answer.json()["detail"]

        # The address of a member.
        assert "n2, already a member" in refused({"node_address": f"127.0.0.1:{n2.resp_port}"}, 409)
        assert "already a member" in refused({"node_address": f"127.0.0.1:{n1.resp_port}"}, 409)
        # Nothing listens there.
        assert "cannot reach the node at" in refused({"node_address": f"127.0.0.1:{free_port()}"}, 409)
        # Not RESP: a member's HTTP port.
        assert "does not answer RESP" in refused({"node_address": f"127.0.0.1:{n2.http_port}"}, 409)
        # Garbage bodies name the field.
        assert "node_address" in refused({"node_address": "127.0.0.1"}, 400)
        assert "body.node_address" in refused({"node_address": ["127.0.0.1:6379"]}, 422)
        assert "body.address" in refused({"address": "127.0.0.1:6379"}, 422)

        # Over RESP and the CLI: the same refusals.
        r1 = redis.Redis(port=n1.resp_port, socket_timeout=30)
        with pytest.raises(redis.ResponseError, match="cannot reach the node at"):
            r1.execute_command("RINGKV.ADMIN", "ADMIT", f"127.0.0.1:{free_port()}")
        out = subprocess.run([sys.executable, "-m", "ringkv.cli", "admin", "add-node", f"127.0.0.1:{n2.resp_port}",
                              "--port", str(n1.resp_port)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 4 and "already a member" in out.stdout + out.stderr, out.stdout + out.stderr

        # A node running alone, not in joining mode.
        alone = NodeProcess(tmp_path / "alone", node_id="n9", **SETTINGS)
        with alone:
            detail = refused({"node_address": f"127.0.0.1:{alone.resp_port}"}, 409)
            assert "cluster of one, not as a joining node" in detail and "ringkv admin join" in detail

        # A joining node whose id a member already has.
        twin = NodeProcess(tmp_path / "twin", node_id="n3", join="true", **SETTINGS)
        with twin:
            detail = refused({"node_address": f"127.0.0.1:{twin.resp_port}"}, 409)
            assert "node id 'n3'" in detail and "already a member of the ring" in detail

        # None of this changed the cluster.
        doc = _status(n1.http_port)
        assert [(m["node_id"], m["status"]) for m in doc["nodes"]] == [(f"n{i}", "healthy") for i in (1, 2, 3)]
