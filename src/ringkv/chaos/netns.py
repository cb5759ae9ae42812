"""Real networks for chaos runs and `ringkv cluster up --netns`: one Linux network namespace
per node (root only).

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

- **WAN delay** (`delay_between`): packets a node sends to a node of another group (another
  datacenter) wait in `tc netem`; packets to its own group and to the root namespace (clients)
  do not. Each node's eth0 gets an htb root with two classes: 1:1, the default, undelayed, and
  1:2, whose leaf is netem, chosen by u32 filters on the far nodes' addresses. `shape_between`
  builds the same tree with any leaf qdisc (tbf, say), which is how it is tested where netem
  is missing.

`tc netem` needs the kernel's sch_netem, which the machines this project runs on do not have
(`Error: Specified qdisc kind is unknown`): `netem_available()` probes for it once, and callers
fall back (`cluster up --netns` keeps the nodes' in-process `emulated_wan_delay_ms`); iptables
and tbf cover loss and slowness with what every machine has. `unavailable()` says why a
machine cannot do any of this.

Contract: one thread drives a NetnsNetwork; `up()` before the nodes start, `down()` after they
stop (it removes every namespace, veth and rule it made, also after a failed `up()`, and
nothing it did not make).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence

COMMAND_TIMEOUT_S = 10.0
MAX_NODES = 200  # addresses .11 .. .210 of one /24
# Tags of networks that outlive the process that made them (`ringkv cluster up --netns` records
# its tag, so a restart gets the same addresses): their subnets, 10.240-249.x.0/24, are never
# those of a tag taken from a pid (< 10000: 10.200-239.x.0/24), as chaos runs take theirs.
RECORDED_TAGS = range(10240, 12800)
NETEM_LIMIT_PACKETS = 10_000  # what netem holds back at once (its default, 1000, drops bursts)
_NAMESPACE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


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


@functools.cache
def netem_available() -> bool:
    """Whether this kernel has sch_netem: a `tc qdisc ... netem` in a scratch namespace, tried
    once per process. REQUIRES: unavailable() is None."""
    probe = f"rkvnetem{os.getpid() % 100000}"
    try:
        _run(["ip", "netns", "add", probe])
        _run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
    except NetnsError:
        return False
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return True


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

    def __init__(self, node_ids: Sequence[str], tag: int | None = None, *,
                 namespace_names: Mapping[str, str] | None = None, slots: Mapping[str, int] | None = None):
        """`tag` (default: from the pid, < 10000) names the bridge (`rkv<tag>br`) and the veths
        and picks the subnet; `namespace_names`: each node's namespace name (default
        `rkv<tag>n<position>`); `slots`: each node's number in the subnet, 1..MAX_NODES,
        its address `.<10 + slot>` (default: position + 1), so that a caller whose set of nodes
        changes can keep each node's address."""
        if not 1 <= len(node_ids) <= MAX_NODES:
            raise ValueError(f"1..{MAX_NODES} nodes, got {len(node_ids)}")
        tag = os.getpid() % 10000 if tag is None else tag
        if not 0 <= tag < RECORDED_TAGS.stop:
            raise ValueError(f"tag must be 0..{RECORDED_TAGS.stop - 1}, got {tag}")
        self.tag = tag
        # 10.<200 + tag // 256 % 50>.<tag % 256>.0/24: one subnet per run on this machine.
        self.subnet = f"10.{200 + tag // 256 % 50}.{tag % 256}"
        self.bridge = f"rkv{tag}br"
        self.node_ids = list(node_ids)
        self.gateway = f"{self.subnet}.1"
        self._index = {n: i for i, n in enumerate(self.node_ids)}
        self._names = {n: f"rkv{tag}n{i}" for n, i in self._index.items()}
        self._names.update(namespace_names or {})
        self._slots = {n: i + 1 for n, i in self._index.items()}
        self._slots.update(slots or {})
        if sorted(self._names) != sorted(self.node_ids):
            raise ValueError(f"namespace names for nodes that are not in the network: {dict(namespace_names or {})}")
        for node, name in self._names.items():
            if not _NAMESPACE_NAME.fullmatch(name):
                raise ValueError(f"namespace name of {node} must be 1-64 letters, digits, '_', '.' or '-' "
                                 f"(not first), got {name!r}")
        if len(set(self._names.values())) != len(self._names):
            raise ValueError(f"two nodes have the same namespace name: {self._names}")
        if sorted(self._slots) != sorted(self.node_ids) or len(set(self._slots.values())) != len(self._slots) \
                or not all(1 <= s <= MAX_NODES for s in self._slots.values()):
            raise ValueError(f"slots must give each node a distinct number in 1..{MAX_NODES}, got {dict(slots or {})}")
        self._made: list[str] = []  # namespaces made, for down()
        self._bridge_made = False  # down() removes the bridge only if up() made it
        self.degraded: dict[str, str] = {}  # node -> "loss 10%" / "slow 64kbit"
        self.blocked: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ names

    def namespace(self, node_id: str) -> str:
        return self._names[node_id]

    def address(self, node_id: str) -> str:
        return f"{self.subnet}.{10 + self._slots[node_id]}"

    def exec_prefix(self, node_id: str) -> list[str]:
        """What runs a command inside the node's namespace (it execs: signals reach the node)."""
        return ["ip", "netns", "exec", self.namespace(node_id)]

    def _in(self, node_id: str, *cmd: str) -> str:
        return _run([*self.exec_prefix(node_id), *cmd])

    # ------------------------------------------------------------------ lifecycle

    def in_use(self) -> list[str]:
        """What of this network's bridge, namespaces and subnet this machine has already, each
        as a phrase ("bridge rkv7br", "namespace rkv7n0", "subnet 10.200.7.0/24 (on eth1)");
        [] when `up()` would collide with nothing."""
        taken = []
        links = {line.split(":")[1].strip().split("@")[0]
                 for line in _run(["ip", "-o", "link", "show"]).splitlines() if line.count(":") >= 2}
        if self.bridge in links:
            taken.append(f"bridge {self.bridge}")
        taken += [f"veth {link}" for link in sorted(links) if re.fullmatch(rf"rkv{self.tag}[hp][0-9]+", link)]
        spaces = {line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()}
        taken += [f"namespace {self.namespace(n)}" for n in self.node_ids if self.namespace(n) in spaces]
        for line in _run(["ip", "-o", "-4", "addr", "show"]).splitlines():
            fields = line.split()
            if "inet" in fields and fields[fields.index("inet") + 1].startswith(f"{self.subnet}."):
                taken.append(f"subnet {self.subnet}.0/24 (on {fields[1]})")
                break
        return taken

    def up(self) -> NetnsNetwork:
        try:
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            self._bridge_made = True
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
        if self._bridge_made:  # not another run's, found in place by a failed up()
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
            self._bridge_made = False

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

    def delay_between(self, groups: Mapping[str, str], delay_ms: int) -> None:
        """Hold every packet a node sends to a node of another group (`groups`: node -> its
        datacenter, say) `delay_ms` in `tc netem`, so a round trip between groups takes
        2 * delay_ms more; packets within a group and to the root namespace go undelayed.
        REQUIRES: up(), netem_available() (else NetnsError: "Specified qdisc kind is unknown");
        call once, before `slow` or `restore` on these nodes (they replace the same root qdisc)."""
        if not 0 < delay_ms <= 60_000:
            raise ValueError(f"delay must be 1..60000 ms, got {delay_ms}")
        self.shape_between(groups, ["netem", "delay", f"{delay_ms}ms", "limit", str(NETEM_LIMIT_PACKETS)])

    def shape_between(self, groups: Mapping[str, str], leaf: Sequence[str]) -> None:
        """Send every packet a node sends to a node of another group through the qdisc `leaf`
        (its kind and parameters, as `tc qdisc add ... parent 1:2` takes them), the rest
        through the default class: on each node's eth0, an htb root `1:` with classes 1:1
        (default) and 1:2 (the leaf, handle 20:), and one u32 filter per far node's address
        choosing 1:2. Both classes may use the link's whole speed: only the leaf shapes."""
        if sorted(groups) != sorted(self.node_ids):
            raise ValueError(f"groups must name each node once: {sorted(self.node_ids)}, got {sorted(groups)}")
        for node in self.node_ids:
            far = [self.address(peer) for peer in self.node_ids if groups[peer] != groups[node]]
            if not far:
                continue
            self._in(node, "tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1")
            for cls in ("1:1", "1:2"):
                # quantum: htb's default (rate / r2q) exceeds its limit at this rate and warns.
                self._in(node, "tc", "class", "add", "dev", "eth0", "parent", "1:", "classid", cls, "htb",
                         "rate", "10gbit", "quantum", "60000")
            self._in(node, "tc", "qdisc", "add", "dev", "eth0", "parent", "1:2", "handle", "20:", *leaf)
            for address in far:
                self._in(node, "tc", "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1",
                         "u32", "match", "ip", "dst", f"{address}/32", "flowid", "1:2")

    def _flush_chain(self, node_id: str, chain: str) -> None:
        """An empty chain of ours, hooked into INPUT and OUTPUT once."""
        listing = self._in(node_id, "iptables", "-S")
        if f"-N {chain}" not in listing:
            self._in(node_id, "iptables", "-N", chain)
            self._in(node_id, "iptables", "-I", "INPUT", "-j", chain)
            self._in(node_id, "iptables", "-I", "OUTPUT", "-j", chain)
        else:
            self._in(node_id, "iptables", "-F", chain)
