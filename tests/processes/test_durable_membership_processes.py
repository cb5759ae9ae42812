"""Durable membership, as the operator of issue 14 met it: `cluster up`, a node added with
`cluster join`, n2 decommissioned, n3 removed, the cluster stopped and brought up again. The
nodes that left or were removed do not come back (and refuse to start on their old data), the
joined node does, and no acknowledged write ever reads as missing at QUORUM."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from ringkv.testing.launcher import port_range
from ringkv.testing.wait import wait_until

pytestmark = pytest.mark.timeout(300)

FAST = {"RINGKV_PARTITIONS": "64", "RINGKV_GOSSIP_INTERVAL_MS": "200", "RINGKV_MEMBERSHIP_SETTLE_MS": "1000",
        "RINGKV_PHI_ACCEPTABLE_PAUSE_MS": "500"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    return {**env, **FAST}


def ringkv(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringkv.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def free_base_port(nodes: int = 4) -> int:
    low, high = port_range()  # this xdist worker's slice, below the ephemeral range
    for _ in range(200):
        base = random.randrange(low, high - 10 * nodes - 3)
        try:
            for port in range(base, base + 10 * nodes + 3):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports found")


class ClusterUp:
    def __init__(self, root: Path, base: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ringkv.cli", "cluster", "up", "--nodes", "3", "--base-port", str(base),
             "--data-dir", str(root)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=_env())
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self) -> None:
        wait_until(lambda: "Ctrl-C stops the cluster" in self.output or self.proc.poll() is not None, 60,
                   lambda: f"cluster up to be ready:\n{self.output}")
        assert self.proc.poll() is None, self.output

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(90)


class QuorumReader:
    """Reads every acknowledged key at QUORUM, round and round, through the given ports; a nil
    for one is an anomaly (an error is not: a node may be on its way down)."""

    def __init__(self, ports: list[int], acked: dict[str, str]):
        self.ports, self.acked = ports, acked
        self.anomalies: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QuorumReader:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        clients = [redis.Redis(port=p, socket_timeout=5) for p in self.ports]
        while not self._stop.is_set():
            for key, value in list(self.acked.items()):
                if self._stop.is_set():
                    return
                r = clients[self.reads % len(clients)]
                try:
                    got = r.execute_command("RINGKV.AT", "QUORUM", "GET", key)
                except redis.RedisError:
                    continue
                self.reads += 1
                if got != value.encode():
                    self.anomalies.append(f"{key} through {r.connection_pool.connection_kwargs['port']}: {got!r}")


def _missing_at_quorum(port: int, acked: dict[str, str]) -> list[str]:
    r = redis.Redis(port=port, socket_timeout=10)
    return [k for k, v in acked.items() if r.execute_command("RINGKV.AT", "QUORUM", "GET", k) != v.encode()]


def _record(root: Path, node: str) -> dict:
    return json.loads((root / node / "membership.json").read_text())


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_node_recorded_as_removed_refuses_to_start_on_its_old_data(tmp_path):
    """The short variant: what the full sequence below ends with, from a record on disk."""
    data = tmp_path / "n3"
    data.mkdir()
    (data / "membership.json").write_text(json.dumps({
        "format": 1, "node_id": "n3", "status": "removed", "epoch": 4,
        "members": {"n3": {"status": "removed", "generation": 7, "epoch": 4}}}))
    serve = subprocess.run(
        [sys.executable, "-m", "ringkv.cli", "serve", "--node-id", "n3", "--data-dir", str(data), "--resp-port", "0",
         "--http-port", "0", "--rpc-port", "0", "--members", "n1@127.0.0.1:1,n3@127.0.0.1:2"],
        capture_output=True, text=True, env=_env(), timeout=60)
    assert serve.returncode == 2
    assert "n3 was removed from the cluster at membership epoch 4" in serve.stderr
    assert f"wipe its data directory ({data})" in serve.stderr
    assert not (data / "engine").exists()  # refused before its data was opened


@pytest.mark.slow
def test_decommissioned_and_removed_nodes_stay_out_after_cluster_up_again(tmp_path):
    root = tmp_path / "cluster"
    base = free_base_port()
    ports = {f"n{i}": base + 10 * (i - 1) for i in range(1, 5)}
    up = ClusterUp(root, base)
    acked: dict[str, str] = {}
    try:
        up.wait_ready()
        joined = ringkv("cluster", "join", "--data-dir", str(root))
        assert joined.returncode == 0, joined.stdout + joined.stderr
        assert "n4 joined" in joined.stdout
        wait_until(lambda: json.loads(redis.Redis(port=ports["n1"]).execute_command("RINGKV.ADMIN", "STATUS"))[
            "ring"] == ["n1", "n2", "n3", "n4"], 30, "n1 to hold n4 in the ring", interval_s=0.2)
        r1 = redis.Redis(port=ports["n1"], socket_timeout=10)
        for i in range(300):
            key, value = f"k{i}", f"v{i}"
            assert r1.execute_command("RINGKV.AT", "QUORUM", "SET", key, value)
            acked[key] = value
        with QuorumReader([ports["n1"], ports["n4"]], acked) as reader:
            # n2 leaves, followed with a progress bar to its end: exit 0 only once it has left.
            left = ringkv("admin", "decommission", "--port", str(ports["n2"]))
            assert left.returncode == 0, left.stdout + left.stderr
            assert "left the ring" in left.stdout
            assert _record(root, "n2")["status"] == "left"
            # n3 dies, then is removed through n1.
            os.kill(int((root / "n3.pid").read_text()), signal.SIGKILL)
            wait_until(lambda: "n3" in redis.Redis(port=ports["n1"]).info("ringkv")["nodes_down"], 30,
                       "n1 to hold n3 down", interval_s=0.2)
            removed = ringkv("admin", "remove", "n3", "--port", str(ports["n1"]))
            assert removed.returncode == 0, removed.stdout + removed.stderr
            wait_until(lambda: _record(root, "n1")["members"]["n3"]["status"] == "removed"
                       and _record(root, "n4")["members"].get("n3", {}).get("status") == "removed", 30,
                       "n1 and n4 to record n3's removal", interval_s=0.2)
            reads_before = reader.reads
            wait_until(lambda: reader.reads > reads_before + 300, 60, "a round of QUORUM reads after the changes")
        assert reader.anomalies == []
        assert up.interrupt() == 0, up.output
    finally:
        if up.proc.poll() is None:
            up.interrupt()

    again = ClusterUp(root, base)
    try:
        again.wait_ready()
        assert "restarting the recorded members: n1, n4" in again.output, again.output
        assert "n2, which left" in again.output and "n3, which removed" in again.output
        assert _refuses(ports["n2"]) and _refuses(ports["n3"])
        assert _missing_at_quorum(ports["n1"], acked) == []
        assert _missing_at_quorum(ports["n4"], acked) == []
        status = json.loads(redis.Redis(port=ports["n4"]).execute_command("RINGKV.ADMIN", "STATUS"))
        assert status["ring"] == ["n1", "n4"]
        # n2, started by hand on its old data, refuses to serve it, saying how to come back.
        serve = subprocess.run(
            [sys.executable, "-m", "ringkv.cli", "serve", "--node-id", "n2", "--data-dir", str(root / "n2"),
             "--resp-port", "0", "--http-port", "0", "--rpc-port", "0",
             "--members", f"n1@127.0.0.1:{ports['n1'] + 2},n2@127.0.0.1:{ports['n2'] + 2}"],
            capture_output=True, text=True, env=_env(), timeout=60)
        assert serve.returncode == 2
        assert "n2 left the cluster" in serve.stderr and "wipe its data directory" in serve.stderr
        # n3 died before it heard of its removal: it starts, a member refuses it, it stops and
        # records why; started again, it refuses at once.
        n3 = subprocess.run(
            [sys.executable, "-m", "ringkv.cli", "serve", "--node-id", "n3", "--data-dir", str(root / "n3"),
             "--resp-port", str(ports["n3"]), "--http-port", str(ports["n3"] + 1), "--rpc-port",
             str(ports["n3"] + 2), "--members",
             f"n1@127.0.0.1:{ports['n1'] + 2},n3@127.0.0.1:{ports['n3'] + 2}",
             "--cluster-secret-file", str(root / "cluster.secret")],
            capture_output=True, text=True, env=_env(), timeout=60)
        assert "former member refused" in n3.stderr, n3.stderr[-3000:]
        assert _record(root, "n3")["status"] == "removed"
        assert _missing_at_quorum(ports["n1"], acked) == []
        assert again.interrupt() == 0, again.output
    finally:
        if again.proc.poll() is None:
            again.interrupt()
