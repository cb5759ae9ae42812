"""Long operations on real nodes (docs/operations.md): started, followed by id from the CLI and
over HTTP, and a decommission cut by a restart of its node resumed under the same id."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
import redis
from tests.cli.test_cli_commands import _on_terminal

from ringkv.testing.launcher import LocalCluster
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(240)

SETTINGS = dict(replicas=3, partitions=64, gossip_interval_ms=200, membership_settle_ms=1500,
                replica_timeout_ms=2000)


def ringkv(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    return subprocess.run([sys.executable, "-m", "ringkv.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def _admin(port: int, *args: str) -> dict:
    return json.loads(redis.Redis(port=port, socket_timeout=10).execute_command("RINGKV.ADMIN", *args))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("ops"), nodes=3, **SETTINGS) as c:
        r = redis.Redis(port=c.nodes[0].resp_port)
        for i in range(100):
            r.set(f"k{i}", "v")
        yield c


def test_a_repair_started_without_waiting_is_followed_by_its_id(cluster):
    port = str(cluster.nodes[0].resp_port)
    started = ringkv("repair", "--port", port, "--no-wait", "--json")
    assert started.returncode == 0, started.stderr
    doc = json.loads(started.stdout)
    assert doc["kind"] == "repair" and doc["node_id"] == "n1" and doc["id"].startswith("n1.")
    followed = ringkv("admin", "wait", doc["id"], "--port", port)
    assert followed.returncode == 0, followed.stderr
    assert "compared" in followed.stdout and "partitions" in followed.stdout
    listed = ringkv("admin", "operations", "--port", port)
    assert doc["id"] in listed.stdout and "done" in listed.stdout
    unknown = ringkv("admin", "wait", "n1.999", "--port", port)
    assert unknown.returncode == 4 and "no operation 'n1.999' on n1" in unknown.stderr


def test_a_terminal_sees_the_progress_bar_with_an_eta(cluster):
    """On a terminal the CLI follows an operation with a progress bar (rich), its count of units
    and an ETA column; it exits 0 only when the operation is done."""
    text = _on_terminal(cluster.nodes[0], "repair")
    assert "\x1b[" in text  # drawn as a terminal's live display, not plain lines
    assert "repair n1." in text and "64/64" in text and "ETA" in text, text
    assert "compared" in text and "partitions" in text  # the summary once it is done


def test_operations_over_http(cluster):
    base = f"http://127.0.0.1:{cluster.nodes[1].http_port}/api/v1/admin/operations"
    started = httpx.post(base, json={"kind": "repair", "args": {}}, timeout=10)
    assert started.status_code == 202, started.text
    op = started.json()
    done = httpx.get(f"{base}/{op['id']}", params={"wait_ms": 20_000}, timeout=30).json()
    assert done["state"] == "done" and done["done"] == done["total"] == 64 and done["result"]["partitions"] == 64
    assert op["id"] in [o["id"] for o in httpx.get(base, timeout=10).json()["operations"]]
    assert httpx.post(base, json={"kind": "frobnicate", "args": {}}, timeout=10).status_code == 400
    assert httpx.get(f"{base}/n2.999", timeout=10).status_code == 400


@pytest.mark.slow
def test_a_decommission_cut_by_a_restart_resumes_and_the_node_leaves(cluster):
    n3 = cluster.nodes[2]
    op = _admin(n3.resp_port, "DECOMMISSION", "ASYNC")
    assert op["state"] == "running"
    n3.stop()  # while it settles: the operation stays running in operations.json
    n3.start()
    resumed = _admin(n3.resp_port, "OPERATION", op["id"])
    assert resumed["resumed"] == 1
    followed = ringkv("admin", "wait", op["id"], "--port", str(n3.resp_port))
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "left the ring" in followed.stdout
    wait_until(lambda: _admin(cluster.nodes[0].resp_port, "STATUS")["ring"] == ["n1", "n2"], 30,
               "n1 to see n3 leave", interval_s=0.2)
    r = redis.Redis(port=cluster.nodes[0].resp_port)
    assert all(r.get(f"k{i}") == b"v" for i in range(100))
