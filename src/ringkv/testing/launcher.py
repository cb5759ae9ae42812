"""Start and stop real `ringkv serve` processes for tests and benchmarks.

    with NodeProcess(tmp_path / "n1") as node:
        redis.Redis(port=node.resp_port).set("k", "v")
        node.kill()          # SIGKILL, as a crash
        node.start()         # same data directory, same ports

Ports are picked free on 127.0.0.1 at construction and kept across restarts, so clients can
reconnect to a restarted node. Output goes to `<data_dir>.log`.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

READY_TIMEOUT_S = 30.0


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_port_rng = random.Random()


def free_port() -> int:
    """A port free on 127.0.0.1 now, chosen below the kernel's ephemeral range.

    A node binds its ports a moment after the launcher picks them; a port from the ephemeral
    range (what binding port 0 returns) can meanwhile be taken by any outgoing connection on
    the machine, e.g. another node's RPC client, and the node then fails with "Address already
    in use". Ports below that range are never handed out implicitly.
    """
    high = _ephemeral_low() - 1
    for _ in range(200):
        port = _port_rng.randint(10_000, high) if high > 10_000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NodeProcess:
    def __init__(self, data_dir: str | os.PathLike, node_id: str = "n1", env: dict | None = None,
                 exec_prefix: list[str] | None = None, **settings):
        self.data_dir = Path(data_dir)
        self.node_id = node_id
        # The address it listens on (RESP, HTTP, RPC): loopback unless it runs in a network
        # namespace of its own, started through `exec_prefix` (chaos/netns.py).
        self.host = settings.pop("host", "127.0.0.1")
        self.exec_prefix = list(exec_prefix or [])
        self.resp_port = settings.pop("resp_port", None) or free_port()
        self.http_port = settings.pop("http_port", None) or free_port()
        self.rpc_port = settings.pop("rpc_port", None) or free_port()
        self.settings = settings
        self.env = env or {}
        self.log_path = Path(str(self.data_dir) + ".log")
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> NodeProcess:
        env = dict(os.environ)
        env.update({f"RINGKV_{k.upper()}": str(v) for k, v in self.settings.items()})
        env["RINGKV_HOST"] = self.host
        env.update(self.env)
        cmd = [
            *self.exec_prefix, sys.executable, "-m", "ringkv.cli", "serve",
            "--node-id", self.node_id,
            "--data-dir", str(self.data_dir),
            "--resp-port", str(self.resp_port),
            "--http-port", str(self.http_port),
            "--rpc-port", str(self.rpc_port),
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.resp_port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"node {self.node_id} not ready after {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait: a clean shutdown."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def pause(self) -> None:
        """SIGSTOP: the process hangs, its sockets stay open (a stalled node)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> NodeProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            pass


class LocalCluster:
    """N `ringkv serve` processes that form one cluster (static membership) on loopback.

        with LocalCluster(tmp_path, nodes=3) as cluster:
            redis.Redis(port=cluster.nodes[0].resp_port).set("k", "v")
            cluster.nodes[2].kill()

    Node i is `n<i+1>`, its data in `<root>/n<i+1>`, its log in `<root>/n<i+1>.log`. Settings
    apply to every node (as RINGKV_* variables), e.g. `replicas=3, read_repair="blocking"`.
    """

    def __init__(self, root: str | os.PathLike, nodes: int = 3, network=None, **settings):
        """`network`: a chaos.netns.NetnsNetwork that is up, to run each node in its own
        network namespace at its own address (None: every node on loopback)."""
        self.root = Path(root)
        self.nodes = [
            NodeProcess(self.root / f"n{i + 1}", node_id=f"n{i + 1}", **settings,
                        **({} if network is None else {"host": network.address(f"n{i + 1}"),
                                                       "exec_prefix": network.exec_prefix(f"n{i + 1}")}))
            for i in range(nodes)
        ]
        members = ",".join(f"{n.node_id}@{n.host}:{n.rpc_port}" for n in self.nodes)
        for n in self.nodes:
            n.settings["members"] = members

    @property
    def members(self) -> str:
        return self.nodes[0].settings["members"]

    def node(self, node_id: str) -> NodeProcess:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start(self) -> LocalCluster:
        for n in self.nodes:
            n.start(wait=False)
        for n in self.nodes:
            n.wait_ready()
        return self

    def stop(self) -> None:
        for n in self.nodes:
            if n.running:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            try:
                n.stop()
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.resume()  # a paused node cannot act on SIGTERM
        self.stop()
