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
  is given seeds (its `members`, RINGKV.ADMIN JOIN, or a member admitting it by its address:
  node/admission.py), learns the cluster by gossip, waits `settle` for every node to learn of
  it, then pulls every partition the pending ring gives it from that partition's current
  replicas, recording each one done in `<data_dir>/membership.json`; then it turns `normal`
  and the ring includes it. `MoveProgress` says where it stands.
- **decommission** (`ringkv admin decommission`): the node turns `leaving`, waits `settle`,
  pushes each of its partitions to the nodes the pending ring gives it to, then turns `left`
  and owns nothing (stop it then).
- **remove** (`ringkv admin remove NODE`, for a dead node): a tombstone for it spreads by
  gossip, the ring drops it, and every node pulls the partitions it gained from their other
  replicas.

Whenever the ring changes, a node also syncs the partitions it newly holds (the same pull), so
every partition ends with N replicas holding its data.

With namespaces of different N (node/namespaces.py), a node at position i of a preference list
holds the keys of namespaces with N > i, so a node that only moves forward in a list also
gains keys, and the one node holding a key of an N=1 namespace may leave the list entirely.
`plan_moves` says, per partition, which node must receive what from which: the node driving
a join or a decommission runs every move of every partition before the ring switches (its own
comparisons directly, the others' with a SyncPartition RPC to the receiving node).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ringkv.clock import Clock
from ringkv.cluster.gossip import NodeStatus
from ringkv.cluster.ring import Member, Ring
from ringkv.errors import AdminConflictError, AdminRequestError, ConfigError
from ringkv.net.transport import Transport
from ringkv.node.antientropy import AntiEntropy
from ringkv.node.config import MemberAddress, parse_member
from ringkv.node.gossiper import Gossiper
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import SyncPartition
from ringkv.node.placement import Placement
from ringkv.node.replica_calls import ReplicaCalls

log = logging.getLogger("ringkv.membership")

RING = (NodeStatus.NORMAL, NodeStatus.LEAVING)
PENDING = (NodeStatus.NORMAL, NodeStatus.JOINING)
SYNC_TIMEOUT_MS = 120_000  # one SyncPartition: every comparison of one partition on the receiver
DECOMMISSION_ATTEMPTS = 3  # rounds over the partitions not yet handed over
DECOMMISSION_RETRY_S = 2.0  # pause before the second round (twice that before the third)


@dataclass(frozen=True)
class Move:
    """`gainer` receives from `source` the keys of namespaces with N >= min_replicas; among
    them those of the N values in `covers`, which it did not hold before."""

    gainer: str
    source: str
    min_replicas: int
    covers: tuple[int, ...]


@dataclass
class MoveProgress:
    """The partition moves of this node's current (or last) membership change. The membership
    manager updates it; the node's figures report it to peers (NodeInfoReply), so every
    member's status shows a joining node's progress. One object, given to both."""

    kind: str = ""  # join | leave | rebalance
    # Where a join stands: waiting-for-seeds (it knows no member yet), settling (announced,
    # letting every node learn of it), moving (receiving its partitions), done.
    phase: str = ""
    total: int = 0  # partitions to move
    done: int = 0
    errors: int = 0
    keys_moved: int = 0  # pulled and pushed by the moves this node ran or asked for

    def as_dict(self) -> dict:
        return {"kind": self.kind, "phase": self.phase, "partitions_total": self.total,
                "partitions_done": self.done, "errors": self.errors}


def plan_moves(old: Sequence[str], new: Sequence[str], replica_counts: Iterable[int]) -> list[Move]:
    """The moves that make the nodes of `new` (a partition's next preference list) hold what
    that list gives them, from the nodes of `old` (its current list).

    A node at position i holds the namespaces with N > i. A node at position i of `new` and j
    of `old` (infinite when absent) needs the N values with i < N <= j; a source at position k
    of `old` holds those with N > k. The gainer compares with every source that holds one it
    needs, over the keys both must hold (N > max(i, k)): nothing reaches a node that its
    position does not give it. With one N and a node already in the list, there is nothing
    to move.
    """
    counts = sorted(set(replica_counts))
    moves: list[Move] = []
    for i, gainer in enumerate(new):
        j = old.index(gainer) if gainer in old else len(old) + max(counts)
        needs = [n for n in counts if i < n <= j]
        if not needs:
            continue
        for k, source in enumerate(old):
            covers = tuple(n for n in needs if n > k)
            if source != gainer and covers:
                moves.append(Move(gainer, source, max(i, k) + 1, covers))
    return moves


def read_progress(path: str) -> dict:
    """What `path` (membership.json) recorded; {} when absent or unreadable."""
    if os.path.exists(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as exc:
            # Starting over is safe (a move is an idempotent comparison), but say so.
            log.warning("cannot read %s (%s): membership moves start from the beginning", path, exc)
    return {}


class MembershipManager:
    """Keeps `placement`'s rings in step with gossip, and runs joins, leaves and removals."""

    def __init__(self, placement: Placement, calls: ReplicaCalls, transport: Transport, store: LocalStore,
                 anti_entropy: AntiEntropy, gossiper: Gossiper, clock: Clock, config_members, *,
                 settle_s: float = 3.0, progress_path: str | None = None, moves: MoveProgress | None = None):
        self.placement = placement
        self.node_id = placement.node_id
        self.calls = calls
        self.transport = transport
        self.store = store
        self.anti_entropy = anti_entropy
        self.gossiper = gossiper
        self.clock = clock
        self.partitions = placement.ring.partitions
        self.replicas = placement.ring.replicas
        self.config_members = {m.node_id: m for m in config_members}
        self.settle_s = settle_s
        self.progress_path = progress_path
        self.ring_nodes: tuple[str, ...] = ()
        self.pending_nodes: tuple[str, ...] = ()
        self.moves = moves if moves is not None else MoveProgress()
        self._sync_queue: list[tuple[int, list[Move]]] = []  # after a ring change: moves to here
        self._already_synced: set[int] = set()  # received while joining: no second pull
        self._wake = asyncio.Event()
        gossiper.subscribe(self.on_gossip)

    # ------------------------------------------------------------------ rings

    def _statuses(self) -> dict[str, tuple[NodeStatus, str]]:
        out = {n: (NodeStatus.NORMAL, m.rack) for n, m in self.config_members.items()}
        for s in self.gossiper.membership.states():
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
        c = self.placement
        old = c.ring if self.ring_nodes else None
        if not ring_members:
            return False
        ring = Ring(ring_members, self.partitions, self.replicas)
        pending = None if pending_ids == ring_ids or not pending_members else Ring(
            pending_members, self.partitions, self.replicas)
        changed = ring_ids != self.ring_nodes
        self.ring_nodes, self.pending_nodes = ring_ids, pending_ids
        c.set_rings(ring, pending)
        log.info("ring: %s%s", ",".join(ring_ids),
                 f"; pending: {','.join(pending_ids)}" if pending is not None else "")
        if changed and old is not None:
            me = self.node_id
            counts = self._replica_counts()
            gained = []
            for p in ring.replica_partitions(me):
                if p in self._already_synced:
                    continue
                moves = [m for m in plan_moves(old.preference_list(p), ring.preference_list(p), counts)
                         if m.gainer == me]
                if moves:
                    gained.append((p, moves))
            self._already_synced.clear()
            if gained:
                log.info("ring change: %d partitions newly held here; syncing them", len(gained))
                self._sync_queue.extend(gained)
                self.moves.total += len(gained)
                self.moves.kind = self.moves.kind or "rebalance"
                self._wake.set()
        return changed

    def on_gossip(self, changes) -> None:
        t = self.transport
        for ch in changes:
            s = ch.new
            if s is not None and s.node_id != self.node_id and s.rpc_port and ch.address_changed:
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
                p, moves = self._sync_queue.pop(0)
                await self._run_moves(p, moves)
                self.moves.done += 1

    def _replica_counts(self) -> set[int]:
        return {s.replicas for s in self.placement.namespaces}

    async def _run_moves(self, partition: int, moves: list[Move]) -> bool:
        """Run a partition's moves: this node's comparisons itself, the others' by asking the
        receiving node (SyncPartition). True when every gainer got every N it needs from some
        source (a source that is down or fails is logged and counted; another may cover it)."""
        me = self.node_id
        by_gainer: dict[str, list[Move]] = {}
        for m in moves:
            by_gainer.setdefault(m.gainer, []).append(m)
        ok = True
        for gainer, gainer_moves in by_gainer.items():
            needed = {n for m in gainer_moves for n in m.covers}
            covered: set[int] = set()
            usable = [m for m in gainer_moves if self.calls.is_up(m.source) or m.source == me]
            if gainer == me:
                for m in usable:
                    result = await self.anti_entropy.compare(partition, m.source, m.min_replicas)
                    self.moves.keys_moved += result.pulled + result.pushed
                    if result.error:
                        self.moves.errors += 1
                        log.warning("syncing partition %d from %s failed: %s", partition, m.source, result.error)
                    else:
                        covered.update(m.covers)
            elif usable:
                body = SyncPartition(partition, [(m.source, m.min_replicas) for m in usable])
                try:
                    reply = await self.calls.call(gainer, body, SYNC_TIMEOUT_MS)
                except Exception as exc:  # RpcError, a remote error: the move is not done
                    self.moves.errors += 1
                    log.warning("asking %s to sync partition %d failed: %s", gainer, partition, exc)
                    ok = False
                    continue
                self.moves.keys_moved += reply.pulled + reply.pushed
                for m in usable:
                    if m.source in reply.failed:
                        self.moves.errors += 1
                        log.warning("%s syncing partition %d from %s failed: %s", gainer, partition,
                                    m.source, reply.failed[m.source])
                    else:
                        covered.update(m.covers)
            ok = ok and covered >= needed
        return ok

    def _plan(self, partition: int) -> list[Move]:
        """The moves of `partition` from the ring to the pending ring (none without one)."""
        c = self.placement
        if c.pending is None:
            return []
        return plan_moves(c.ring.preference_list(partition), c.pending.preference_list(partition),
                          self._replica_counts())

    # ------------------------------------------------------------------ join

    @staticmethod
    def saved_status_at(progress_path: str) -> str | None:
        """The status the node's last membership step recorded (joining, normal, left)."""
        return read_progress(progress_path).get("status")

    def load_progress(self) -> dict:
        return read_progress(self.progress_path) if self.progress_path else {}

    def _save_progress(self, doc: dict) -> None:
        if not self.progress_path:
            return
        tmp = self.progress_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.progress_path)

    async def join(self, rate_partitions_per_s: float = 50.0) -> None:
        """Run by a node started with join = true (see the module docstring)."""
        g = self.gossiper
        c = self.placement
        me = self.node_id
        self.moves.kind = "join"
        self.moves.phase = "waiting-for-seeds"
        waited = 0.0
        while True:  # learn the cluster first: a joining node never serves a ring of itself
            known = {s.node_id for s in g.membership.states()}
            if len(known) > 1 and set(self.config_members) <= known | {me}:
                break
            await asyncio.sleep(0.2)
            waited += 0.2
            if waited >= 10:
                waited = 0.0
                log.warning("joining: no other member heard from yet; seeds: %s (admit this node "
                            "from a member: `ringkv admin add-node` or POST /api/v1/admin/cluster/nodes)",
                            ",".join(sorted(set(self.config_members) - {me})) or "none")
        self.moves.phase = "settling"
        await asyncio.sleep(self.settle_s)  # let every node learn that we are joining
        self.refresh()
        progress = self.load_progress()
        done = set(progress.get("synced", []))
        plans = {p: moves for p in range(c.ring.partitions) if p not in done and (moves := self._plan(p))}
        todo = sorted(plans)
        self.moves.total = len(todo) + len(done)
        self.moves.done = len(done)
        self.moves.phase = "moving"
        log.info("joining: %d partitions to move (%d already done)", len(todo), len(done))
        for p in todo:
            started = time.monotonic()
            if await self._run_moves(p, plans[p]):
                done.add(p)
                self.moves.done += 1
                self._save_progress({"status": "joining", "synced": sorted(done)})
            elapsed = time.monotonic() - started
            if elapsed < 1 / rate_partitions_per_s:
                await asyncio.sleep(1 / rate_partitions_per_s - elapsed)
        self._already_synced = set(done)
        g.membership.set_local_status(NodeStatus.NORMAL)
        self._save_progress({"status": "normal", "synced": sorted(done)})
        self.moves.phase = "done"
        self.refresh()
        log.info("joined: %d partitions received; now normal", len(done))

    def add_seeds(self, entries: list[str]) -> dict:
        """Give a joining node (more) members to learn the cluster from."""
        g = self.gossiper
        if g.membership.local.status is not NodeStatus.JOINING:
            raise AdminConflictError("this node is not joining: start it with `ringkv admin join`")
        try:
            added: list[MemberAddress] = [parse_member(e) for e in entries]
        except ConfigError as exc:
            raise AdminRequestError(str(exc)) from None
        if not added:
            raise AdminRequestError("give at least one seed, node_id@host:rpc_port")
        for m in added:
            if m.node_id == self.node_id:
                continue
            self.config_members[m.node_id] = m
            self.transport.set_peer_address(m.node_id, m.host, m.rpc_port)
            g.add_seed(m.node_id)
        return {"seeds": sorted(set(self.config_members) - {self.node_id})}

    # ------------------------------------------------------------------ leave

    async def decommission(self, rate_partitions_per_s: float = 50.0) -> dict:
        g = self.gossiper
        c = self.placement
        if g.membership.local.status is NodeStatus.NORMAL:
            g.membership.set_local_status(NodeStatus.LEAVING)
            self.refresh()
        self.moves.kind = "leave"
        await asyncio.sleep(self.settle_s)  # every coordinator now also writes to the new owners
        self.refresh()
        plans = {p: moves for p in range(c.ring.partitions) if (moves := self._plan(p))}
        self.moves.total, self.moves.done = len(plans), 0
        failed = sorted(plans)
        for attempt in range(DECOMMISSION_ATTEMPTS):
            if attempt:
                await asyncio.sleep(DECOMMISSION_RETRY_S * attempt)
                log.warning("decommission: %d partitions not handed over yet; attempt %d of %d",
                            len(failed), attempt + 1, DECOMMISSION_ATTEMPTS)
            todo, failed = failed, []
            for p in todo:
                started = time.monotonic()
                if await self._run_moves(p, plans[p]):
                    self.moves.done += 1
                else:
                    failed.append(p)
                elapsed = time.monotonic() - started
                if elapsed < 1 / rate_partitions_per_s:
                    await asyncio.sleep(1 / rate_partitions_per_s - elapsed)
            if not failed:
                break
        if failed:
            # Leaving now could take the only copy of a key with it (a namespace of N=1, or
            # replicas that are down): stay in the ring and say which partitions are stuck.
            g.membership.set_local_status(NodeStatus.NORMAL)
            self.refresh()
            self.moves.kind = ""
            raise AdminConflictError(
                f"decommission cancelled: {len(failed)} partitions could not be handed over "
                f"(first: {', '.join(map(str, failed[:10]))}; see the node's log for why); the node "
                "stays in the ring as normal: fix the cause and run decommission again")
        g.membership.set_local_status(NodeStatus.LEFT)
        self._save_progress({"status": "left"})
        await asyncio.sleep(self.settle_s)  # let the news spread before the operator stops us
        self.refresh()
        return {"status": "left", "partitions_handed_over": self.moves.total, "keys_moved": self.moves.keys_moved,
                "errors": self.moves.errors}

    # ------------------------------------------------------------------ cleanup

    async def cleanup(self) -> dict:
        """Remove from this node the data of partitions (and namespaces) it no longer holds
        as a replica: what joins and decommissions leave behind (`ringkv admin cleanup`).

        Refused while a membership change is in progress or a member of the ring is down: a
        node's view of the ring must be the settled one before it drops anything.
        """
        c = self.placement
        if c.pending is not None:
            raise AdminConflictError("a membership change is in progress (see `ringkv admin status`): "
                             "run cleanup once it has finished")
        me = self.node_id
        down = [n for n in c.ring.node_ids if n != me and not self.calls.is_up(n)]
        if down:
            raise AdminConflictError(f"{', '.join(down)} down: cleanup runs only when every member of the ring is up")
        namespaces = c.namespaces
        started = time.monotonic()
        removed = partitions = 0
        for p in range(c.ring.partitions):
            pref = c.ring.preference_list(p)
            position = pref.index(me) if me in pref else c.ring.replicas
            if position < namespaces.min_replicas:
                continue  # a replica of every namespace here
            first, last = c.ring.partition_range(p)
            n = self.store.drop_range(
                first, last, lambda skey, position=position: namespaces.replicas_of_skey(skey) <= position)
            if n:
                removed += n
                partitions += 1
            await asyncio.sleep(0)  # one partition at a time: requests go on meanwhile
        log.info("cleanup: removed %d records of %d partitions this node no longer holds", removed, partitions)
        return {"records_removed": removed, "partitions": partitions,
                "seconds": round(time.monotonic() - started, 3)}

    # ------------------------------------------------------------------ remove

    def remove(self, node: str, force: bool = False) -> dict:
        """Take `node` out of the ring as dead. Refused while the failure detector hears from
        it (removing a node that serves loses its replicas for nothing), unless `force`."""
        g = self.gossiper
        if node == self.node_id:
            raise AdminRequestError("a node cannot remove itself: decommission it instead")
        if node not in self._statuses():
            raise AdminRequestError(f"{node} is not a member")
        if not force and node in g.detectors and g.is_up(node):
            raise AdminConflictError(
                f"{node} is up (this node hears from it, phi {g.phi(node):.1f} < {g.detectors.threshold:g}): "
                f"remove takes out a dead node; to take a live one out with its data, decommission it "
                f"(`ringkv admin decommission` asked of {node}), or force the removal (RINGKV.ADMIN REMOVE "
                f"{node} FORCE, `ringkv admin remove {node} --force`, DELETE ...?force=true)")
        local = g.membership.local.status
        if local not in RING:
            # Its tombstone would be refused by every member anyway (a removal must come from
            # a member: cluster/gossip.py, origin rules); say so instead of removing it here.
            raise AdminConflictError(f"this node ({self.node_id}) is {local}, not a member of the ring: "
                                     f"ask a member to remove {node}")
        if force:
            log.warning("removing %s by force (the failure detector holds it %s)", node,
                        "up" if node in g.detectors and g.is_up(node) else "down or never heard from")
        changes = g.membership.mark_removed(node, self.clock.now_ms(),
                                            configured=node in self.config_members)
        self.on_gossip(changes)
        self.refresh()
        return {"removed": node}

    def status(self) -> dict:
        return {
            "local_status": str(self.gossiper.membership.local.status),
            "ring": list(self.ring_nodes),
            "pending": list(self.pending_nodes) if self.pending_nodes != self.ring_nodes else [],
            "move": self.moves.as_dict(),
        }
