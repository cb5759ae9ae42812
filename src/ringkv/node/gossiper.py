"""The gossip shell: drives cluster/gossip.Membership and cluster/phi over RPC.

Every `gossip_interval_ms` (1 s, jittered by ±10 %) the node bumps its heartbeat and runs a
three-way exchange with 1 to 3 peers (cluster/gossip.plan_round, shared with the simulator:
random live peers, a seed now and then, now and then a member held down):

    GossipSyn(digest)                      ->
                                           <- GossipAck(states the caller lacks, ids it wants)
    GossipStates(the states it asked for)  ->

Any newer state of a node counts as a heartbeat from that node for its phi-accrual detector,
so a node's liveness is known to everyone within a few rounds even without talking to it
directly. The cluster coordinator asks `is_up(node)` to route around down nodes (forwarding,
stand-ins, read and write fan-out), and hint delivery waits for a target to be up.

Gossip carries liveness, addresses, statuses (joining, leaving, left, removed) and load
figures; node/membership.py follows the statuses to rebuild the ring. The seeds are the
configured members.

Every state arrives from a peer the RPC handshake authenticated (net/auth.py): the one we sent
a GossipSyn to (its GossipAck) or the one that sent us GossipStates. Its id goes to the merge
as the sender, which holds what it relays to the origin rules of cluster/gossip.py: a
tombstone only from a member, no address moved by a relay.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from ringkv.clock import Clock
from ringkv.cluster.gossip import (
    DigestEntry,
    Membership,
    NodeState,
    NodeStatus,
    plan_round,
    round_delay_ms,
)
from ringkv.cluster.phi import FailureDetectors
from ringkv.errors import RingkvError, RpcError
from ringkv.node.messages import GossipAck, GossipStates, GossipSyn

log = logging.getLogger("ringkv.gossip")

# In the error a member answers a former member with (node/membership.py, MembershipRecord):
# the refused node finds it in the RemoteError and stops serving.
FORMER_MEMBER = "former member refused"


class MemberRefusedError(RingkvError):
    """A node this one holds as left or removed spoke for itself: refused (its message says
    why and what to do), so it learns that it must not serve its old data."""


class Gossiper:
    def __init__(
        self,
        local: NodeState,
        seeds: list[str],
        call: Callable,
        clock: Clock,
        *,
        interval_ms: int = 1000,
        fanout: int = 2,
        phi_threshold: float = 8.0,
        acceptable_pause_ms: float = 1000.0,
        load: Callable[[], dict] | None = None,
        rng: random.Random | None = None,
        on_up: Callable[[str], None] | None = None,
        admit: Callable[[NodeState], str | None] | None = None,
    ):
        """`admit(state)`: why a state must be refused before the merge (a former member's
        own: node/membership.py), or None to merge it."""
        self.membership = Membership(local)
        self._me = local.node_id  # is_up's, asked several times per request
        self.detectors = FailureDetectors(threshold=phi_threshold,
                                          acceptable_heartbeat_pause_ms=acceptable_pause_ms,
                                          first_heartbeat_estimate_ms=interval_ms)
        self.seeds = [s for s in seeds if s != local.node_id]
        self.call = call  # async (node, body, timeout_ms) -> reply
        self.interval_ms = interval_ms
        self.fanout = fanout
        self.load = load
        self.rng = rng or random.Random()
        self.clock = clock
        self.on_up = on_up
        self._listeners: list[Callable[[list], None]] = []  # of StateChange lists (membership.py)
        self._refusal_listeners: list[Callable[[str, str], None]] = []  # (peer, its refusal)
        self.admit = admit
        self.rounds = 0
        self.exchanges_failed = 0
        self._down: set[str] = set()

    @property
    def node_id(self) -> str:
        return self.membership.local_id

    def subscribe(self, on_change: Callable[[list], None],
                  on_refused: Callable[[str, str], None] | None = None) -> None:
        """Call `on_change(changes)` with every batch of state changes gossip brings, and
        `on_refused(peer, message)` when a peer refuses this node as a former member."""
        self._listeners.append(on_change)
        if on_refused is not None:
            self._refusal_listeners.append(on_refused)

    def add_seed(self, node: str) -> None:
        if node != self.node_id and node not in self.seeds:
            self.seeds.append(node)

    # The failure detectors time heartbeats on the monotonic clock: intervals are durations,
    # and a node whose wall clock jumps (NTP, a skew fault) must not hold every peer down until
    # the next heartbeat. Membership times tombstones on the wall clock, as its generations are.

    def is_up(self, node: str) -> bool:
        return node == self._me or self.detectors.is_up(node, time.monotonic_ns() / 1_000_000)

    def phi(self, node: str) -> float:
        return self.detectors.phi(node, _monotonic_ms())

    def down(self) -> set[str]:
        return self.detectors.down(_monotonic_ms())

    # ------------------------------------------------------------------ the rounds

    async def run(self) -> None:
        while True:
            await asyncio.sleep(round_delay_ms(self.interval_ms, self.rng) / 1000)
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gossip round failed")

    async def round(self) -> None:
        now = self.clock.now_ms()
        if self.load is not None:
            self.membership.update_local(**self.load())
        # The decisions (beat, peers, the probe of a member held down, the digest) are
        # cluster/gossip.plan_round's, shared with the simulator: only the IO is here.
        plan = plan_round(self.membership, self.detectors, self.rng, now,
                          seeds=self.seeds, fanout=self.fanout, detector_now_ms=_monotonic_ms())
        self.rounds += 1
        await asyncio.gather(*(self._exchange(p, plan.digest) for p in plan.peers))
        self._note_transitions()

    async def _exchange(self, peer: str, digest: list[DigestEntry]) -> None:
        try:
            ack = await self.call(peer, GossipSyn(list(digest)), self.interval_ms)
            self.merge(ack.states, sender=peer)
            if ack.request:
                await self.call(peer, GossipStates(self.membership.states_for(ack.request)), self.interval_ms)
        except (RpcError, RingkvError) as exc:
            self.exchanges_failed += 1
            log.debug("gossip with %s failed: %s", peer, exc)
            message = getattr(exc, "remote_message", "")
            if FORMER_MEMBER in message:
                for listener in self._refusal_listeners:
                    listener(peer, message)

    # ------------------------------------------------------------------ serving peers

    def on_syn(self, syn: GossipSyn) -> GossipAck:
        digest = [DigestEntry(*e) for e in syn.digest]
        return GossipAck(self.membership.delta_for(digest), self.membership.request_for(digest))

    def on_states(self, peer: str, states: GossipStates) -> None:
        self.merge(states.states, sender=peer)

    def merge(self, states: list[NodeState], sender: str | None = None) -> None:
        """Merge states `sender` (an authenticated peer; None: this node) told us.
        MemberRefusedError (after merging the rest) when `admit` refuses the sender's own state."""
        now = self.clock.now_ms()
        refusal = None
        if self.admit is not None:
            kept = []
            for state in states:
                why = self.admit(state)
                if why is None:
                    kept.append(state)
                elif state.node_id == sender:
                    refusal = why
            states = kept
        refused = self.membership.refused_origin
        changes = self.membership.merge(states, now, sender)
        if self.membership.refused_origin > refused:
            log.debug("gossip: %d states from %s refused for their origin",
                      self.membership.refused_origin - refused, sender)
        for listener in self._listeners if changes else ():
            try:
                listener(changes)
            except Exception:
                log.exception("acting on membership changes failed")
        for change in changes:
            if change.node_id == self.node_id:
                continue
            if change.new is not None and not change.new.is_tombstone:
                self.detectors.heartbeat(change.node_id, _monotonic_ms())
            if change.joined or change.restarted:
                log.info("gossip: %s %s", change.node_id, "restarted" if change.restarted else "is known")
        self._note_transitions()
        if refusal is not None:
            log.warning("gossip: refused %s: %s", sender, refusal)
            raise MemberRefusedError(refusal)

    def _note_transitions(self) -> None:
        down = self.down()
        for node in down - self._down:
            log.warning("%s is down (phi %.1f)", node, self.phi(node))
        for node in self._down - down:
            log.info("%s is up again", node)
            if self.on_up is not None:
                self.on_up(node)
        self._down = down

    def status(self) -> dict[str, dict]:
        now = _monotonic_ms()
        out = {}
        for s in self.membership.states():
            out[s.node_id] = {
                "gossip_status": str(s.status), "generation": s.generation, "heartbeat": s.version,
                "resp_address": s.resp_address,
                "phi": round(self.detectors.phi(s.node_id, now), 2) if s.node_id != self.node_id else 0.0,
                "up": s.node_id == self.node_id or self.detectors.is_up(s.node_id, now),
            }
        return out


def local_state(node_id: str, generation: int, rpc: tuple[str, int], resp: str, http: str,
                rack: str = "", status: NodeStatus = NodeStatus.NORMAL) -> NodeState:
    return NodeState(node_id, generation, 1, status, rpc[0], rpc[1], resp, http, rack)


def _monotonic_ms() -> float:
    return time.monotonic_ns() / 1_000_000
