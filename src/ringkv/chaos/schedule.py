"""A seeded fault schedule: which fault, on which nodes, from when to when. Pure: the same
(seed, nodes, duration, kinds) always give the same schedule, so a run's faults replay.

Faults, one `FaultEvent` each:

    kill       SIGKILL one node at `start_s`, start it again (same data directory) at `end_s`
    pause      SIGSTOP one node, SIGCONT it at `end_s`
    partition  cut the cluster (RINGKV.FAULT PARTITION on each node, HEAL at `end_s`), one of
                 halves    a random split into two non-empty sides
                 isolate   one node alone against the rest
                 bridge    two sides that cannot reach each other, and one node that reaches
                           both (Jepsen's "bridge": every side sees a majority)
    skew       shift one node's clock by `skew_ms` (RINGKV.FAULT CLOCK_SKEW), back to 0 at end
    disk       fill one node's data directory (a small tmpfs) until `end_s`
    loss       drop a share (`amount`, 5-30 %) of the packets one node sends and receives
    slow       limit what one node sends to `amount` kbit/s (32, 64 or 128)
               (loss and slow need nodes in network namespaces: chaos/netns.py)
    restart    restart churn: stop every node in `nodes`' order, one after another, and start
               it again (same data directory) before stopping the next; `shape` says how it
               stops: `term` (SIGTERM, a clean shutdown) or `kill` (SIGKILL, a crash). The
               nodes restart as fast as they come up, so the event may outlast `end_s`.
    membership a membership change: at `start_s` one node leaves the cluster, by `shape`
               `decommission` (it hands its partitions over, then stops) or `remove` (it is
               killed, and a live member removes it); its data directory is wiped; at
               `end_s` it joins again as a new node of the same id (node/membership.py).
               Counts as a node down; one at a time, never during a rolling restart.
    dc-partition
               cut one datacenter (`shape` names it, `nodes` are its nodes) off from the
               others: each of its nodes blocks every node outside it and each node outside
               blocks each of its nodes (RINGKV.FAULT PARTITION; `blocked` has every node of
               the cluster), healed at `end_s`
    dc-kill    SIGKILL every node of one datacenter (`shape`, `nodes` its nodes) at `start_s`,
               start them all again at `end_s`
               (dc-partition and dc-kill need `datacenters`, two or more; without, they make no
               fault)

With one kind the faults come one after another, a quiet gap between them. With several, a
fault may start while another is still on (`overlap_p`), so kinds combine: a kill during a
partition, a pause of a skewed node. Rules that keep every combination meaningful: at most
one partition at a time, one skew per node, and at most a minority of nodes down (killed or
paused, a rolling restart counting as one) at once, so a quorum of the up nodes can still
exist; one rolling restart at a time. A datacenter's faults take more on purpose (a datacenter
level keeps the others serving, docs/multi-dc.md): a dc-partition is the one partition of its
time, and a dc-kill the one process fault of its time (no kill, pause, full disk, rolling
restart or membership change begins while it lasts, nor it while one of those does).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import Any

# New kinds go at the end: a seed's schedule for the kinds it had stays what it was.
KINDS = ("kill", "pause", "partition", "skew", "disk", "loss", "slow", "restart", "membership",
         "dc-partition", "dc-kill")
NETWORK_KINDS = ("loss", "slow")  # need nodes in network namespaces
DC_KINDS = ("dc-partition", "dc-kill")  # need datacenters
PARTITION_KINDS = ("partition", "dc-partition")  # one at a time: a node holds one set of blocks
PROCESS_KINDS = ("kill", "pause", "disk", "restart", "membership")  # none during a dc-kill
PARTITION_SHAPES = ("halves", "isolate", "bridge")
RESTART_SHAPES = ("term", "kill")  # how a rolling restart stops each node
MEMBERSHIP_SHAPES = ("decommission", "remove")  # how a membership change takes a node out


@dataclasses.dataclass(frozen=True)
class FaultEvent:
    """One fault. `nodes` are its targets (for a partition, every node; for a datacenter's
    fault, the datacenter's nodes); `blocked` maps each node to the nodes it must not reach
    (partition, dc-partition); `skew_ms` is the clock shift."""

    start_s: float
    end_s: float
    kind: str
    nodes: tuple[str, ...]
    shape: str = ""
    blocked: tuple[tuple[str, tuple[str, ...]], ...] = ()
    skew_ms: int = 0
    amount: float = 0.0  # loss: the share of packets dropped; slow: kbit/s

    def blocked_map(self) -> dict[str, tuple[str, ...]]:
        return dict(self.blocked)

    def label(self) -> str:
        """The kind, with the shape where it has one: `partition/bridge`, `restart/term`."""
        return f"{self.kind}/{self.shape}" if self.shape else self.kind

    def describe(self) -> str:
        when = f"{self.start_s:6.1f}-{self.end_s:6.1f}s"
        if self.kind == "dc-partition":
            outside = [n for n, _ in self.blocked if n not in self.nodes]
            return f"{when} dc-partition {self.shape}: {','.join(self.nodes)} -x- {','.join(outside)}"
        if self.kind == "dc-kill":
            return f"{when} dc-kill {self.shape}: {','.join(self.nodes)}, started again at the end"
        if self.kind == "partition":
            sides = " ".join(f"{n}-x-{','.join(b)}" for n, b in self.blocked if b)
            return f"{when} partition/{self.shape}: {sides}"
        if self.kind == "skew":
            return f"{when} skew {self.nodes[0]} {self.skew_ms:+d} ms"
        if self.kind == "loss":
            return f"{when} loss {self.nodes[0]} {self.amount:.0%}"
        if self.kind == "slow":
            return f"{when} slow {self.nodes[0]} {self.amount:g} kbit/s"
        if self.kind == "restart":
            return f"{when} restart/{self.shape} {','.join(self.nodes)}"
        if self.kind == "membership":
            return f"{when} membership/{self.shape} {self.nodes[0]}, joining again at the end"
        return f"{when} {self.kind} {','.join(self.nodes)}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["blocked"] = {n: list(b) for n, b in self.blocked}
        return d


def _overlaps(e: FaultEvent, start: float, end: float) -> bool:
    return e.start_s < end and start < e.end_s


def partition_sides(shape: str, nodes: Sequence[str], rng: random.Random) -> dict[str, tuple[str, ...]]:
    """Who blocks whom, for a partition of `shape` over `nodes` (at least 2; bridge needs 3)."""
    nodes = list(nodes)
    rng.shuffle(nodes)
    bridge: list[str] = []
    if shape == "isolate":
        a, b = nodes[:1], nodes[1:]
    elif shape == "bridge":
        bridge, rest = nodes[:1], nodes[1:]
        cut = rng.randint(1, len(rest) - 1)
        a, b = rest[:cut], rest[cut:]
    else:
        cut = rng.randint(1, len(nodes) - 1)
        a, b = nodes[:cut], nodes[cut:]
    blocked = {n: tuple(sorted(b)) for n in a}
    blocked.update({n: tuple(sorted(a)) for n in b})
    blocked.update({n: () for n in bridge})
    return blocked


def make_schedule(
    seed: int,
    node_ids: Sequence[str],
    duration_s: float,
    kinds: Sequence[str],
    *,
    warmup_s: float = 1.0,
    hold_s: tuple[float, float] = (2.0, 6.0),
    gap_s: tuple[float, float] = (1.0, 3.0),
    overlap_p: float = 0.35,
    max_skew_ms: int = 30_000,
    datacenters: Mapping[str, Sequence[str]] | None = None,
) -> list[FaultEvent]:
    """Faults from `warmup_s` to `duration_s` (none ends later), in order of start.
    `datacenters`: each datacenter's nodes, for dc-partition and dc-kill."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown nemesis {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    nodes = sorted(node_ids)
    kinds = sorted(set(kinds), key=KINDS.index)
    if not kinds or len(nodes) < 2:
        return []
    rng = random.Random(f"ringkv-chaos-schedule:{seed}")
    max_down = max(1, (len(nodes) - 1) // 2)
    dcs = {dc: tuple(sorted(members)) for dc, members in sorted((datacenters or {}).items()) if members}
    events: list[FaultEvent] = []
    t = warmup_s
    while t + hold_s[0] <= duration_s:
        kind = rng.choice(kinds)
        hold = rng.uniform(*hold_s)
        end = min(t + hold, duration_s)
        active = [e for e in events if _overlaps(e, t, end)]
        event = _make_event(rng, kind, nodes, t, end, active, max_down, max_skew_ms, dcs)
        if event is not None:
            events.append(event)
        if len(kinds) > 1 and rng.random() < overlap_p:
            t = round(t + rng.uniform(0.3, max(0.4, hold * 0.8)), 3)
        else:
            t = round(end + rng.uniform(*gap_s), 3)
    return events


def _make_event(rng: random.Random, kind: str, nodes: list[str], start: float, end: float,
                active: list[FaultEvent], max_down: int, max_skew_ms: int,
                dcs: Mapping[str, tuple[str, ...]]) -> FaultEvent | None:
    start, end = round(start, 3), round(end, 3)
    if (kind in DC_KINDS or kind in PROCESS_KINDS) and any(e.kind == "dc-kill" for e in active):
        return None  # a datacenter is down: the rest of the cluster stays whole
    if kind in DC_KINDS:
        return _datacenter_event(rng, kind, nodes, start, end, active, dcs)
    down = {n for e in active if e.kind in ("kill", "pause", "disk", "membership") for n in e.nodes}
    # A rolling restart holds one node down at a time, which one depending on when.
    restarting = any(e.kind == "restart" for e in active)
    changing = any(e.kind == "membership" for e in active)
    stopped = len({n for e in active if e.kind in ("kill", "pause", "membership") for n in e.nodes}) + restarting
    if kind in ("kill", "pause", "disk"):
        free = [n for n in nodes if n not in down]
        if stopped >= max_down and kind != "disk":
            return None
        if not free:
            return None
        return FaultEvent(start, end, kind, (rng.choice(free),))
    if kind == "membership":
        free = [n for n in nodes if n not in down]
        if restarting or changing or stopped >= max_down or not free:
            return None
        return FaultEvent(start, end, kind, (rng.choice(free),), rng.choice(MEMBERSHIP_SHAPES))
    if kind == "restart":
        if restarting or changing or stopped >= max_down:
            return None
        order = tuple(rng.sample(nodes, len(nodes)))
        return FaultEvent(start, end, kind, order, rng.choice(RESTART_SHAPES))
    if kind == "partition":
        if any(e.kind in PARTITION_KINDS for e in active):
            return None
        shapes = [s for s in PARTITION_SHAPES if s != "bridge" or len(nodes) >= 3]
        shape = rng.choice(shapes)
        blocked = partition_sides(shape, nodes, rng)
        return FaultEvent(start, end, kind, tuple(nodes), shape,
                          tuple(sorted(blocked.items())))
    if kind == "skew":
        skewed = {n for e in active if e.kind == "skew" for n in e.nodes}
        free = [n for n in nodes if n not in skewed]
        if not free:
            return None
        skew = rng.choice((-1, 1)) * rng.randint(100, max_skew_ms)
        return FaultEvent(start, end, kind, (rng.choice(free),), skew_ms=skew)
    if kind in NETWORK_KINDS:
        degraded = {n for e in active if e.kind in NETWORK_KINDS for n in e.nodes}
        free = [n for n in nodes if n not in degraded]
        if not free:
            return None
        node = rng.choice(free)
        amount = round(rng.uniform(0.05, 0.3), 3) if kind == "loss" else float(rng.choice((32, 64, 128)))
        return FaultEvent(start, end, kind, (node,), amount=amount)
    raise ValueError(kind)


def _datacenter_event(rng: random.Random, kind: str, nodes: list[str], start: float, end: float,
                      active: list[FaultEvent], dcs: Mapping[str, tuple[str, ...]]) -> FaultEvent | None:
    """A dc-partition or dc-kill of a datacenter drawn from `dcs` (None with fewer than two)."""
    if len(dcs) < 2:
        return None
    dc = rng.choice(sorted(dcs))
    inside = dcs[dc]
    outside = tuple(n for n in nodes if n not in inside)
    if kind == "dc-partition":
        if any(e.kind in PARTITION_KINDS for e in active):
            return None
        blocked = {n: outside for n in inside}
        blocked.update({n: inside for n in outside})
        return FaultEvent(start, end, kind, inside, dc, tuple(sorted(blocked.items())))
    if any(e.kind in PROCESS_KINDS for e in active):
        return None
    return FaultEvent(start, end, kind, inside, dc)
