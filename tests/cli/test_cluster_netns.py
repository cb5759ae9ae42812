"""`ringkv cluster up --dcs 2 --nodes 6 --netns`, as an operator makes the datacenters real on
one machine (docs/cluster.md, "Network namespaces"): every node in a network namespace of its
own, named after its datacenter, reached from this machine's root namespace at the printed
addresses; a write at EACH_QUORUM pays the WAN round trip and one at LOCAL_QUORUM does not;
Ctrl-C or SIGTERM removes every namespace and the bridge, also when a node fails to start; a
restart comes back at the same addresses, and what cannot be done with namespaces is refused
naming the option. Root only: skipped, with chaos.netns.unavailable()'s reason, elsewhere."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from tests.cli.test_cluster_cli import ClusterUp, _env, ringkv
from tests.cli.test_cluster_dcs import DC_OF, NODES, READY, STARTED_TIMEOUT_S, free_base_port

from ringkv.chaos.netns import netem_available, unavailable

MISSING = unavailable()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=f"network namespaces: {MISSING}"),
              pytest.mark.timeout(240)]

WAN_DELAY_MS = 40  # cluster up's default with --dcs 2
TIMED_WRITES = 9  # per level; the median is compared


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=True).stdout


def _tag(cluster_dir: Path) -> int:
    return json.loads((cluster_dir / "cluster-up.json").read_text())["netns"]["tag"]


def _nothing_left(tag: int) -> None:
    """No namespace, veth or bridge of the run with this tag is left on the machine."""
    assert f"rkv{tag}" not in _ip("netns", "list")
    assert f"rkv{tag}" not in _ip("-o", "link", "show")


def _printed_nodes(output: str) -> dict[str, tuple[str, str, int]]:
    """Each node's namespace, address and RESP port, as the table printed them."""
    rows = re.findall(r"\b(n[1-6])\s+(dc[12])\s+r[1-3]\s+(rkv\d+-dc[12]-n[1-6])\s+(10\.\d+\.\d+\.\d+):(\d+)\b",
                      output)
    assert len(rows) == NODES, output
    for node, dc, namespace, _, _ in rows:
        assert dc == DC_OF[node] and namespace.endswith(f"-{dc}-{node}"), (node, dc, namespace)
    return {node: (namespace, address, int(port)) for node, _, namespace, address, port in rows}


def _median_ms(r: redis.Redis, *command: str) -> float:
    took = []
    for _ in range(TIMED_WRITES):
        started = time.perf_counter()
        assert r.execute_command(*command) in (b"OK", "OK")
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


@pytest.mark.slow
def test_two_datacenters_in_namespaces_serve_the_root_namespace_pay_the_wan_and_leave_nothing(
        tmp_path: Path) -> None:
    cluster_dir = tmp_path / "cluster"
    base = free_base_port()
    first = ClusterUp(cluster_dir, base, "--nodes", str(NODES), "--dcs", "2", "--netns")
    try:
        first.wait_for(READY, STARTED_TIMEOUT_S)
        tag = _tag(cluster_dir)
        nodes = _printed_nodes(first.output)
        by_kernel = netem_available()
        if by_kernel:
            assert "WAN delay 40 ms each way (tc netem between the datacenters' namespaces)" in first.output
        else:
            assert ("note: this kernel lacks sch_netem (tc netem), so the 40 ms WAN delay between the "
                    "datacenters is emulated in the nodes") in first.output

        # Each node runs in its own namespace, the one printed, none in ours.
        ours = os.stat("/proc/self/ns/net").st_ino
        inodes = {}
        for node, (namespace, _, _) in nodes.items():
            pid = first.pid(node)
            assert _ip("netns", "identify", str(pid)).strip() == namespace
            inodes[node] = os.stat(f"/proc/{pid}/ns/net").st_ino
        assert len(set(inodes.values())) == NODES and ours not in inodes.values()

        # From the root namespace, at the printed addresses: the printed hint works too.
        n1_address, n1_port = nodes["n1"][1:]
        n4_address, n4_port = nodes["n4"][1:]
        assert f"redis-cli -h {n1_address} -p {n1_port} set greeting hello" in first.output
        n1 = redis.Redis(host=n1_address, port=n1_port, socket_timeout=10)
        n4 = redis.Redis(host=n4_address, port=n4_port, socket_timeout=10)
        config = n4.config_get("*")
        assert config["emulated_wan_delay_ms"] == ("0" if by_kernel else str(WAN_DELAY_MS)), config
        assert n1.execute_command("RINGKV.AT", "EACH_QUORUM", "SET", "k", "both dcs") in (b"OK", "OK")
        assert n4.execute_command("RINGKV.AT", "LOCAL_QUORUM", "GET", "k") == b"both dcs"

        # EACH_QUORUM waits on dc2 (a round trip across, 2 x 40 ms); LOCAL_QUORUM does not.
        each_ms = _median_ms(n1, "RINGKV.AT", "EACH_QUORUM", "SET", "timed", "v")
        local_ms = _median_ms(n1, "RINGKV.AT", "LOCAL_QUORUM", "SET", "timed", "v")
        assert each_ms >= 2 * WAN_DELAY_MS and local_ms < WAN_DELAY_MS, (each_ms, local_ms)
        n1.close()
        n4.close()

        # `cluster join` cannot add a node to the namespaces.
        joined = ringkv("cluster", "join", "--data-dir", str(cluster_dir))
        assert joined.returncode == 2 and "'--data-dir'" in joined.stderr, joined.stderr
        assert "runs its nodes in network namespaces" in joined.stderr

        assert first.interrupt() == 0, first.output
        assert f"removed the network namespaces and bridge rkv{tag}br" in first.output
        _nothing_left(tag)
    finally:
        first.cleanup()

    # The members recorded each other's addresses: without namespaces it cannot restart.
    refused = ringkv("cluster", "up", "--data-dir", str(cluster_dir), "--base-port", str(base), "--no-netns")
    assert refused.returncode == 2 and "'--no-netns'" in refused.stderr, refused.stderr
    assert "made with --netns" in refused.stderr

    # Again, without --netns: the same namespaces at the same addresses, the data there; SIGTERM.
    again = ClusterUp(cluster_dir, base)
    try:
        again.wait_for(READY, STARTED_TIMEOUT_S)
        assert _tag(cluster_dir) == tag and _printed_nodes(again.output) == nodes
        n5_address, n5_port = nodes["n5"][1:]
        n5 = redis.Redis(host=n5_address, port=n5_port, socket_timeout=10)
        assert n5.execute_command("RINGKV.AT", "LOCAL_QUORUM", "GET", "k") == b"both dcs"
        n5.close()
        again.proc.send_signal(signal.SIGTERM)
        assert again.proc.wait(60) == 0, again.output
    finally:
        again.cleanup()
    _nothing_left(tag)


def test_a_node_that_fails_to_start_takes_the_namespaces_with_it(tmp_path: Path) -> None:
    cluster_dir = tmp_path / "cluster"
    env = {**_env(), "RINGKV_PARTITIONS": "many"}  # every node refuses its configuration
    result = subprocess.run(
        [sys.executable, "-m", "ringkv.cli", "cluster", "up", "--nodes", "2", "--netns",
         "--data-dir", str(cluster_dir), "--base-port", str(free_base_port(2))],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "exited before it was ready" in result.stderr
    tag = _tag(cluster_dir)
    assert f"removed the network namespaces and bridge rkv{tag}br" in result.stdout
    _nothing_left(tag)


def test_host_and_netns_together_exit_2_naming_host(tmp_path: Path) -> None:
    cluster_dir = tmp_path / "cluster"
    result = ringkv("cluster", "up", "--netns", "--host", "0.0.0.0", "--data-dir", str(cluster_dir))
    assert result.returncode == 2 and "'--host'" in result.stderr, result.stderr
    assert "each node listens on its namespace's address" in result.stderr
    assert not cluster_dir.exists()
