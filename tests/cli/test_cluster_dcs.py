"""`ringkv cluster up --dcs 2 --nodes 6`, as an operator tries datacenters on one machine
(docs/multi-dc.md): n1-n3 in dc1 and n4-n6 in dc2, three replicas of each key in each, and
40 ms each way between them; each datacenter serves LOCAL_QUORUM through its own nodes,
`cluster status` shows where each member is, and `cluster up` again keeps the layout."""

from __future__ import annotations

import json
import random
import re
import socket
from pathlib import Path

import pytest
import redis
from tests.cli.test_cluster_cli import ClusterUp, ringkv, status

from ringkv.testing.launcher import port_range
from ringkv.testing.wait import wait_until

NODES = 6
DC_OF = {"n1": "dc1", "n2": "dc1", "n3": "dc1", "n4": "dc2", "n5": "dc2", "n6": "dc2"}
READY = "Ctrl-C stops the cluster"
STARTED_TIMEOUT_S = 60.0  # six nodes starting at once on a 2-core machine


def free_base_port(nodes: int = NODES) -> int:
    """A base port whose block for `nodes` nodes (base .. base + 10 * nodes) is free now."""
    span = 10 * nodes
    for _ in range(200):
        low, high = port_range()  # below the ephemeral range, in this xdist worker's slice
        base = random.randrange(low, high - span)
        try:
            for port in range(base, base + span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no free block of {span} ports found")


def local_quorum(port: int) -> redis.Redis:
    """One connection to a node, every command at LOCAL_QUORUM (a connection's level)."""
    r = redis.Redis(port=port, single_connection_client=True, socket_timeout=10)
    assert r.execute_command("RINGKV.CONSISTENCY", "LOCAL_QUORUM") in (b"OK", "OK")
    return r


def up_in_two_dcs(cluster_dir: Path, base: int, *args: str) -> ClusterUp:
    # ClusterUp runs `cluster up --nodes 3 ...`: the --nodes given here comes later and wins.
    return ClusterUp(cluster_dir, base, "--nodes", str(NODES), *args)


def assert_layout_printed(output: str, base: int) -> None:
    assert "6 nodes in 2 datacenters, N=6 (dc1=3, dc2=3), emulated WAN delay 40 ms each way" in output
    for i, (node, dc) in enumerate(DC_OF.items()):
        rack = f"r{i % 3 + 1}"
        assert re.search(rf"\b{node}\s+{dc}\s+{rack}\s+127\.0\.0\.1:{base + 10 * i}\b", output), (node, output)
    # How to read in the other datacenter, from its own replicas.
    assert f"redis-cli -p {base + 30} RINGKV.AT LOCAL_QUORUM GET greeting" in output


def assert_status_shows_datacenters(base: int) -> None:
    human = status(base + 30)
    assert human.returncode == 0, human.stdout + human.stderr
    for node, dc in DC_OF.items():
        assert re.search(rf"\b{node}\s+{dc}\s+healthy\b", human.stdout), (node, human.stdout)
    assert "dc1: 3 members (3 up); dc2: 3 members (3 up)" in human.stdout


def test_two_datacenters_serve_local_quorum_each_and_keep_their_layout_across_restarts(tmp_path: Path) -> None:
    cluster_dir = tmp_path / "cluster"
    base = free_base_port()
    first = up_in_two_dcs(cluster_dir, base, "--dcs", "2")
    try:
        first.wait_for(READY, STARTED_TIMEOUT_S)
        assert_layout_printed(first.output, base)
        # Every node runs with the datacenters' settings.
        for i in range(NODES):
            config = redis.Redis(port=base + 10 * i).config_get("*")
            assert config["dc_replicas"] == "dc1=3,dc2=3" and config["replicas"] == "6", config
            assert config["emulated_wan_delay_ms"] == "40", config

        # Each datacenter writes and reads its keys at LOCAL_QUORUM through its own nodes.
        dc1, dc2 = local_quorum(base), local_quorum(base + 30)  # n1, n4
        for i in range(10):
            assert dc1.set(f"dc1:{i}", f"from dc1 {i}")
            assert dc2.set(f"dc2:{i}", f"from dc2 {i}")
        assert [dc1.get(f"dc1:{i}") for i in range(10)] == [f"from dc1 {i}".encode() for i in range(10)]
        assert [dc2.get(f"dc2:{i}") for i in range(10)] == [f"from dc2 {i}".encode() for i in range(10)]
        # Each write goes to the other datacenter's replicas too, after the answer.
        wait_until(lambda: dc2.get("dc1:9") == b"from dc1 9" and dc1.get("dc2:9") == b"from dc2 9", 20,
                   "each datacenter's keys to reach the other")
        # EACH_QUORUM: a majority in both datacenters, here both up.
        assert dc1.execute_command("RINGKV.AT", "EACH_QUORUM", "SET", "both", "dcs") in (b"OK", "OK")
        dc1.close()
        dc2.close()

        assert_status_shows_datacenters(base)
        assert first.interrupt() == 0, first.output
    finally:
        first.cleanup()

    # Again on the same directory, without --dcs, and with a --dcs that cannot apply any more:
    # the same two datacenters, the same counts and delay, the same data.
    again = up_in_two_dcs(cluster_dir, base, "--dcs", "3")
    try:
        again.wait_for(READY, STARTED_TIMEOUT_S)
        assert "restarting the recorded members: n1, n2, n3, n4, n5, n6" in again.output
        assert ("note: --dcs and --replicas apply to a new cluster; this one keeps 2 datacenters, "
                "3 replicas in each") in again.output
        assert_layout_printed(again.output, base)
        dc2 = local_quorum(base + 40)  # n5
        assert dc2.get("dc1:3") == b"from dc1 3" and dc2.get("dc2:3") == b"from dc2 3"
        dc2.close()
        assert_status_shows_datacenters(base)
        assert again.interrupt() == 0, again.output
    finally:
        again.cleanup()
    recorded = json.loads((cluster_dir / "cluster-up.json").read_text())
    assert recorded["dc_replicas"] == {"dc1": 3, "dc2": 3} and recorded["wan_delay_ms"] == 40


@pytest.mark.parametrize(("args", "option", "why"), [
    (["--nodes", "3", "--dcs", "4"], "--dcs", "4 datacenters need at least 4 nodes"),
    (["--nodes", "5", "--dcs", "2", "--replicas", "3"], "--replicas", "3 replicas per datacenter, but dc2 has 2"),
    (["--nodes", "3", "--wan-delay-ms", "40"], "--wan-delay-ms", "give --dcs 2 or more"),
    (["--nodes", "6", "--dcs", "9"], "--dcs", "not in the range"),
    (["--nodes", "6", "--dcs", "2", "--wan-delay-ms", "10001"], "--wan-delay-ms", "not in the range"),
])
def test_datacenter_options_that_cannot_be_exit_2_naming_the_option(
        args: list[str], option: str, why: str, tmp_path: Path) -> None:
    cluster_dir = tmp_path / "cluster"
    result = ringkv("cluster", "up", "--data-dir", str(cluster_dir), "--base-port", str(free_base_port()), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"'{option}'" in result.stderr and why in result.stderr, result.stderr
    assert not cluster_dir.exists()  # nothing was started
