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
gains keys, and the one node holding a key of an N=1 namespace may leave the list entirely;
a namespace with counts of its own per datacenter has lists of its own (its layout).
`plan_moves` says, per partition, which node must receive what from which: the node driving
a join or a decommission runs every move of every partition before the ring switches (its own
comparisons directly, the others' with a SyncPartition RPC to the receiving node).

Join, decommission, remove and cleanup run as long operations (node/operations.py,
docs/operations.md): each takes a `Progress` and reports its partitions done. A decommission
cut by a restart resumes (the record says `leaving`), a join too (the record lists the
partitions received).

Membership is durable (`MembershipRecord`, docs/membership.md "Durable membership"): every
decision this node learns (a member joining, normal, leaving, left, removed, with the
incarnation it is about) is kept in `<data_dir>/membership.json`, which a restart starts from
instead of the command line's `members`. A node whose record says it left or was removed does
not start; members refuse a former member's old incarnation (its gossip, and a removed one's
RPCs); a node refused so, or told of its own removal, records it and stops (`on_expelled`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ringkv.clock import Clock
from ringkv.cluster.gossip import MAX_COUNTER, NodeState, NodeStatus
from ringkv.cluster.ring import Layout, Member, Ring
from ringkv.errors import AdminConflictError, AdminRequestError, ConfigError
from ringkv.net.transport import Transport
from ringkv.node.antientropy import MAX_PARALLEL_COMPARISONS, AntiEntropy, at_most, layouts_to_wire
from ringkv.node.config import MemberAddress, parse_member
from ringkv.node.gossiper import Gossiper
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import SyncPartition
from ringkv.node.operations import Progress
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
    """`gainer` receives from `source` the keys of namespaces of `layouts` (those the gainer
    holds in the new lists and the source in the old); among them those of `covers`, which
    the gainer did not hold before."""

    gainer: str
    source: str
    layouts: frozenset[Layout]
    covers: tuple[Layout, ...]


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
    moved: int = 0  # partitions moved since the process started, never reset (/metrics' counter)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "phase": self.phase, "partitions_total": self.total,
                "partitions_done": self.done, "errors": self.errors}


def plan_moves(old: Mapping[Layout, Sequence[str]], new: Mapping[Layout, Sequence[str]]) -> list[Move]:
    """The moves that make the nodes of a partition's next lists (`new`: layout -> the nodes
    that will hold its keys) hold what those lists give them, from the nodes of its current
    lists (`old`).

    A gainer needs the layouts whose new list has it and old list does not; it compares with
    every source of the old lists that holds one it needs, over the keys of the layouts both
    must hold (the gainer in the new list, the source in the old): nothing reaches a node
    that its place does not give it. With one layout and a node already in its list, there
    is nothing to move. With prefixes (`prefix_lists`), a node at position i holds the
    namespaces with N > i, so a node that only moves forward in a list gains keys too.
    """
    moves: list[Move] = []
    for gainer in _in_order(new.values()):
        needs = [lay for lay, nodes in new.items() if gainer in nodes and gainer not in old.get(lay, ())]
        if not needs:
            continue
        for source in _in_order(old.values()):
            covers = tuple(lay for lay in needs if source in old[lay])
            if source != gainer and covers:
                both = frozenset(lay for lay, nodes in new.items() if gainer in nodes and source in old.get(lay, ()))
                moves.append(Move(gainer, source, both, covers))
    return moves


def prefix_lists(pref: Sequence[str], counts: Iterable[int]) -> dict[Layout, Sequence[str]]:
    """`plan_moves`' lists of namespaces that keep keys on a prefix of `pref`, one per N."""
    return {n: pref[:n] for n in sorted(set(counts))}


def _in_order(lists: Iterable[Sequence[str]]) -> list[str]:
    """Every node of `lists`, each once, by its earliest place in any of them."""
    first: dict[str, int] = {}
    for nodes in lists:
        for i, node in enumerate(nodes):
            if i < first.get(node, i + 1):
                first[node] = i
    return sorted(first, key=first.__getitem__)


def read_progress(path: str) -> dict:
    """What `path` (membership.json) recorded; {} when absent or unreadable."""
    if os.path.exists(path):
        try:
            with open(path) as f:
                doc = json.load(f)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return doc
        except (OSError, ValueError) as exc:
            # Starting over is safe (a move is an idempotent comparison), but say so.
            log.warning("cannot read %s (%s): membership moves start from the beginning", path, exc)
    return {}


# ---------------------------------------------------------------------- the durable record

MEMBERSHIP_FILE = "membership.json"
RECORD_FORMAT = 1
LIVE_STATUSES = ("joining", "normal", "leaving")
GONE_STATUSES = ("left", "removed")
# Of two entries of one node with the same generation, the later step of the lifecycle wins
# (the order gossip's versions give them: a removal takes the largest version).
_STATUS_RANK = {"joining": 0, "normal": 1, "leaving": 2, "left": 3, "removed": 4}
# In the error a member answers a former member's RPC with; the refused node looks for it.
FORMER_MEMBER = "former member refused"


def newer_entry(a: dict, b: dict | None) -> bool:
    """Whether record entry `a` supersedes `b` (None: no entry) for the same node."""
    if b is None:
        return True
    if b.get("status") in GONE_STATUSES and a.get("status") in ("normal", "leaving"):
        # Only a new incarnation joining again (its data wiped) undoes a leave or a removal:
        # an old incarnation restarted says "normal" with a larger generation, and is refused.
        return False
    return (a.get("generation", 0), _STATUS_RANK.get(a.get("status"), -1)) > (
        b.get("generation", 0), _STATUS_RANK.get(b.get("status"), -1))


def merge_records(docs: Iterable[dict]) -> dict[str, dict]:
    """The newest entry of every node over several nodes' membership.json documents: what a
    cluster's members decided, as `cluster up` reads it from their data directories."""
    out: dict[str, dict] = {}
    for doc in docs:
        for node, entry in (doc.get("members") or {}).items():
            if isinstance(entry, dict) and newer_entry(entry, out.get(node)):
                out[node] = entry
    return out


class MembershipRecord:
    """This node's durable copy of the cluster's membership decisions, in
    `<data_dir>/membership.json` (docs/membership.md, "On disk"): every member it knows with its
    status (joining, normal, leaving, left, removed), the generation (incarnation) the decision
    is about, its RPC address and rack, and the record's epoch when it was written; the node's
    own status; a join's partitions already received.

    The command line's `members` only seeds a node whose record knows no members yet. A node
    whose own status is left or removed refuses to start (`start_problem`), and a node keeps
    refusing a member it holds as left or removed (`refusal`), so that neither serves old data.
    Written (atomically, fsynced) only when a decision changes: heartbeats never write.
    """

    def __init__(self, path: str | None, node_id: str):
        self.path = path
        self.node_id = node_id
        self.doc: dict = read_progress(path) if path else {}
        members = self.doc.get("members")
        self.members: dict[str, dict] = dict(members) if isinstance(members, dict) else {}
        self.doc["members"] = self.members
        # node -> why its gossip is refused: the members held as left or removed.
        self.former: dict[str, str] = {}
        # node -> why its RPCs are refused (ReplicaService reads it): the removed ones. A node
        # that left keeps coordinating requests until it is stopped (its own record keeps it
        # from starting again), so its RPCs are taken; a removed one may not serve at all.
        self.refused: dict[str, str] = {}
        for node in self.members:
            self._refresh_refusal(node)

    # -- reading

    @property
    def status(self) -> str | None:
        """This node's own status as last recorded (None: never recorded)."""
        return self.doc.get("status")

    @property
    def epoch(self) -> int:
        return int(self.doc.get("epoch", 0))

    def start_problem(self, data_dir: str) -> str | None:
        """Why this node may not start on this data directory, or None."""
        status = self.status
        if status not in GONE_STATUSES:
            return None
        how = "left the cluster (decommissioned)" if status == "left" else "was removed from the cluster"
        return (f"{self.node_id} {how} at membership epoch {self.epoch} (recorded in {self.path}); it refuses "
                f"to serve its old data, which the other members no longer count on. To bring it back, wipe "
                f"its data directory ({data_dir}) and join it again as a new node: `ringkv admin join` with "
                f"--members naming a live member (or `ringkv cluster join` for a cluster run by `cluster up`)")

    def refusal(self, node: str) -> str | None:
        """Why gossip from `node` speaking for itself is refused (None: it is not)."""
        return self.former.get(node)

    def start_members(self, seeds: list[MemberAddress], me: MemberAddress) -> list[MemberAddress]:
        """The members a node starts with: the live members of the record (this node with its
        configured address), and the command line's seeds that the record does not know; never
        one the record holds as left or removed. A record that knows only this node (written
        before gossip told it of the others) must not shrink the ring to this node alone: a node
        restarted so, while the others are down, would take every key as its only replica."""
        live = {n: e for n, e in self.members.items()
                if n != me.node_id and e.get("status") in LIVE_STATUSES and e.get("rpc")}
        gone = {n for n, e in self.members.items() if n != me.node_id and e.get("status") not in LIVE_STATUSES}
        if not live:
            return [s for s in seeds if s.node_id not in gone]
        out = []
        for node in sorted(live | {me.node_id: {}}):
            if node == me.node_id:
                out.append(me)
                continue
            host, _, port = live[node]["rpc"].rpartition(":")
            out.append(MemberAddress(node, host.strip("[]"), int(port), live[node].get("rack", "")))
        known = set(live) | gone | {me.node_id}
        out += [s for s in seeds if s.node_id not in known]
        return sorted(out, key=lambda m: m.node_id)

    def ring_status(self, node: str) -> str:
        """The recorded status of `node` ("normal" when the record does not know it)."""
        return self.members.get(node, {}).get("status", "normal")

    def known_states(self) -> list[NodeState]:
        """The recorded states of the other members, as gossip states older than anything their
        incarnation says (version 0): tombstones keep refusing, live ones give the ring the
        recorded statuses until gossip brings the news."""
        out = []
        for node, e in sorted(self.members.items()):
            if node == self.node_id or e.get("status") not in _STATUS_RANK:
                continue
            status = NodeStatus(e["status"])
            if status in (NodeStatus.LEFT, NodeStatus.REMOVED):
                out.append(NodeState(node, int(e.get("generation", 0)), MAX_COUNTER, status))
                continue
            host, _, port = (e.get("rpc") or ":0").rpartition(":")
            out.append(NodeState(node, int(e.get("generation", 0)), 0, status, host.strip("[]"), int(port or 0),
                                 rack=e.get("rack", "")))
        return out

    def admit(self, state: NodeState) -> str | None:
        """Why a gossip state of a node held as left or removed is refused, or None: only its
        tombstones, and a new incarnation joining again (its data directory wiped: a new
        generation, status joining), are taken."""
        entry = self.members.get(state.node_id)
        if entry is None or entry.get("status") not in GONE_STATUSES or state.node_id == self.node_id:
            return None
        if state.status in (NodeStatus.LEFT, NodeStatus.REMOVED):
            return None
        if state.status is NodeStatus.JOINING and state.generation > int(entry.get("generation", 0)):
            return None
        return self.former.get(state.node_id)

    # -- writing

    def note(self, state: NodeState, now_ms: int) -> bool:
        """Record what gossip says of a node if it is a decision (a status) or an address this
        record does not hold yet; True if the record changed (and was written)."""
        entry = {"status": str(state.status), "generation": state.generation, "rack": state.rack}
        if state.rpc_port:
            entry["rpc"] = f"{state.rpc_host}:{state.rpc_port}"
        old = self.members.get(state.node_id)
        if old is not None:
            same = (old.get("status"), old.get("generation")) == (entry["status"], entry["generation"])
            if not same and not newer_entry(entry, old):
                return False  # a later decision is held already (or it would undo a leave)
            if old.get("rpc") and "rpc" not in entry:
                entry["rpc"] = old["rpc"]  # a tombstone carries no address: keep the last one known
            if all(old.get(k) == v for k, v in entry.items()):
                return False
        self._decide(state.node_id, entry, now_ms)
        return True

    def set_own(self, status: str, now_ms: int, rpc: str = "", rack: str = "", generation: int = 0,
                **extra) -> None:
        """Record this node's own status (and `extra` fields: a join's `synced` partitions)."""
        self.doc["status"] = status
        self.doc.update(extra)
        entry = dict(self.members.get(self.node_id, {}))
        entry.update(status=status, generation=generation or entry.get("generation", 0))
        if rpc:
            entry["rpc"] = rpc
        entry["rack"] = rack or entry.get("rack", "")
        self._decide(self.node_id, entry, now_ms)

    def _decide(self, node: str, entry: dict, now_ms: int) -> None:
        changed = self.members.get(node, {}).get("status") != entry["status"]
        if changed:
            self.doc["epoch"] = self.epoch + 1
            entry["epoch"] = self.epoch
            entry["changed_ms"] = now_ms
        else:
            entry.setdefault("epoch", self.members.get(node, {}).get("epoch", self.epoch))
            entry.setdefault("changed_ms", self.members.get(node, {}).get("changed_ms", now_ms))
        self.members[node] = entry
        self._refresh_refusal(node)
        if changed:
            log.info("membership record: %s is %s (epoch %d)", node, entry["status"], self.epoch)
        self.save()

    def _refresh_refusal(self, node: str) -> None:
        entry = self.members[node]
        status = entry.get("status")
        if node == self.node_id or status not in GONE_STATUSES:
            self.former.pop(node, None)
            self.refused.pop(node, None)
            return
        how = "left the cluster" if status == "left" else "was removed from the cluster"
        self.former[node] = (
            f"{FORMER_MEMBER}: {self.node_id} holds that {node} {how} at membership epoch {entry.get('epoch', 0)}; "
            f"{node} may not serve its old data: stop it, wipe its data directory and join it again")
        if status == "removed":
            self.refused[node] = self.former[node]
        else:
            self.refused.pop(node, None)

    def save(self) -> None:
        if not self.path:
            return
        self.doc["format"] = RECORD_FORMAT
        self.doc["node_id"] = self.node_id
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class MembershipManager:
    """Keeps `placement`'s rings in step with gossip, and runs joins, leaves and removals."""

    def __init__(self, placement: Placement, calls: ReplicaCalls, transport: Transport, store: LocalStore,
                 anti_entropy: AntiEntropy, gossiper: Gossiper, clock: Clock, config_members, *,
                 settle_s: float = 3.0, progress_path: str | None = None, moves: MoveProgress | None = None,
                 record: MembershipRecord | None = None, on_expelled: Callable[[str], None] | None = None):
        """`record`: the durable membership (made from `progress_path` if not given).
        `on_expelled(reason)`: this node learnt that it was removed, or a member refuses it as
        a former member: it must stop serving (the process stops; the record keeps it
        from starting again on this data)."""
        self.placement = placement
        self.node_id = placement.node_id
        self.calls = calls
        self.transport = transport
        self.store = store
        self.anti_entropy = anti_entropy
        self.gossiper = gossiper
        self.clock = clock
        self.partitions = placement.ring.partitions
        self.replicas = placement.ring.replication  # N, or the count per datacenter
        self.algorithm = placement.ring.algorithm  # fixed at cluster creation (ring_algorithm)
        self.config_members = {m.node_id: m for m in config_members}
        self.settle_s = settle_s
        self.progress_path = progress_path
        self.record = record if record is not None else MembershipRecord(progress_path, self.node_id)
        self.on_expelled = on_expelled
        self.expelled = ""  # why this node no longer serves ("" while it does)
        self.ring_nodes: tuple[str, ...] = ()
        self.pending_nodes: tuple[str, ...] = ()
        self.moves = moves if moves is not None else MoveProgress()
        self._sync_queue: list[tuple[int, list[Move]]] = []  # after a ring change: moves to here
        self._already_synced: set[int] = set()  # received while joining: no second pull
        self._wake = asyncio.Event()
        self._syncing = False  # run() is moving a partition of the queue now
        gossiper.subscribe(self.on_gossip, on_refused=self.on_refused)

    # ------------------------------------------------------------------ rings

    def _statuses(self) -> dict[str, tuple[NodeStatus, str]]:
        out = {n: (NodeStatus.NORMAL, m.rack) for n, m in self.config_members.items()}
        for s in self.gossiper.membership.states():
            out[s.node_id] = (s.status, s.rack)
        return out

    def compute(self) -> tuple[list[Member], list[Member]]:
        statuses = self._statuses()
        ring = [Member.at(n, rack) for n, (st, rack) in sorted(statuses.items()) if st in RING]
        pending = [Member.at(n, rack) for n, (st, rack) in sorted(statuses.items()) if st in PENDING]
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
        ring = Ring(ring_members, self.partitions, self.replicas, self.algorithm)
        pending = None if pending_ids == ring_ids or not pending_members else Ring(
            pending_members, self.partitions, self.replicas, self.algorithm)
        changed = ring_ids != self.ring_nodes
        self.ring_nodes, self.pending_nodes = ring_ids, pending_ids
        c.set_rings(ring, pending)
        log.info("ring: %s%s", ",".join(ring_ids),
                 f"; pending: {','.join(pending_ids)}" if pending is not None else "")
        if changed and old is not None:
            me = self.node_id
            layouts = self.placement.namespaces.layouts
            gained = []
            for p in ring.replica_partitions(me):
                if p in self._already_synced:
                    continue
                moves = [m for m in plan_moves({lay: old.replicas_for(p, lay) for lay in layouts},
                                               {lay: ring.replicas_for(p, lay) for lay in layouts})
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
        now = self.clock.now_ms()
        for ch in changes:
            s = ch.new
            if s is not None and s.node_id != self.node_id and s.rpc_port and ch.address_changed:
                t.set_peer_address(s.node_id, s.rpc_host, s.rpc_port)
            if s is None:
                continue
            if s.node_id == self.node_id:
                if s.status is NodeStatus.REMOVED:
                    self._expel("removed", f"{self.node_id} was removed from the cluster by a member")
            elif ch.status_changed or ch.address_changed or ch.restarted:
                self.record.note(s, now)
        if any(ch.ring_changed for ch in changes):
            self.refresh()

    def on_refused(self, peer: str, message: str) -> None:
        """A member refused this node as a former member (it left or was removed while this
        node was down): record it and stop serving."""
        status = "left" if f"{self.node_id} left the cluster" in message else "removed"
        self._expel(status, f"{peer} refuses this node: {message}")

    def _expel(self, status: str, reason: str) -> None:
        if self.expelled:
            return
        self.expelled = reason
        local = self.gossiper.membership.local
        self.record.set_own(status, self.clock.now_ms(), generation=local.generation)
        log.error("%s; this node stops serving its data. To bring it back: stop it, wipe its data directory "
                  "and join it again (`ringkv admin join`)", reason)
        if self.on_expelled is not None:
            self.on_expelled(reason)

    # ------------------------------------------------------------------ background syncing

    async def run(self) -> None:
        """Sync partitions this node newly holds after ring changes (pulls by anti-entropy)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._sync_queue:
                p, moves = self._sync_queue.pop(0)
                self._syncing = True
                try:
                    await self._run_moves(p, moves)
                finally:
                    self._syncing = False
                self.moves.done += 1
                self.moves.moved += 1

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
            needed = {lay for m in gainer_moves for lay in m.covers}
            covered: set[Layout] = set()
            usable = [m for m in gainer_moves if self.calls.is_up(m.source) or m.source == me]
            if gainer == me:
                for m in usable:
                    result = await self.anti_entropy.compare(partition, m.source, m.layouts)
                    self.moves.keys_moved += result.pulled + result.pushed
                    if result.error:
                        self.moves.errors += 1
                        log.warning("syncing partition %d from %s failed: %s", partition, m.source, result.error)
                    else:
                        covered.update(m.covers)
            elif usable:
                every = self.placement.namespaces.layouts
                body = SyncPartition(partition, [(m.source, None if m.layouts >= every else layouts_to_wire(m.layouts))
                                                 for m in usable])
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
        layouts = c.namespaces.layouts
        return plan_moves({lay: c.ring.replicas_for(partition, lay) for lay in layouts},
                          {lay: c.pending.replicas_for(partition, lay) for lay in layouts})

    # ------------------------------------------------------------------ join

    def load_progress(self) -> dict:
        return self.record.doc

    def _save_progress(self, doc: dict) -> None:
        """Record this node's own status (and a join's partitions received) in the record."""
        local = self.gossiper.membership.local
        rpc = f"{local.rpc_host}:{local.rpc_port}" if local.rpc_port else ""
        self.record.set_own(doc["status"], self.clock.now_ms(), rpc=rpc, rack=local.rack,
                            generation=local.generation, **{k: v for k, v in doc.items() if k != "status"})

    def _report(self, progress: Progress | None) -> None:
        """Tell the operation running this change (node/operations.py) where the moves stand."""
        if progress is not None:
            m = self.moves
            progress.update(done=m.done, total=m.total, phase=m.phase or m.kind)

    async def join(self, rate_partitions_per_s: float = 50.0, progress: Progress | None = None) -> dict:
        """Run by a node started with join = true (see the module docstring); resumable: a
        restart picks up at the partitions membership.json does not list as received."""
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
        self._report(progress)
        await asyncio.sleep(self.settle_s)  # let every node learn that we are joining
        self.refresh()
        saved = self.load_progress()
        done = set(saved.get("synced", []))
        plans = {p: moves for p in range(c.ring.partitions) if p not in done and (moves := self._plan(p))}
        todo = sorted(plans)
        self.moves.total = len(todo) + len(done)
        self.moves.done = len(done)
        self.moves.phase = "moving"
        self._report(progress)
        log.info("joining: %d partitions to move (%d already done)", len(todo), len(done))

        async def move(p: int) -> None:
            if await self._run_moves(p, plans[p]):
                done.add(p)
                self.moves.done += 1
                self.moves.moved += 1
                self._save_progress({"status": "joining", "synced": sorted(done)})
                self._report(progress)

        # Several partitions at once: each move is round trips one after the other (a WAN
        # link between datacenters makes them slow); the rate still bounds the starts.
        await at_most(MAX_PARALLEL_COMPARISONS, todo, move, 1 / rate_partitions_per_s)
        self._already_synced = set(done)
        g.membership.set_local_status(NodeStatus.NORMAL)
        self._save_progress({"status": "normal", "synced": sorted(done)})
        self.moves.phase = "done"
        self._report(progress)
        self.refresh()
        log.info("joined: %d partitions received; now normal", len(done))
        return {"status": "normal", "partitions_received": len(done), "keys_moved": self.moves.keys_moved,
                "errors": self.moves.errors}

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

    async def decommission(self, rate_partitions_per_s: float = 50.0, progress: Progress | None = None) -> dict:
        """Hand every partition over, then leave (see the module docstring). Resumable: run
        again after a restart, it compares every partition again (idempotent) and leaves."""
        g = self.gossiper
        c = self.placement
        if g.membership.local.status is NodeStatus.NORMAL:
            g.membership.set_local_status(NodeStatus.LEAVING)
            self.refresh()
        self._save_progress({"status": "leaving"})  # a restart resumes the decommission
        self.moves.kind = "leave"
        self.moves.phase = "settling"
        self._report(progress)
        await asyncio.sleep(self.settle_s)  # every coordinator now also writes to the new owners
        self.refresh()
        plans = {p: moves for p in range(c.ring.partitions) if (moves := self._plan(p))}
        self.moves.total, self.moves.done = len(plans), 0
        self.moves.phase = "moving"
        self._report(progress)
        failed = sorted(plans)
        for attempt in range(DECOMMISSION_ATTEMPTS):
            if attempt:
                await asyncio.sleep(DECOMMISSION_RETRY_S * attempt)
                log.warning("decommission: %d partitions not handed over yet; attempt %d of %d",
                            len(failed), attempt + 1, DECOMMISSION_ATTEMPTS)
            todo, failed = failed, []

            async def move(p: int, failed: list[int] = failed) -> None:
                if await self._run_moves(p, plans[p]):
                    self.moves.done += 1
                    self.moves.moved += 1
                    self._report(progress)
                else:
                    failed.append(p)

            await at_most(MAX_PARALLEL_COMPARISONS, todo, move, 1 / rate_partitions_per_s)
            failed.sort()
            if not failed:
                break
        if failed:
            # Leaving now could take the only copy of a key with it (a namespace of N=1, or
            # replicas that are down): stay in the ring and say which partitions are stuck.
            g.membership.set_local_status(NodeStatus.NORMAL)
            self._save_progress({"status": "normal"})
            self.refresh()
            self.moves.kind = ""
            raise AdminConflictError(
                f"decommission cancelled: {len(failed)} partitions could not be handed over "
                f"(first: {', '.join(map(str, failed[:10]))}; see the node's log for why); the node "
                "stays in the ring as normal: fix the cause and run decommission again")
        g.membership.set_local_status(NodeStatus.LEFT)
        self._save_progress({"status": "left"})
        self.moves.phase = "announcing"
        self._report(progress)
        await asyncio.sleep(self.settle_s)  # let the news spread before the operator stops us
        self.refresh()
        return {"status": "left", "partitions_handed_over": self.moves.total, "keys_moved": self.moves.keys_moved,
                "errors": self.moves.errors}

    # ------------------------------------------------------------------ cleanup

    async def cleanup(self, progress: Progress | None = None) -> dict:
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
        if progress is not None:
            progress.update(total=c.ring.partitions, phase="dropping", unit="partitions")
        for p in range(c.ring.partitions):
            if progress is not None and p:
                progress.advance()
            held = c.holds(me, p)
            if held >= namespaces.layouts:
                continue  # a replica of every namespace here
            first, last = c.ring.partition_range(p)
            n = self.store.drop_range(
                first, last, lambda skey, held=held: namespaces.layout_of_skey(skey) not in held)
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

    async def wait_rebuilt(self, progress: Progress | None = None) -> dict:
        """After `remove`: wait until this node has pulled the partitions the removal gave it
        (the other members pull theirs on their own; `ringkv admin status` asked of each
        shows it)."""
        total = len(self._sync_queue) + (1 if self._syncing else 0)
        if progress is not None:
            progress.update(total=total, done=0, phase="rebuilding")
        while self._sync_queue or self._syncing:
            await asyncio.sleep(0.2)
            if progress is not None:
                progress.update(done=max(0, total - len(self._sync_queue) - (1 if self._syncing else 0)))
        return {"partitions_rebuilt_here": total}

    def status(self) -> dict:
        return {
            "local_status": str(self.gossiper.membership.local.status),
            "ring": list(self.ring_nodes),
            "pending": list(self.pending_nodes) if self.pending_nodes != self.ring_nodes else [],
            "move": self.moves.as_dict(),
        }
