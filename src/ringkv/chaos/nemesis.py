"""The nemesis: applies a fault schedule (schedule.py) to a running LocalCluster, and counts
the faults that took effect.

It keeps the faults each node should have right now (blocked peers, clock skew) and brings a
node in line whenever it can take commands: at once when it is up, after SIGCONT when it was
paused, after its restart when it was killed (a new process starts with no faults, so a
killed node in a partition is cut off again as soon as it answers; until then, for the
second or so of its start, it is not). A partition needs only one side's nodes to block the
other (node/faults.py refuses both directions), so it holds while a node of one side is down.
Clock skew is `RINGKV.FAULT CLOCK_SKEW`, which moves the node's one clock (ringkv/clock.py):
TTL expiry, the failure detector, the hint window and the hybrid logical clock all see it.

Applied, not attempted. A fault counts as applied only once it is seen to hold: the killed
process has exited, the paused one is in the stopped state (/proc), every node of a partition
answered its RINGKV.FAULT with the blocks asked for (or, for a node that was down, its peer on
the other side did), the skewed node answered with the skew asked for, the disk has no byte
left, each node of a rolling restart came back as a new process, a membership change's
operation finished (the node left, or a member removed it) and its node was stopped. A fault that is not (an
error, a node that never came back while the fault lasted) is counted as not applied, logged
as `NOT APPLIED` and recorded in the history with the reason; the run goes on, and the smoke
tests assert that every fault begun was applied.

Every action goes into the history (History.fault), with whether it worked. `run` executes
the schedule until it ends or `stop` is set; `heal` ends every fault: resume the paused,
restart the killed, heal partitions, clocks back to 0, disks emptied; and raises if a node
cannot be brought back to no fault at all (the checks after it would mean nothing).

A datacenter's faults (the cluster's nodes in datacenters: testing/launcher.LocalCluster's
`locations`): `dc-partition` is a partition whose sides are one datacenter and the rest, made
and healed as any partition; `dc-kill` SIGKILLs every node of one datacenter (applied once
every process has exited) and at its end starts them all at once, then waits for each, so
the datacenter comes back in the time of its slowest node rather than the sum of them.

A membership change (`membership/decommission`, `membership/remove`) takes a node out for
good: decommissioned (RINGKV.ADMIN DECOMMISSION ASYNC, followed to its end) and stopped, or
killed and removed by a live member (RINGKV.ADMIN REMOVE ... FORCE); its data directory is then
wiped. At the fault's end (or at `heal`) the node starts again, empty, as a joining node of the
same id, and the fault's end waits until it serves as a member (docs/membership.md: a former
member is taken back only as a new node joining).

Contract: one thread calls run() and then heal(); nothing here is safe to call concurrently.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
import redis.backoff
import redis.retry

from ringkv.chaos.history import History
from ringkv.chaos.schedule import FaultEvent
from ringkv.testing.launcher import LocalCluster, NodeProcess

COMMAND_TIMEOUT_S = 2.0
MEMBERSHIP_TIMEOUT_S = 90.0  # a decommission to finish, a node joining again to turn normal
STOPPED_WITHIN_S = 2.0  # how long a SIGSTOPped process may take to show as stopped in /proc
TERM_TIMEOUT_S = 20.0  # a clean shutdown (SIGTERM) of a rolling restart, before SIGKILL
BALLAST = "chaos-ballast"

APPLIED, PENDING, NOT_APPLIED = "applied", "pending", "not applied"


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

    def free_bytes(self, node_id: str) -> int:
        st = os.statvfs(self.data_dirs[node_id])
        return st.f_bavail * st.f_frsize

    def free(self, node_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.data_dirs[node_id] / BALLAST).unlink()


def process_stopped(pid: int) -> bool:
    """Whether the process is in the stopped state (SIGSTOP took effect): /proc/<pid>/stat's
    third field is T."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # The command name is in parentheses and may hold spaces: the state follows the last ')'.
    return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] in (b"T", b"t")


class FaultNotApplied(Exception):
    """A fault could not be made to hold; the message says why."""


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
        self.left: set[str] = set()  # out of the cluster by a membership change, data wiped
        self.blocked: dict[str, tuple[str, ...]] = {}  # what each node should block now
        self.skew: dict[str, int] = {}  # what each node's skew should be now
        # What each node has been seen to enforce (its RINGKV.FAULT answers, or iptables).
        self.held_blocked: dict[str, tuple[str, ...]] = {}
        self.held_skew: dict[str, int] = {}
        self.status: dict[int, str] = {}  # schedule index -> applied | pending | not applied
        self.reasons: dict[int, str] = {}  # why a fault is not applied
        # When each applied fault was seen to hold (history time): what happened under it
        # is what happened from then on.
        self.applied_at_s: dict[int, float] = {}
        self._active: set[int] = set()
        self._stop = threading.Event()

    # ------------------------------------------------------------------ counts

    @property
    def begun(self) -> int:
        """Faults the schedule began (attempted)."""
        return len(self.status)

    @property
    def applied(self) -> int:
        """Faults seen to take effect."""
        return sum(s == APPLIED for s in self.status.values())

    def kinds(self, status: str = APPLIED) -> dict[str, int]:
        out: dict[str, int] = {}
        for i, s in self.status.items():
            if s == status:
                out[self.schedule[i].label()] = out.get(self.schedule[i].label(), 0) + 1
        return out

    def not_applied(self) -> list[tuple[FaultEvent, str]]:
        return [(self.schedule[i], self.reasons.get(i, "")) for i, s in sorted(self.status.items())
                if s != APPLIED]

    # ------------------------------------------------------------------ the schedule

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        steps: list[tuple[float, int, int, FaultEvent]] = []
        for i, e in enumerate(self.schedule):
            steps.append((e.start_s, 1, i, e))
            steps.append((e.end_s, 0, i, e))  # at equal times, ends go before begins
        steps.sort(key=lambda s: (s[0], s[1], s[2]))
        for at_s, begin, i, event in steps:
            wait_s = at_s - self.history.now()
            if wait_s > 0 and stop.wait(wait_s):
                break
            if stop.is_set():
                break
            if begin:
                self.log(f"nemesis: {event.describe()}")
                self.status[i] = PENDING
                self._active.add(i)
                try:
                    self._begin(event)
                except Exception as exc:  # counted as not applied; the run goes on
                    self._not_applied(i, f"{type(exc).__name__}: {exc}"[:500])
                    continue
                self._settle(i)
            elif i in self._active:
                self._active.discard(i)
                try:
                    self._end(event)
                except Exception as exc:
                    self.history.fault("error", list(event.nodes), f"ending {event.describe()}",
                                       False, repr(exc)[:500])
                if self.status.get(i) == PENDING:
                    self._not_applied(i, "its nodes never took it while it lasted")
        # Faults cut short by the end of the load: whatever did not take effect did not.
        for i in sorted(self._active):
            if self.status.get(i) == PENDING:
                self._not_applied(i, "the load ended before it took effect")

    def _settle(self, i: int) -> None:
        """Mark fault `i` applied if it holds now (else it stays pending until a node that was
        down takes it, or its end)."""
        if self.status.get(i) == PENDING and self._holds(self.schedule[i]):
            self.status[i] = APPLIED
            self.applied_at_s[i] = self.history.now()

    def _settle_active(self) -> None:
        for i in sorted(self._active):
            self._settle(i)

    def _not_applied(self, i: int, reason: str) -> None:
        self.status[i] = NOT_APPLIED
        self.reasons[i] = reason
        e = self.schedule[i]
        self.log(f"nemesis: NOT APPLIED {e.describe()}: {reason}")
        self.history.fault("not-applied", list(e.nodes), e.describe(), False, reason)

    def _holds(self, e: FaultEvent) -> bool:
        """Whether a fault of the kinds that go through node commands holds now; the others
        are checked where they are made (a failure raises there)."""
        if e.kind in ("partition", "dc-partition"):
            held = self.held_blocked
            return all(b in held.get(a, ()) or a in held.get(b, ()) for a, bs in e.blocked for b in bs)
        if e.kind == "skew":
            return self.held_skew.get(e.nodes[0]) == e.skew_ms
        return True

    def _begin(self, e: FaultEvent) -> None:
        node = e.nodes[0]
        if e.kind == "kill":
            self._kill(node)
        elif e.kind == "pause":
            self._pause(node)
        elif e.kind in ("partition", "dc-partition"):
            self.blocked = e.blocked_map()
            self.history.fault("partition", list(self.blocked), e.describe())
            for n in self.blocked:
                if self.network is not None:
                    self._network_block(n, self.blocked.get(n, ()))
                else:
                    self._sync(n)
        elif e.kind in ("loss", "slow"):
            if self.network is None:
                raise FaultNotApplied(f"{e.kind} needs nodes in network namespaces (--netns)")
            if e.kind == "loss":
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
        elif e.kind == "restart":
            self._rolling_restart(e)
        elif e.kind == "membership":
            self._leave(node, e.shape)
        elif e.kind == "dc-kill":
            self.history.fault("dc-kill", list(e.nodes), e.describe())
            for n in e.nodes:
                self._kill(n, f"datacenter {e.shape}")
        else:
            raise ValueError(e.kind)

    def _end(self, e: FaultEvent) -> None:
        node = e.nodes[0]
        if e.kind == "kill":
            self._restart(node)
        elif e.kind == "pause":
            self._resume(node)
        elif e.kind in ("partition", "dc-partition"):
            self.blocked = {}
            healed = list(e.blocked_map())
            self.history.fault("heal", healed)
            for n in healed:
                if self.network is not None:
                    self.network.unblock(n)
                    self.held_blocked.pop(n, None)
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
        elif e.kind == "membership" and node in self.left:
            self._rejoin(node)
        elif e.kind == "dc-kill":
            self.history.fault("dc-start", list(e.nodes), e.describe())
            self._restart_all([n for n in e.nodes if n in self.killed])
        # A rolling restart ends when its last node is back (in _begin).

    # ------------------------------------------------------------------ healing

    def heal(self) -> None:
        """End every fault still on, whatever the schedule says; RuntimeError when a node
        cannot be brought back to no fault at all."""
        for node in sorted(self.paused):
            self._resume(node)
        self._restart_all(sorted(self.killed))
        for node in sorted(self.full):
            self._free(node)
        for node in sorted(self.left):
            self._rejoin(node)
        self.blocked = {}
        if self.network is not None:
            for n in self.cluster.nodes:
                self.network.unblock(n.node_id)
                self.network.restore(n.node_id)
                self.held_blocked.pop(n.node_id, None)
        self.skew = {}
        self.history.fault("heal-all", [n.node_id for n in self.cluster.nodes])
        # Whatever the nemesis believed, make sure no process is left stopped.
        for n in self.cluster.nodes:
            if n.running:
                n.resume()
        failed = [n.node_id for n in self.cluster.nodes
                  if not self._sync(n.node_id, reset_skew=True, attempts=10)]
        if failed:
            raise RuntimeError(f"cannot heal {', '.join(failed)}: RINGKV.FAULT HEAL and CLOCK_SKEW 0 "
                               "failed (see the history's faults)")

    # ------------------------------------------------------------------ actions

    def _process_died(self, node_id: str) -> None:
        """A new process starts with no fault: forget what the old one enforced (iptables
        rules belong to the namespace and stay)."""
        self.held_skew.pop(node_id, None)
        if self.network is None:
            self.held_blocked.pop(node_id, None)

    def _kill(self, node_id: str, detail: str = "") -> None:
        node = self.cluster.node(node_id)
        if not node.running:
            raise FaultNotApplied(f"{node_id} was not running")
        node.kill()
        self._process_died(node_id)
        self.killed.add(node_id)
        if node.running:
            raise FaultNotApplied(f"{node_id} still running after SIGKILL")
        self.history.fault("kill", [node_id], detail)

    def _pause(self, node_id: str) -> None:
        node = self.cluster.node(node_id)
        if not node.running:
            raise FaultNotApplied(f"{node_id} was not running")
        node.pause()
        self.paused.add(node_id)
        deadline = time.monotonic() + STOPPED_WITHIN_S
        while not process_stopped(node.proc.pid):
            if time.monotonic() > deadline:
                raise FaultNotApplied(f"{node_id} (pid {node.proc.pid}) not in the stopped state "
                                      f"{STOPPED_WITHIN_S:g} s after SIGSTOP")
            time.sleep(0.01)
        self.history.fault("pause", [node_id])

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

    def _restart_all(self, node_ids: list[str]) -> None:
        """Start the nodes at once, then wait for each to be ready (their starts overlap: a
        node takes seconds to start, mostly waiting); raises the first failure once every
        node has been waited for."""
        started = []
        for node_id in node_ids:
            try:
                self.cluster.node(node_id).start(wait=False)
                started.append(node_id)
            except Exception as exc:
                self.history.fault("start", [node_id], ok=False, error=str(exc)[-500:])
        failures = []
        for node_id in started:
            try:
                self._restart(node_id)  # already running: waits until it answers
            except Exception as exc:
                failures.append(exc)
        if len(started) < len(node_ids):
            raise FaultNotApplied(f"could not start {', '.join(sorted(set(node_ids) - set(started)))}")
        if failures:
            raise failures[0]

    def _resume(self, node_id: str) -> None:
        self.cluster.node(node_id).resume()
        self.paused.discard(node_id)
        self.history.fault("resume", [node_id])
        self._sync(node_id)

    def _rolling_restart(self, e: FaultEvent) -> None:
        """Stop each node in turn (SIGTERM or SIGKILL, by `e.shape`) and start it again before
        the next; nodes another fault holds down or full are left alone."""
        restarted, skipped = [], []
        self.history.fault("restart", list(e.nodes), e.describe())
        for node_id in e.nodes:
            if self._stop.is_set():
                break
            if node_id in self.killed or node_id in self.paused or node_id in self.full or node_id in self.left:
                skipped.append(node_id)
                continue
            node = self.cluster.node(node_id)
            old_pid = node.proc.pid if node.running else None
            if e.shape == "kill":
                self._kill(node_id, "restart churn")
            else:
                self.killed.add(node_id)  # until it is back: heal() restarts it otherwise
                try:
                    code = node.stop(TERM_TIMEOUT_S)
                    self.history.fault("stop", [node_id], f"SIGTERM, exit code {code}")
                except subprocess.TimeoutExpired:
                    self.history.fault("stop", [node_id], "SIGTERM", False,
                                       f"still running {TERM_TIMEOUT_S:g} s after SIGTERM; killed")
                self._process_died(node_id)
            self._restart(node_id)
            if not node.running or node.proc.pid == old_pid:
                raise FaultNotApplied(f"{node_id} is not a new process after its restart")
            restarted.append(node_id)
        if not restarted:
            raise FaultNotApplied(f"no node restarted (skipped, held down by other faults: "
                                  f"{', '.join(skipped) or 'none'})")

    def _admin(self, node_id: str, *command: str) -> dict:
        node = self.cluster.node(node_id)
        r = redis.Redis(host=node.host, port=node.resp_port, socket_timeout=10, socket_connect_timeout=COMMAND_TIMEOUT_S,
                        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
        try:
            return json.loads(r.execute_command(*command))
        finally:
            r.close()

    def _members_up(self, but: str) -> list[str]:
        return [n.node_id for n in self.cluster.nodes if n.node_id != but and n.running
                and n.node_id not in self.paused and n.node_id not in self.left]

    def _leave(self, node_id: str, shape: str) -> None:
        """Take `node_id` out of the cluster (decommission or remove), stop it, wipe its data."""
        node = self.cluster.node(node_id)
        if not node.running or node_id in self.paused:
            raise FaultNotApplied(f"{node_id} was not running")
        if shape == "decommission":
            op = self._admin(node_id, "RINGKV.ADMIN", "DECOMMISSION", "ASYNC")
            deadline = time.monotonic() + MEMBERSHIP_TIMEOUT_S
            # Once started a decommission cannot be called off: wait for it even when the run
            # is ending, so the node is stopped, wiped and marked left (heal rejoins it); a
            # node left behind running would leave the cluster after the heal began.
            while op["state"] == "running":
                if time.monotonic() > deadline:
                    raise FaultNotApplied(f"decommission {op['id']} of {node_id} still running "
                                          f"({op['done']}/{op['total']} {op['unit']})")
                time.sleep(0.2)
                with contextlib.suppress(redis.RedisError):
                    op = self._admin(node_id, "RINGKV.ADMIN", "WAIT", op["id"], "1000")
            if op["state"] != "done":
                raise FaultNotApplied(f"decommission {op['id']} of {node_id} {op['state']}: {op['error']}")
            node.stop(TERM_TIMEOUT_S)
            detail = f"decommissioned ({op['id']}), stopped"
        else:
            others = self._members_up(node_id)
            if not others:
                raise FaultNotApplied(f"no member up to remove {node_id}")
            self._kill(node_id, "to be removed")
            self.killed.discard(node_id)
            try:
                op = self._admin(others[0], "RINGKV.ADMIN", "REMOVE", node_id, "FORCE", "ASYNC")
            except redis.RedisError as exc:
                self.killed.add(node_id)  # heal() restarts it as it is: it was not removed
                raise FaultNotApplied(f"{others[0]} did not remove {node_id}: {exc}") from None
            detail = f"killed, removed by {others[0]} ({op['id']})"
        self._process_died(node_id)
        shutil.rmtree(node.data_dir, ignore_errors=True)
        self.left.add(node_id)
        self.history.fault(f"membership-{shape}", [node_id], f"{detail}; data wiped")

    def _rejoin(self, node_id: str) -> None:
        """Start `node_id` again, empty, as a joining node; wait until it is a member."""
        node = self.cluster.node(node_id)
        node.settings["join"] = "true"
        try:
            node.start(wait=True)
            deadline = time.monotonic() + MEMBERSHIP_TIMEOUT_S
            while self._admin(node_id, "RINGKV.ADMIN", "STATUS")["local_status"] != "normal":
                if time.monotonic() > deadline:
                    raise FaultNotApplied(f"{node_id} not a member {MEMBERSHIP_TIMEOUT_S:g} s after joining again")
                time.sleep(0.2)
        except Exception as exc:
            self.history.fault("membership-join", [node_id], ok=False, error=str(exc)[-500:])
            raise
        self.left.discard(node_id)
        self.history.fault("membership-join", [node_id], "joined again, empty")
        self._sync(node_id)

    def _fill(self, node_id: str) -> None:
        if self.disk is None:
            raise FaultNotApplied("no tmpfs data directories (the runner mounts them for `disk`)")
        detail = self.disk.fill(node_id)
        self.full.add(node_id)
        left = self.disk.free_bytes(node_id)
        if left:
            raise FaultNotApplied(f"{left} bytes still free after the ballast ({detail})")
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
            self._kill(node_id, "restart after a full disk")
            self._restart(node_id)

    def _network_block(self, node_id: str, peers: tuple[str, ...]) -> None:
        try:
            self.network.block(node_id, peers)
        except Exception as exc:
            self.history.fault("sync", [node_id], f"block {','.join(peers)}", False, str(exc)[:500])
            return
        self.held_blocked[node_id] = tuple(peers)

    def _sync(self, node_id: str, reset_skew: bool = False, attempts: int = 3) -> bool:
        """Give a node the faults it should have now, if it can take commands; whether it
        answered with exactly those (what it holds is then known)."""
        if node_id in self.killed or node_id in self.paused:
            return False
        node = self.cluster.node(node_id)
        commands: list[tuple[str, ...]] = [("HEAL",)]
        blocked = self.blocked.get(node_id, ()) if self.network is None else ()
        if blocked:
            commands.append(("PARTITION", *blocked))
        skew = self.skew.get(node_id)
        if skew is not None:
            commands.append(("CLOCK_SKEW", str(skew)))
        elif reset_skew:
            commands.append(("CLOCK_SKEW", "0"))
        try:
            replies = fault_commands(node, commands, attempts=attempts)
        except redis.RedisError as exc:
            self.history.fault("sync", [node_id], repr(commands), False, str(exc)[:500])
            return False
        expected = ["healed"]
        if blocked:
            expected.append(f"blocked {','.join(sorted(blocked))}")
        if skew is not None or reset_skew:
            expected.append(f"clock skew {skew or 0} ms")
        if replies != expected:
            self.history.fault("sync", [node_id], repr(commands), False,
                               f"answered {replies}, expected {expected}")
            return False
        if self.network is None:
            self.held_blocked[node_id] = tuple(sorted(blocked))
        if skew is not None or reset_skew:
            self.held_skew[node_id] = skew or 0
        self._settle_active()
        return True


def fault_commands(node: NodeProcess, commands: list[tuple[str, ...]],
                   timeout_s: float = COMMAND_TIMEOUT_S, attempts: int = 3) -> list[str]:
    """Send RINGKV.FAULT commands to one node, on one connection (retried from the first on a
    connection failure: every command is idempotent); the node's answers, as text."""
    for attempt in range(attempts):
        r = None
        try:
            # Made inside the try: a single-connection client connects as it is made. Retried
            # here, not also inside redis-py, whose own back-off made a refused node cost the
            # nemesis thread 4 s a command instead of 0.4.
            r = redis.Redis(host=node.host, port=node.resp_port, socket_timeout=timeout_s,
                            socket_connect_timeout=timeout_s, single_connection_client=True,
                            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
            return [_text(r.execute_command("RINGKV.FAULT", *cmd)) for cmd in commands]
        except (redis.ConnectionError, redis.TimeoutError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)
        finally:
            if r is not None:
                r.close()
    raise AssertionError("unreachable")


def _text(reply) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
