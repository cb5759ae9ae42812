"""Datacenters: gossip, failure detection and placement across WAN delays. The scenarios of
section 7 of docs/benchmarks/scale.md, and the command that measures it.

    python -m ringkv.testing.sim.datacenters run dc-crash --seed 1 --datacenters 3 --nodes-per-dc 8
    python -m ringkv.testing.sim.datacenters report [--out docs/benchmarks/scale.md] [--quick]

Gossip scenarios run the deterministic simulator (testing/simulator.py: the real Membership and
FailureDetectors on virtual time) over a network whose delays come from a `Topology`
(topology.py): short within a datacenter, a WAN delay between two. The gossip itself is the
node's, and the node's peer choice knows nothing of datacenters: with three equal datacenters
two exchanges in three cross the WAN. Placement uses cluster/ring.Ring with a replica count
per datacenter, directly: no simulation.

Each scenario builds its run from (seed, parameters), checks what must hold, and returns a
`ScenarioResult` of scalar figures; a failed check raises `SimulationFailure` with the seed and
the `run` command that replays it. `report` measures section 7 alone and writes it into the
report in place (`python -m ringkv.testing.simulator report` measures every section, this one
included).
"""

from __future__ import annotations

import argparse
import collections
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ringkv.cluster.gossip import NodeStatus
from ringkv.cluster.phi import phi_of
from ringkv.cluster.ring import Member, Ring, diff
from ringkv.testing.sim.network import NetworkConditions
from ringkv.testing.sim.node import DEFAULT_FANOUT, GossipSettings, suspected_since
from ringkv.testing.sim.topology import LOCAL_DELAY_MS, WAN_DELAY_MS, Topology
from ringkv.testing.simulator import ScenarioResult, Simulation, SimulationFailure, replay

DEFAULT_RACKS_PER_DC = 5
PLACEMENT_JOINERS = 3
# Ring.fallbacks with a whole datacenter down walks the whole ring for every partition (no
# stand-in of that datacenter is left to find): a sample keeps Q = 65536 to seconds.
MAX_FALLBACK_PARTITIONS = 512

# Bisection steps for sigmas_to_threshold: 2^-60 of the search range, far below what any
# figure shows.
_BISECTION_STEPS = 60


def sigmas_to_threshold(threshold: float = 8.0) -> float:
    """How many standard deviations past mean + acceptable pause phi reaches `threshold`
    (cluster/phi.phi_of's logistic model: about 5.2 for 8)."""
    lo, hi = 0.0, 100.0
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        if phi_of(mid, 0.0, 1.0) >= threshold:
            hi = mid
        else:
            lo = mid
    return hi


# --- building a run ------------------------------------------------------------------------------


def topology_of(
    datacenters: int = 3,
    nodes_per_dc: int = 8,
    racks_per_dc: int = DEFAULT_RACKS_PER_DC,
    local_min_ms: float = LOCAL_DELAY_MS[0],
    local_max_ms: float = LOCAL_DELAY_MS[1],
    wan_min_ms: float = WAN_DELAY_MS[0],
    wan_max_ms: float = WAN_DELAY_MS[1],
) -> Topology:
    """The scenarios' topology from their flat parameters (the `run` command passes scalars)."""
    return Topology.grid(
        datacenters,
        nodes_per_dc,
        racks_per_dc,
        local_ms=(local_min_ms, local_max_ms),
        wan_ms=(wan_min_ms, wan_max_ms),
    )


def dc_simulation(
    topology: Topology,
    seed: int,
    *,
    loss: float = 0.0,
    duplication: float = 0.0,
    gossip: GossipSettings | None = None,
    record_suspicions: bool = False,
) -> Simulation:
    """A Simulation of the topology's nodes over its delays; the rest is `Simulation`'s."""
    network = NetworkConditions(loss=loss, duplication=duplication, topology=topology)
    return Simulation(topology.nodes, seed, network, gossip, record_suspicions=record_suspicions)


def replay_command(scenario: str, seed: int, **params: object) -> str:
    args = "".join(f" --{k.replace('_', '-')} {v}" for k, v in params.items() if v is not None)
    return f"python -m ringkv.testing.sim.datacenters run {scenario} --seed {seed}{args}"


def _fail(sim: Simulation, message: str, scenario: str, **params: object) -> None:
    raise SimulationFailure(
        f"{message}\nseed={sim.seed} (at {sim.now_ms:.0f} ms virtual, after "
        f"{sim.queue.processed} events); replay with seed={sim.seed}: "
        f"{replay_command(scenario, sim.seed, **params)}"
    )


def _result(name: str, sim: Simulation, figures: dict[str, object]) -> ScenarioResult:
    return ScenarioResult(
        name, sim.seed, sim.trace_hash(), figures, sim.now_ms, sim.queue.processed
    )


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


# --- scenarios -----------------------------------------------------------------------------------


def scenario_dc_spread(
    seed: int,
    datacenters: int = 3,
    nodes_per_dc: int = 8,
    racks_per_dc: int = DEFAULT_RACKS_PER_DC,
    local_min_ms: float = LOCAL_DELAY_MS[0],
    local_max_ms: float = LOCAL_DELAY_MS[1],
    wan_min_ms: float = WAN_DELAY_MS[0],
    wan_max_ms: float = WAN_DELAY_MS[1],
    loss: float = 0.0,
    warmup_ms: float = 10_000.0,
    max_rounds: float = 60.0,
) -> ScenarioResult:
    """After a warm-up one node (the scenario's choice) starts leaving; run until every node of
    every datacenter knows. Checks: everyone learns it within `max_rounds` gossip intervals.
    Figures in rounds (intervals) from the change: when the last node knew, the median node,
    and the last node of the subject's own datacenter and of the others."""
    params = dict(
        datacenters=datacenters,
        nodes_per_dc=nodes_per_dc,
        racks_per_dc=racks_per_dc,
        local_min_ms=local_min_ms,
        local_max_ms=local_max_ms,
        wan_min_ms=wan_min_ms,
        wan_max_ms=wan_max_ms,
        loss=loss,
        warmup_ms=warmup_ms,
        max_rounds=max_rounds,
    )
    topology = topology_of(
        datacenters, nodes_per_dc, racks_per_dc, local_min_ms, local_max_ms, wan_min_ms, wan_max_ms
    )
    sim = dc_simulation(topology, seed, loss=loss)
    sim.run_for(warmup_ms)
    subject = sim.rng.choice(sim.members)
    watch = sim.set_status(subject, NodeStatus.LEAVING)
    interval = sim.gossip.interval_ms
    sim.run_until(lambda: watch.completed_ms is not None, timeout_ms=max_rounds * interval)
    if watch.completed_ms is None:
        unaware = collections.Counter(
            topology.dc_of(n) for n in sim.members if n not in watch.known_by
        )
        _fail(
            sim,
            f"after {max_rounds:g} rounds nodes did not know {subject} was leaving: "
            + ", ".join(f"{count} in {dc}" for dc, count in sorted(unaware.items())),
            "dc-spread",
            **params,
        )
    home = topology.dc_of(subject)

    def rounds(nodes: Iterable[str]) -> list[float]:
        return [(watch.known_by[n] - watch.started_ms) / interval for n in nodes]

    everyone = rounds(sim.members)
    own = rounds(n for n in sim.members if topology.dc_of(n) == home)
    others = rounds(n for n in sim.members if topology.dc_of(n) != home)
    return _result(
        "dc-spread",
        sim,
        {
            "subject": subject,
            "rounds": watch.rounds(interval),
            "median_learn_rounds": statistics.median(everyone),
            "own_dc_rounds": max(own),
            "other_dcs_rounds": max(others) if others else None,
            "own_dc_median_rounds": statistics.median(own),
            "other_dcs_median_rounds": _median(others),
        },
    )


def scenario_dc_crash(
    seed: int,
    datacenters: int = 3,
    nodes_per_dc: int = 8,
    racks_per_dc: int = DEFAULT_RACKS_PER_DC,
    local_min_ms: float = LOCAL_DELAY_MS[0],
    local_max_ms: float = LOCAL_DELAY_MS[1],
    wan_min_ms: float = WAN_DELAY_MS[0],
    wan_max_ms: float = WAN_DELAY_MS[1],
    loss: float = 0.0,
    warmup_ms: float = 30_000.0,
    max_detect_ms: float = 60_000.0,
) -> ScenarioResult:
    """After a warm-up one node crashes: every other node, in its datacenter and in the
    others, must hold it down within `max_detect_ms`.

    Figures per group of observers (`own`: the crashed node's datacenter; `other`: the rest),
    in ms after the crash: when the first, the median and the last observer's phi crossed the
    threshold. Each detection splits exactly into the *lag* (when the observer last heard of
    the crashed node, from the crash: positive when its last state was still spreading) and
    the *silence* the observer's window needed, mean + acceptable pause + about 5.2 standard
    deviations (`sigma_median_ms`)."""
    params = dict(
        datacenters=datacenters,
        nodes_per_dc=nodes_per_dc,
        racks_per_dc=racks_per_dc,
        local_min_ms=local_min_ms,
        local_max_ms=local_max_ms,
        wan_min_ms=wan_min_ms,
        wan_max_ms=wan_max_ms,
        loss=loss,
        warmup_ms=warmup_ms,
        max_detect_ms=max_detect_ms,
    )
    topology = topology_of(
        datacenters, nodes_per_dc, racks_per_dc, local_min_ms, local_max_ms, wan_min_ms, wan_max_ms
    )
    sim = dc_simulation(topology, seed, loss=loss)
    sim.run_for(warmup_ms)
    victim = sim.rng.choice(sim.members)
    crashed_ms = sim.now_ms
    sim.crash(victim)
    if not sim.run_until(lambda: sim.all_suspect(victim), timeout_ms=max_detect_ms):
        late = collections.Counter(topology.dc_of(o) for o in sim.running() if sim.is_up(o, victim))
        _fail(
            sim,
            f"{max_detect_ms:g} ms after {victim} crashed, nodes still held it up: "
            + ", ".join(f"{count} in {dc}" for dc, count in sorted(late.items())),
            "dc-crash",
            **params,
        )
    home = topology.dc_of(victim)
    groups: dict[str, dict[str, list[float]]] = {
        g: {"detect": [], "lag": [], "sigma": []} for g in ("own", "other")
    }
    for observer in sim.running():
        if observer == victim:
            continue
        detectors = sim.nodes[observer].detectors
        detector = detectors.detector(victim)
        at = suspected_since(detector, sim.now_ms, detectors.threshold)
        assert at is not None  # all_suspect held
        g = groups["own" if topology.dc_of(observer) == home else "other"]
        g["detect"].append(at - crashed_ms)
        g["lag"].append(detector.last_heartbeat_ms - crashed_ms)
        g["sigma"].append(detector.std_deviation_ms)
    figures: dict[str, object] = {"victim": victim}
    for name, g in groups.items():
        detect = sorted(g["detect"])
        figures |= {
            f"{name}_observers": len(detect),
            f"{name}_detect_first_ms": detect[0] if detect else None,
            f"{name}_detect_median_ms": _median(detect),
            f"{name}_detect_all_ms": detect[-1] if detect else None,
            f"{name}_lag_median_ms": _median(g["lag"]),
            f"{name}_sigma_median_ms": _median(g["sigma"]),
        }
    return _result("dc-crash", sim, figures)


def scenario_dc_quiet(
    seed: int,
    datacenters: int = 3,
    nodes_per_dc: int = 8,
    racks_per_dc: int = DEFAULT_RACKS_PER_DC,
    local_min_ms: float = LOCAL_DELAY_MS[0],
    local_max_ms: float = LOCAL_DELAY_MS[1],
    wan_min_ms: float = WAN_DELAY_MS[0],
    wan_max_ms: float = WAN_DELAY_MS[1],
    loss: float = 0.0,
    run_ms: float = 120_000.0,
    count_from_ms: float = 30_000.0,
    max_false_suspicions: int | None = None,
) -> ScenarioResult:
    """No crashes: count the suspicions of running nodes begun after `count_from_ms`, by
    whether observer and subject share a datacenter. Checks: at most `max_false_suspicions`
    (when given). Rates are per observed pair-hour, since the pairs within a datacenter are
    fewer than those across (3 x 100 nodes: 29,700 against 59,400)."""
    params = dict(
        datacenters=datacenters,
        nodes_per_dc=nodes_per_dc,
        racks_per_dc=racks_per_dc,
        local_min_ms=local_min_ms,
        local_max_ms=local_max_ms,
        wan_min_ms=wan_min_ms,
        wan_max_ms=wan_max_ms,
        loss=loss,
        run_ms=run_ms,
        count_from_ms=count_from_ms,
        max_false_suspicions=max_false_suspicions,
    )
    if not 0 <= count_from_ms < run_ms:
        raise ValueError(f"need 0 <= count_from_ms < run_ms, got {count_from_ms}, {run_ms}")
    topology = topology_of(
        datacenters, nodes_per_dc, racks_per_dc, local_min_ms, local_max_ms, wan_min_ms, wan_max_ms
    )
    sim = dc_simulation(topology, seed, loss=loss, record_suspicions=True)
    sim.run_for(run_ms)
    counted = [s for s in sim.suspicions() if s.subject_was_running and s.since_ms >= count_from_ms]
    own = [s for s in counted if topology.same_dc(s.observer, s.subject)]
    other = [s for s in counted if not topology.same_dc(s.observer, s.subject)]
    n = len(topology)
    own_pairs = sum(
        len(topology.nodes_in(dc)) * (len(topology.nodes_in(dc)) - 1) for dc in topology.datacenters
    )
    hours = (run_ms - count_from_ms) / 3_600_000
    lengths = [(s.until_ms - s.since_ms) for s in counted if s.until_ms is not None]
    if max_false_suspicions is not None and len(counted) > max_false_suspicions:
        first = min(counted, key=lambda s: s.since_ms)
        _fail(
            sim,
            f"{len(counted)} false suspicions (at most {max_false_suspicions}): the first, "
            f"{first.observer} of {first.subject} at {first.since_ms:.0f} ms",
            "dc-quiet",
            **params,
        )
    return _result(
        "dc-quiet",
        sim,
        {
            "observer_node_hours": n * hours,
            "own_dc_pair_hours": own_pairs * hours,
            "other_dc_pair_hours": (n * (n - 1) - own_pairs) * hours,
            "own_dc_false": len(own),
            "other_dc_false": len(other),
            "median_length_ms": _median(lengths),
            "max_length_ms": max(lengths) if lengths else None,
        },
    )


def scenario_dc_partition(
    seed: int,
    datacenters: int = 3,
    nodes_per_dc: int = 8,
    racks_per_dc: int = DEFAULT_RACKS_PER_DC,
    local_min_ms: float = LOCAL_DELAY_MS[0],
    local_max_ms: float = LOCAL_DELAY_MS[1],
    wan_min_ms: float = WAN_DELAY_MS[0],
    wan_max_ms: float = WAN_DELAY_MS[1],
    loss: float = 0.0,
    warmup_ms: float = 20_000.0,
    cut_off: str = "",
    max_detect_ms: float = 60_000.0,
    max_heal_ms: float = 30_000.0,
) -> ScenarioResult:
    """After a warm-up the WAN links of one datacenter (`cut_off`, default the last) go down;
    later they come back. Within `max_detect_ms` every node must hold every node across the
    cut down and still every node of its own side up; within `max_heal_ms` of the heal,
    everyone must hold everyone up again."""
    params = dict(
        datacenters=datacenters,
        nodes_per_dc=nodes_per_dc,
        racks_per_dc=racks_per_dc,
        local_min_ms=local_min_ms,
        local_max_ms=local_max_ms,
        wan_min_ms=wan_min_ms,
        wan_max_ms=wan_max_ms,
        loss=loss,
        warmup_ms=warmup_ms,
        cut_off=cut_off or None,
        max_detect_ms=max_detect_ms,
        max_heal_ms=max_heal_ms,
    )
    topology = topology_of(
        datacenters, nodes_per_dc, racks_per_dc, local_min_ms, local_max_ms, wan_min_ms, wan_max_ms
    )
    if len(topology.datacenters) < 2:
        raise ValueError("cutting a datacenter off needs at least two")
    dc = cut_off or topology.datacenters[-1]
    inside = topology.nodes_in(dc)
    outside = tuple(n for n in topology.nodes if n not in set(inside))
    sim = dc_simulation(topology, seed, loss=loss)
    sim.run_for(warmup_ms)
    cut_ms = sim.now_ms
    sim.partition(inside)

    def cut_seen() -> bool:
        return all(not sim.is_up(x, y) and not sim.is_up(y, x) for x in inside for y in outside)

    if not sim.run_until(cut_seen, timeout_ms=max_detect_ms, poll_ms=200.0):
        still = sum(1 for x in inside for y in outside if sim.is_up(x, y) or sim.is_up(y, x))
        _fail(
            sim,
            f"{max_detect_ms:g} ms after {dc} was cut off, {still} of {len(inside) * len(outside)}"
            " pairs across the cut still held each other up",
            "dc-partition",
            **params,
        )
    cut_seen_ms = sim.now_ms - cut_ms
    if not (sim.nobody_suspected(inside) and sim.nobody_suspected(outside)):
        _fail(sim, "during the cut a node suspected one of its own side", "dc-partition", **params)
    sim.heal()
    healed_ms = sim.now_ms
    if not sim.run_until(sim.nobody_suspected, timeout_ms=max_heal_ms, poll_ms=200.0):
        still = sum(
            1 for x in inside for y in outside if not sim.is_up(x, y) or not sim.is_up(y, x)
        )
        _fail(
            sim,
            f"{max_heal_ms:g} ms after the heal {still} of {len(inside) * len(outside)} pairs "
            f"across {dc}'s cut still held each other down",
            "dc-partition",
            **params,
        )
    return _result(
        "dc-partition",
        sim,
        {
            "cut_off": dc,
            "cut_seen_ms": cut_seen_ms,
            "all_up_after_heal_ms": sim.now_ms - healed_ms,
        },
    )


SCENARIOS: dict[str, Callable[..., ScenarioResult]] = {
    "dc-spread": scenario_dc_spread,
    "dc-crash": scenario_dc_crash,
    "dc-quiet": scenario_dc_quiet,
    "dc-partition": scenario_dc_partition,
}


# --- placement: the real ring, a replica count per datacenter ------------------------------------


@dataclass(frozen=True)
class DatacenterPlacement:
    """How one datacenter's replicas sit on a ring with a count per datacenter."""

    dc: str
    nodes: int
    racks: int
    count: int  # replicas asked of this datacenter in every preference list
    lists_with_count: int  # preference lists holding exactly `count` of its nodes
    lists_rack_distinct: int  # ... whose nodes of this datacenter span min(count, racks) racks
    owned: int  # partitions whose owner is one of its nodes
    load_min: int  # replica partitions per node of this datacenter
    load_mean: float
    load_max: int


def placement(ring: Ring, topology: Topology) -> list[DatacenterPlacement]:
    """Per datacenter of `ring` (built with a count per datacenter, over `topology`'s nodes or
    some of them): counts, rack diversity, ownership and replica load of every partition."""
    counts = dict(ring.dc_replicas)
    if not counts:
        raise ValueError("the ring has no replica count per datacenter")
    out = []
    for dc in ring.datacenters:
        nodes = [n for n in ring.node_ids if ring.dc_of(n) == dc]
        racks = {topology.rack_of(n) for n in nodes}
        count = counts.get(dc, 0)
        with_count = distinct = 0
        for p in range(ring.partitions):
            mine = [n for n in ring.preference_list(p) if ring.dc_of(n) == dc]
            with_count += len(mine) == count
            distinct += len({topology.rack_of(n) for n in mine}) == min(count, len(racks))
        loads = [len(ring.replica_partitions(n)) for n in nodes]
        out.append(
            DatacenterPlacement(
                dc,
                len(nodes),
                len(racks),
                count,
                with_count,
                distinct,
                sum(len(ring.owned_partitions(n)) for n in nodes),
                min(loads, default=0),
                statistics.mean(loads) if loads else 0.0,
                max(loads, default=0),
            )
        )
    return out


@dataclass(frozen=True)
class StandIns:
    """What `Ring.fallbacks` gives over some partitions with some nodes down."""

    partitions: int  # asked
    holders: int  # primaries and stand-ins, in all
    stand_ins: int
    strays: int  # stand-ins of another datacenter than the replica they stand in for: must be 0
    cpu_us_per_call: float


def stand_ins(
    ring: Ring, unavailable: set[str], max_partitions: int = MAX_FALLBACK_PARTITIONS
) -> StandIns:
    """`Ring.fallbacks` of at most `max_partitions` partitions spread evenly over the ring,
    with `unavailable` down."""
    step = max(1, ring.partitions // max_partitions)
    asked = range(0, ring.partitions, step)
    holders = stand_ins_ = strays = 0
    started = time.process_time()
    lists = [ring.fallbacks(p, unavailable) for p in asked]
    cpu_s = time.process_time() - started
    for lst in lists:
        holders += len(lst)
        for holder in lst:
            if holder.hint_for is not None:
                stand_ins_ += 1
                strays += ring.dc_of(holder.node_id) != ring.dc_of(holder.hint_for)
    return StandIns(len(asked), holders, stand_ins_, strays, cpu_s / len(asked) * 1e6)


@dataclass(frozen=True)
class JoinMovement:
    """What one node joining datacenter `joined` changes, seen per datacenter `dc`."""

    dc: str
    joined: str
    changed: float  # partitions whose set of `dc` replicas changed (mean over joiners)
    transfers: float  # replicas of `dc` gained (what streaming copies), mean over joiners
    ideal: float  # count x Q / (nodes of dc + 1) for the joiner's own datacenter, else 0


def join_movement(
    topology: Topology,
    partitions: int,
    replicas: dict[str, int],
    dc: str,
    joiners: int = PLACEMENT_JOINERS,
) -> list[JoinMovement]:
    """Ring of the topology's nodes against the same plus one node in `dc` (rack r1; names
    joiner0, joiner1, ...), per datacenter: the partitions whose replicas there changed."""
    members = list(topology.members())
    base = Ring(members, partitions, replicas)
    changed: dict[str, list[int]] = {d: [] for d in base.datacenters}
    gained: dict[str, list[int]] = {d: [] for d in base.datacenters}
    for k in range(joiners):
        member = Member.at(f"joiner{k}", f"{dc}/r1")
        grown = Ring([*members, member], partitions, replicas)
        per_dc_changed = dict.fromkeys(base.datacenters, 0)
        per_dc_gained = dict.fromkeys(base.datacenters, 0)
        for change in diff(base, grown):
            for d in base.datacenters:
                before = {n for n in change.old_replicas if grown.dc_of(n) == d}
                after = {n for n in change.new_replicas if grown.dc_of(n) == d}
                if before != after:
                    per_dc_changed[d] += 1
                    per_dc_gained[d] += len(after - before)
        for d in base.datacenters:
            changed[d].append(per_dc_changed[d])
            gained[d].append(per_dc_gained[d])
    size = len(topology.nodes_in(dc))
    return [
        JoinMovement(
            d,
            dc,
            statistics.mean(changed[d]),
            statistics.mean(gained[d]),
            replicas.get(d, 0) * partitions / (size + 1) if d == dc else 0.0,
        )
        for d in base.datacenters
    ]


# --- theory --------------------------------------------------------------------------------------


def push_pull_rounds(n: int, fanout: int = DEFAULT_FANOUT) -> tuple[float, float]:
    """(median node, last node) in gossip intervals, of push-pull spread among n nodes that
    each start `fanout` exchanges an interval at their own phase: every node takes part in
    about 2·fanout exchanges an interval, so the informed fraction i grows as the logistic
    di/dt = 2f·i(1 - i). From 1/n, half know after ln(n)/2f and all but half a node after
    (ln n + ln 2n)/2f. Exchanges here take no time."""
    rate = 2 * fanout
    return math.log(n) / rate, (math.log(n) + math.log(2 * n)) / rate


def crossing_exchange_ms(topology: Topology) -> float:
    """What a gossip exchange that crosses the WAN costs over one that does not, in ms, until
    the news is merged: the initiator merges the GossipAck after two one-way delays, the
    peer the GossipStates after three; push-pull, so half and half: 2.5 one-way delays."""
    return 2.5 * (topology.wan_ms.mean_ms - topology.local_ms.mean_ms)


def crossing_share(topology: Topology) -> float:
    """The share of peer choices that cross the WAN: the node chooses among all members,
    blind to datacenters, so for a node of a datacenter of k nodes, (n - k) / (n - 1)."""
    n = len(topology)
    return statistics.mean(
        (n - len(topology.nodes_in(topology.dc_of(x)))) / (n - 1) for x in topology.nodes
    )


# --- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ringkv.testing.sim.datacenters",
        description="Datacenters in ringkv's simulator: replay a scenario, or measure section 7 "
        "of the scale report.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (replay) one scenario with a seed")
    run.add_argument("scenario", choices=sorted(SCENARIOS))
    run.add_argument("--seed", type=int, required=True)
    report = sub.add_parser("report", help="measure section 7 and write it into the report")
    report.add_argument("--out", default="docs/benchmarks/scale.md")
    report.add_argument("--quick", action="store_true", help="3 x 20 nodes, fewer seeds")
    args, extra = parser.parse_known_args(argv)
    if args.command == "report":
        if extra:
            parser.error(f"unexpected arguments {' '.join(extra)}")
        # Imported here: the report builds on this module's scenarios.
        from ringkv.testing.sim.scale_datacenters import datacenter_section, write_section

        section = datacenter_section(args.quick)
        write_section(args.out, section)
        print(f"wrote section 7 into {args.out} ({section.cpu_s:.0f} s CPU)")
        return 0
    return replay(parser, SCENARIOS[args.scenario], args.seed, extra)


if __name__ == "__main__":
    sys.exit(main())
