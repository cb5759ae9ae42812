"""The nemesis: applies a fault schedule (schedule.py) to a running LocalCluster.

It keeps the faults each node should have right now (blocked peers, clock skew) and brings a
node in line whenever it can take commands: at once when it is up, after SIGCONT when it was
paused, after its restart when it was killed (a new process starts with no faults, so a
killed node in a partition is cut off again as soon as it answers; until then, for the
second or so of its start, it is not). A partition needs only one side's nodes to block the
other (node/faults.py refuses both directions), so it holds while a node of one side is down.

Every action goes into the history (History.fault), with whether it worked. `run` executes
the schedule until it ends or `stop` is set; `heal` ends every fault: resume the paused,
restart the killed, heal partitions, clocks back to 0, disks emptied.

Contract: one thread calls run() and then heal(); nothing here is safe to call concurrently.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from ringkv.chaos.history import History
from ringkv.chaos.schedule import FaultEvent
from ringkv.testing.launcher import LocalCluster, NodeProcess

COMMAND_TIMEOUT_S = 2.0
BALLAST = "chaos-ballast"


class DiskFiller:
    """Fills a node's data directory, a small tmpfs mounted by the runner, with a ballast
    file until the device is full (ENOSPC), and frees it again."""

    def __init__(self, data_dirs: dict[str, Path]):
        self.data_dirs = data_dirs

    def fill(self, node_id: str) -> str:
        path = self.data_dirs[node_id] / BALLAST
        written = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # Big chunks first, then smaller ones: the device ends up full to the byte.
            for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                chunk = b"\0" * size
                try:
                    while True:
                        written += os.write(fd, chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        return f"ballast {written / (1 << 20):.1f} MiB"

    def free(self, node_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.data_dirs[node_id] / BALLAST).unlink()


class Nemesis:
    def __init__(self, cluster: LocalCluster, history: History, schedule: list[FaultEvent],
                 disk: DiskFiller | None = None, log: Callable[[str], None] = print, network=None):
        self.cluster = cluster
        # chaos/netns.NetnsNetwork when each node has a network namespace: partitions, loss
        # and slowness are then made by the kernel (iptables, tbf), not by the nodes.
        self.network = network
        self.history = history
        self.schedule = schedule
        self.disk = disk
        self.log = log
        self.killed: set[str] = set()
        self.paused: set[str] = set()
        self.full: set[str] = set()
        self.blocked: dict[str, tuple[str, ...]] = {}
        self.skew: dict[str, int] = {}
        self.applied = 0  # fault events begun

    # ------------------------------------------------------------------ the schedule

    def run(self, stop: threading.Event) -> None:
        steps: list[tuple[float, int, int, FaultEvent]] = []
        for i, e in enumerate(self.schedule):
            steps.append((e.start_s, 1, i, e))
            steps.append((e.end_s, 0, i, e))  # at equal times, ends go before begins
        steps.sort(key=lambda s: (s[0], s[1], s[2]))
        for at_s, begin, _, event in steps:
            wait_s = at_s - self.history.now()
            if wait_s > 0 and stop.wait(wait_s):
                return
            if stop.is_set():
                return
            try:
                if begin:
                    self.applied += 1
                    self.log(f"nemesis: {event.describe()}")
                    self._begin(event)
                else:
                    self._end(event)
            except Exception as exc:  # a fault that failed is logged, the run goes on
                self.history.fault("error", list(event.nodes), event.describe(), False, repr(exc))

    def _begin(self, e: FaultEvent) -> None:
        node = e.nodes[0]
        if e.kind == "kill":
            self.cluster.node(node).kill()
            self.killed.add(node)
            self.history.fault("kill", [node])
        elif e.kind == "pause":
            self.cluster.node(node).pause()
            self.paused.add(node)
            self.history.fault("pause", [node])
        elif e.kind == "partition":
            self.blocked = e.blocked_map()
            self.history.fault("partition", list(e.nodes), e.describe())
            for n in e.nodes:
                if self.network is not None:
                    self.network.block(n, self.blocked.get(n, ()))
                else:
                    self._sync(n)
        elif e.kind in ("loss", "slow"):
            if self.network is None:
                self.history.fault(e.kind, [node], "needs nodes in network namespaces (--netns)", ok=False)
            elif e.kind == "loss":
                self.network.lossy(node, e.amount)
                self.history.fault("loss", [node], f"{e.amount:.0%} of packets")
            else:
                self.network.slow(node, int(e.amount))
                self.history.fault("slow", [node], f"{e.amount:g} kbit/s")
        elif e.kind == "skew":
            self.skew[node] = e.skew_ms
            self.history.fault("skew", [node], f"{e.skew_ms} ms")
            self._sync(node)
        elif e.kind == "disk":
            self._fill(node)

    def _end(self, e: FaultEvent) -> None:
        node = e.nodes[0]
        if e.kind == "kill":
            self._restart(node)
        elif e.kind == "pause":
            self._resume(node)
        elif e.kind == "partition":
            self.blocked = {}
            self.history.fault("heal", list(e.nodes))
            for n in e.nodes:
                if self.network is not None:
                    self.network.unblock(n)
                else:
                    self._sync(n)
        elif e.kind in ("loss", "slow"):
            if self.network is not None:
                self.network.restore(node)
                self.history.fault("restore", [node], e.kind)
        elif e.kind == "skew":
            self.skew.pop(node, None)
            self.history.fault("unskew", [node])
            self._sync(node, reset_skew=True)
        elif e.kind == "disk":
            self._free(node)

    # ------------------------------------------------------------------ healing

    def heal(self) -> None:
        """End every fault still on, whatever the schedule says."""
        for node in sorted(self.paused):
            self._resume(node)
        for node in sorted(self.killed):
            self._restart(node)
        for node in sorted(self.full):
            self._free(node)
        self.blocked = {}
        if self.network is not None:
            for n in self.cluster.nodes:
                self.network.unblock(n.node_id)
                self.network.restore(n.node_id)
        skewed = set(self.skew)
        self.skew = {}
        self.history.fault("heal-all", [n.node_id for n in self.cluster.nodes])
        for n in self.cluster.nodes:
            self._sync(n.node_id, reset_skew=n.node_id in skewed)
        # Whatever the nemesis believed, make sure no process is left stopped.
        for n in self.cluster.nodes:
            if n.running:
                n.resume()

    # ------------------------------------------------------------------ actions

    def _restart(self, node_id: str) -> None:
        node = self.cluster.node(node_id)
        try:
            node.start(wait=True)
        except Exception as exc:
            self.history.fault("start", [node_id], ok=False, error=str(exc)[-500:])
            raise
        self.killed.discard(node_id)
        self.history.fault("start", [node_id])
        self._sync(node_id)

    def _resume(self, node_id: str) -> None:
        self.cluster.node(node_id).resume()
        self.paused.discard(node_id)
        self.history.fault("resume", [node_id])
        self._sync(node_id)

    def _fill(self, node_id: str) -> None:
        if self.disk is None:
            self.history.fault("fill", [node_id], "no tmpfs data directories", ok=False)
            return
        detail = self.disk.fill(node_id)
        self.full.add(node_id)
        self.history.fault("fill", [node_id], detail)

    def _free(self, node_id: str) -> None:
        """Free the disk and restart the node: an engine that met ENOSPC in its log or a
        flush turns read-only until restarted (docs/storage.md), as an operator would."""
        if self.disk is not None:
            self.disk.free(node_id)
        self.full.discard(node_id)
        self.history.fault("free", [node_id])
        node = self.cluster.node(node_id)
        if self.disk is not None and node.running:
            node.kill()
            self.killed.add(node_id)
            self.history.fault("kill", [node_id], "restart after a full disk")
            self._restart(node_id)

    def _sync(self, node_id: str, reset_skew: bool = False) -> None:
        """Give a node the faults it should have now, if it can take commands."""
        if node_id in self.killed or node_id in self.paused:
            return
        node = self.cluster.node(node_id)
        commands: list[tuple[str, ...]] = [("HEAL",)]
        blocked = self.blocked.get(node_id, ()) if self.network is None else ()
        if blocked:
            commands.append(("PARTITION", *blocked))
        if node_id in self.skew:
            commands.append(("CLOCK_SKEW", str(self.skew[node_id])))
        elif reset_skew:
            commands.append(("CLOCK_SKEW", "0"))
        try:
            fault_commands(node, commands)
        except redis.RedisError as exc:
            self.history.fault("sync", [node_id], repr(commands), False, str(exc))


def fault_commands(node: NodeProcess, commands: list[tuple[str, ...]],
                   timeout_s: float = COMMAND_TIMEOUT_S, attempts: int = 3) -> None:
    """Send RINGKV.FAULT commands to one node, on one connection (retried from the first on a
    connection failure: every command is idempotent)."""
    for attempt in range(attempts):
        r = redis.Redis(host=node.host, port=node.resp_port, socket_timeout=timeout_s,
                        socket_connect_timeout=timeout_s, single_connection_client=True)
        try:
            for cmd in commands:
                r.execute_command("RINGKV.FAULT", *cmd)
            return
        except (redis.ConnectionError, redis.TimeoutError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)
        finally:
            r.close()
