"""The measured systems: each starts its servers on loopback, says how to reach them, what it
runs with, and how much CPU its processes have used.

    with SYSTEMS["etcd"](tmp_dir, consistency="quorum") as system:
        system.driver_spec()            # DriverSpec for the client processes
        system.server_cpu_s()           # user + system CPU of its processes so far

| name | what runs |
|---|---|
| ringkv-cluster | 3 `ringkv serve` processes (LocalCluster), N=3, R and W from `--consistency` |
| ringkv-cluster-token | the same, each client process's tasks sharing one token-aware client (docs/client.md, "Token-aware routing") |
| ringkv-six, ringkv-six-token | 6 processes, N=3, tasks spread over the nodes / one token-aware client |
| ringkv-one, ringkv-quorum | the same at R=W=ONE, at R=W=QUORUM, whatever `--consistency` says |
| ringkv-session | the same at R=W=ONE, each client task in a session of its own through the Python client (docs/consistency.md, "Sessions") |
| ringkv-session-raw | the same, each task on a connection of its own that ran `RINGKV.CONSISTENCY SESSION` |
| ringkv-dc-local | 6 `ringkv serve` processes in 2 datacenters of 3 (dc1=3,dc2=3, N=6), 40 ms emulated WAN delay each way, R=W=LOCAL_QUORUM; half the client tasks on dc1's nodes, half on dc2's |
| ringkv-dc-each | the same cluster, W=EACH_QUORUM, R=LOCAL_QUORUM (strong in every datacenter, docs/multi-dc.md) |
| ringkv-dc-each-rw | the same cluster, R=W=EACH_QUORUM |
| ringkv-node | 1 `ringkv serve` process, defaults |
| redis | `redis-server` with its defaults (RDB snapshots, no AOF) |
| etcd | 3 `etcd` processes (Debian's etcd-server) forming one raft cluster |

Every system writes its data under the temporary directory it is given and is stopped (SIGTERM,
then waited for) when its `with` block ends.
"""

from __future__ import annotations

import abc
import http.client
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ringkv.bench.server import RedisServer, _version
from ringkv.bench.ycsb.drivers import DriverSpec
from ringkv.testing.launcher import (
    LocalCluster,
    NodeProcess,
    datacenter_layout,
    datacenter_of,
    dc_replicas_setting,
    free_port,
)

ETCD_READY_TIMEOUT_S = 30.0
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_tree_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes, their reaped children and their live
    descendants (a ringkv node runs compaction in worker processes). Linux /proc only; 0
    elsewhere."""
    stats: dict[int, tuple[int, float, float]] = {}  # pid -> (ppid, own cpu, reaped children's)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0.0
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces: the fields after it start past ")".
        fields = raw[raw.rindex(b")") + 2 :].split()
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        stats[int(name)] = (ppid, (utime + stime) / _CLK_TCK, (cutime + cstime) / _CLK_TCK)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total = 0.0
    todo = [p for p in pids if p in stats]
    for p in todo:
        total += stats[p][2]  # reaped children of the roots count once, here
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total


class System(abc.ABC):
    """A measured system; subclasses start and stop its servers."""

    name = ""
    kind = ""  # the driver kind

    def __init__(self, root: Path, consistency: str = "quorum"):
        self.root = Path(root) / self.name
        self.consistency = consistency

    def __enter__(self) -> System:
        self.root.mkdir(parents=True, exist_ok=True)
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @abc.abstractmethod
    def start(self) -> None:
        """Start the system's servers and wait until they answer."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop them and wait for them to exit."""

    @abc.abstractmethod
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Where clients reach it, one (host, port) per server."""

    @abc.abstractmethod
    def pids(self) -> list[int]:
        """The servers' process ids, for the CPU figures."""

    def driver_spec(self) -> DriverSpec:
        return DriverSpec(self.kind, self.addresses())

    def server_cpu_s(self) -> float:
        return process_tree_cpu_s(self.pids())

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why this system cannot run here (a missing program), or None."""
        return None

    @abc.abstractmethod
    def version(self) -> str:
        """Each system implements it."""

    @abc.abstractmethod
    def settings(self) -> str:
        """Each system implements it."""


def _ringkv_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ringkv {version('ringkv')}"
    except PackageNotFoundError:
        return "ringkv (not installed)"


_QUIET = {"http_enabled": "false", "log_level": "warning"}


class RingkvCluster(System):
    name = "ringkv-cluster"
    kind = "ringkv"
    nodes = 3
    token_aware = False  # the client sends each request to one of its key's replicas
    node_env: dict[str, str] | None = None  # extra environment of the nodes (RINGKV_PURE=1 to profile)

    def start(self) -> None:
        self.cluster = LocalCluster(self.root, nodes=self.nodes, replicas=3, read_consistency=self.consistency,
                                    write_consistency=self.consistency, env=self.node_env, **_QUIET)
        self.cluster.start()

    def driver_spec(self) -> DriverSpec:
        return DriverSpec(self.kind, self.addresses(), {"token_aware": True} if self.token_aware else {})

    def stop(self) -> None:
        self.cluster.stop()

    def addresses(self):
        return tuple(("127.0.0.1", n.resp_port) for n in self.cluster.nodes)

    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.cluster.nodes if n.proc is not None]

    def version(self) -> str:
        return _ringkv_version()

    def settings(self) -> str:
        how = ("each client process's tasks share one token-aware client (`token_aware=True`), "
               "which sends each request to one of its key's replicas at random, and each consensus "
               "command (INCR, CAS, a SERIAL read) to the key's proposer, its first replica"
               if self.token_aware else f"each client process spreads its tasks over the {self.nodes} nodes")
        return (f"{self.nodes} `ringkv serve` processes on loopback, N=3, R=W={self.consistency.upper()} "
                "(node defaults `read_consistency`/`write_consistency`), WAL fsynced every 100 ms "
                f"(`sync = interval`, the default), HTTP off; {how}")


class RingkvClusterToken(RingkvCluster):
    name = "ringkv-cluster-token"
    token_aware = True


class RingkvSix(RingkvCluster):
    """Six nodes, N=3: a coordinator holds half the keys, so routing by key saves hops."""

    name = "ringkv-six"
    nodes = 6


class RingkvSixToken(RingkvSix):
    name = "ringkv-six-token"
    token_aware = True


class RingkvFixedLevel(RingkvCluster):
    """The 3-node cluster at a level of its own, so that levels compare in one run."""

    level = ""

    def __init__(self, root: Path, consistency: str = "quorum"):
        super().__init__(root, self.level)


class RingkvOne(RingkvFixedLevel):
    name = "ringkv-one"
    level = "one"


class RingkvQuorum(RingkvFixedLevel):
    name = "ringkv-quorum"
    level = "quorum"


class RingkvSessionCluster(RingkvFixedLevel):
    """At ONE, each client task in a session of its own (drivers.py, "Sessions")."""

    name = "ringkv-session"
    level = "one"
    sessions = "client"

    def driver_spec(self) -> DriverSpec:
        return DriverSpec(self.kind, self.addresses(), {"sessions": self.sessions})

    def settings(self) -> str:
        how = ("through a session view of the Python client (`client.session()`): a read goes "
               "alone on the pooled connection that holds the session, a write is followed by "
               "`RINGKV.SESSION TOKEN CHANGED` in the same pipeline, and a connection that holds "
               "another session hands its token back before it is resumed (docs/client.md)"
               if self.sessions == "client" else
               "on a connection of its own that ran `RINGKV.CONSISTENCY SESSION` (no token travels)")
        return (super().settings() + "; each client task is one session for the whole run, " + how
                + ", node defaults `session_max_keys` 128 and `session_wait_ms` 1000")


class RingkvSessionRaw(RingkvSessionCluster):
    name = "ringkv-session-raw"
    sessions = "connection"


class RingkvDatacenters(RingkvCluster):
    """Two datacenters of three nodes each on loopback, three copies of every key in each, the
    WAN between them emulated in the nodes (`emulated_wan_delay_ms`: this machine's kernel has
    no tc netem, docs/multi-dc.md). Its levels are its own; `--consistency` does not change
    them.

    Clients are deployed as an application running in both datacenters would be: each task
    talks to one node only, and the addresses alternate between the datacenters (n1, n4, n2,
    n5, n3, n6), so with task i on address i mod 6 each client process has as many tasks in
    dc1 as in dc2, each talking to a node of its own datacenter."""

    name = "ringkv-dc-local"
    DATACENTERS = 2
    NODES_PER_DC = 3
    COPIES_PER_DC = 3
    WAN_DELAY_MS = 40  # each way: a round trip between the datacenters takes 80 ms more
    read_level = "local_quorum"
    write_level = "local_quorum"

    def __init__(self, root: Path, consistency: str = "quorum"):
        super().__init__(root, self.read_level)

    def make_cluster(self) -> LocalCluster:
        """The cluster, not started."""
        nodes = self.DATACENTERS * self.NODES_PER_DC
        locations = datacenter_layout(nodes, self.DATACENTERS)
        counts = dict.fromkeys(sorted({datacenter_of(loc) for loc in locations}), self.COPIES_PER_DC)
        return LocalCluster(
            self.root, nodes=nodes, locations=locations, replicas=sum(counts.values()),
            dc_replicas=dc_replicas_setting(counts), emulated_wan_delay_ms=self.WAN_DELAY_MS,
            read_consistency=self.read_level, write_consistency=self.write_level, **_QUIET)

    def start(self) -> None:
        self.cluster = self.make_cluster()
        self.cluster.start()

    def ordered_nodes(self) -> list[NodeProcess]:
        """The nodes, taking each datacenter in turn: dc1's first, dc2's first, dc1's second..."""
        by_dc = list(self.cluster.datacenters.values())
        out = []
        for i in range(max(len(ids) for ids in by_dc)):
            out += [self.cluster.node(ids[i]) for ids in by_dc if i < len(ids)]
        return out

    def addresses(self):
        return tuple(("127.0.0.1", n.resp_port) for n in self.ordered_nodes())

    def settings(self) -> str:
        dcs = self.DATACENTERS
        nodes = dcs * self.NODES_PER_DC
        counts = ",".join(f"dc{d + 1}={self.COPIES_PER_DC}" for d in range(dcs))
        levels = (f"R=W={self.read_level.upper()}" if self.read_level == self.write_level else
                  f"W={self.write_level.upper()}, R={self.read_level.upper()}")
        return (f"{nodes} `ringkv serve` processes on loopback in {dcs} datacenters of "
                f"{self.NODES_PER_DC} (n1-n3 in dc1, n4-n6 in dc2, each node a rack of its own), "
                f"`dc_replicas = \"{counts}\"` (N={nodes}), `emulated_wan_delay_ms = "
                f"{self.WAN_DELAY_MS}` (every RPC to or from the other datacenter held "
                f"{self.WAN_DELAY_MS} ms each way, so a round trip across costs "
                f"{2 * self.WAN_DELAY_MS} ms more), {levels} (node defaults), WAL fsynced every "
                "100 ms, HTTP off; each client task talks to one node, half of them to dc1's "
                "nodes and half to dc2's (an application deployed in both datacenters, each "
                "copy using its own datacenter's nodes)")


class RingkvDatacentersEach(RingkvDatacenters):
    """The same, writes at EACH_QUORUM: with reads at LOCAL_QUORUM, strong in every datacenter."""

    name = "ringkv-dc-each"
    write_level = "each_quorum"


class RingkvDatacentersEachReads(RingkvDatacenters):
    """The same, reads and writes at EACH_QUORUM."""

    name = "ringkv-dc-each-rw"
    read_level = "each_quorum"
    write_level = "each_quorum"


class RingkvNode(System):
    name = "ringkv-node"
    kind = "ringkv"

    def start(self) -> None:
        self.node = NodeProcess(self.root / "n1", **_QUIET)
        self.node.start()

    def stop(self) -> None:
        self.node.stop()

    def addresses(self):
        return (("127.0.0.1", self.node.resp_port),)

    def pids(self) -> list[int]:
        return [self.node.proc.pid] if self.node.proc is not None else []

    def version(self) -> str:
        return _ringkv_version()

    def settings(self) -> str:
        return "one `ringkv serve` process, defaults (WAL fsynced every 100 ms), HTTP off"


class Redis(System):
    name = "redis"
    kind = "redis"

    @staticmethod
    def unavailable_reason() -> str | None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            return "redis-server/redis-cli not on PATH (Debian: redis-server, redis-tools)"
        return None

    def start(self) -> None:
        self.server = RedisServer(str(self.root))
        self.server.__enter__()

    def stop(self) -> None:
        self.server.__exit__(None, None, None)

    def addresses(self):
        return (("127.0.0.1", self.server.port),)

    def pids(self) -> list[int]:
        return [self.server.proc.pid] if self.server.proc is not None else []

    def version(self) -> str:
        return _version(["redis-server", "--version"])

    def settings(self) -> str:
        return ("`redis-server` defaults (one thread serving commands, RDB snapshots, no AOF, so "
                "no fsync per write); records are strings, plus one sorted set indexing every key "
                "for scans")


class EtcdCluster(System):
    """Three etcd members on loopback, each with its own client port, peer port and data dir."""

    name = "etcd"
    kind = "etcd"
    MEMBERS = 3

    @staticmethod
    def unavailable_reason() -> str | None:
        if shutil.which("etcd") is None:
            return "etcd not on PATH (Debian: etcd-server)"
        return None

    def start(self) -> None:
        self.members = [(f"e{i + 1}", free_port(), free_port()) for i in range(self.MEMBERS)]
        initial = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in self.members)
        self.procs: list[subprocess.Popen] = []
        for name, client, peer in self.members:
            log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop)
            self.procs.append(subprocess.Popen(
                ["etcd", "--name", name, "--data-dir", str(self.root / name),
                 "--listen-client-urls", f"http://127.0.0.1:{client}",
                 "--advertise-client-urls", f"http://127.0.0.1:{client}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", initial, "--initial-cluster-token", "ringkv-bench-ycsb",
                 "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn"],
                stdout=log, stderr=subprocess.STDOUT))
            log.close()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + ETCD_READY_TIMEOUT_S
        pending = {client for _, client, _ in self.members}
        while pending and time.monotonic() < deadline:
            for proc, (name, _, _) in zip(self.procs, self.members):
                if proc.poll() is not None:
                    raise RuntimeError(f"etcd member {name} exited with {proc.returncode}: "
                                       f"{self._log_tail(name)}")
            for port in list(pending):
                # http.client, not urllib: no proxy from the environment for a loopback check.
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
                try:
                    conn.request("GET", "/health")
                    r = conn.getresponse()
                    if r.status == 200 and json.loads(r.read()).get("health") == "true":
                        pending.discard(port)
                except (OSError, ValueError, http.client.HTTPException):
                    pass
                finally:
                    conn.close()
            time.sleep(0.1)
        if pending:
            raise TimeoutError(f"etcd cluster not healthy after {ETCD_READY_TIMEOUT_S} s: "
                               f"{self._log_tail(self.members[0][0])}")

    def _log_tail(self, name: str) -> str:
        try:
            return (self.root / f"{name}.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        # One member at a time: stopped together, a leader waits about 7 s trying to hand its
        # leadership to a follower that is stopping too; stopped in turn, each takes ~0.1 s.
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def addresses(self):
        return tuple(("127.0.0.1", client) for _, client, _ in self.members)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def version(self) -> str:
        return _version(["etcd", "--version"])

    def settings(self) -> str:
        return ("3 `etcd` processes on loopback forming one raft cluster, defaults (every write "
                "committed by a majority and fsynced to each member's WAL before the reply; reads "
                "linearizable), spoken to through the v3 JSON gateway on the client port (aiohttp); each "
                "client process spreads its tasks over the three members (followers forward "
                "writes to the leader)")


SYSTEMS: dict[str, type[System]] = {
    s.name: s for s in (RingkvCluster, RingkvClusterToken, RingkvSix, RingkvSixToken, RingkvOne, RingkvQuorum,
                        RingkvSessionCluster,
                        RingkvSessionRaw, RingkvDatacenters, RingkvDatacentersEach,
                        RingkvDatacentersEachReads, RingkvNode, Redis, EtcdCluster)
}
