"""The scale report: how gossip, failure detection, the ring and hinted handoff behave at 10, 100
and 1000 nodes, measured on the simulator and the real ring. Writes docs/benchmarks/scale.md.

    python -m ringkv.testing.simulator report [--out docs/benchmarks/scale.md] [--quick]

Gossip figures come from runs of the real Membership and FailureDetectors on virtual time
(testing/simulator.py). A 1000-node cluster costs about 10 s of CPU per virtual second (every
node merges about a thousand heartbeats a second, through the real merge), so 1000 nodes get
one combined run: cold start, then three status changes and one crash, with suspicions
counted throughout. `--quick` leaves 1000 nodes out and shortens the rest, for a look.

Ring figures use cluster/ring.Ring, ring.diff and Ring.fallbacks directly: no simulation.
Section 7, datacenters, is sim/scale_datacenters.py (`python -m ringkv.testing.sim.datacenters
report` measures it alone).
"""

from __future__ import annotations

import collections
import datetime
import itertools
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ringkv.cluster.gossip import NodeStatus
from ringkv.cluster.ring import (
    DEFAULT_REPLICAS,
    MAX_PARTITIONS,
    RING_BOUNDED,
    RING_DITHERED,
    Member,
    Ring,
    diff,
    partition_of,
    token,
)
from ringkv.testing.sim.network import NetworkConditions
from ringkv.testing.sim.node import GossipSettings
from ringkv.testing.simulator import (
    Simulation,
    SimulationFailure,
    Suspicion,
    scenario_crash,
    scenario_propagation,
)

CLEAN = NetworkConditions(loss=0.0, min_delay_ms=1.0, max_delay_ms=50.0)
LOSSY = NetworkConditions(loss=0.1, min_delay_ms=1.0, max_delay_ms=50.0)
NETWORKS = {"no loss": CLEAN, "10% loss": LOSSY}
SEEDS = (1, 2, 3, 4, 5)
BIG_SEED = 1

PROPAGATION_WARMUP_MS = 10_000.0
CRASH_WARMUP_MS = 30_000.0
# 1000 nodes. Detectors need some 30 intervals before their window stops being dominated by
# the cold start (the false suspicions fall a hundredfold from the first 10 s to 20-30 s), so
# the changes, the crash and the count of false suspicions wait until then.
BIG_WARMUP_MS = 25_000.0  # suspicions are counted from here
BIG_CHANGES_AT_MS = (25_000.0, 25_500.0, 26_000.0)
BIG_CRASH_AT_MS = 27_000.0
BIG_TIMEOUT_MS = 60_000.0
FALSE_SUSPICION_MS = {10: 3_600_000.0, 100: 900_000.0}
SUSPICION_COUNT_FROM_MS = 60_000.0  # 10 and 100 nodes: after the cold start's first minute
SUSPICION_BUCKETS_MS = (0.0, 10_000.0, 20_000.0, 30_000.0, 60_000.0)

RING_SIZES = (10, 100, 1000)
RING_PARTITIONS = (1024, 4096, 16384, MAX_PARTITIONS)
JOINERS = 3
WIDE_JOINERS = 20  # the same joins over more joiners: a mean with less luck in it
LEAVERS = 3
# The ring algorithms compared in section 4: the opt-in "bounded" first, then the default.
RING_MEASURED = (RING_BOUNDED, RING_DITHERED)
HEAL_LIMIT_MS = 60_000.0
HINT_WRITES_PER_S = 1000
HINT_OUTAGE_S = 600
HINT_DOWN_NODES = 3


def _gossip_args(network: NetworkConditions) -> dict[str, float]:
    return {
        "loss": network.loss,
        "min_delay_ms": network.min_delay_ms,
        "max_delay_ms": network.max_delay_ms,
        "duplication": network.duplication,
    }


def _seed_list(seeds: tuple[int, ...]) -> str:
    return ", ".join(map(str, seeds))


def _fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    cpu_s: float = 0.0

    def table(self, header: list[str], rows: list[list[str]], align: str | None = None) -> None:
        align = align or "l" + "r" * (len(header) - 1)
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
        for row in rows:
            self.lines.append("| " + " | ".join(row) + " |")
        self.lines.append("")

    def text(self, *paragraphs: str) -> None:
        for p in paragraphs:
            self.lines.extend([p, ""])


def _timed(fn: Callable[[], Section]) -> Section:
    started = time.process_time()
    section = fn()
    section.cpu_s = time.process_time() - started
    print(f"  {section.title}: {section.cpu_s:.0f} s CPU", flush=True)
    return section


# --- what each section did, in words (the report prints these above its tables) -----------------


def intro(section: int, quick: bool = False) -> str:
    if section == 1:
        return (
            f"After a {PROPAGATION_WARMUP_MS / 1000:g} s warm-up one node (the scenario's "
            "choice) moves from normal to leaving; 1000 nodes: three nodes, at "
            f"{', '.join(f'{t / 1000:g}' for t in BIG_CHANGES_AT_MS)} s. *All know* is when "
            "the last node held the new state; *median node learns*, the median over nodes."
        )
    if section == 2:
        return (
            f"After a {CRASH_WARMUP_MS / 1000:g} s warm-up (1000 nodes: "
            f"{BIG_CRASH_AT_MS / 1000:g} s) one node crashes. *First* and *median node*: when "
            "the first and the median observer's phi crossed 8; *all nodes*: the last one. "
            "Then it restarts as a new generation: *restart to all up* is the time until every "
            "node holds the new generation and nobody suspects anybody."
        )
    if section == 3:
        durations = {n: d / (10 if quick else 1) for n, d in FALSE_SUSPICION_MS.items()}
        return (
            "No crashes. "
            + ", ".join(
                f"{n} nodes run {d / 60_000:g} virtual minutes" for n, d in durations.items()
            )
            + f", counting suspicions begun after the first {SUSPICION_COUNT_FROM_MS / 1000:g}"
            f" s; 1000 nodes: the combined run, counting from {BIG_WARMUP_MS / 1000:g} s. "
            "Each node observes n - 1 others, so per node-hour grows with n even at a fixed "
            "rate per pair."
        )
    if section == 4:
        return (
            f"`Ring` of n members against n + 1, compared with `ring.diff`; N = "
            f"{DEFAULT_REPLICAS}, one rack, equal weights, members n0000, n0001, ...; means over "
            f"{JOINERS} joiners (names joiner0, joiner1, ...). *Owner changes*: partitions whose "
            "owner differs, split into those *to the joiner* and those *between old nodes*; "
            "*replica transfers*: the gained replicas of every changed partition, what streaming "
            f"copies. Each row for both ring algorithms (docs/ring.md): *{RING_BOUNDED}*, chosen at "
            f"cluster creation with `ring_algorithm = \"{RING_BOUNDED}\"`, and *{RING_DITHERED}*, the "
            "default and the ring before it (the figures of earlier reports)."
        )
    if section == 5:
        writes = HINT_WRITES_PER_S * HINT_OUTAGE_S // (10 if quick else 1)
        return (
            f"W = {HINT_WRITES_PER_S} writes/s for T = {HINT_OUTAGE_S} s: {writes:,} writes "
            "of random keys, each placed by its real token on Q = 1024 partitions, N = "
            f"{DEFAULT_REPLICAS}, one rack; {HINT_DOWN_NODES} down nodes per size, chosen by "
            "seed. A write whose preference list holds the down node goes to "
            "`Ring.fallbacks(p, {down})`, and the fallback standing in for it keeps one hint. "
            "*Expected from its partitions* = W·T·(its replica partitions)/Q."
        )
    if section == 6:
        return (
            "After a 20 s warm-up the network splits into two random halves; then it heals. "
            f"*Never*: not within {HEAL_LIMIT_MS / 1000:g} s. *Probe unreachable* is not in "
            "the node; the simulator can add it (`GossipSettings.probe_unreachable`): each "
            "round, with probability down / (live + 1), also gossip with one member held down."
        )
    raise ValueError(section)


# --- 1000 nodes: one combined run ----------------------------------------------------------------


@dataclass
class BigRun:
    nodes: int
    seed: int
    cold_start_ms: float | None
    change_rounds: list[float | None]
    crash_detect_ms: list[float]  # per observer
    crash_all_ms: float | None
    suspicions: list[Suspicion]  # counted: begun after BIG_WARMUP_MS
    all_suspicions: list[Suspicion]
    observed_node_hours: float
    virtual_ms: float
    cpu_s: float
    messages: int


def big_run(nodes: int = 1000, seed: int = BIG_SEED, network: NetworkConditions = LOSSY) -> BigRun:
    started = time.process_time()
    sim = Simulation(nodes, seed, network, record_suspicions=True)
    cold = sim.run_until(sim.converged, timeout_ms=BIG_WARMUP_MS, poll_ms=500.0)
    cold_ms = sim.now_ms if cold else None
    sim.queue.run_until(BIG_CHANGES_AT_MS[0])
    chosen = sim.rng.sample(sim.members, len(BIG_CHANGES_AT_MS) + 1)
    watches = []
    for node, at_ms in zip(chosen, BIG_CHANGES_AT_MS):
        sim.queue.run_until(at_ms)
        watches.append(sim.set_status(node, NodeStatus.LEAVING))
    sim.queue.run_until(BIG_CRASH_AT_MS)
    victim = chosen[-1]
    sim.crash(victim)

    def done() -> bool:
        return all(w.completed_ms is not None for w in watches) and sim.all_suspect(victim)

    sim.run_until(done, timeout_ms=BIG_TIMEOUT_MS, poll_ms=250.0)
    detect = sim.detection_times_ms(victim, BIG_CRASH_AT_MS)
    suspicions = sim.suspicions()
    times = sorted(t for t in detect.values() if t is not None)
    interval = sim.gossip.interval_ms
    observed_h = sum((sim.now_ms - BIG_WARMUP_MS) / 3_600_000.0 for n in sim.members if n != victim)
    return BigRun(
        nodes,
        seed,
        cold_ms,
        [w.rounds(interval) for w in watches],
        times,
        times[-1] if len(times) == len(detect) else None,
        [s for s in suspicions if s.since_ms >= BIG_WARMUP_MS],
        suspicions,
        observed_h,
        sim.now_ms,
        time.process_time() - started,
        sim.network.sent,
    )


# --- 1. propagation ------------------------------------------------------------------------------


def propagation_section(big: BigRun | None, quick: bool) -> Section:
    s = Section("1. Gossip rounds until every node knows of a change")
    s.text(intro(1, quick))
    seeds = SEEDS[:2] if quick else SEEDS
    rows = []
    for n in (10, 100):
        for label, network in NETWORKS.items():
            rounds, medians, failed = [], [], []
            for seed in seeds:
                try:
                    r = scenario_propagation(
                        seed,
                        nodes=n,
                        warmup_ms=PROPAGATION_WARMUP_MS,
                        max_rounds=60,
                        **_gossip_args(network),
                    )
                except SimulationFailure:
                    failed.append(seed)
                    continue
                rounds.append(r.figures["rounds"])
                medians.append(r.figures["median_learn_rounds"])
            rows.append(
                [
                    str(n),
                    f"{math.log2(n):.1f}",
                    label,
                    f"{len(seeds)} seeds",
                    _fmt(statistics.median(medians) if medians else None, 2),
                    _fmt(statistics.median(rounds) if rounds else None, 2),
                    _fmt(max(rounds) if rounds else None, 2),
                    ", ".join(map(str, failed)) or "—",
                ]
            )
    if big is not None:
        done = [r for r in big.change_rounds if r is not None]
        rows.append(
            [
                str(big.nodes),
                f"{math.log2(big.nodes):.1f}",
                "10% loss",
                f"{len(big.change_rounds)} changes, seed {big.seed}",
                "—",
                _fmt(statistics.median(done) if done else None, 2),
                _fmt(max(done) if done else None, 2),
                f"{len(big.change_rounds) - len(done)} unfinished"
                if len(done) < len(big.change_rounds)
                else "—",
            ]
        )
    s.table(
        [
            "nodes",
            "log2 n",
            "network",
            "runs",
            "median node learns (rounds)",
            "all know: median (rounds)",
            "all know: max (rounds)",
            "failed (seed)",
        ],
        rows,
        "lrllrrrl",
    )
    return s


# --- 2. crash detection --------------------------------------------------------------------------


def crash_section(big: BigRun | None, quick: bool) -> Section:
    s = Section("2. Time to detect a crash")
    s.text(intro(2, quick))
    seeds = SEEDS[:2] if quick else SEEDS
    rows = []
    for n in (10, 100):
        for label, network in NETWORKS.items():
            first, median, every, recover, failed = [], [], [], [], []
            for seed in seeds:
                try:
                    r = scenario_crash(
                        seed,
                        nodes=n,
                        warmup_ms=CRASH_WARMUP_MS,
                        max_detect_ms=120_000,
                        max_recover_ms=60_000,
                        **_gossip_args(network),
                    )
                except SimulationFailure:
                    failed.append(seed)
                    continue
                f = r.figures
                first.append(f["detect_first_ms"] / 1000)
                median.append(f["detect_median_ms"] / 1000)
                every.append(f["detect_all_ms"] / 1000)
                recover.append(f["recovered_after_ms"] / 1000)
            rows.append(
                [
                    str(n),
                    label,
                    f"{len(seeds)} seeds",
                    _fmt(statistics.median(first) if first else None),
                    _fmt(statistics.median(median) if median else None),
                    _fmt(statistics.median(every) if every else None),
                    _fmt(max(every) if every else None),
                    _fmt(max(recover) if recover else None),
                    ", ".join(map(str, failed)) or "—",
                ]
            )
    if big is not None:
        t = big.crash_detect_ms
        rows.append(
            [
                str(big.nodes),
                "10% loss",
                f"1 crash, seed {big.seed}",
                _fmt(t[0] / 1000 if t else None),
                _fmt(statistics.median(t) / 1000 if t else None),
                _fmt(big.crash_all_ms / 1000 if big.crash_all_ms is not None else None),
                _fmt(big.crash_all_ms / 1000 if big.crash_all_ms is not None else None),
                "not run",
                "—" if big.crash_all_ms is not None else "not all detected",
            ]
        )
    s.table(
        [
            "nodes",
            "network",
            "runs",
            "first node (s)",
            "median node (s)",
            "all nodes: median (s)",
            "all nodes: max (s)",
            "restart to all up, max (s)",
            "failed (seed)",
        ],
        rows,
        "lllrrrrrl",
    )
    return s


# --- 3. false suspicions -------------------------------------------------------------------------


def _suspicion_row(
    n: int, label: str, suspicions: list[Suspicion], node_hours: float, virtual_s: float
) -> list[str]:
    false = [x for x in suspicions if x.subject_was_running]
    lengths = [(x.until_ms - x.since_ms) / 1000 for x in false if x.until_ms is not None]
    return [
        str(n),
        label,
        f"{virtual_s:,.0f}",
        f"{node_hours:,.1f}",
        str(len(false)),
        f"{len(false) / node_hours:.3f}" if node_hours else "—",
        _fmt(statistics.median(lengths) if lengths else None, 2),
        _fmt(max(lengths) if lengths else None, 2),
    ]


def _over_time_row(n: int, suspicions: list[Suspicion], end_ms: float) -> list[str]:
    """False suspicions per node-hour in each window since the cold start."""
    edges = [e for e in SUSPICION_BUCKETS_MS if e < end_ms] + [end_ms]
    cells = [str(n)]
    for lo, hi in itertools.pairwise(edges):
        count = sum(1 for x in suspicions if x.subject_was_running and lo <= x.since_ms < hi)
        cells.append(f"{count / (n * (hi - lo) / 3_600_000):,.1f} ({count})")
    cells += ["—"] * (len(SUSPICION_BUCKETS_MS) + 1 - len(cells))
    return cells


def false_suspicion_section(big: BigRun | None, quick: bool) -> Section:
    s = Section("3. False suspicions at 10% loss, 1-50 ms delays, no crashes")
    s.text(intro(3, quick))
    rows, over_time = [], []
    for n, duration_ms in FALSE_SUSPICION_MS.items():
        if quick:
            duration_ms /= 10
        sim = Simulation(n, BIG_SEED, LOSSY, record_suspicions=True)
        sim.run_for(duration_ms)
        suspicions = sim.suspicions()
        counted = [x for x in suspicions if x.since_ms >= SUSPICION_COUNT_FROM_MS]
        node_hours = n * (duration_ms - SUSPICION_COUNT_FROM_MS) / 3_600_000
        rows.append(
            _suspicion_row(
                n,
                f"seed {BIG_SEED}, from {SUSPICION_COUNT_FROM_MS / 1000:g} s",
                counted,
                node_hours,
                duration_ms / 1000,
            )
        )
        over_time.append(_over_time_row(n, suspicions, duration_ms))
    if big is not None:
        rows.append(
            _suspicion_row(
                big.nodes,
                f"seed {big.seed}, from {BIG_WARMUP_MS / 1000:g} s (a crash at "
                f"{BIG_CRASH_AT_MS / 1000:g} s not counted)",
                big.suspicions,
                big.observed_node_hours,
                big.virtual_ms / 1000,
            )
        )
        over_time.append(_over_time_row(big.nodes, big.all_suspicions, big.virtual_ms))
    s.table(
        [
            "nodes",
            "run",
            "virtual s",
            "observer node-hours",
            "false suspicions",
            "per node-hour",
            "median length (s)",
            "max length (s)",
        ],
        rows,
        "llrrrrrr",
    )
    edges = [*SUSPICION_BUCKETS_MS, None]
    s.text(
        "False suspicions per node-hour (and their number) by when they began, counted from "
        "the cold start at 0 s:"
    )
    s.table(
        [
            "nodes",
            *(
                f"{lo / 1000:g}-{hi / 1000:g} s" if hi is not None else f"{lo / 1000:g} s-end"
                for lo, hi in itertools.pairwise(edges)
            ),
        ],
        over_time,
    )
    return s


# --- 4. ring movement on a join ------------------------------------------------------------------


@dataclass
class RingMovement:
    """One ring algorithm at n members and Q partitions: what joins and leaves move, and balance."""

    algorithm: str
    n: int
    q: int
    owner_moves: list[int]  # per joiner (joiner0, joiner1, ...)
    to_joiner: list[int]
    transfers: list[int]
    leave_moves: list[int]  # per leaver
    leave_transfers: list[int]
    loads: list[int]  # partitions each member of the n owns
    replica_loads: list[int]
    build_s: float  # CPU to build the ring of the n


def ring_movement(algorithm: str, n: int, q: int, joiners: int, leavers: int) -> RingMovement:
    """Join `joiners` nodes one at a time to n members (each against the same n) and take
    `leavers` of them out, and compare each ring with the n members' by `ring.diff`."""
    replicas = DEFAULT_REPLICAS
    members = [Member(f"n{i:04d}") for i in range(n)]
    started = time.process_time()
    base = Ring(members, q, replicas, algorithm)
    build_s = time.process_time() - started
    out = RingMovement(algorithm, n, q, [], [], [], [], [], [], [], build_s)
    for k in range(joiners):
        joiner = f"joiner{k}"
        changes = diff(base, Ring([*members, Member(joiner)], q, replicas, algorithm))
        moved = [c for c in changes if c.old_owner != c.new_owner]
        out.owner_moves.append(len(moved))
        out.to_joiner.append(sum(1 for c in moved if c.new_owner == joiner))
        out.transfers.append(sum(len(c.gained) for c in changes))
    for k in range(leavers):
        gone = members[k * n // leavers].node_id
        changes = diff(base, Ring([m for m in members if m.node_id != gone], q, replicas, algorithm))
        out.leave_moves.append(sum(1 for c in changes if c.old_owner != c.new_owner))
        out.leave_transfers.append(sum(len(c.gained) for c in changes))
    out.loads = [len(base.owned_partitions(node)) for node in base.node_ids]
    out.replica_loads = [len(base.replica_partitions(node)) for node in base.node_ids]
    return out


def join_section(quick: bool) -> Section:
    s = Section("4. Partitions moved when one node joins")
    s.text(intro(4, quick))
    replicas = DEFAULT_REPLICAS
    wide = JOINERS if quick else WIDE_JOINERS
    results = [
        ring_movement(algorithm, n, q, wide, LEAVERS)
        for n in RING_SIZES
        for q in RING_PARTITIONS
        if not (quick and q > 4096)
        for algorithm in RING_MEASURED
    ]
    rows = []
    for r in results:
        ideal = r.q / (r.n + 1)
        moves, to_joiner = statistics.mean(r.owner_moves[:JOINERS]), statistics.mean(r.to_joiner[:JOINERS])
        transfers = statistics.mean(r.transfers[:JOINERS])
        rows.append(
            [
                r.algorithm,
                str(r.n),
                str(r.q),
                f"{r.q / r.n:,.1f}",
                f"{ideal:,.1f}",
                f"{moves:,.1f}",
                f"{moves / ideal:.2f}",
                f"{to_joiner:,.1f}",
                f"{moves - to_joiner:,.1f}",
                f"{transfers:,.1f}",
                f"{replicas * ideal:,.1f}",
                f"{transfers / (replicas * ideal):.2f}",
                f"{min(r.to_joiner[:JOINERS])}-{max(r.to_joiner[:JOINERS])}",
            ]
        )
    s.table(
        [
            "algorithm",
            "nodes n",
            "Q",
            "Q/n",
            "ideal Q/(n+1)",
            "owner changes",
            "/ ideal",
            "to the joiner",
            "between old nodes",
            "replica transfers",
            "ideal N*Q/(n+1)",
            "/ ideal",
            "joiner owns",
        ],
        rows,
        "lrrrrrrrrrrrr",
    )
    s.text(
        f"The same rings: the joins over {wide} joiners (joiner0 to joiner{wide - 1}, mean and "
        f"worst, each against its ideal), {LEAVERS} members leaving (n0000 and members spaced "
        "n/3 apart; owner changes against the leaver's share Q/n, replica transfers against "
        "N·Q/n), and the balance of the n members' ring: partitions owned (*share*) and held "
        "as a replica (*replica load*, against N·Q/n) per member, over the mean; *own none*: "
        "members without a partition. *Build*: CPU seconds to build the ring of the n members."
    )
    rows = []
    for r in results:
        ideal = r.q / (r.n + 1)
        mean_share = r.q / r.n
        rows.append(
            [
                r.algorithm,
                str(r.n),
                str(r.q),
                f"{statistics.mean(r.owner_moves) / ideal:.2f}",
                f"{max(r.owner_moves) / ideal:.2f}",
                f"{statistics.mean(r.transfers) / (replicas * ideal):.2f}",
                f"{max(r.transfers) / (replicas * ideal):.2f}",
                f"{statistics.mean(r.leave_moves) / mean_share:.2f}",
                f"{statistics.mean(r.leave_transfers) / (replicas * mean_share):.2f}",
                f"{min(r.loads) / mean_share:.2f}-{max(r.loads) / mean_share:.2f}",
                str(sum(1 for x in r.loads if x == 0)),
                f"{min(r.replica_loads) / (replicas * mean_share):.2f}-"
                f"{max(r.replica_loads) / (replicas * mean_share):.2f}",
                f"{r.build_s:.2f}",
            ]
        )
    s.table(
        [
            "algorithm",
            "nodes n",
            "Q",
            f"{wide} joins: owner changes / ideal",
            "worst",
            "replica transfers / ideal",
            "worst",
            "leave: owner changes / ideal",
            "leave: replica transfers / ideal",
            "share / mean",
            "own none",
            "replica load / mean",
            "build (s)",
        ],
        rows,
        "lrrrrrrrrrrrr",
    )
    return s


# --- 5. hints during an outage -------------------------------------------------------------------


def hint_section(quick: bool) -> Section:
    s = Section("5. Hints accumulated while one node is down")
    s.text(intro(5, quick))
    q = 1024
    writes = HINT_WRITES_PER_S * HINT_OUTAGE_S
    if quick:
        writes //= 10
    rng = random.Random(BIG_SEED)
    # Uniform writes over a large key space: each write's partition from the key's real token.
    per_partition = collections.Counter(
        partition_of(token(b"default", f"key{rng.getrandbits(48)}".encode()), q)
        for _ in range(writes)
    )
    rows = []
    n_replicas = DEFAULT_REPLICAS
    for n in RING_SIZES:
        ring = Ring([Member(f"n{i:04d}") for i in range(n)], q, n_replicas)
        for down in rng.sample(ring.node_ids, HINT_DOWN_NODES):
            partitions = ring.replica_partitions(down)
            hints = sum(per_partition[p] for p in partitions)
            by_holder: collections.Counter[str] = collections.Counter()
            for p in partitions:
                for replica in ring.fallbacks(p, {down}):
                    if replica.hint_for == down:
                        by_holder[replica.node_id] += per_partition[p]
            assert sum(by_holder.values()) == hints  # one hint per write that needed one
            analytic = writes * n_replicas / n
            rows.append(
                [
                    str(n),
                    down,
                    str(len(partitions)),
                    f"{hints:,}",
                    f"{writes * len(partitions) / q:,.0f}",
                    f"{analytic:,.0f}",
                    f"{hints / analytic:.2f}",
                    str(len(by_holder)),
                    f"{max(by_holder.values(), default=0):,}",
                ]
            )
    s.table(
        [
            "nodes",
            "down node",
            "its replica partitions",
            "hints",
            "expected from its partitions",
            "analytic W*T*N/n",
            "hints / analytic",
            "nodes holding hints",
            "most on one node",
        ],
        rows,
        "llrrrrrrr",
    )
    return s


# --- 6. healing a partition ----------------------------------------------------------------------


def _split_and_heal(seed: int, n: int, probe: bool) -> tuple[float | None, float | None]:
    """Seconds until every node holds the other half down, and from the heal until everyone
    holds everyone up (None: not within HEAL_LIMIT_MS)."""
    sim = Simulation(n, seed, CLEAN, GossipSettings(probe_unreachable=probe))
    sim.run_for(20_000)
    shuffled = list(sim.members)
    sim.rng.shuffle(shuffled)
    a, b = shuffled[: n // 2], shuffled[n // 2 :]
    sim.partition(a, b)
    start = sim.now_ms

    def split_seen() -> bool:
        return all(not sim.is_up(x, y) and not sim.is_up(y, x) for x in a for y in b)

    if not sim.run_until(split_seen, timeout_ms=HEAL_LIMIT_MS, poll_ms=200.0):
        return None, None
    split_s = (sim.now_ms - start) / 1000
    sim.heal()
    start = sim.now_ms
    healed = sim.run_until(sim.nobody_suspected, timeout_ms=HEAL_LIMIT_MS, poll_ms=200.0)
    return split_s, (sim.now_ms - start) / 1000 if healed else None


def heal_section(quick: bool) -> Section:
    s = Section("6. Healing a partition into two halves")
    s.text(intro(6, quick))
    seeds = SEEDS[:2] if quick else SEEDS[:3]
    rows = []
    for n in (10, 100):
        for probe in (False, True):
            runs = [_split_and_heal(seed, n, probe) for seed in seeds]
            split = [x for x, _ in runs if x is not None]
            heal = [y for _, y in runs if y is not None]
            rows.append(
                [
                    str(n),
                    "with probing (the node now)" if probe else "without probing (the node before)",
                    f"{len(seeds)} seeds, no loss",
                    _fmt(max(split) if split else None),
                    _fmt(max(heal))
                    if len(heal) == len(runs)
                    else f"never ({HEAL_LIMIT_MS / 1000:g} s limit)",
                    f"{len(runs) - len(heal)} of {len(runs)}",
                ]
            )
    s.table(
        [
            "nodes",
            "peer choice",
            "runs",
            "split seen by all, max (s)",
            "all up after heal, max (s)",
            "runs that never healed",
        ],
        rows,
        "lllrrr",
    )
    return s


# --- the document --------------------------------------------------------------------------------


def write_report(out: str, quick: bool = False) -> None:
    # Imported here: section 7 builds on this module's Section.
    from ringkv.testing.sim.scale_datacenters import datacenter_section

    started = time.process_time()
    wall = time.monotonic()
    big = None
    big_cpu = 0.0
    if not quick:
        print("1000 nodes, combined run ...", flush=True)
        big = big_run()
        big_cpu = big.cpu_s
        print(f"  {big.cpu_s:.0f} s CPU for {big.virtual_ms / 1000:.1f} virtual s", flush=True)
    sections = [
        _timed(lambda: propagation_section(big, quick)),
        _timed(lambda: crash_section(big, quick)),
        _timed(lambda: false_suspicion_section(big, quick)),
        _timed(lambda: join_section(quick)),
        _timed(lambda: hint_section(quick)),
        _timed(lambda: heal_section(quick)),
        _timed(lambda: datacenter_section(quick)),
    ]
    total_cpu = time.process_time() - started
    gossip = GossipSettings()
    lines = [
        "# Scale: gossip, failure detection, the ring and hints at 10, 100 and 1000 nodes, "
        "and across datacenters",
        "",
        f"Measured {datetime.date.today().isoformat()} by `python -m ringkv.testing.simulator "
        f"report{' --quick' if quick else ''}` on {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}, Python {platform.python_version()}): "
        f"{total_cpu:,.0f} s of CPU in all ({time.monotonic() - wall:,.0f} s wall, the machine "
        f"shared), of which {big_cpu:,.0f} s for the 1000-node run.",
        "",
        "## How it was measured",
        "",
        "Sections 1-3, 6 and 7 run the deterministic simulator (`ringkv/testing/simulator.py`): "
        "every node is the real `cluster/gossip.Membership` and `cluster/phi.FailureDetectors`, "
        "driven as `node/gossiper.py` drives them (beat, choose peers, three-way exchange "
        "GossipSyn/GossipAck/GossipStates through a simulated network, merge, every newer "
        "state a heartbeat), on virtual time. Every figure replays exactly from its seed "
        "(`python -m ringkv.testing.simulator run <scenario> --seed N ...`).",
        "",
        f"- Gossip: {gossip.describe()}. Static membership as the node runs it: every member "
        "is a seed. Each node starts at a random phase within the first interval, knowing only "
        "itself and the member list (a cold start).",
        f"- Networks: *no loss* = {CLEAN.describe()}; *10% loss* = {LOSSY.describe()}. Each "
        "copy of a message is lost or delayed independently, so messages reorder.",
        f"- Seeds: {_seed_list(SEEDS[:2] if quick else SEEDS)} for sections 1 and 2 at 10 and "
        f"100 nodes, {_seed_list(SEEDS[:2] if quick else SEEDS[:3])} for section 6, "
        f"{BIG_SEED} for section 3"
        + (
            "."
            if quick
            else f"; 1000 nodes get one combined run with seed {BIG_SEED} (about "
            "10 s of CPU per virtual second: every node merges some thousand heartbeats a "
            "second): cold start, three status changes at "
            f"{', '.join(f'{t / 1000:g}' for t in BIG_CHANGES_AT_MS)} s, one crash at "
            f"{BIG_CRASH_AT_MS / 1000:g} s, run until all know and all detect; suspicions are "
            f"counted from {BIG_WARMUP_MS / 1000:g} s."
        ),
        "- A *round* is one gossip interval (1 s) of virtual time: rounds = time from the "
        "change until the last node holds it / interval, so fractions are real.",
        "- Detection time is exact: the moment each observer's phi crossed 8, found by "
        "bisection on the real detector (phi is monotone between heartbeats), minus the crash "
        "time.",
        "- A suspicion is *false* when the observer's phi crossed 8 while the subject was "
        "running. Per node-hour = false suspicions / (observers x observed hours).",
        "",
    ]
    for section in sections:
        lines.extend([f"## {section.title}", "", *section.lines])
    analysis = _existing_analysis(out)
    if analysis:
        print(f"kept the Analysis section of {out}: check it against the new tables")
    lines.extend(analysis or ANALYSIS_PLACEHOLDER)
    with open(out, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    print(f"wrote {out} ({total_cpu:.0f} s CPU)")


def _existing_analysis(path: str) -> list[str]:
    """The hand-written "## Analysis" section of an earlier report, to the end of the file."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    at = text.find("\n## Analysis\n")
    if at < 0 or "(to be written from the tables above)" in text[at:]:
        return []
    return text[at + 1 :].rstrip("\n").split("\n")


# The analysis is written by a person who read the tables. A regenerated report keeps the one
# it finds (the figures replay exactly from their seeds, so they only move when the code does)
# and says so; a first report gets this marker.
ANALYSIS_PLACEHOLDER = [
    "## Analysis",
    "",
    "(to be written from the tables above)",
]
