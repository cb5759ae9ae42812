"""`ringkv cluster up` and `ringkv cluster status`, as an operator uses them: a real
`cluster up` process running three real nodes, talked to with redis-py and the CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ringkv.node.config import NodeConfig
from ringkv.testing.launcher import free_port, port_range
from ringkv.testing.wait import wait_until

READY_TIMEOUT_S = 40.0


def _env() -> dict[str, str]:
    # No RINGKV_* setting of the caller's shell may reach the CLI or the nodes.
    return {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}


def ringkv(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringkv.cli", *args], capture_output=True,
                          text=True, env=_env(), timeout=timeout)


def free_base_port() -> int:
    """A base port whose 3-node block (base .. base+22) is free now."""
    for _ in range(200):
        # Below Linux's ephemeral range, in this xdist worker's slice (launcher.port_range).
        low, high = port_range()
        base = random.randrange(low, high - 30)
        try:
            for port in range(base, base + 23):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of 23 ports found")


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class ClusterUp:
    """A `ringkv cluster up` process and everything it printed (stdout and stderr)."""

    def __init__(self, data_dir: Path, base_port: int, *extra: str):
        self.data_dir = data_dir
        self.base_port = base_port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ringkv.cli", "cluster", "up", "--nodes", "3",
             "--base-port", str(base_port), "--data-dir", str(data_dir), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=_env(), cwd=data_dir.parent,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        def printed() -> bool:
            if text in self.output:
                return True
            if self.proc.poll() is not None:
                self._reader.join(5)
                if text in self.output:
                    return True
                pytest.fail(f"cluster up exited ({self.proc.returncode}) before printing "
                            f"{text!r}:\n{self.output}")
            return False

        wait_until(printed, timeout_s, lambda: f"{text!r} from cluster up:\n{self.output}")

    def pid(self, node_id: str) -> int:
        return int((self.data_dir / f"{node_id}.pid").read_text())

    def interrupt(self, timeout_s: float = 60) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout_s)
        self._reader.join(5)
        return code

    def cleanup(self) -> None:
        """Whatever happened in the test, leave no process behind."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid_file in self.data_dir.glob("n*.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Path:
    return tmp_path / "cluster"


@pytest.fixture
def running(cluster_dir: Path) -> Iterator[ClusterUp]:
    up = ClusterUp(cluster_dir, free_base_port())
    try:
        up.wait_for("Ctrl-C stops the cluster")
        yield up
    finally:
        up.cleanup()


def status(port: int, *args: str) -> subprocess.CompletedProcess:
    return ringkv("cluster", "status", "--port", str(port), *args)


def test_cluster_up_serves_reports_a_crash_and_stops_on_ctrl_c(running: ClusterUp) -> None:
    base = running.base_port
    out = running.output
    assert "ringkv cluster ready" in out
    for i, node_id in enumerate(("n1", "n2", "n3")):
        port = base + 10 * i
        assert f"127.0.0.1:{port}" in out and f"127.0.0.1:{port + 1}" in out
        assert f"127.0.0.1:{port + 2}" in out and f"{node_id}.log" in out
    assert f"redis-cli -p {base}" in out and f"curl http://127.0.0.1:{base + 1}/api/v1/keys/" in out
    assert f"ringkv cluster status --port {base}" in out

    # One cluster: written through n1, read through n3.
    n1, n3 = redis.Redis(port=base), redis.Redis(port=base + 20)
    for i in range(20):
        assert n1.set(f"key:{i}", f"value {i}")
    assert n3.get("key:7") == b"value 7"

    # With N=3 every node holds every key (the third replica may trail the quorum briefly).
    keys_seen: list = []

    def every_node_holds_every_key() -> dict | None:
        result = status(base, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        doc = json.loads(result.stdout)
        keys_seen[:] = [n.get("keys") for n in doc["nodes"]]
        return doc if all(n.get("keys") == 20 for n in doc["nodes"]) else None

    doc = wait_until(every_node_holds_every_key, 30,
                     lambda: f"all 20 keys on every node (keys per node: {keys_seen})", interval_s=0.2)
    # `cluster up` passes no --partitions: its nodes run the default ring.
    assert doc["cluster"] == {"partitions": NodeConfig().partitions, "replicas": 3, "members": 3}
    assert [n["node_id"] for n in doc["nodes"]] == ["n1", "n2", "n3"]
    assert all(n["status"] == "healthy" and n["role"] == "member" for n in doc["nodes"])
    assert [n["keys"] for n in doc["nodes"]] == [20, 20, 20]
    assert doc["nodes"][2]["resp"] == f"127.0.0.1:{base + 20}"

    human = status(base + 10)
    assert human.returncode == 0, human.stderr
    assert "3 members (3 up)" in human.stdout and "N=3" in human.stdout

    # A crash: the others keep running and the cluster still answers.
    pids = {node_id: running.pid(node_id) for node_id in ("n1", "n2", "n3")}
    os.kill(pids["n3"], signal.SIGKILL)
    running.wait_for("node n3 exited", timeout_s=30)
    assert "killed by SIGKILL" in running.output and "n3.log" in running.output
    assert not (running.data_dir / "n3.pid").exists()
    assert running.proc.poll() is None

    result = status(base, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    nodes = {n["node_id"]: n for n in json.loads(result.stdout)["nodes"]}
    assert nodes["n1"]["status"] == nodes["n2"]["status"] == "healthy"
    assert nodes["n3"]["status"] == "down" and not nodes["n3"]["reachable"] and nodes["n3"]["error"]
    human = status(base)
    assert human.returncode == 1
    assert "down" in human.stdout and "1 down" in human.stdout
    assert n1.get("key:3") == b"value 3"  # n1 and n2 are a quorum

    # Ctrl-C: every node stops, exit 0.
    assert running.interrupt() == 0, running.output
    assert "cluster stopped" in running.output
    for port in (base, base + 1, base + 2, base + 10, base + 20):
        assert refuses(port), port
    assert not pid_exists(pids["n1"]) and not pid_exists(pids["n2"])
    assert not list(running.data_dir.glob("n*.pid"))


def test_cluster_up_again_restarts_the_nodes_on_their_data(cluster_dir: Path) -> None:
    base = free_base_port()
    first = ClusterUp(cluster_dir, base)
    try:
        first.wait_for("Ctrl-C stops the cluster")
        redis.Redis(port=base).set("kept", "across restarts")
        assert first.interrupt() == 0, first.output
    finally:
        first.cleanup()
    again = ClusterUp(cluster_dir, base)
    try:
        again.wait_for("Ctrl-C stops the cluster")
        assert redis.Redis(port=base + 10).get("kept") == b"across restarts"
        assert again.interrupt() == 0, again.output
    finally:
        again.cleanup()
    log = (cluster_dir / "n1.log").read_text()
    assert log.count("ringkv cluster up: n1 starting") == 2  # appended, not replaced


def test_a_busy_port_exits_2_naming_it(cluster_dir: Path) -> None:
    base = free_base_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 11))  # n2's HTTP port
        taken.listen()
        result = ringkv("cluster", "up", "--base-port", str(base), "--data-dir", str(cluster_dir))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {base + 11} (HTTP of n2)" in result.stderr
    assert not cluster_dir.exists()  # nothing was started


@pytest.mark.parametrize(
    "args",
    [["--nodes", "0"], ["--nodes", "33"], ["--base-port", "65530"], ["--base-port", "0"],
     ["--replicas", "0"], ["--sync", "sometimes"]],
)
def test_cluster_up_usage_errors_exit_2(args: list[str], cluster_dir: Path) -> None:
    result = ringkv("cluster", "up", "--data-dir", str(cluster_dir), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Error:" in result.stderr
    assert not cluster_dir.exists()


def test_cluster_status_of_an_unreachable_node_exits_3() -> None:
    port = free_port()
    human = ringkv("cluster", "status", "--port", str(port), "--timeout-ms", "300")
    assert human.returncode == 3 and f"127.0.0.1:{port}" in human.stderr
    machine = ringkv("cluster", "status", "--port", str(port), "--json")
    assert machine.returncode == 3
    assert json.loads(machine.stdout)["error"]["kind"] == "unreachable"
