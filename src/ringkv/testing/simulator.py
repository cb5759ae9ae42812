"""The deterministic simulator: many gossiping nodes in one process, on virtual time, over a
simulated network, all from one seed.

    sim = Simulation(nodes=50, seed=7, network=NetworkConditions(loss=0.1, max_delay_ms=50))
    sim.run_for(30_000)                        # 30 virtual seconds
    sim.crash("n07")
    assert sim.run_until(lambda: sim.all_suspect("n07"), timeout_ms=60_000), sim.replay_hint()

Each node runs the real pure modules, cluster/gossip.Membership and cluster/phi
.FailureDetectors, as node/gossiper.py runs them (see testing/sim/node.py); the network loses,
delays, reorders, duplicates and partitions messages (testing/sim/network.py); time is an
event queue ordered by (time, sequence) (testing/sim/events.py). No asyncio, no wall clock,
no process-dependent hashing: `random.Random(seed)` is the only source of randomness (it
seeds the network's, the scenario's and every node's Random), so a seed gives the same
history in every process, and `trace_hash()` (a SHA-256 of every event run) proves it.

A failing check raises `SimulationFailure` with the seed and the command that replays it:

    python -m ringkv.testing.simulator run crash --seed 7 --nodes 50

Scenarios (`SCENARIOS`, `run_scenario`) are what the tests and that command run: gossip and
failure detection (propagation, crash, partition, convergence), and the data path (`kv`:
reads and writes through cluster/plans.py, hints, read repair, checked for lost writes and
convergence; testing/sim/datapath.py), and the consensus path (`consensus`: INCRs, CASes and
SERIAL reads through cluster/paxos.py's rounds, every history checked for linearizability;
testing/sim/consensus_scenario.py). docs/simulator.md describes them. The scale report
(docs/benchmarks/scale.md) is `python -m ringkv.testing.simulator report`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ringkv.cluster.gossip import NodeStatus, StateChange
from ringkv.testing.sim.events import EventQueue
from ringkv.testing.sim.network import NetworkConditions, SimulatedNetwork
from ringkv.testing.sim.node import GossipSettings, SimNode, suspected_since

__all__ = [
    "SCENARIOS",
    "GossipSettings",
    "NetworkConditions",
    "Simulation",
    "SimulationFailure",
    "Suspicion",
    "Watch",
    "replay_on_failure",
    "run_scenario",
]

MAX_NODES = 4096  # ring.MAX_MEMBERS: a simulated cluster is no larger than a real one
DEFAULT_POLL_MS = 100.0  # how often run_until checks its condition, virtual ms


class SimulationFailure(AssertionError):
    """A simulated run broke a property. The message ends with the seed and how to replay."""


def replay_command(scenario: str, seed: int, **params: object) -> str:
    """The shell command that replays scenario `scenario` with `seed` and `params`."""
    args = "".join(f" --{k.replace('_', '-')} {v}" for k, v in params.items() if v is not None)
    return f"python -m ringkv.testing.simulator run {scenario} --seed {seed}{args}"


@contextlib.contextmanager
def replay_on_failure(seed: int, how: str) -> Iterator[None]:
    """Re-raise any AssertionError inside with "replay with seed=N: <how>" appended, so a
    failing randomized test says how to reproduce it."""
    try:
        yield
    except SimulationFailure:
        raise
    except AssertionError as e:
        raise SimulationFailure(f"{e}\nreplay with seed={seed}: {how}") from e


# --- observations --------------------------------------------------------------------------------


@dataclass
class Watch:
    """Who knows of one node's state (generation, version) or a newer one, and since when."""

    node_id: str
    generation: int
    version: int
    started_ms: float
    known_by: dict[str, float] = field(default_factory=dict)  # observer -> when it learnt
    completed_ms: float | None = None  # when the last running node learnt it

    def covers(self, generation: int, version: int) -> bool:
        return (generation, version) >= (self.generation, self.version)

    def rounds(self, interval_ms: float) -> float | None:
        """Gossip intervals from the change until everyone knew; None if not yet."""
        if self.completed_ms is None:
            return None
        return (self.completed_ms - self.started_ms) / interval_ms


@dataclass(frozen=True)
class Suspicion:
    """`observer`'s detector held `subject` down from `since_ms` to `until_ms` (None: still)."""

    observer: str
    subject: str
    since_ms: float
    until_ms: float | None
    subject_was_running: bool  # when the suspicion began: a false suspicion if True


# --- the simulation ------------------------------------------------------------------------------


class Simulation:
    """A cluster of simulated nodes on one virtual clock and one simulated network.

    Nodes are named n0..n{N-1}, zero-padded so that names sort in numeric order; they are all
    configured members (static membership, every one a seed, as the node runs today). Each
    starts at t=0, generation 1, with its first round at a random phase within one interval.
    """

    def __init__(
        self,
        nodes: int | Iterable[str],
        seed: int,
        network: NetworkConditions | None = None,
        gossip: GossipSettings | None = None,
        *,
        record_suspicions: bool = False,
        keep_trace: int = 0,
    ):
        if isinstance(nodes, int):
            width = len(str(max(nodes - 1, 0)))
            names = tuple(f"n{i:0{width}d}" for i in range(nodes))
        else:
            names = tuple(nodes)
        if not 1 <= len(names) <= MAX_NODES or len(set(names)) != len(names):
            raise ValueError(f"need 1..{MAX_NODES} distinct node names, got {len(names)}")
        self.seed = seed
        self.network_conditions = network or NetworkConditions()
        self.gossip = gossip or GossipSettings()
        self.members = names
        self._root = random.Random(seed)
        # Separate streams, so that (say) a scenario's choice of node does not shift every
        # network draw after it; all of them still follow from the one seed.
        self.rng = random.Random(self._root.getrandbits(64))  # the scenario's choices
        self.queue = EventQueue()
        self.network = SimulatedNetwork(
            self.network_conditions,
            random.Random(self._root.getrandbits(64)),
            self.queue,
            self._deliver,
        )
        self._hash = hashlib.sha256(f"ringkv-sim seed={seed}".encode())
        self.keep_trace = keep_trace
        self.trace: list[str] = []  # the last `keep_trace` events, for a failure report
        self.record_suspicions = record_suspicions
        self._cleared: list[Suspicion] = []
        self._down_since: dict[str, float] = {}  # crashed node -> when
        self._outages: dict[str, list[tuple[float, float]]] = {}  # node -> ended outages
        self._watches: dict[str, list[Watch]] = {}
        self.messages_delivered = 0
        self.nodes: dict[str, SimNode] = {}
        for name in names:
            node = self._start_node(name, generation=1)
            self.queue.schedule(node.rng.random() * self.gossip.interval_ms, self._round, name, 1)

    def __repr__(self) -> str:
        return (
            f"Simulation({len(self.members)} nodes, seed={self.seed}, "
            f"now={self.now_ms:.0f} ms, events={self.queue.processed})"
        )

    # -- time

    @property
    def now_ms(self) -> float:
        return self.queue.now_ms

    def run_for(self, duration_ms: float) -> None:
        self.queue.run_until(self.now_ms + duration_ms)

    def run_until(
        self, condition: Callable[[], bool], timeout_ms: float, poll_ms: float = DEFAULT_POLL_MS
    ) -> bool:
        """Run until `condition()` holds (checked every `poll_ms` of virtual time) or
        `timeout_ms` passed; True if it held."""
        deadline = self.now_ms + timeout_ms
        while True:
            if condition():
                return True
            if self.now_ms >= deadline:
                return False
            self.queue.run_until(min(self.now_ms + poll_ms, deadline))

    # -- faults

    def running(self) -> list[str]:
        return [n for n in self.members if self.nodes[n].running]

    def crash(self, node: str) -> None:
        """Stop `node` at once: it sends nothing more and what reaches it is lost."""
        sim_node = self.nodes[node]
        if not sim_node.running:
            raise ValueError(f"{node} is already down")
        sim_node.running = False
        self._down_since[node] = self.now_ms
        self._record("crash", node)
        # Everyone still running may already know what a watch waits for.
        for watches in self._watches.values():
            for w in watches:
                self._check_watch(w)

    def restart(self, node: str) -> SimNode:
        """Start a new incarnation of a crashed `node`: a new generation (its start time in ms,
        as the shell does), an empty membership and fresh detectors."""
        old = self.nodes[node]
        if old.running:
            raise ValueError(f"{node} is running: crash it first")
        generation = max(old.generation + 1, int(self.now_ms) + 1)
        new = self._start_node(node, generation)
        self._outages.setdefault(node, []).append((self._down_since.pop(node), self.now_ms))
        self.queue.schedule(self.now_ms + new.next_round_delay_ms(), self._round, node, generation)
        self._record("restart", node, str(generation))
        return new

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut the network between groups (nodes in none form one more group)."""
        groups_ = [tuple(g) for g in groups]
        for g in groups_:
            for n in g:
                if n not in self.nodes:
                    raise ValueError(f"unknown node {n!r}")
        self.network.partition(groups_)
        self._record("partition", "|".join(",".join(g) for g in groups_))

    def heal(self) -> None:
        self.network.heal()
        self._record("heal")

    def set_status(self, node: str, status: NodeStatus) -> Watch:
        """`node` moves itself to `status` (as a decommission would); returns a Watch of who
        has learnt it."""
        m = self.nodes[node].membership
        m.set_local_status(status)
        self._record("status", node, str(status))
        return self.watch(node)

    def watch(self, node: str) -> Watch:
        """Start watching who knows `node`'s current state (or a newer one)."""
        local = self.nodes[node].membership.local
        w = Watch(node, local.generation, local.version, self.now_ms)
        for name, other in self.nodes.items():
            state = other.membership.get(node)
            if other.running and state is not None and w.covers(state.generation, state.version):
                w.known_by[name] = self.now_ms
        self._watches.setdefault(node, []).append(w)
        self._check_watch(w)
        return w

    # -- what the nodes believe

    def is_up(self, observer: str, subject: str) -> bool:
        return self.nodes[observer].is_up(subject, self.now_ms)

    def all_suspect(self, subject: str) -> bool:
        """Every running node but `subject` holds it down."""
        now = self.now_ms
        return all(not self.nodes[o].is_up(subject, now) for o in self.running() if o != subject)

    def nobody_suspected(self, nodes: Iterable[str] | None = None) -> bool:
        """Every running node (of `nodes`) holds every other one of them up."""
        group = self.running() if nodes is None else [n for n in nodes if self.nodes[n].running]
        now = self.now_ms
        for o in group:
            is_up = self.nodes[o].detectors.is_up
            if not all(is_up(s, now) for s in group if s != o):
                return False
        return True

    def converged(self) -> bool:
        """Every running node knows every member, and all agree on each one's generation and
        status (versions keep moving with heartbeats, so they are not compared)."""
        views = set()
        for name in self.running():
            m = self.nodes[name].membership
            if len(m) != len(self.members):
                return False
            views.add(tuple((s.node_id, s.generation, s.status) for s in m.states()))
            if len(views) > 1:
                return False
        return True

    def detection_times_ms(self, subject: str, since_ms: float) -> dict[str, float | None]:
        """Per running observer, how long after `since_ms` its detector crossed the threshold
        for `subject` (None: not yet). Exact (sim/node.suspected_since), not poll-rounded."""
        now = self.now_ms
        out: dict[str, float | None] = {}
        for o in self.running():
            if o == subject:
                continue
            detectors = self.nodes[o].detectors
            detector = detectors.detector(subject)
            at = None if detector is None else suspected_since(detector, now, detectors.threshold)
            out[o] = None if at is None else at - since_ms
        return out

    def suspicions(self) -> list[Suspicion]:
        """Every suspicion seen so far: those a heartbeat ended (needs record_suspicions=True)
        and those still open, of running subjects by running observers."""
        if not self.record_suspicions:
            raise ValueError("create the Simulation with record_suspicions=True")
        now = self.now_ms
        out = list(self._cleared)
        for o in self.running():
            detectors = self.nodes[o].detectors
            for subject in detectors.nodes():
                since = suspected_since(detectors.detector(subject), now, detectors.threshold)
                if since is not None:
                    out.append(
                        Suspicion(o, subject, since, None, self._was_running(subject, since))
                    )
        return out

    # -- the trace

    def trace_hash(self) -> str:
        """SHA-256 of every event so far (time, kind, nodes, message type and size): equal for
        equal seeds and settings, in any process."""
        return self._hash.hexdigest()

    def replay_hint(self, scenario: str | None = None, **params: object) -> str:
        how = (
            replay_command(scenario, self.seed, **params)
            if scenario
            else f"Simulation(..., seed={self.seed})"
        )
        tail = "\n".join(self.trace[-20:])
        at = f"at {self.now_ms:.0f} ms virtual, after {self.queue.processed} events"
        return f"seed={self.seed} ({at}); replay with seed={self.seed}: {how}" + (
            f"\nlast events:\n{tail}" if tail else ""
        )

    def fail(self, message: str, scenario: str | None = None, **params: object) -> None:
        raise SimulationFailure(f"{message}\n{self.replay_hint(scenario, **params)}")

    # -- internals

    def _start_node(self, name: str, generation: int) -> SimNode:
        node = SimNode(
            name,
            generation,
            self.members,
            self.gossip,
            random.Random(self._root.getrandbits(64)),
        )
        node.on_changes = self._on_changes
        if self.record_suspicions:
            node.on_suspicion_cleared = self._on_suspicion_cleared
        self.nodes[name] = node
        return node

    def _record(self, kind: str, *parts: str) -> None:
        line = f"{self.queue.now_ms:.6f} {kind} {' '.join(parts)}"
        self._hash.update(line.encode())
        if self.keep_trace:
            self.trace.append(line)
            if len(self.trace) > 2 * self.keep_trace:
                del self.trace[: -self.keep_trace]

    def _round(self, name: str, generation: int) -> None:
        node = self.nodes[name]
        if not node.running or node.generation != generation:
            return  # the timer of a crashed incarnation
        now = self.queue.now_ms
        self._record("round", name)
        send = self.network.send
        nodes = self.nodes
        for peer, message in node.gossip_round(now):
            send(name, peer, message, nodes[peer].generation)
        self.queue.schedule(now + node.next_round_delay_ms(), self._round, name, generation)

    def _deliver(self, src: str, dst: str, message: object, dst_generation: int) -> None:
        node = self.nodes[dst]
        if not node.running or node.generation != dst_generation:
            # Sent to an incarnation that is gone: its connection died with it.
            self._record("lost", src, dst, type(message).__name__)
            return
        self.messages_delivered += 1
        self._record("recv", src, dst, type(message).__name__, str(_size(message)))
        send = self.network.send
        nodes = self.nodes
        for peer, reply in node.on_message(src, message, self.queue.now_ms):
            send(dst, peer, reply, nodes[peer].generation)

    def _on_changes(self, observer: str, changes: list[StateChange], now_ms: float) -> None:
        watches = self._watches
        if not watches:
            return
        for change in changes:
            for w in watches.get(change.node_id, ()):
                if (
                    w.completed_ms is None
                    and observer not in w.known_by
                    and w.covers(change.new.generation, change.new.version)
                ):
                    w.known_by[observer] = now_ms
                    self._check_watch(w)

    def _check_watch(self, w: Watch) -> None:
        if w.completed_ms is not None:
            return
        running = self.running() if self._down_since else self.members
        if len(w.known_by) >= len(running) and all(n in w.known_by for n in running):
            w.completed_ms = max(w.known_by[n] for n in running)

    def _on_suspicion_cleared(
        self, observer: str, subject: str, since_ms: float, until_ms: float
    ) -> None:
        self._cleared.append(
            Suspicion(observer, subject, since_ms, until_ms, self._was_running(subject, since_ms))
        )

    def _was_running(self, node: str, at_ms: float) -> bool:
        down = self._down_since.get(node)
        if down is not None and at_ms >= down:
            return False
        return not any(a <= at_ms < b for a, b in self._outages.get(node, ()))


def _size(message: object) -> int:
    """Entries a gossip message carries (for the trace)."""
    for name in ("digest", "states"):
        items = getattr(message, name, None)
        if items is not None:
            return len(items) + len(getattr(message, "request", ()))
    return 0


# --- scenarios -----------------------------------------------------------------------------------
#
# Each scenario builds a Simulation from (seed, parameters), runs one story, checks what must
# hold, and returns its measurements. A failed check raises SimulationFailure naming the seed
# and the `run` command that replays it. Times are virtual.


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    seed: int
    trace_hash: str
    figures: dict[str, object]
    virtual_ms: float
    events: int


def _network(loss: float, min_delay_ms: float, max_delay_ms: float, duplication: float):
    return NetworkConditions(
        loss=loss, min_delay_ms=min_delay_ms, max_delay_ms=max_delay_ms, duplication=duplication
    )


def _gossip(probe_unreachable: int) -> GossipSettings:
    return GossipSettings(probe_unreachable=bool(probe_unreachable))


def scenario_propagation(
    seed: int,
    nodes: int = 50,
    loss: float = 0.0,
    min_delay_ms: float = 1.0,
    max_delay_ms: float = 50.0,
    duplication: float = 0.0,
    warmup_ms: float = 5000.0,
    max_rounds: float | None = None,
) -> ScenarioResult:
    """After a warm-up, one node (the scenario's choice) starts leaving; run until every node
    knows. Checks: everyone learns it, within `max_rounds` gossip intervals if given."""
    params = dict(
        nodes=nodes,
        loss=loss,
        min_delay_ms=min_delay_ms,
        max_delay_ms=max_delay_ms,
        duplication=duplication,
        warmup_ms=warmup_ms,
        max_rounds=max_rounds,
    )
    sim = Simulation(nodes, seed, _network(loss, min_delay_ms, max_delay_ms, duplication))
    sim.run_for(warmup_ms)
    subject = sim.rng.choice(sim.members)
    watch = sim.set_status(subject, NodeStatus.LEAVING)
    interval = sim.gossip.interval_ms
    limit_ms = (max_rounds if max_rounds is not None else 200) * interval
    sim.run_until(lambda: watch.completed_ms is not None, timeout_ms=limit_ms)
    if watch.completed_ms is None:
        sim.fail(
            f"{len(watch.known_by)} of {len(sim.members)} nodes knew {subject} was leaving "
            f"after {limit_ms / interval:g} rounds",
            "propagation",
            **params,
        )
    rounds = watch.rounds(interval)
    return ScenarioResult(
        "propagation",
        seed,
        sim.trace_hash(),
        {
            "subject": subject,
            "rounds": rounds,
            "median_learn_rounds": statistics.median(
                (t - watch.started_ms) / interval for t in watch.known_by.values()
            ),
        },
        sim.now_ms,
        sim.queue.processed,
    )


def scenario_crash(
    seed: int,
    nodes: int = 20,
    loss: float = 0.0,
    min_delay_ms: float = 1.0,
    max_delay_ms: float = 50.0,
    duplication: float = 0.0,
    warmup_ms: float = 30_000.0,
    max_detect_ms: float = 60_000.0,
    max_recover_ms: float = 30_000.0,
) -> ScenarioResult:
    """After a warm-up, one node crashes: every other node must hold it down within
    `max_detect_ms`. Then it restarts: within `max_recover_ms` every node (it included) must
    know its new generation and hold everyone up."""
    params = dict(
        nodes=nodes,
        loss=loss,
        min_delay_ms=min_delay_ms,
        max_delay_ms=max_delay_ms,
        duplication=duplication,
        warmup_ms=warmup_ms,
        max_detect_ms=max_detect_ms,
        max_recover_ms=max_recover_ms,
    )
    sim = Simulation(nodes, seed, _network(loss, min_delay_ms, max_delay_ms, duplication))
    sim.run_for(warmup_ms)
    subject = sim.rng.choice(sim.members)
    crashed_ms = sim.now_ms
    sim.crash(subject)
    if not sim.run_until(lambda: sim.all_suspect(subject), timeout_ms=max_detect_ms):
        late = sum(1 for o in sim.running() if sim.is_up(o, subject))
        sim.fail(
            f"{late} nodes still held crashed {subject} up after {max_detect_ms:g} ms",
            "crash",
            **params,
        )
    detect = sim.detection_times_ms(subject, crashed_ms)
    times = sorted(t for t in detect.values() if t is not None)
    sim.restart(subject)
    generation = sim.nodes[subject].generation
    restarted_ms = sim.now_ms

    def recovered() -> bool:
        for o in sim.members:
            state = sim.nodes[o].membership.get(subject)
            if state is None or state.generation != generation:
                return False
        return sim.nobody_suspected()

    if not sim.run_until(recovered, timeout_ms=max_recover_ms):
        sim.fail(
            f"{subject} restarted as generation {generation} but the cluster had not "
            f"recovered after {max_recover_ms:g} ms",
            "crash",
            **params,
        )
    return ScenarioResult(
        "crash",
        seed,
        sim.trace_hash(),
        {
            "subject": subject,
            "detect_median_ms": statistics.median(times),
            "detect_all_ms": times[-1],
            "detect_first_ms": times[0],
            "recovered_after_ms": sim.now_ms - restarted_ms,
        },
        sim.now_ms,
        sim.queue.processed,
    )


def scenario_partition(
    seed: int,
    nodes: int = 20,
    loss: float = 0.0,
    min_delay_ms: float = 1.0,
    max_delay_ms: float = 50.0,
    duplication: float = 0.0,
    warmup_ms: float = 20_000.0,
    max_detect_ms: float = 60_000.0,
    max_heal_ms: float = 30_000.0,
    probe_unreachable: int = 1,
) -> ScenarioResult:
    """After a warm-up the network splits in two halves. Within `max_detect_ms` every node
    must hold every node of the other side down, and still every node of its own side up
    (gossip keeps flowing within a side). After the heal, within `max_heal_ms` everyone holds
    everyone up again. Without probing of unreachable members (probe_unreachable=0, the node's
    rules before the simulator found the bug) that last check fails for sides of 2 or more
    nodes: see GossipSettings.probe_unreachable."""
    params = dict(
        nodes=nodes,
        loss=loss,
        min_delay_ms=min_delay_ms,
        max_delay_ms=max_delay_ms,
        duplication=duplication,
        warmup_ms=warmup_ms,
        max_detect_ms=max_detect_ms,
        max_heal_ms=max_heal_ms,
        probe_unreachable=probe_unreachable,
    )
    sim = Simulation(
        nodes,
        seed,
        _network(loss, min_delay_ms, max_delay_ms, duplication),
        _gossip(probe_unreachable),
    )
    sim.run_for(warmup_ms)
    shuffled = list(sim.members)
    sim.rng.shuffle(shuffled)
    a, b = sorted(shuffled[: nodes // 2]), sorted(shuffled[nodes // 2 :])
    split_ms = sim.now_ms
    sim.partition(a, b)

    def split_seen() -> bool:
        return all(not sim.is_up(x, y) and not sim.is_up(y, x) for x in a for y in b)

    if not sim.run_until(split_seen, timeout_ms=max_detect_ms):
        sim.fail(
            f"after {max_detect_ms:g} ms of partition some nodes still held the other side up",
            "partition",
            **params,
        )
    split_seen_ms = sim.now_ms - split_ms
    if not (sim.nobody_suspected(a) and sim.nobody_suspected(b)):
        sim.fail(
            "during the partition a node suspected a node of its own side", "partition", **params
        )
    sim.heal()
    healed_ms = sim.now_ms
    if not sim.run_until(sim.nobody_suspected, timeout_ms=max_heal_ms):
        still = sum(1 for x in a for y in b if not sim.is_up(x, y) or not sim.is_up(y, x))
        sim.fail(
            f"{max_heal_ms:g} ms after the heal {still} of {len(a) * len(b)} pairs across "
            "the former partition still held each other down",
            "partition",
            **params,
        )
    return ScenarioResult(
        "partition",
        seed,
        sim.trace_hash(),
        {
            "sides": (len(a), len(b)),
            "split_seen_ms": split_seen_ms,
            "all_up_after_heal_ms": sim.now_ms - healed_ms,
        },
        sim.now_ms,
        sim.queue.processed,
    )


def scenario_convergence(
    seed: int,
    nodes: int = 30,
    loss: float = 0.1,
    min_delay_ms: float = 1.0,
    max_delay_ms: float = 50.0,
    duplication: float = 0.05,
    max_ms: float = 120_000.0,
) -> ScenarioResult:
    """A cold start under loss and duplication (every node knows only itself and the member
    list), then one node leaves: within `max_ms` all nodes must hold the same membership,
    and must all know of the change."""
    params = dict(
        nodes=nodes,
        loss=loss,
        min_delay_ms=min_delay_ms,
        max_delay_ms=max_delay_ms,
        duplication=duplication,
        max_ms=max_ms,
    )
    sim = Simulation(nodes, seed, _network(loss, min_delay_ms, max_delay_ms, duplication))
    if not sim.run_until(sim.converged, timeout_ms=max_ms):
        sim.fail(f"the cold start had not converged after {max_ms:g} ms", "convergence", **params)
    cold_ms = sim.now_ms
    subject = sim.rng.choice(sim.members)
    watch = sim.set_status(subject, NodeStatus.LEAVING)
    if not sim.run_until(
        lambda: watch.completed_ms is not None and sim.converged(), timeout_ms=max_ms
    ):
        sim.fail(
            f"{len(watch.known_by)} of {nodes} nodes knew {subject} was leaving after "
            f"{max_ms:g} ms",
            "convergence",
            **params,
        )
    return ScenarioResult(
        "convergence",
        seed,
        sim.trace_hash(),
        {
            "cold_start_ms": cold_ms,
            "change_rounds": watch.rounds(sim.gossip.interval_ms),
            "duplicated": sim.network.duplicated,
            "copies_lost": sim.network.copies_lost,
        },
        sim.now_ms,
        sim.queue.processed,
    )


def scenario_kv(seed: int, **params: object) -> ScenarioResult:
    """Reads and writes through cluster/plans.py on 5 nodes under crashes, partitions, loss,
    duplication and reordering; then every hint delivered and every replica converged, and no
    acknowledged write lost. testing/sim/datapath.py has the story and its parameters."""
    # Imported here: sim/kv.py builds on Simulation, defined in this module.
    from ringkv.testing.sim.datapath import scenario_kv as run

    return run(seed, **params)


def scenario_consensus(seed: int, **params: object) -> ScenarioResult:
    """INCRs, compare-and-sets and SERIAL reads through per-key Paxos (cluster/paxos.py's
    rounds) on 5 nodes under crashes, partitions, loss, duplication and reordering; every
    history must be linearizable. testing/sim/consensus_scenario.py has the story."""
    from ringkv.testing.sim.consensus_scenario import scenario_consensus as run

    return run(seed, **params)


def _datacenter_scenario(name: str) -> Callable[..., ScenarioResult]:
    """One of testing/sim/datacenters.py's scenarios (dc-spread, dc-crash, dc-quiet,
    dc-partition: gossip and the detectors across WAN delays), imported when run."""

    def run(seed: int, **params: object) -> ScenarioResult:
        from ringkv.testing.sim.datacenters import SCENARIOS as DATACENTER_SCENARIOS

        return DATACENTER_SCENARIOS[name](seed, **params)

    run.__name__ = f"scenario_{name.replace('-', '_')}"
    return run


SCENARIOS: dict[str, Callable[..., ScenarioResult]] = {
    "propagation": scenario_propagation,
    "crash": scenario_crash,
    "partition": scenario_partition,
    "convergence": scenario_convergence,
    "kv": scenario_kv,
    "consensus": scenario_consensus,
    **{name: _datacenter_scenario(name) for name in ("dc-spread", "dc-crash", "dc-quiet", "dc-partition")},
}


def run_scenario(name: str, seed: int, **params: object) -> ScenarioResult:
    """Run scenario `name` with `seed`; raises SimulationFailure (seed and replay command in
    the message) if one of its checks fails."""
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}: one of {', '.join(SCENARIOS)}") from None
    return scenario(seed, **params)


# --- command line --------------------------------------------------------------------------------


def _param(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text == "None" else text


def replay(parser: argparse.ArgumentParser, scenario: Callable[..., ScenarioResult], seed: int,
           extra: list[str]) -> int:
    """The `run` command: `scenario` with `seed` and the `--name value` parameters in `extra`,
    its figures printed; 1 (and the failure, with its replay command) when a check fails."""
    params: dict[str, object] = {}
    it = iter(extra)
    for flag in it:
        if not flag.startswith("--"):
            parser.error(f"unexpected argument {flag!r}")
        params[flag[2:].replace("-", "_")] = _param(next(it, "None"))
    started = time.process_time()
    try:
        result = scenario(seed, **params)
    except SimulationFailure as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"scenario {result.name} seed={result.seed}: ok")
    for key, value in result.figures.items():
        shown = f"{value:.3f}" if isinstance(value, float) else value
        print(f"  {key}: {shown}")
    print(
        f"  virtual time: {result.virtual_ms / 1000:.1f} s, events: {result.events}, "
        f"cpu: {time.process_time() - started:.1f} s"
    )
    print(f"  trace sha256: {result.trace_hash}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ringkv.testing.simulator",
        description="ringkv's deterministic simulator: replay a scenario, or write the scale "
        "report.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (replay) one scenario with a seed")
    run.add_argument("scenario", choices=sorted(SCENARIOS))
    run.add_argument("--seed", type=int, required=True)
    report = sub.add_parser("report", help="measure gossip and the ring at 10, 100, 1000 nodes")
    report.add_argument("--out", default="docs/benchmarks/scale.md")
    report.add_argument("--quick", action="store_true", help="fewer seeds, shorter runs")
    args, extra = parser.parse_known_args(argv)
    if args.command == "run":
        return replay(parser, SCENARIOS[args.scenario], args.seed, extra)
    if extra:
        parser.error(f"unexpected arguments {' '.join(extra)}")
    from ringkv.testing.sim.scale import write_report

    write_report(args.out, quick=args.quick)
    return 0


if __name__ == "__main__":
    # `python -m` runs this file as __main__, a second copy of the module: run the imported
    # one's main, so that scenarios defined elsewhere (sim/datapath.py, built on this module's
    # Simulation) raise the SimulationFailure that main catches.
    from ringkv.testing.simulator import main as _main

    sys.exit(_main())
