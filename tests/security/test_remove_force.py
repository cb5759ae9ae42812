"""Removing a node that is up: refused unless forced.

`remove` is for dead nodes: the others rebuild its partitions from the remaining replicas.
Before this issue one `DELETE /api/v1/admin/cluster/nodes/n2` took a serving node out of the
ring. Now a node the failure detector hears from is refused through every door (RESP, HTTP,
CLI) with an error that says to decommission it or force the removal, and the force works;
a node that is down is removed as before, with no force needed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
import redis

from ringkv.testing.launcher import LocalCluster
from ringkv.testing.probes import hears_everyone, nodes_down
from ringkv.testing.wait import wait_until

SETTINGS = {"gossip_interval_ms": 200, "phi_acceptable_pause_ms": 200, "membership_settle_ms": 200}


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(tmp_path, nodes=4, **SETTINGS)
    c.start()
    yield c
    c.stop()


def ring_of(r: redis.Redis) -> list[str]:
    return json.loads(r.execute_command("RINGKV.ADMIN", "STATUS"))["ring"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringkv.cli", *args], capture_output=True, text=True, timeout=60)


def test_a_live_node_is_removed_only_by_force_and_a_dead_one_without(cluster):
    n1 = cluster.node("n1")
    r = redis.Redis(port=n1.resp_port)
    wait_until(lambda: hears_everyone(r), 30, "n1 hears every member")

    # Refused through each door, with what to do instead.
    with pytest.raises(redis.ResponseError) as refused:
        r.execute_command("RINGKV.ADMIN", "REMOVE", "n4")
    message = str(refused.value)
    assert "n4 is up" in message and "decommission" in message and "FORCE" in message, message

    answer = httpx.delete(f"http://127.0.0.1:{n1.http_port}/api/v1/admin/cluster/nodes/n4")
    assert answer.status_code == 409, answer.text
    assert "n4 is up" in answer.json()["detail"] and "force=true" in answer.json()["detail"]

    done = cli("admin", "remove", "n4", "--port", str(n1.resp_port))
    assert done.returncode != 0
    assert "n4 is up" in done.stdout + done.stderr and "--force" in done.stdout + done.stderr
    assert "n4" in ring_of(r)

    # Forced: the CLI, HTTP and RESP each take a live node out.
    done = cli("admin", "remove", "n4", "--force", "--port", str(n1.resp_port))
    assert done.returncode == 0, done.stdout + done.stderr
    answer = httpx.delete(f"http://127.0.0.1:{n1.http_port}/api/v1/admin/cluster/nodes/n3", params={"force": "true"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"removed": "n3"}
    wait_until(lambda: "n3" not in ring_of(r) and "n4" not in ring_of(r), 30, "n3 and n4 out of the ring")
    assert "removing n4 by force" in n1.log_path.read_text()

    # A dead node needs no force.
    cluster.node("n2").kill()
    wait_until(lambda: "n2" in nodes_down(r), 30, "n1 holds n2 down")
    assert json.loads(r.execute_command("RINGKV.ADMIN", "REMOVE", "n2")) == {"removed": "n2"}
    wait_until(lambda: ring_of(r) == ["n1"], 30, "n1 alone in the ring")
    assert r.set("after", "removals") is True


def test_remove_force_takes_only_the_word_force(cluster):
    r = redis.Redis(port=cluster.node("n1").resp_port)
    with pytest.raises(redis.ResponseError, match="REMOVE node \\[FORCE\\]"):
        r.execute_command("RINGKV.ADMIN", "REMOVE", "n2", "NOW")
