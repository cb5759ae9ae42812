"""The REST API's specification, replayed literally (issue 18): every request it shows, sent as
it is written, against a real node and a real 3-node cluster, with the status code and every
field the specification shows checked.

The requests below are the specification's, byte for byte where it gives them: JSON values are
plain text, versions are numbers that grow with each write and go back to CAS, timestamps are
Unix seconds, and `Consistency-Level` takes EVENTUAL and STRONG as well as ONE, QUORUM and ALL.
On the cluster, the requests go through different nodes in turn: any node coordinates any
request.
"""

from __future__ import annotations

import itertools
import time

import httpx
import pytest

from ringkv.testing.launcher import LocalCluster, NodeProcess
from ringkv.testing.wait import wait_until

JSON = {"Content-Type": "application/json"}
HTTP_TIMEOUT_S = 30.0


class Target:
    """The nodes under test; `next()` is the node the next request goes to."""

    def __init__(self, nodes: list[NodeProcess]):
        self.nodes = nodes
        self.clients = [httpx.Client(base_url=f"http://127.0.0.1:{n.http_port}", timeout=HTTP_TIMEOUT_S)
                        for n in nodes]
        self._turn = itertools.cycle(self.clients)

    def next(self) -> httpx.Client:
        return next(self._turn)

    def close(self) -> None:
        for c in self.clients:
            c.close()


@pytest.fixture(scope="module", params=["node", "cluster"])
def target(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "node":
        node = NodeProcess(root / "n1").start()
        t = Target([node])
        yield t
        t.close()
        node.stop()
    else:
        cluster = LocalCluster(root, nodes=3, replicas=3).start()
        t = Target(cluster.nodes)
        yield t
        t.close()
        cluster.stop()


def _fields(doc: dict, *names: str) -> None:
    missing = [n for n in names if n not in doc]
    assert not missing, f"answer lacks {missing}: {doc}"


def _now_s() -> int:
    return int(time.time())


def test_put_then_get_then_delete_then_head(target):
    before = _now_s()
    put = target.next().put(
        "/api/v1/keys/user:123", headers={**JSON, "Consistency-Level": "QUORUM"},
        content=b'{"value": "some_value", "ttl": 3600, "if_not_exists": false}')
    assert put.status_code == 200, put.text
    doc = put.json()
    _fields(doc, "key", "version", "timestamp", "status")
    assert doc["key"] == "user:123" and doc["status"] == "success"
    assert isinstance(doc["version"], int) and doc["version"] >= 1
    assert before - 1 <= doc["timestamp"] <= _now_s() + 1

    got = target.next().get("/api/v1/keys/user:123", headers={"Consistency-Level": "EVENTUAL"})
    if got.status_code == 404:  # ONE may ask a replica the write has not reached yet
        got = target.next().get("/api/v1/keys/user:123", headers={"Consistency-Level": "QUORUM"})
    assert got.status_code == 200, got.text
    doc = got.json()
    _fields(doc, "key", "value", "version", "timestamp", "ttl_remaining")
    assert doc["key"] == "user:123" and doc["value"] == "some_value"
    assert doc["version"] == put.json()["version"]
    assert doc["timestamp"] == put.json()["timestamp"]
    assert 3590 < doc["ttl_remaining"] <= 3600

    # Each write makes the version grow by one.
    again = target.next().put("/api/v1/keys/user:123", headers=JSON, json={"value": "other"})
    assert again.json()["version"] == doc["version"] + 1

    gone = target.next().delete("/api/v1/keys/user:123")
    assert gone.status_code == 200, gone.text
    _fields(gone.json(), "key", "deleted", "version")
    assert gone.json()["key"] == "user:123" and gone.json()["deleted"] is True
    assert gone.json()["version"] == again.json()["version"] + 1

    assert target.next().head("/api/v1/keys/user:123").status_code == 404
    target.next().put("/api/v1/keys/user:123", headers=JSON, json={"value": "back"})
    assert target.next().head("/api/v1/keys/user:123").status_code == 200


def test_if_not_exists_refuses_an_existing_key(target):
    body = b'{"value": "first", "ttl": 3600, "if_not_exists": true}'
    assert target.next().put("/api/v1/keys/nx:1", headers=JSON, content=body).status_code == 200
    refused = target.next().put("/api/v1/keys/nx:1", headers=JSON, content=body)
    assert refused.status_code == 409 and refused.json()["type"].endswith("key-exists")


def test_batch_put_atomic_then_batch_get(target):
    put = target.next().post("/api/v1/batch/put", headers=JSON, content=b"""{
        "operations": [
            {"key": "user:1", "value": "value1"},
            {"key": "user:2", "value": "value2"}
        ],
        "atomic": true
    }""")
    assert put.status_code == 200, put.text
    doc = put.json()
    _fields(doc, "success_count", "failed_keys", "results")
    assert doc["success_count"] == 2 and doc["failed_keys"] == []
    assert [(r["key"], r["success"]) for r in doc["results"]] == [("user:1", True), ("user:2", True)]

    got = target.next().post("/api/v1/batch/get", headers=JSON, content=b'{"keys": ["user:1", "user:2", "user:3"]}')
    assert got.status_code == 200, got.text
    assert got.json()["results"] == [
        {"key": "user:1", "value": "value1", "found": True},
        {"key": "user:2", "value": "value2", "found": True},
        {"key": "user:3", "found": False},
    ]


def test_a_non_atomic_batch_reports_each_key(target):
    put = target.next().post("/api/v1/batch/put", headers=JSON, json={"operations": [
        {"key": "each:1", "value": "fine"},
        {"key": "each:2", "value_base64": "not base64!"},
        {"key": "each:3", "value": "fine too"},
    ], "atomic": False})
    assert put.status_code == 200, put.text
    doc = put.json()
    assert doc["success_count"] == 2 and doc["failed_keys"] == ["each:2"]
    assert [r["success"] for r in doc["results"]] == [True, False, True]
    assert "value_base64" in doc["results"][1]["error"]["detail"]
    # The same batch, atomic: the bad write refuses the whole batch and nothing is written.
    refused = target.next().post("/api/v1/batch/put", headers=JSON, json={"operations": [
        {"key": "all:1", "value": "fine"}, {"key": "all:2", "value_base64": "not base64!"}], "atomic": True})
    assert refused.status_code == 400
    assert target.next().head("/api/v1/keys/all:1").status_code == 404


def test_cas_with_the_version_a_read_returned(target):
    key = "/api/v1/keys/account:7"
    for i in range(5):
        target.next().put(key, headers=JSON, json={"value": f"v{i}"})
    assert target.next().get(key).json()["version"] == 5
    done = target.next().post(key + "/cas", headers=JSON, content=b'{"expected_version": 5, "new_value": "new"}')
    assert done.status_code == 200, done.text
    assert done.json()["success"] is True and done.json()["new_version"] == 6
    stale = target.next().post(key + "/cas", headers=JSON, content=b'{"expected_version": 5, "new_value": "late"}')
    assert stale.status_code == 200
    assert stale.json()["success"] is False and stale.json()["current_version"] == 6
    assert target.next().get(key, headers={"Consistency-Level": "SERIAL"}).json()["value"] == "new"


def test_list_by_prefix_and_scan(target):
    client = target.next()
    for i in range(12):
        client.put(f"/api/v1/keys/list:{i}", headers=JSON, json={"value": str(i)})
    seen: set[str] = set()
    cursor = None
    while True:
        page = target.next().get("/api/v1/keys", params={"prefix": "list:", "limit": 5, **(
            {"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        _fields(page.json(), "keys", "cursor", "has_more")
        seen.update(page.json()["keys"])
        assert page.json()["has_more"] == (page.json()["cursor"] is not None)
        if not page.json()["has_more"]:
            break
        cursor = page.json()["cursor"]
    assert seen == {f"list:{i}" for i in range(12)}
    literal = target.next().get("/api/v1/keys?prefix=user:&limit=100")
    assert literal.status_code == 200 and all(k.startswith("user:") for k in literal.json()["keys"])

    scanned: set[str] = set()
    url = "/api/v1/scan?cursor=&count=1000"
    while True:
        page = target.next().get(url)
        assert page.status_code == 200, page.text
        _fields(page.json(), "keys", "next_cursor", "done")
        scanned.update(page.json()["keys"])
        if page.json()["done"]:
            break
        url = f"/api/v1/scan?cursor={page.json()['next_cursor']}&count=1000"
    assert {f"list:{i}" for i in range(12)} <= scanned


def test_ttl_and_incr(target):
    key = "/api/v1/keys/counter:visits"
    target.next().put(key, headers=JSON, json={"value": "1000"})
    ttl = target.next().post(key + "/ttl", headers=JSON, content=b'{"ttl_seconds": 3600}')
    assert ttl.status_code == 200, ttl.text
    assert 3590 < target.next().get(key).json()["ttl_remaining"] <= 3600
    before = target.next().get(key).json()["version"]
    incr = target.next().post(key + "/incr", headers=JSON, content=b'{"delta": 1}')
    assert incr.status_code == 200, incr.text
    _fields(incr.json(), "key", "value", "version")
    assert incr.json()["key"] == "counter:visits" and incr.json()["value"] == 1001
    assert incr.json()["version"] == before + 1
    # INCR keeps the expiry, as Redis does.
    assert target.next().get(key).json()["ttl_remaining"] > 3500


@pytest.mark.parametrize("level", ["ONE", "QUORUM", "ALL", "EVENTUAL", "STRONG", "eventual"])
def test_every_consistency_level_the_specification_names(target, level):
    put = target.next().put("/api/v1/keys/level:" + level, headers={**JSON, "Consistency-Level": level},
                            json={"value": level})
    assert put.status_code == 200, put.text
    got = target.next().get("/api/v1/keys/level:" + level, headers={"Consistency-Level": "STRONG"})
    assert got.status_code == 200 and got.json()["value"] == level


def test_admin_status_and_rebalance(target):
    target.next().put("/api/v1/keys/status:probe", headers=JSON, json={"value": "x"})
    status = target.next().get("/api/v1/admin/cluster/status")
    assert status.status_code == 200, status.text
    doc = status.json()
    _fields(doc, "nodes", "total_keys", "replication_factor")
    assert len(doc["nodes"]) == len(target.nodes)
    assert doc["replication_factor"] == (1 if len(target.nodes) == 1 else 3)
    for node in doc["nodes"]:
        _fields(node, "node_id", "address", "status", "role", "keys_count", "memory_used_mb")
        assert node["status"] == "healthy"
        assert node["memory_used_mb"] > 0
    assert doc["total_keys"] >= 1
    assert {n["address"] for n in doc["nodes"]} == {f"127.0.0.1:{n.resp_port}" for n in target.nodes}
    rebalance = target.next().post("/api/v1/admin/cluster/rebalance")
    assert rebalance.status_code == 200, rebalance.text


def test_text_values_and_binary_values(target):
    # JSON values are text by default; bytes that are not UTF-8 travel as value_base64, and
    # ?encoding=base64 keeps ringkv's earlier shape (every value base64).
    client = target.next()
    client.put("/api/v1/keys/bin:1", headers=JSON, json={"value_base64": "/wD+"})
    doc = target.next().get("/api/v1/keys/bin:1").json()
    assert "value" not in doc and doc["value_base64"] == "/wD+"
    assert target.next().get("/api/v1/keys/bin:1?encoding=base64").json()["value"] == "/wD+"
    target.next().put("/api/v1/keys/bin:2?encoding=base64", headers=JSON, json={"value": "aMOpbGxv"})
    assert target.next().get("/api/v1/keys/bin:2").json()["value"] == "héllo"
    raw = target.next().get("/api/v1/keys/bin:1", headers={"Accept": "application/octet-stream"})
    assert raw.content == b"\xff\x00\xfe" and int(raw.headers["Ringkv-Version"]) >= 1


def test_add_a_node_by_its_address(tmp_path):
    # The specification's POST /api/v1/admin/cluster/nodes, sent to a member of a 3-node
    # cluster, naming a fourth node started to join (tests/processes/test_http_admin_processes.py
    # follows the join further: keys, shares, refusals).
    settings = dict(replicas=3, partitions=64, gossip_interval_ms=200, membership_settle_ms=1000)
    with LocalCluster(tmp_path, nodes=3, **settings) as cluster, \
            NodeProcess(tmp_path / "n4", node_id="n4", join="true", **settings,
                        **cluster.secret_settings) as n4:
        member = httpx.Client(base_url=f"http://127.0.0.1:{cluster.nodes[1].http_port}", timeout=HTTP_TIMEOUT_S)
        with member:
            added = member.post("/api/v1/admin/cluster/nodes", headers=JSON,
                                content=b'{"node_address": "127.0.0.1:%d"}' % n4.resp_port)
            assert added.status_code == 200, added.text
            assert added.json()["node_id"] == "n4"

            def four_healthy() -> bool:
                nodes = member.get("/api/v1/admin/cluster/status").json()["nodes"]
                return sorted((n["node_id"], n["status"]) for n in nodes) == [
                    (f"n{i}", "healthy") for i in range(1, 5)]

            wait_until(four_healthy, 120, "n4 to join and every member to be healthy")
