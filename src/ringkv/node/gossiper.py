"""The gossip shell: drives cluster/gossip.Membership and cluster/phi over RPC.

Every `gossip_interval_ms` (1 s) the node bumps its heartbeat and runs a three-way exchange
with 1 to 3 peers (cluster/gossip.choose_peers: random live peers, a seed now and then):

    GossipSyn(digest)                      ->
                                           <- GossipAck(states the caller lacks, ids it wants)
    GossipStates(the states it asked for)  ->

Any newer state of a node counts as a heartbeat from that node for its phi-accrual detector,
so a node's liveness is known to everyone within a few rounds even without talking to it
directly. The cluster coordinator asks `is_up(node)` to route around down nodes (forwarding,
stand-ins, read and write fan-out), and hint delivery waits for a target to be up.

Membership is still static (the ring comes from the `members` setting); gossip carries
liveness, addresses and load figures, which `ringkv cluster status` shows. The seeds are the
configured members.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from ringkv.cluster.gossip import DigestEntry, Membership, NodeState, NodeStatus
from ringkv.cluster.phi import FailureDetectors
from ringkv.errors import RingkvError, RpcError
from ringkv.node.messages import GossipAck, GossipStates, GossipSyn
from ringkv.node.replica import now_ms

log = logging.getLogger("ringkv.gossip")


class Gossiper:
    def __init__(
        self,
        local: NodeState,
        seeds: list[str],
        call: Callable,
        *,
        interval_ms: int = 1000,
        fanout: int = 2,
        phi_threshold: float = 8.0,
        acceptable_pause_ms: float = 1000.0,
        load: Callable[[], dict] | None = None,
        rng: random.Random | None = None,
        on_up: Callable[[str], None] | None = None,
        on_change: Callable[[list], None] | None = None,
    ):
        self.membership = Membership(local)
        self.detectors = FailureDetectors(threshold=phi_threshold,
                                          acceptable_heartbeat_pause_ms=acceptable_pause_ms,
                                          first_heartbeat_estimate_ms=interval_ms)
        self.seeds = [s for s in seeds if s != local.node_id]
        self.call = call  # async (node, body, timeout_ms) -> reply
        self.interval_ms = interval_ms
        self.fanout = fanout
        self.load = load
        self.rng = rng or random.Random()
        self.on_up = on_up
        self.on_change = on_change  # (StateChange list) -> None: addresses, ring (membership.py)
        self.rounds = 0
        self.exchanges_failed = 0
        self._down: set[str] = set()

    @property
    def node_id(self) -> str:
        return self.membership.local_id

    def is_up(self, node: str) -> bool:
        return node == self.node_id or self.detectors.is_up(node, now_ms())

    def phi(self, node: str) -> float:
        return self.detectors.phi(node, now_ms())

    def down(self) -> set[str]:
        return self.detectors.down(now_ms())

    # ------------------------------------------------------------------ the rounds

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_ms / 1000 * (0.9 + 0.2 * self.rng.random()))
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gossip round failed")

    async def round(self) -> None:
        now = now_ms()
        if self.load is not None:
            self.membership.update_local(**self.load())
        self.membership.beat(now)
        # The configured members count as known from the start: with static membership every
        # one of them is a seed, and choose_peers prefers known live peers over seeds, so
        # nodes that only knew their first contact would otherwise gossip in closed cliques.
        known = {s.node_id for s in self.membership.states() if not s.is_tombstone} | set(self.seeds)
        live = {n for n in known if self.detectors.is_up(n, now)}
        peers = self.membership.choose_peers(self.rng, live, self.seeds, self.fanout)
        # Cassandra's rule: now and then also try a member held down. Every member is a seed
        # here, so choose_peers never picks one held down, and without this the two sides of a
        # healed partition (each of 2 or more nodes) would never talk again: the simulator
        # found it (docs/benchmarks/scale.md).
        down = sorted(known - live - {self.node_id})
        if down and self.rng.random() < len(down) / (len(live) + 1):
            peers.append(self.rng.choice(down))
        self.rounds += 1
        await asyncio.gather(*(self._exchange(p) for p in peers))
        self._note_transitions()

    async def _exchange(self, peer: str) -> None:
        try:
            ack = await self.call(peer, GossipSyn(list(self.membership.digest())), self.interval_ms)
            self.merge(ack.states)
            if ack.request:
                await self.call(peer, GossipStates(self.membership.states_for(ack.request)), self.interval_ms)
        except (RpcError, RingkvError) as exc:
            self.exchanges_failed += 1
            log.debug("gossip with %s failed: %s", peer, exc)

    # ------------------------------------------------------------------ serving peers

    def on_syn(self, syn: GossipSyn) -> GossipAck:
        digest = [DigestEntry(*e) for e in syn.digest]
        return GossipAck(self.membership.delta_for(digest), self.membership.request_for(digest))

    def on_states(self, states: GossipStates) -> None:
        self.merge(states.states)

    def merge(self, states: list[NodeState]) -> None:
        now = now_ms()
        changes = self.membership.merge(states, now)
        if changes and self.on_change is not None:
            try:
                self.on_change(changes)
            except Exception:
                log.exception("acting on membership changes failed")
        for change in changes:
            if change.node_id == self.node_id:
                continue
            if change.new is not None and not change.new.is_tombstone:
                self.detectors.heartbeat(change.node_id, now)
            if change.joined or change.restarted:
                log.info("gossip: %s %s", change.node_id, "restarted" if change.restarted else "is known")
        self._note_transitions()

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
        now = now_ms()
        out = {}
        for s in self.membership.states():
            out[s.node_id] = {
                "gossip_status": str(s.status), "generation": s.generation, "heartbeat": s.version,
                "phi": round(self.detectors.phi(s.node_id, now), 2) if s.node_id != self.node_id else 0.0,
                "up": s.node_id == self.node_id or self.detectors.is_up(s.node_id, now),
            }
        return out


def local_state(node_id: str, generation: int, rpc: tuple[str, int], resp: str, http: str,
                rack: str = "", status: NodeStatus = NodeStatus.NORMAL) -> NodeState:
    return NodeState(node_id, generation, 1, status, rpc[0], rpc[1], resp, http, rack)
