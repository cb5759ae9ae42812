"""Live membership: the ring follows gossip, and partitions move when nodes join and leave.

The ring a node routes by is computed from the gossip states it holds (cluster/gossip.py),
plus the configured `members` it has not heard of yet (a static cluster works before the first
gossip round):

- **ring**: nodes whose status is normal or leaving (reads, and the replicas writes count on);
- **pending ring**: normal and joining nodes (the ring once the moves in progress finish).

Every node that knows the same states computes the same two rings. Where a partition's
preference list differs between them, writes also go to the pending ring's extra replicas (not
counted toward W), so a node that is receiving a partition misses no write made meanwhile;
reads use the ring only, so they never ask a node that does not have the data yet.

Moves are done with anti-entropy (node/antientropy.py): a comparison with an empty or stale
replica lists what differs and transfers it, so the same code streams a partition, resumes
after a crash (a comparison is idempotent) and catches writes that raced with it.

- **join** (`ringkv admin join`, a node started with `join = true`): it starts `joining`,
  learns the cluster by gossip, waits `settle` for every node to learn of it, then pulls every
  partition the pending ring gives it from that partition's current replicas, recording each
  one done in `<data_dir>/membership.json`; then it turns `normal` and the ring includes it.
- **decommission** (`ringkv admin decommission`): the node turns `leaving`, waits `settle`,
  pushes each of its partitions to the nodes the pending ring gives it to, then turns `left`
  and owns nothing (stop it then).
- **remove** (`ringkv admin remove NODE`, for a dead node): a tombstone for it spreads by
  gossip, the ring drops it, and every node pulls the partitions it gained from their other
  replicas.

Whenever the ring changes, a node also syncs the partitions it newly holds (the same pull), so
every partition ends with N replicas holding its data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from ringkv.cluster.gossip import NodeStatus
from ringkv.cluster.ring import Member, Ring

log = logging.getLogger("ringkv.membership")

RING = (NodeStatus.NORMAL, NodeStatus.LEAVING)
PENDING = (NodeStatus.NORMAL, NodeStatus.JOINING)


class MembershipManager:
    def __init__(self, node, config_members, *, settle_s: float = 3.0, progress_path: str | None = None):
        self.node = node  # the Node: cluster, gossiper, anti_entropy, transport, config
        self.config_members = {m.node_id: m for m in config_members}
        self.settle_s = settle_s
        self.progress_path = progress_path
        self.ring_nodes: tuple[str, ...] = ()
        self.pending_nodes: tuple[str, ...] = ()
        self.moves_total = 0
        self.moves_done = 0
        self.move_kind = ""  # join | leave | rebalance
        self.move_errors = 0
        self._sync_queue: list[int] = []
        self._already_synced: set[int] = set()  # received while joining: no second pull
        self._wake = asyncio.Event()
        self._task_done: asyncio.Event | None = None

    # ------------------------------------------------------------------ rings

    def _statuses(self) -> dict[str, tuple[NodeStatus, str]]:
        out = {n: (NodeStatus.NORMAL, m.rack) for n, m in self.config_members.items()}
        g = self.node.gossiper
        if g is not None:
            for s in g.membership.states():
                out[s.node_id] = (s.status, s.rack)
        return out

    def compute(self) -> tuple[list[Member], list[Member]]:
        statuses = self._statuses()
        ring = [Member(n, rack=rack) for n, (st, rack) in sorted(statuses.items()) if st in RING]
        pending = [Member(n, rack=rack) for n, (st, rack) in sorted(statuses.items()) if st in PENDING]
        return ring, pending

    def refresh(self) -> bool:
        """Rebuild the rings if the states say so; True if the ring changed."""
        ring_members, pending_members = self.compute()
        ring_ids = tuple(m.node_id for m in ring_members)
        pending_ids = tuple(m.node_id for m in pending_members)
        if (ring_ids, pending_ids) == (self.ring_nodes, self.pending_nodes):
            return False
        cfg = self.node.config
        c = self.node.cluster
        old = c.ring if self.ring_nodes else None
        if not ring_members:
            return False
        ring = Ring(ring_members, cfg.partitions, cfg.replicas)
        pending = None if pending_ids == ring_ids or not pending_members else Ring(
            pending_members, cfg.partitions, cfg.replicas)
        changed = ring_ids != self.ring_nodes
        self.ring_nodes, self.pending_nodes = ring_ids, pending_ids
        c.set_rings(ring, pending)
        log.info("ring: %s%s", ",".join(ring_ids),
                 f"; pending: {','.join(pending_ids)}" if pending is not None else "")
        if changed and old is not None:
            me = c.node_id
            gained = [p for p in ring.replica_partitions(me)
                      if me not in old.preference_list(p) and p not in self._already_synced]
            self._already_synced.clear()
            if gained:
                log.info("ring change: %d partitions newly held here; syncing them", len(gained))
                self._sync_queue.extend(gained)
                self.moves_total += len(gained)
                self.move_kind = self.move_kind or "rebalance"
                self._wake.set()
        return changed

    def on_gossip(self, changes) -> None:
        t = self.node.transport
        for ch in changes:
            s = ch.new
            if s is not None and s.node_id != self.node.cluster.node_id and s.rpc_port and ch.address_changed:
                t.set_peer_address(s.node_id, s.rpc_host, s.rpc_port)
        if any(ch.ring_changed for ch in changes):
            self.refresh()

    # ------------------------------------------------------------------ background syncing

    async def run(self) -> None:
        """Sync partitions this node newly holds after ring changes (pulls by anti-entropy)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._sync_queue:
                p = self._sync_queue.pop(0)
                await self._pull(p, self.node.cluster.ring.preference_list(p))
                self.moves_done += 1

    async def _pull(self, partition: int, sources) -> bool:
        c = self.node.cluster
        ok = False
        for peer in sources:
            if peer == c.node_id or not c.is_up(peer):
                continue
            result = await self.node.anti_entropy.compare(partition, peer)
            if result.error:
                self.move_errors += 1
                log.warning("syncing partition %d from %s failed: %s", partition, peer, result.error)
            else:
                ok = True
        return ok

    # ------------------------------------------------------------------ join

    def _load_progress(self) -> dict:
        if self.progress_path and os.path.exists(self.progress_path):
            try:
                with open(self.progress_path) as f:
                    return json.load(f)
            except (OSError, ValueError) as exc:
                # Starting over is safe (a move is an idempotent comparison), but say so.
                log.warning("cannot read %s (%s): membership moves start from the beginning",
                            self.progress_path, exc)
        return {}

    def _save_progress(self, doc: dict) -> None:
        if not self.progress_path:
            return
        tmp = self.progress_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.progress_path)

    async def join(self, rate_partitions_per_s: float = 50.0) -> None:
        """Run by a node started with join = true (see the module docstring)."""
        g = self.node.gossiper
        c = self.node.cluster
        me = c.node_id
        self.move_kind = "join"
        waited = 0.0
        while True:  # learn the cluster first: a joining node never serves a ring of itself
            known = {s.node_id for s in g.membership.states()}
            if len(known) > 1 and set(self.config_members) <= known | {me}:
                break
            await asyncio.sleep(0.2)
            waited += 0.2
            if waited >= 10:
                waited = 0.0
                log.warning("joining: no other member heard from yet; seeds: %s (add one with "
                            "RINGKV.ADMIN JOIN or POST /api/v1/admin/cluster/nodes)",
                            ",".join(sorted(set(self.config_members) - {me})) or "none")
        await asyncio.sleep(self.settle_s)  # let every node learn that we are joining
        self.refresh()
        pending = c.pending or c.ring
        progress = self._load_progress()
        done = set(progress.get("synced", []))
        todo = [p for p in pending.replica_partitions(me) if p not in done]
        self.moves_total = len(todo) + len(done)
        self.moves_done = len(done)
        log.info("joining: %d partitions to receive (%d already done)", len(todo), len(done))
        for p in todo:
            started = time.monotonic()
            sources = [n for n in c.ring.preference_list(p) if n != me]
            if await self._pull(p, sources) or not sources:
                done.add(p)
                self.moves_done += 1
                self._save_progress({"status": "joining", "synced": sorted(done)})
            elapsed = time.monotonic() - started
            if elapsed < 1 / rate_partitions_per_s:
                await asyncio.sleep(1 / rate_partitions_per_s - elapsed)
        self._already_synced = set(done)
        g.membership.set_local_status(NodeStatus.NORMAL)
        self._save_progress({"status": "normal", "synced": sorted(done)})
        self.refresh()
        log.info("joined: %d partitions received; now normal", len(done))

    def add_seeds(self, entries: list[str]) -> dict:
        """Give a joining node (more) members to learn the cluster from."""
        from ringkv.node.config import MemberAddress, parse_member

        g = self.node.gossiper
        if g.membership.local.status is not NodeStatus.JOINING:
            raise ValueError("this node is not joining: start it with `ringkv admin join`")
        added: list[MemberAddress] = [parse_member(e) for e in entries]
        if not added:
            raise ValueError("give at least one seed, node_id@host:rpc_port")
        for m in added:
            if m.node_id == self.node.cluster.node_id:
                continue
            self.config_members[m.node_id] = m
            self.node.transport.set_peer_address(m.node_id, m.host, m.rpc_port)
            if m.node_id not in g.seeds:
                g.seeds.append(m.node_id)
        return {"seeds": sorted(set(self.config_members) - {self.node.cluster.node_id})}

    # ------------------------------------------------------------------ leave

    async def decommission(self, rate_partitions_per_s: float = 50.0) -> dict:
        g = self.node.gossiper
        c = self.node.cluster
        me = c.node_id
        if g.membership.local.status is NodeStatus.NORMAL:
            g.membership.set_local_status(NodeStatus.LEAVING)
            self.refresh()
        self.move_kind = "leave"
        await asyncio.sleep(self.settle_s)  # every coordinator now also writes to the new owners
        self.refresh()
        pending = c.pending
        moved = 0
        if pending is not None:
            work = []
            for p in c.ring.replica_partitions(me):
                gainers = [n for n in pending.preference_list(p) if n not in c.ring.preference_list(p)]
                work.extend((p, n) for n in gainers)
            self.moves_total, self.moves_done = len(work), 0
            for p, target in work:
                started = time.monotonic()
                result = await self.node.anti_entropy.compare(p, target)
                if result.error:
                    self.move_errors += 1
                    log.warning("handing partition %d to %s failed: %s", p, target, result.error)
                moved += result.pushed
                self.moves_done += 1
                elapsed = time.monotonic() - started
                if elapsed < 1 / rate_partitions_per_s:
                    await asyncio.sleep(1 / rate_partitions_per_s - elapsed)
        g.membership.set_local_status(NodeStatus.LEFT)
        self._save_progress({"status": "left"})
        await asyncio.sleep(self.settle_s)  # let the news spread before the operator stops us
        self.refresh()
        return {"status": "left", "partitions_handed_over": self.moves_total, "keys_pushed": moved,
                "errors": self.move_errors}

    # ------------------------------------------------------------------ remove

    def remove(self, node: str) -> dict:
        g = self.node.gossiper
        if node == self.node.cluster.node_id:
            raise ValueError("a node cannot remove itself: decommission it instead")
        if node not in self._statuses():
            raise ValueError(f"{node} is not a member")
        changes = g.membership.mark_removed(node, time.time() * 1000,
                                            configured=node in self.config_members)
        self.on_gossip(changes)
        self.refresh()
        return {"removed": node}

    def status(self) -> dict:
        g = self.node.gossiper
        return {
            "local_status": str(g.membership.local.status) if g else "normal",
            "ring": list(self.ring_nodes),
            "pending": list(self.pending_nodes) if self.pending_nodes != self.ring_nodes else [],
            "move": {"kind": self.move_kind, "partitions_total": self.moves_total,
                     "partitions_done": self.moves_done, "errors": self.move_errors},
        }
