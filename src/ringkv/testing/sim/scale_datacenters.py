"""Section 7 of the scale report (docs/benchmarks/scale.md): three datacenters of 100 nodes
against one of 300 and one of 100, measured with the scenarios of sim/datacenters.py and the
real ring. `python -m ringkv.testing.sim.datacenters report` measures this section alone and
writes it into the report in place; `python -m ringkv.testing.simulator report` measures it
with the rest (sim/scale.py).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from ringkv.cluster.ring import Ring
from ringkv.testing.sim.datacenters import (
    MAX_FALLBACK_PARTITIONS,
    PLACEMENT_JOINERS,
    crossing_exchange_ms,
    crossing_share,
    join_movement,
    placement,
    push_pull_rounds,
    scenario_dc_crash,
    scenario_dc_partition,
    scenario_dc_quiet,
    scenario_dc_spread,
    sigmas_to_threshold,
    stand_ins,
)
from ringkv.testing.sim.node import GossipSettings
from ringkv.testing.sim.scale import Section, _fmt
from ringkv.testing.sim.topology import WAN_DELAY_MS, Topology

# The report's clusters: three datacenters of 100 nodes, five racks each (20 nodes a rack),
# against one datacenter of all 300 and one of 100 (section 1's size) with the same local delays.
DCS = 3
NODES_PER_DC = 100
RACKS_PER_DC = 5
QUICK_NODES_PER_DC = 20  # --quick: 3 x 20
JITTERY_WAN_MS = (20.0, 300.0)  # a WAN whose delay varies by 280 ms from message to message
SPREAD_SEEDS = (1, 2, 3)
CRASH_SEEDS = (1, 2)
QUIET_SEED = 1
QUIET_RUN_MS = 180_000.0  # false suspicions: 3 virtual minutes ...
QUIET_COUNT_FROM_MS = 60_000.0  # ... counting those begun after the cold start's first minute
QUIET_LOSS = 0.1  # the jittery run also loses 10 % of messages, as section 3's network does
PLACEMENT_PARTITIONS = (4096, 16384, 65536)
PLACEMENT_REPLICAS_PER_DC = 3


# --- the report's section 7 ----------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    label: str
    topology: Topology

    def params(self) -> dict[str, object]:
        t = self.topology
        dcs = len(t.datacenters)
        return dict(
            datacenters=dcs,
            nodes_per_dc=len(t) // dcs,
            racks_per_dc=RACKS_PER_DC,
            local_min_ms=t.local_ms.min_ms,
            local_max_ms=t.local_ms.max_ms,
            wan_min_ms=t.wan_ms.min_ms,
            wan_max_ms=t.wan_ms.max_ms,
        )


def clusters(quick: bool) -> list[Cluster]:
    per_dc = QUICK_NODES_PER_DC if quick else NODES_PER_DC
    n = DCS * per_dc
    return [
        Cluster(f"1 DC x {per_dc}", Topology.grid(1, per_dc, RACKS_PER_DC)),
        Cluster(f"1 DC x {n}", Topology.grid(1, n, RACKS_PER_DC)),
        Cluster(f"{DCS} DCs x {per_dc}", Topology.grid(DCS, per_dc, RACKS_PER_DC)),
    ]


def _s(ms: float | None) -> str:
    return _fmt(None if ms is None else ms / 1000, 2)


def _spread_table(s: Section, quick: bool) -> None:
    seeds = SPREAD_SEEDS[:2] if quick else SPREAD_SEEDS
    rows = []
    single: dict[int, float] = {}  # nodes -> median all-know rounds, 1 DC
    for cluster in clusters(quick):
        t = cluster.topology
        results = [scenario_dc_spread(seed, **cluster.params()) for seed in seeds]
        f = [r.figures for r in results]
        everyone = [x["rounds"] for x in f]
        median_all = statistics.median(everyone)
        theory_median, theory_all = push_pull_rounds(len(t))
        multi = len(t.datacenters) > 1
        if not multi:
            single[len(t)] = median_all
        # Rounds a crossing a round adds to each round: share x cost / interval.
        interval_ms = GossipSettings().interval_ms
        wan_extra = crossing_share(t) * crossing_exchange_ms(t) / interval_ms if multi else 0.0
        expected = single.get(len(t))
        rows.append(
            [
                cluster.label,
                f"{len(seeds)} seeds",
                f"{statistics.median(x['median_learn_rounds'] for x in f):.2f}",
                f"{theory_median:.2f}",
                f"{median_all:.2f}",
                f"{max(everyone):.2f}",
                f"{theory_all:.2f}",
                f"{statistics.median(x['own_dc_rounds'] for x in f):.2f}",
                f"{statistics.median(x['other_dcs_rounds'] for x in f):.2f}" if multi else "—",
                f"{expected + wan_extra * expected:.2f}" if multi and expected else "—",
            ]
        )
    s.table(
        [
            "cluster",
            "runs",
            "median node learns (rounds)",
            "theory: median",
            "all know: median (rounds)",
            "all know: max (rounds)",
            "theory: all",
            "own DC all know (rounds)",
            "other DCs all know (rounds)",
            "1 DC of as many, + one crossing a round",
        ],
        rows,
        "llrrrrrrrr",
    )


def _crash_table(s: Section, quick: bool) -> None:
    seeds = CRASH_SEEDS[:1] if quick else CRASH_SEEDS
    y8 = sigmas_to_threshold()
    gossip = GossipSettings()
    rows = []
    for cluster in clusters(quick)[1:]:
        for seed in seeds:
            f = scenario_dc_crash(seed, **cluster.params()).figures
            groups = ("own", "other") if len(cluster.topology.datacenters) > 1 else ("own",)
            for g in groups:
                lag = f[f"{g}_lag_median_ms"]
                sigma = f[f"{g}_sigma_median_ms"]
                rows.append(
                    [
                        cluster.label,
                        f"seed {seed}, {f['victim']}",
                        {"own": "same DC", "other": "other DCs"}[g] if len(groups) > 1 else "all",
                        str(f[f"{g}_observers"]),
                        _s(f[f"{g}_detect_first_ms"]),
                        _s(f[f"{g}_detect_median_ms"]),
                        _s(f[f"{g}_detect_all_ms"]),
                        _fmt(lag, 0),
                        _fmt(sigma, 0),
                        _s(lag + gossip.interval_ms + gossip.acceptable_pause_ms + y8 * sigma),
                    ]
                )
    s.table(
        [
            "cluster",
            "crash",
            "observers",
            "n",
            "first (s)",
            "median (s)",
            "last (s)",
            "median lag of last news (ms)",
            "median sd of windows (ms)",
            f"lag + 1 s + 1 s + {y8:.2f} sd (s)",
        ],
        rows,
        "lllrrrrrrr",
    )


def _quiet_table(s: Section, quick: bool) -> None:
    per_dc = QUICK_NODES_PER_DC if quick else NODES_PER_DC
    run_ms = QUIET_RUN_MS / (2 if quick else 1)
    rows = []
    for label, wan, loss in (
        (f"{WAN_DELAY_MS[0]:g}-{WAN_DELAY_MS[1]:g} ms WAN, no loss", WAN_DELAY_MS, 0.0),
        (
            f"{JITTERY_WAN_MS[0]:g}-{JITTERY_WAN_MS[1]:g} ms WAN, {QUIET_LOSS:.0%} loss",
            JITTERY_WAN_MS,
            QUIET_LOSS,
        ),
    ):
        f = scenario_dc_quiet(
            QUIET_SEED,
            datacenters=DCS,
            nodes_per_dc=per_dc,
            wan_min_ms=wan[0],
            wan_max_ms=wan[1],
            loss=loss,
            run_ms=run_ms,
            count_from_ms=QUIET_COUNT_FROM_MS,
        ).figures
        node_hours = f["observer_node_hours"]
        false = f["own_dc_false"] + f["other_dc_false"]
        rows.append(
            [
                f"{DCS} DCs x {per_dc}",
                label,
                f"{run_ms / 1000:,.0f}",
                f"{node_hours:,.1f}",
                str(false),
                f"{false / node_hours:.3f}",
                f"{f['own_dc_false']} ({f['own_dc_false'] / f['own_dc_pair_hours']:.4f})",
                f"{f['other_dc_false']} ({f['other_dc_false'] / f['other_dc_pair_hours']:.4f})",
                _s(f["median_length_ms"]),
                _s(f["max_length_ms"]),
            ]
        )
    s.table(
        [
            "cluster",
            "network",
            "virtual s",
            "observer node-hours",
            "false suspicions",
            "per node-hour",
            "same DC (per pair-hour)",
            "across DCs (per pair-hour)",
            "median length (s)",
            "max length (s)",
        ],
        rows,
        "llrrrrrrrr",
    )


def _cut_off_table(s: Section, quick: bool) -> None:
    cluster = clusters(quick)[2]
    rows = []
    for seed in SPREAD_SEEDS[:1] if quick else SPREAD_SEEDS[:2]:
        f = scenario_dc_partition(seed, **cluster.params()).figures
        rows.append(
            [
                cluster.label,
                f"seed {seed}",
                str(f["cut_off"]),
                _s(f["cut_seen_ms"]),
                _s(f["all_up_after_heal_ms"]),
            ]
        )
    s.table(
        ["cluster", "run", "cut off", "cut seen by all (s)", "all up after the heal (s)"],
        rows,
        "lllrr",
    )


def _placement_tables(s: Section, quick: bool) -> None:
    per_dc = QUICK_NODES_PER_DC if quick else NODES_PER_DC
    replicas = {f"dc{d}": PLACEMENT_REPLICAS_PER_DC for d in range(1, DCS + 1)}
    sizes = PLACEMENT_PARTITIONS[:1] if quick else PLACEMENT_PARTITIONS
    rows, moves, strays = [], [], []
    for racks in (RACKS_PER_DC, 2):
        topology = Topology.grid(DCS, per_dc, racks)
        for q in sizes:
            ring = Ring(topology.members(), q, replicas)
            for x in placement(ring, topology):
                rows.append(
                    [
                        f"{DCS} DCs x {per_dc}, {racks} racks each",
                        str(q),
                        x.dc,
                        f"{x.lists_with_count} of {q}",
                        f"{x.lists_rack_distinct} of {q}",
                        f"{x.owned / q:.1%}",
                        f"{x.count * q / x.nodes:,.1f}",
                        f"{x.load_min}-{x.load_max}",
                        f"{x.load_max / x.load_mean:.2f}",
                    ]
                )
            if racks == RACKS_PER_DC:
                one = {topology.nodes_in("dc2")[0]}
                whole = set(topology.nodes_in("dc3"))
                for label, down in (("one node of dc2", one), ("all of dc3", whole)):
                    x = stand_ins(ring, down)
                    strays.append(
                        [
                            str(q),
                            label,
                            str(x.partitions),
                            f"{x.holders / x.partitions:.2f}",
                            f"{x.stand_ins:,}",
                            str(x.strays),
                            f"{x.cpu_us_per_call:,.0f}",
                        ]
                    )
                for x in join_movement(topology, q, replicas, "dc1"):
                    moves.append(
                        [
                            str(q),
                            x.dc,
                            f"{x.ideal:,.1f}",
                            f"{x.changed:,.1f}",
                            f"{x.changed / x.ideal:.2f}" if x.ideal else "—",
                            f"{x.transfers:,.1f}",
                        ]
                    )
    s.text(
        f"Every preference list, per datacenter: does it hold exactly that datacenter's "
        f"{PLACEMENT_REPLICAS_PER_DC}, on {PLACEMENT_REPLICAS_PER_DC} racks when there are "
        "as many (with 2 racks: on both)? *Load*: replica partitions per node of the "
        f"datacenter, whose ideal is {PLACEMENT_REPLICAS_PER_DC}·Q/(its nodes)."
    )
    s.table(
        [
            "cluster",
            "Q",
            "DC",
            f"lists with {PLACEMENT_REPLICAS_PER_DC} of it",
            "rack-distinct in it",
            "owns",
            "ideal load",
            "load min-max",
            "max / mean",
        ],
        rows,
        "lrlrrrrrr",
    )
    s.text(
        f"One node joins dc1 (rack r1; means over {PLACEMENT_JOINERS} joiners). *Changed*: "
        "partitions whose set of replicas in that datacenter differs, against the ideal "
        f"{PLACEMENT_REPLICAS_PER_DC}·Q/(nodes of dc1 + 1) for dc1 (the joiner's fair share, "
        "each such partition swapping one replica) and 0 elsewhere; *replicas gained*: what "
        f"streaming copies into that datacenter. {RACKS_PER_DC} racks a datacenter."
    )
    s.table(
        ["Q", "DC", "ideal", "changed", "/ ideal", "replicas gained"],
        moves,
        "rlrrrr",
    )
    s.text(
        f"`Ring.fallbacks` with nodes down, for at most {MAX_FALLBACK_PARTITIONS} partitions "
        "spread over the ring: holders per list (primaries up and stand-ins), stand-ins, how "
        "many stand in for a replica of another datacenter than their own (must be 0), and "
        "the CPU of one call."
    )
    s.table(
        [
            "Q",
            "down",
            "partitions asked",
            "holders per list",
            "stand-ins",
            "of another datacenter",
            "µs per call",
        ],
        strays,
        "rlrrrrr",
    )


def _progress(part: str, measure: Callable[[], None]) -> None:
    # The whole section takes some 20 minutes of CPU at 3 x 100 nodes: say where it is.
    started = time.process_time()
    measure()
    print(f"  7. {part}: {time.process_time() - started:.0f} s CPU", flush=True)


def intro(quick: bool) -> str:
    per_dc = QUICK_NODES_PER_DC if quick else NODES_PER_DC
    wan = Topology.grid(DCS, per_dc, RACKS_PER_DC)
    return (
        f"{wan.describe()}; every message's delay drawn from its pair's range, so the range's "
        f"width is the jitter. Compared with one datacenter of {per_dc} and one of "
        f"{DCS * per_dc} with the same local delays. Racks: {RACKS_PER_DC} a datacenter. Gossip "
        "as in sections 1-3: the node's peer choice, blind to datacenters, so about "
        f"{crossing_share(wan):.0%} of exchanges cross the WAN. Measured by `python -m "
        f"ringkv.testing.sim.datacenters report{' --quick' if quick else ''}` (this section "
        "alone; `python -m ringkv.testing.simulator report` runs it with the rest); each run "
        "replays with `python -m ringkv.testing.sim.datacenters run dc-spread|dc-crash|"
        "dc-quiet|dc-partition --seed N --datacenters D --nodes-per-dc K ...`."
    )


def datacenter_section(quick: bool = False) -> Section:
    started = time.process_time()
    s = Section("7. Datacenters")
    s.text(intro(quick))
    per_dc = QUICK_NODES_PER_DC if quick else NODES_PER_DC
    wan = Topology.grid(DCS, per_dc, RACKS_PER_DC)
    s.text(
        "**Spread.** As section 1: after a 10 s warm-up one node starts leaving; rounds from "
        "then until the last node (of its own datacenter, of the others) held it. *Theory*: "
        "push-pull among n nodes, each in about 2·fanout = 4 exchanges an interval at its own "
        "phase: the informed share grows as the logistic di/dt = 4·i(1 - i), half know after "
        "ln(n)/4 rounds and all after (ln n + ln 2n)/4, with exchanges taking no time. "
        "*+ one crossing a round*: one datacenter of as many nodes, measured, plus for every "
        f"round a {crossing_share(wan):.0%} chance of one crossing exchange, which costs "
        f"{crossing_exchange_ms(wan):.0f} ms more than a local one (2.5 one-way delays: the "
        "Ack brings the news to the initiator after two, the States to the peer after three)."
    )
    _progress("spread", lambda: _spread_table(s, quick))
    s.text(
        "**Crash detection.** As section 2: after a 30 s warm-up one node crashes; when each "
        "observer's phi crossed 8, split by whether the observer shares the crashed node's "
        "datacenter. Each detection is exactly *lag* + *silence*: the lag is when the "
        "observer last heard of the crashed node (its last state was still spreading after "
        "the crash), the silence what the observer's window needed, mean + acceptable pause "
        f"+ {sigmas_to_threshold():.2f} sd. The last column puts the medians into that sum "
        "with the mean at 1 s, the gossip interval: it is the median observer's detection if "
        "its window is typical."
    )
    _progress("crash detection", lambda: _crash_table(s, quick))
    s.text(
        f"**False suspicions.** No crashes, seed {QUIET_SEED}; suspicions begun after the first "
        f"{QUIET_COUNT_FROM_MS / 1000:g} s, split by whether observer and subject share a "
        "datacenter (per observed pair-hour, as there are twice as many pairs across "
        "datacenters as within)."
    )
    _progress("false suspicions", lambda: _quiet_table(s, quick))
    s.text(
        "**A datacenter cut off.** After a 20 s warm-up every link between dc3 and the other "
        'two goes down (`sim.partition(topology.nodes_in("dc3"))`); once every node holds '
        "the other side down, the links come back."
    )
    _progress("a datacenter cut off", lambda: _cut_off_table(s, quick))
    s.text(
        '**Placement.** `Ring(members, Q, replicas={"dc1": 3, "dc2": 3, "dc3": 3})` with '
        'members `Member.at(node, "dcN/rM")`, the real ring (no simulation).'
    )
    _progress("placement", lambda: _placement_tables(s, quick))
    s.cpu_s = time.process_time() - started
    s.text(
        f"Section 7 took {s.cpu_s:,.0f} s of CPU, measured {datetime.date.today().isoformat()} "
        f"on {os.cpu_count()} cores ({platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()})."
    )
    return s


def write_section(out: str, section: Section) -> None:
    """Put `section` into the report at `out` in place of its earlier version, else before the
    Analysis, else at the end; the rest of the report stays as it was."""
    heading = f"## {section.title}"
    new = "\n".join([heading, "", *section.lines]).rstrip() + "\n"
    try:
        with open(out) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    at = text.find(f"\n{heading}\n")
    if at >= 0:
        end = text.find("\n## ", at + 1)
        text = text[: at + 1] + new + ("\n" + text[end + 1 :] if end >= 0 else "")
    else:
        at = text.find("\n## Analysis\n")
        if at >= 0:
            text = text[: at + 1] + new + "\n" + text[at + 1 :]
        else:
            text = text.rstrip("\n") + "\n\n" + new
    with open(out, "w") as f:
        f.write(text)
