"""One simulated node: the real gossip Membership and phi FailureDetectors, driven as
node/gossiper.py drives them, with messages in and messages out instead of RPC.

Per round (`gossip_round`, every interval_ms jittered by ±10 % from the node's own Random),
the decisions are the node's own, cluster/gossip.plan_round: beat, pick 1..fanout peers among
the configured members the detectors think up (plus a seed now and then), and send each a
GossipSyn. `probe_unreachable` (on by default, as in the node) also gossips now and then with a
member held down. The exchange is the shell's three steps, each a message through the
simulated network:

    GossipSyn(digest)  ->  on_message: GossipAck(delta_for, request_for)
    GossipAck          ->  on_message: merge the delta, GossipStates(states_for(request))
    GossipStates       ->  on_message: merge

Every newer state of a peer is a heartbeat for its detector, as in `Gossiper.merge`. What the
real shell does that the simulation leaves out: load figures, logging, RPC timeouts (a lost
message simply ends the exchange; an exchange never blocks the next round), and the
ReplicaAck that answers GossipStates (it carries nothing).

A node is one incarnation: a restart builds a new SimNode with a new generation, empty
detectors and a fresh Random, as a restarted process would have.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringkv.cluster.gossip import (
    ROUND_JITTER,
    Membership,
    NodeState,
    NodeStatus,
    StateChange,
    plan_round,
    round_delay_ms,
)
from ringkv.cluster.phi import FailureDetectors, PhiAccrualDetector
from ringkv.errors import ConfigError
from ringkv.node.messages import GossipAck, GossipStates, GossipSyn

# The gossiper's defaults (node/gossiper.py, node/config.py).
DEFAULT_INTERVAL_MS = 1000.0
DEFAULT_FANOUT = 2
DEFAULT_PHI_THRESHOLD = 8.0
DEFAULT_ACCEPTABLE_PAUSE_MS = 1000.0
DEFAULT_INTERVAL_JITTER = ROUND_JITTER  # the gossiper's, cluster/gossip.round_delay_ms

# Bisection steps to find when phi crossed the threshold: 2^-60 of the silence is far below
# a microsecond for any silence a simulation can reach.
_CROSSING_STEPS = 60


@dataclass(frozen=True)
class GossipSettings:
    """What every simulated node runs with; the defaults are the real node's."""

    interval_ms: float = DEFAULT_INTERVAL_MS
    fanout: int = DEFAULT_FANOUT
    phi_threshold: float = DEFAULT_PHI_THRESHOLD
    acceptable_pause_ms: float = DEFAULT_ACCEPTABLE_PAUSE_MS
    interval_jitter: float = DEFAULT_INTERVAL_JITTER
    # Cassandra's rule, as node/gossiper.py now has it: each round, with probability
    # down / (live + 1), also gossip with one member held down. Without it (False: the node
    # before the simulator found the bug), every member being a seed, choose_peers never
    # picks a node held down, so two sides of a healed partition never talk again.
    probe_unreachable: bool = True

    def __post_init__(self) -> None:
        if not self.interval_ms > 0:
            raise ConfigError("interval_ms", f"must be > 0, got {self.interval_ms!r}")
        if not 0.0 <= self.interval_jitter < 1.0:
            raise ConfigError("interval_jitter", f"must be in [0, 1), got {self.interval_jitter!r}")

    def describe(self) -> str:
        return (
            f"interval {self.interval_ms:g} ms ±{self.interval_jitter:.0%}, fanout "
            f"{self.fanout}, phi threshold {self.phi_threshold:g}, acceptable pause "
            f"{self.acceptable_pause_ms:g} ms, first heartbeat estimate = interval"
            + (", probing unreachable members" if self.probe_unreachable else "")
        )


def suspected_since(detector: PhiAccrualDetector, now_ms: float, threshold: float) -> float | None:
    """When the detector's phi crossed `threshold` in the silence that lasts until `now_ms`;
    None if phi is still below it. Exact to well under a microsecond: phi is non-decreasing
    in time for a fixed history (phi.py's contract), so bisection finds the crossing."""
    last = detector.last_heartbeat_ms
    if last is None or detector.phi(now_ms) < threshold:
        return None
    lo, hi = last, now_ms
    for _ in range(_CROSSING_STEPS):
        mid = (lo + hi) / 2
        if detector.phi(mid) >= threshold:
            hi = mid
        else:
            lo = mid
    return hi


# (observer, changes, now_ms): what a merge replaced, for the simulation's observations.
ChangeObserver = Callable[[str, list[StateChange], float], None]
# (observer, subject, suspected_from_ms, cleared_at_ms): a suspicion ended by a heartbeat.
SuspicionObserver = Callable[[str, str, float, float], None]

Outbox = list[tuple[str, Any]]  # (destination, message)


class SimNode:
    """One incarnation of a simulated node. The simulation calls `gossip_round` on its timer
    and `on_message` on every delivery; both return the messages to send."""

    __slots__ = (
        "_known",
        "_seed_set",
        "detectors",
        "fanout",
        "generation",
        "membership",
        "node_id",
        "on_changes",
        "on_suspicion_cleared",
        "rng",
        "rounds",
        "running",
        "seeds",
        "settings",
    )

    def __init__(
        self,
        node_id: str,
        generation: int,
        members: tuple[str, ...],
        settings: GossipSettings,
        rng: random.Random,
    ):
        self.node_id = node_id
        self.generation = generation
        self.settings = settings
        self.fanout = settings.fanout
        self.membership = Membership(NodeState(node_id, generation, 1, NodeStatus.NORMAL))
        self.detectors = FailureDetectors(
            threshold=settings.phi_threshold,
            acceptable_heartbeat_pause_ms=settings.acceptable_pause_ms,
            first_heartbeat_estimate_ms=settings.interval_ms,
        )
        # Static membership, as the node runs today: every configured member is a seed.
        self.seeds = [m for m in members if m != node_id]
        self._seed_set = frozenset(self.seeds)
        # cluster/gossip.known_members (non-tombstone states | seeds), kept up to date from
        # merges instead of rebuilt every round: the same set, for less CPU at 1000 nodes.
        self._known: set[str] = set(self.seeds) | {node_id}
        self.rng = rng
        self.running = True
        self.rounds = 0
        self.on_changes: ChangeObserver | None = None
        self.on_suspicion_cleared: SuspicionObserver | None = None

    def __repr__(self) -> str:
        return f"SimNode({self.node_id!r}, generation={self.generation}, rounds={self.rounds})"

    def next_round_delay_ms(self) -> float:
        s = self.settings
        return round_delay_ms(s.interval_ms, self.rng, s.interval_jitter)

    def is_up(self, node: str, now_ms: float) -> bool:
        return node == self.node_id or self.detectors.is_up(node, now_ms)

    # -- the round

    def gossip_round(self, now_ms: float) -> Outbox:
        s = self.settings
        plan = plan_round(
            self.membership,
            self.detectors,
            self.rng,
            now_ms,
            seeds=self.seeds,
            fanout=self.fanout,
            probe_unreachable=s.probe_unreachable,
            known=self._known,
        )
        self.rounds += 1
        if not plan.peers:
            return []
        syn = GossipSyn(plan.digest)
        return [(peer, syn) for peer in plan.peers]

    # -- serving peers

    def on_message(self, src: str, message: Any, now_ms: float) -> Outbox:
        m = self.membership
        if type(message) is GossipSyn:
            digest = message.digest
            return [(src, GossipAck(m.delta_for(digest), m.request_for(digest)))]
        if type(message) is GossipAck:
            self.merge(message.states, now_ms)
            if message.request:
                return [(src, GossipStates(m.states_for(message.request)))]
            return []
        if type(message) is GossipStates:
            self.merge(message.states, now_ms)
            return []
        raise TypeError(f"{self.node_id} got an unexpected message {type(message).__name__}")

    def merge(self, states: list[NodeState], now_ms: float) -> list[StateChange]:
        changes = self.membership.merge(states, now_ms)
        if not changes:
            return changes
        me = self.node_id
        detectors = self.detectors
        for change in changes:
            node = change.node_id
            if node == me:
                continue
            new = change.new
            if new.is_tombstone:
                if node not in self._seed_set:
                    self._known.discard(node)
                continue
            self._known.add(node)
            cleared = self.on_suspicion_cleared
            if cleared is not None:
                detector = detectors.detector(node)
                if detector is not None:
                    since = suspected_since(detector, now_ms, detectors.threshold)
                    if since is not None:
                        cleared(me, node, since, now_ms)
            detectors.heartbeat(node, now_ms)
        if self.on_changes is not None:
            self.on_changes(me, changes, now_ms)
        return changes
