"""The operations routes of the HTTP API against a real node: the cluster status the REST
specification shows (`nodes[].address/status/role/keys_count/memory_used_mb`, `total_keys`,
`replication_factor`), the same document over RESP and the CLI, adding a node (both bodies,
and what a node of one answers), rebalance, and how the admission talks RESP to an address."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
import redis

from ringkv.errors import AdminConflictError, AdminRequestError
from ringkv.node.admission import RespExchange, parse_node_address
from ringkv.testing.launcher import free_port

pytestmark = pytest.mark.timeout(120)

SPEC_MEMBER_FIELDS = {"node_id", "address", "status", "role", "keys_count", "memory_used_mb"}


@pytest.fixture(scope="module")
def node(shared_node):
    return shared_node


@pytest.fixture
def http(node):
    with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=30) as client:
        yield client


@pytest.fixture
def r(node):
    client = redis.Redis(port=node.resp_port, socket_timeout=30)
    client.flushall()
    yield client
    client.close()


def test_a_node_of_one_reports_itself_healthy_with_its_keys_memory_and_address(node, http, r):
    for i in range(25):
        r.set(f"status:{i}", "x" * 100)
    r.set("status:gone", "x")
    r.delete("status:gone")

    doc = http.get("/api/v1/admin/cluster/status").json()

    assert doc["total_keys"] == 25 and doc["replication_factor"] == 1
    assert doc["total_keys_unknown_partitions"] == 0
    (member,) = doc["nodes"]
    assert member.keys() >= SPEC_MEMBER_FIELDS
    assert member["node_id"] == "n1"
    assert member["address"] == f"127.0.0.1:{node.resp_port}"
    assert member["status"] == "healthy" and member["role"] == "member"
    assert member["keys_count"] == 25
    # A Python process with an engine: tens of MiB, not bytes and not gigabytes.
    assert 5 < member["memory_used_mb"] < 4096
    assert member["rss_bytes"] == pytest.approx(member["memory_used_mb"] * 1024 * 1024, abs=0.06 * 1024 * 1024)
    # ringkv's own fields stay
    assert member["keys"] == 25 and member["resp"] == member["address"] and member["primary_partitions"] > 0


def test_resp_and_the_cli_answer_the_same_status_document(node, r):
    for i in range(7):
        r.set(f"cli:{i}", "v")
    over_resp = json.loads(r.execute_command("RINGKV.STATUS"))
    assert over_resp["total_keys"] == 7 and over_resp["replication_factor"] == 1
    assert over_resp["nodes"][0]["status"] == "healthy" and over_resp["nodes"][0]["keys_count"] == 7

    out = subprocess.run([sys.executable, "-m", "ringkv.cli", "cluster", "status", "--port", str(node.resp_port),
                          "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["total_keys"] == 7 and doc["nodes"][0].keys() >= SPEC_MEMBER_FIELDS

    human = subprocess.run([sys.executable, "-m", "ringkv.cli", "cluster", "status", "--port", str(node.resp_port)],
                           capture_output=True, text=True, timeout=60)
    assert human.returncode == 0, human.stdout + human.stderr
    assert "healthy" in human.stdout and "member" in human.stdout and "7 keys" in human.stdout


def test_a_node_of_one_cannot_admit_another_and_says_why(http):
    answer = http.post("/api/v1/admin/cluster/nodes", json={"node_address": "10.0.1.10:6379"})
    assert answer.status_code == 409, answer.text
    problem = answer.json()
    assert problem["type"] == "urn:ringkv:problem:conflict" and "cluster of one" in problem["detail"]


@pytest.mark.parametrize(("body", "status", "names"), [
    ({"node_address": "10.0.1.10"}, 400, "node_address"),  # no port
    ({"node_address": "10.0.1.10:99999"}, 400, "node_address"),
    ({"node_address": 6379}, 422, "body.node_address"),
    ({"node_adress": "10.0.1.10:6379"}, 422, "body.node_adress"),
    ({}, 422, "node_address"),
    ({"node_address": "10.0.1.10:6379", "seeds": ["n1@10.0.0.1:7381"]}, 422, "node_address"),
    ({"seeds": []}, 422, "body.seeds"),
])
def test_a_bad_add_node_body_is_refused_naming_the_field(http, body, status, names):
    answer = http.post("/api/v1/admin/cluster/nodes", json=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert names in answer.json()["detail"], answer.json()


def test_a_body_that_is_not_json_is_a_validation_error(http):
    answer = http.post("/api/v1/admin/cluster/nodes", content=b"node_address=1.2.3.4:6379",
                       headers={"content-type": "application/json"})
    assert answer.status_code == 422 and answer.json()["type"] == "urn:ringkv:problem:validation-error"


def test_the_seeds_form_still_answers_on_a_node_that_is_not_joining(http):
    # The earlier body, sent to a node of one: it has no membership to join with.
    answer = http.post("/api/v1/admin/cluster/nodes", json={"seeds": ["n1@127.0.0.1:7381"]})
    assert answer.status_code == 409 and "cluster of one" in answer.json()["detail"]


def test_rebalance_answers_the_repair_summary(http):
    answer = http.post("/api/v1/admin/cluster/rebalance")
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert {"partitions", "comparisons", "in_sync", "keys_pushed", "keys_pulled", "traffic_bytes", "seconds",
            "errors", "error_count"} <= doc.keys()
    assert doc["comparisons"] == 0 and doc["error_count"] == 0


def test_the_openapi_spec_documents_the_admin_answers(http):
    spec = http.get("/openapi.json").json()
    status = spec["paths"]["/api/v1/admin/cluster/status"]["get"]["responses"]["200"]
    assert status["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ClusterStatusResponse"}
    member = spec["components"]["schemas"]["ClusterMember"]
    assert set(member["required"]) >= SPEC_MEMBER_FIELDS
    add = spec["paths"]["/api/v1/admin/cluster/nodes"]["post"]
    assert {"400", "409", "422"} <= add["responses"].keys()
    assert "node_address" in spec["components"]["schemas"]["AddNodeRequest"]["properties"]


# ----------------------------------------------------------------- the admission's RESP talk


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.1.10:6379", ("10.0.1.10", 6379)),
    ("node-4.example:7409", ("node-4.example", 7409)),
    ("[::1]:7409", ("::1", 7409)),
    (" 127.0.0.1:1 ", ("127.0.0.1", 1)),
])
def test_node_addresses_parse(text, expected):
    assert parse_node_address(text) == expected


@pytest.mark.parametrize("text", ["10.0.1.10", "10.0.1.10:0", "10.0.1.10:65536", ":6379", "a b:1", "::1:6379", ""])
def test_malformed_node_addresses_are_refused_naming_the_field(text):
    with pytest.raises(AdminRequestError, match="node_address"):
        parse_node_address(text)


def test_the_admission_reads_a_nodes_answers_over_resp(node):
    async def ask():
        async with RespExchange("127.0.0.1", node.resp_port) as conn:
            return await conn.call("PING"), await conn.call("RINGKV.ADMIN", "STATUS")

    pong, status = asyncio.run(ask())
    assert pong == b"PONG"
    assert "cluster of one" in str(status)  # an error answer comes back as a value


def test_the_admission_names_an_http_port_and_a_closed_port(node):
    async def ask(port: int, reply_timeout_ms: int = 5000):
        async with RespExchange("127.0.0.1", port, reply_timeout_ms=reply_timeout_ms) as conn:
            return await conn.call("RINGKV.ADMIN", "STATUS")

    with pytest.raises(AdminConflictError, match=r"does not answer RESP.*HTTP"):
        asyncio.run(ask(node.http_port))
    with pytest.raises(AdminConflictError, match=r"cannot reach the node at 127\.0\.0\.1:.*refused"):
        asyncio.run(ask(free_port()))
