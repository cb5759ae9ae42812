"""Real networks for chaos runs: one Linux network namespace per node (root only).

    root namespace                      node namespaces
    bridge rkv<tag>br  10.<a>.<b>.1/24 --veth-- eth0 10.<a>.<b>.11/24  (n1)
                                       --veth-- eth0 10.<a>.<b>.12/24  (n2) ...

Each node runs inside its namespace (`ip netns exec`) and listens on its own address; the
chaos clients, in the root namespace, reach every node through the bridge. Faults are made by
the kernel, not by the node:

- **partition**: iptables rules in a node's namespace drop every packet to and from the nodes
  it must not reach (both sides get the rules, so a partition holds while one side restarts);
- **loss**: iptables' `statistic` match drops a share of the packets a node sends and receives
  on eth0 (clients' and peers' alike);
- **slow**: a token-bucket filter (`tc qdisc ... tbf`) limits what a node sends to a low rate,
  so its replies and RPCs queue behind each other.

`tc netem`, the usual tool for delay and loss, needs the kernel's sch_netem, which the machines
this project runs on do not have (`Error: Specified qdisc kind is unknown`); iptables and tbf
cover loss and slowness with what they do have. `unavailable()` says why a machine cannot do
any of this.

Contract: one thread drives a NetnsNetwork; `up()` before the nodes start, `down()` after they
stop (it removes every namespace, veth and rule it made, also after a failed `up()`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

COMMAND_TIMEOUT_S = 10.0
MAX_NODES = 200  # addresses .11 .. .210 of one /24


class NetnsError(RuntimeError):
    """An `ip`, `iptables` or `tc` command failed; the message has the command and its error."""


def unavailable() -> str | None:
    """Why this machine cannot run nodes in namespaces (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/system-deps installs iproute2 and iptables)"
    probe = f"rkvprobe{os.getpid() % 100000}"
    try:
        _run(["ip", "netns", "add", probe])
        _run(["ip", "netns", "exec", probe, "iptables", "-L", "-n"])
    except NetnsError as exc:
        return f"cannot make a network namespace with iptables in it: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _run(cmd: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(cmd)}: {exc}") from None
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


class NetnsNetwork:
    """Namespaces, addresses and kernel-made faults for the nodes of one run."""

    def __init__(self, node_ids: Sequence[str], tag: int | None = None):
        if not 1 <= len(node_ids) <= MAX_NODES:
            raise ValueError(f"1..{MAX_NODES} nodes, got {len(node_ids)}")
        tag = os.getpid() % 10000 if tag is None else tag
        self.tag = tag
        # 10.<200 + tag // 256 % 50>.<tag % 256>.0/24: one subnet per run on this machine.
        self.subnet = f"10.{200 + tag // 256 % 50}.{tag % 256}"
        self.bridge = f"rkv{tag}br"
        self.node_ids = list(node_ids)
        self.gateway = f"{self.subnet}.1"
        self._index = {n: i for i, n in enumerate(self.node_ids)}
        self._made: list[str] = []  # namespaces made, for down()
        self.degraded: dict[str, str] = {}  # node -> "loss 10%" / "slow 64kbit"
        self.blocked: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ names

    def namespace(self, node_id: str) -> str:
        return f"rkv{self.tag}n{self._index[node_id]}"

    def address(self, node_id: str) -> str:
        return f"{self.subnet}.{11 + self._index[node_id]}"

    def exec_prefix(self, node_id: str) -> list[str]:
        """What runs a command inside the node's namespace (it execs: signals reach the node)."""
        return ["ip", "netns", "exec", self.namespace(node_id)]

    def _in(self, node_id: str, *cmd: str) -> str:
        return _run([*self.exec_prefix(node_id), *cmd])

    # ------------------------------------------------------------------ lifecycle

    def up(self) -> NetnsNetwork:
        try:
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            _run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])
            for i, node in enumerate(self.node_ids):
                ns, host_end, node_end = self.namespace(node), f"rkv{self.tag}h{i}", f"rkv{self.tag}p{i}"
                _run(["ip", "netns", "add", ns])
                self._made.append(ns)
                _run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", node_end])
                _run(["ip", "link", "set", host_end, "master", self.bridge])
                _run(["ip", "link", "set", host_end, "up"])
                _run(["ip", "link", "set", node_end, "netns", ns])
                self._in(node, "ip", "link", "set", node_end, "name", "eth0")
                self._in(node, "ip", "addr", "add", f"{self.address(node)}/24", "dev", "eth0")
                self._in(node, "ip", "link", "set", "eth0", "up")
                self._in(node, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Remove every namespace (their veth ends and rules go with them) and the bridge."""
        for i, ns in enumerate(self._made):
            # The host end first: deleting a veth end deletes its pair, even while a process
            # that has not exited yet keeps the namespace alive.
            subprocess.run(["ip", "link", "del", f"rkv{self.tag}h{i}"], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._made = []
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)

    # ------------------------------------------------------------------ faults

    def block(self, node_id: str, peers: Sequence[str]) -> None:
        """`node_id` neither sends to nor receives from `peers` (replaces earlier blocks)."""
        self._flush_chain(node_id, "RKV-PART")
        for peer in peers:
            addr = self.address(peer)
            self._in(node_id, "iptables", "-A", "RKV-PART", "-s", addr, "-j", "DROP")
            self._in(node_id, "iptables", "-A", "RKV-PART", "-d", addr, "-j", "DROP")
        self.blocked[node_id] = tuple(peers)

    def unblock(self, node_id: str) -> None:
        self._flush_chain(node_id, "RKV-PART")
        self.blocked.pop(node_id, None)

    def lossy(self, node_id: str, loss: float) -> None:
        """Drop each packet `node_id` sends or receives on eth0 with probability `loss`."""
        if not 0 < loss < 1:
            raise ValueError(f"loss must be between 0 and 1, got {loss}")
        self._flush_chain(node_id, "RKV-LOSS")
        for direction in ("-i", "-o"):
            self._in(node_id, "iptables", "-A", "RKV-LOSS", direction, "eth0", "-m", "statistic",
                     "--mode", "random", "--probability", f"{loss:.4f}", "-j", "DROP")
        self.degraded[node_id] = f"loss {loss:.0%}"

    def slow(self, node_id: str, rate_kbit: int) -> None:
        """Limit what `node_id` sends to `rate_kbit`; packets queue (up to 1 s) behind it."""
        self._in(node_id, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", f"{rate_kbit}kbit",
                 "burst", "4kb", "latency", "1000ms")
        self.degraded[node_id] = f"slow {rate_kbit} kbit/s"

    def restore(self, node_id: str) -> None:
        """End loss and slowness on `node_id` (partitions stay: see unblock)."""
        self._flush_chain(node_id, "RKV-LOSS")
        subprocess.run([*self.exec_prefix(node_id), "tc", "qdisc", "del", "dev", "eth0", "root"],
                       capture_output=True, check=False)
        self.degraded.pop(node_id, None)

    def _flush_chain(self, node_id: str, chain: str) -> None:
        """An empty chain of ours, hooked into INPUT and OUTPUT once."""
        listing = self._in(node_id, "iptables", "-S")
        if f"-N {chain}" not in listing:
            self._in(node_id, "iptables", "-N", chain)
            self._in(node_id, "iptables", "-I", "INPUT", "-j", chain)
            self._in(node_id, "iptables", "-I", "OUTPUT", "-j", chain)
        else:
            self._in(node_id, "iptables", "-F", chain)
