"""Gossip membership state: what one node believes about every member, and how beliefs merge.

Theory of operation (docs/membership.md). Every node owns one `NodeState` about itself and is
the only writer of it, with one exception (an operator's removal, below). A state is ordered
by (generation, version): the generation changes at every restart of the node (the shell
passes its start time in ms), the version counts the changes of the state within a generation
and is bumped by every heartbeat. `Membership` holds the newest state known of every node and
merges by keeping, per node, the newer of two states. That merge is a maximum under a total
order, so it is commutative, associative and idempotent: any set of nodes that keep
exchanging states in any order ends up holding the same states (within the bounds below, and
but for the local node's entry, which follows its own rule).

The exchange is Scuttlebutt's three steps, each a method here and a message in the node shell:
A sends `digest()`; B answers `delta_for(digest)` (what A lacks) and `request_for(digest)`
(what B lacks); A merges the delta and answers `states_for(request)`, which B merges. A newer
version of a peer's state is also a heartbeat from it: `merge` returns the changes, and the
shell feeds them to the failure detectors (ringkv.cluster.phi) and rebuilds the ring when
`ring_changed`.

Rules of the module:
- Status lifecycle (transitions are a table, `_STATUS_TRANSITIONS`): joining -> normal ->
  leaving -> left is the node's own path; removed is said of a dead node by an operator on
  another node (`mark_removed`): the only state a node writes about another one. It takes the
  removed node's generation and the largest version, so nothing that incarnation still says
  can beat it; a restart of that node (a new generation) comes back as a new incarnation.
- Left and removed states are tombstones, kept so an old message cannot bring the node back.
  A tombstone is gossiped for `tombstone_ttl_ms` of this node's clock after it first saw it,
  then held silently (out of digests and deltas, still refusing older states) for as long
  again, then forgotten; at most `max_tombstones` are held (the oldest go first). The silent
  half is what lets a tombstone die out: without it, a node that forgot it would learn it
  back from a node that saw it later, and so on forever. It absorbs differences of up to the
  TTL in when nodes first saw it. After both halves a state older than the tombstone would be
  taken again: that bound is what keeps memory finite.
- The local node has the last word about itself: a peer's state of it is ignored unless it is
  newer, and then it means either that we were removed (adopted: the shell must stop
  serving) or that the peer holds a state of an earlier incarnation with a larger generation
  (the clock stepped back across a restart), and the local generation moves past it.
- Everything is bounded: `max_members` nodes that are not tombstones (this one included),
  `max_tombstones` tombstones, `max_states_per_message` states per delta, request and merge.
- Origin (docs/security.md). The shell names the authenticated peer a batch of states came
  from (`merge(..., sender=)`; the RPC handshake proved who it is). A node speaks for itself:
  its own state is taken from it as from anyone. What it relays about others is taken only
  within what a relay may say: a tombstone (left, removed; this node's own removal included)
  only from a member, i.e. a node held as normal or leaving (a joining node or one never
  heard of cannot take nodes out of the ring), and a live state only if it moves none of the
  node's addresses known here (only the node itself may announce a new address, so a relay
  cannot point traffic elsewhere). The addresses known are pinned per node, apart from its
  state: a relay that first cleared an address could otherwise set another one next. The
  sender's own state is merged first, so a member's
  first message can vouch for the tombstones it carries. Refused states are counted
  (`refused_origin`). States merged without a sender (this node's own decisions, the
  simulator) are not checked.

Pure: no clock, no randomness of its own, no IO. Not thread-safe; one event loop owns it.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections.abc import Iterable, Sequence, Set
from typing import Annotated, Any, NamedTuple, Protocol

import msgspec

from ringkv.cluster.ring import MAX_MEMBERS, Member
from ringkv.errors import ConfigError, LimitError

# Wire limits. Counters are msgpack int64, so they fit any peer's decoder.
MAX_COUNTER = 2**63 - 1
MAX_NODE_ID_CHARS = 128
MAX_HOST_CHARS = 255
MAX_ADDRESS_CHARS = 262  # a host, ":" and a port
MAX_LABEL_CHARS = 64  # rack and dc names

DEFAULT_MAX_TOMBSTONES = 1024
DEFAULT_TOMBSTONE_TTL_MS = 3 * 24 * 3600 * 1000  # as long as Cassandra keeps a removed node
# About 100 bytes per state in msgpack, so a full message stays near 25 KiB: small against
# max_frame_bytes and short enough not to hold up other RPCs on the connection.
DEFAULT_MAX_STATES_PER_MESSAGE = 256
MAX_FANOUT = 3
# Rounds start every interval_ms * (1 +- ROUND_JITTER), drawn from the node's Random: jitter
# keeps nodes that started together from gossiping in lockstep.
ROUND_JITTER = 0.1


class NodeStatus(enum.StrEnum):
    """Where a node is in its lifecycle. Values are part of the wire format."""

    JOINING = "joining"  # announced, streaming its partitions in; not yet in the ring
    NORMAL = "normal"  # in the ring, serving
    LEAVING = "leaving"  # still in the ring, streaming its partitions out
    LEFT = "left"  # left by itself: a tombstone
    REMOVED = "removed"  # removed by an operator while down: a tombstone


TOMBSTONE_STATUSES = frozenset({NodeStatus.LEFT, NodeStatus.REMOVED})
RING_STATUSES = frozenset({NodeStatus.NORMAL, NodeStatus.LEAVING})

# The node's own path; removed is never taken by a node about itself (it is adopted from a
# peer in `merge`). Leaving -> normal is a cancelled decommission, joining -> left an abandoned
# join. Left and removed are final for a generation: a restart starts a new one.
_STATUS_TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    NodeStatus.JOINING: frozenset({NodeStatus.NORMAL, NodeStatus.LEFT}),
    NodeStatus.NORMAL: frozenset({NodeStatus.LEAVING}),
    NodeStatus.LEAVING: frozenset({NodeStatus.LEFT, NodeStatus.NORMAL}),
    NodeStatus.LEFT: frozenset(),
    NodeStatus.REMOVED: frozenset(),
}

NodeId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NODE_ID_CHARS)]
Counter = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNTER)]
Host = Annotated[str, msgspec.Meta(max_length=MAX_HOST_CHARS)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Address = Annotated[str, msgspec.Meta(max_length=MAX_ADDRESS_CHARS)]
Label = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_CHARS)]
Weight = Annotated[float, msgspec.Meta(gt=0.0)]
Amount = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNTER)]


class NodeState(msgspec.Struct, frozen=True, array_like=True):
    """Everything the cluster knows of one node, as one versioned unit.

    Decoding with msgspec enforces the field limits above; `merge` checks them again (and
    finiteness of the weight) for states built in-process. Wire stability: fields are only
    ever appended, with defaults; an older node ignores fields it does not know.
    """

    node_id: NodeId
    generation: Counter  # changes at every restart: the shell passes its start time in ms
    version: Counter  # bumped by every change of the state, heartbeats included; 1 at start
    status: NodeStatus
    rpc_host: Host = ""
    rpc_port: Port = 0
    resp_address: Address = ""  # "host:port" clients use, "" if not served
    http_address: Address = ""
    rack: Label = ""
    dc: Label = ""
    weight: Weight = 1.0
    keys: Amount = 0  # load figures, as of the last heartbeat
    bytes_on_disk: Amount = 0

    @property
    def is_tombstone(self) -> bool:
        return self.status in TOMBSTONE_STATUSES

    def member(self) -> Member:
        """The node as the ring sees it."""
        if self.dc:
            return Member(self.node_id, self.weight, self.rack, self.dc)
        return Member.at(self.node_id, self.rack, self.weight)  # "dc/rack" in one label


class DigestEntry(NamedTuple):
    """What a node holds of one node, without the state itself: a digest is a list of these."""

    node_id: NodeId
    generation: Counter
    version: Counter


def newer(a: NodeState, b: NodeState) -> bool:
    """True if `a` supersedes `b`: a larger generation, or the same and a larger version.

    Two different states with equal counters cannot come from correct nodes (only the node
    itself writes its versions, and removals are canonical); should they meet, the larger
    msgpack encoding wins, so that every node still picks the same one.
    REQUIRES: a and b are states of the same node (not checked).
    """
    if a.generation != b.generation:
        return a.generation > b.generation
    if a.version != b.version:
        return a.version > b.version
    if a == b:
        return False
    return msgspec.msgpack.encode(a) > msgspec.msgpack.encode(b)


def state_problem(state: Any) -> str | None:
    """Why `state` is not a valid NodeState, or None if it is. What decoding checks, plus a
    finite weight; for states built in-process, which skip decoding."""
    if not isinstance(state, NodeState):
        return f"expected NodeState, got {type(state).__name__}"
    node_id = state.node_id
    if not isinstance(node_id, str) or not 1 <= len(node_id) <= MAX_NODE_ID_CHARS:
        return f"node_id must be 1..{MAX_NODE_ID_CHARS} characters, got {node_id!r:.80}"
    for field in ("generation", "version", "rpc_port", "keys", "bytes_on_disk"):
        value = getattr(state, field)
        top = 65535 if field == "rpc_port" else MAX_COUNTER
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            return f"{node_id}: {field} must be an integer in 0..{top}, got {value!r}"
    if not isinstance(state.status, NodeStatus):
        return f"{node_id}: status must be a NodeStatus, got {state.status!r}"
    for field, top in (
        ("rpc_host", MAX_HOST_CHARS),
        ("resp_address", MAX_ADDRESS_CHARS),
        ("http_address", MAX_ADDRESS_CHARS),
        ("rack", MAX_LABEL_CHARS),
        ("dc", MAX_LABEL_CHARS),
    ):
        value = getattr(state, field)
        if not isinstance(value, str) or len(value) > top:
            return f"{node_id}: {field} must be a string of at most {top} characters"
    weight = state.weight
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not (math.isfinite(weight) and weight > 0)
    ):
        return f"{node_id}: weight must be a finite number > 0, got {weight!r}"
    return None


def _addresses(s: NodeState) -> tuple[str, int, str, str]:
    return (s.rpc_host, s.rpc_port, s.resp_address, s.http_address)


class Addresses(NamedTuple):
    """Where a node said it listens: its RPC host and port, its client addresses."""

    rpc: tuple[str, int] | None
    resp: str
    http: str


def _pin(pinned: Addresses | None, state: NodeState) -> Addresses:
    """`pinned` with every address `state` states (a field not stated keeps its pin: a node
    fills its client addresses in after its first state, and tombstones carry none)."""
    rpc = (state.rpc_host, state.rpc_port) if state.rpc_port else None
    if pinned is None:
        return Addresses(rpc, state.resp_address, state.http_address)
    return Addresses(rpc or pinned.rpc, state.resp_address or pinned.resp,
                     state.http_address or pinned.http)


def _moved_addresses(pinned: Addresses, new: NodeState) -> str:
    """The addresses `new` states otherwise than pinned ("" for none). An address not stated
    (empty, port 0) moves nothing."""
    moved = []
    if pinned.rpc and new.rpc_port and pinned.rpc != (new.rpc_host, new.rpc_port):
        moved.append("RPC address")
    if pinned.resp and new.resp_address and pinned.resp != new.resp_address:
        moved.append("resp_address")
    if pinned.http and new.http_address and pinned.http != new.http_address:
        moved.append("http_address")
    return ", ".join(moved)


def _ring_view(s: NodeState | None) -> tuple[NodeStatus, float, str, str] | None:
    """What of a state can change a ring, the future ring (joining nodes) included."""
    if s is None or s.status in TOMBSTONE_STATUSES:
        return None
    return (s.status, s.weight, s.rack, s.dc)


class StateChange(NamedTuple):
    """A node's state was replaced by a newer one (`old` is None for a node not known before)."""

    old: NodeState | None
    new: NodeState

    @property
    def node_id(self) -> str:
        return self.new.node_id

    @property
    def joined(self) -> bool:
        """The node was not known before (it may still arrive as a tombstone)."""
        return self.old is None

    @property
    def restarted(self) -> bool:
        """A new generation of a known node: its connections and in-flight calls are stale."""
        return self.old is not None and self.new.generation != self.old.generation

    @property
    def status_changed(self) -> bool:
        return self.old is None or self.old.status != self.new.status

    @property
    def address_changed(self) -> bool:
        return self.old is None or _addresses(self.old) != _addresses(self.new)

    @property
    def ring_changed(self) -> bool:
        """The ring (or the future ring with joining nodes) must be rebuilt."""
        return _ring_view(self.old) != _ring_view(self.new)

    @property
    def heartbeat(self) -> bool:
        """The node itself said something new: feed its failure detector. A removal is
        written by another node, so it is not a sign of life."""
        return self.new.status is not NodeStatus.REMOVED


class RandomSource(Protocol):
    """The part of random.Random that `choose_peers` uses; the shell passes a seeded one."""

    def random(self) -> float: ...

    def sample(self, population: Sequence[str], k: int) -> list[str]: ...

    def choice(self, seq: Sequence[str]) -> str: ...


class Liveness(Protocol):
    """What a round asks of the failure detectors (cluster/phi.FailureDetectors)."""

    def is_up(self, node: str, now_ms: float) -> bool: ...


class GossipRound(NamedTuple):
    """What one round sends: a GossipSyn carrying `digest` to each of `peers` (empty when
    there is nobody to talk to)."""

    peers: list[str]
    digest: list[DigestEntry]


def _positive_int(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, f"must be an integer >= 1, got {value!r}")
    return value


class Membership:
    """The membership one node holds: the newest state it knows of every node.

    REQUIRES: `now_ms` comes from one non-decreasing clock (it only times tombstones; if it
    steps back, tombstones merely live longer). States handed to `merge` must not be mutated
    afterwards (they are frozen structs, so they cannot be).
    """

    __slots__ = (
        "_local_id",
        "_pinned",
        "_quiet_since_ms",
        "_states",
        "_tombstone_seen_ms",
        "max_members",
        "max_states_per_message",
        "max_tombstones",
        "refused_full",
        "refused_invalid",
        "refused_origin",
        "tombstone_ttl_ms",
    )

    def __init__(
        self,
        local: NodeState,
        *,
        max_members: int = MAX_MEMBERS,
        max_tombstones: int = DEFAULT_MAX_TOMBSTONES,
        tombstone_ttl_ms: float = DEFAULT_TOMBSTONE_TTL_MS,
        max_states_per_message: int = DEFAULT_MAX_STATES_PER_MESSAGE,
    ):
        problem = state_problem(local)
        if problem is not None:
            raise ConfigError("local", problem)
        self.max_members = _positive_int("max_members", max_members)
        self.max_tombstones = _positive_int("max_tombstones", max_tombstones)
        self.max_states_per_message = _positive_int(
            "max_states_per_message", max_states_per_message
        )
        if (
            isinstance(tombstone_ttl_ms, bool)
            or not isinstance(tombstone_ttl_ms, (int, float))
            or not (math.isfinite(tombstone_ttl_ms) and tombstone_ttl_ms > 0)
        ):
            raise ConfigError(
                "tombstone_ttl_ms", f"must be a finite number > 0, got {tombstone_ttl_ms!r}"
            )
        self.tombstone_ttl_ms = tombstone_ttl_ms
        self._local_id = local.node_id
        self._states: dict[str, NodeState] = {local.node_id: local}
        # Tombstones of other nodes -> when this node first saw them, oldest first (insertion
        # order; a newer tombstone is moved to the end): gossiped ones, then silent ones.
        self._tombstone_seen_ms: dict[str, float] = {}
        self._quiet_since_ms: dict[str, float] = {}
        # Every node's addresses as last stated (each field once stated), which only the node
        # itself may change (module docstring, "Origin"). Forgotten with the node's state.
        self._pinned: dict[str, Addresses] = {}
        # Counters for metrics: states dropped by merge, and why.
        self.refused_full = 0
        self.refused_invalid = 0
        self.refused_origin = 0

    def __repr__(self) -> str:
        return (
            f"Membership(local={self._local_id!r}, nodes={len(self._states)}, "
            f"tombstones={len(self._tombstone_seen_ms) + len(self._quiet_since_ms)})"
        )

    # -- reading

    @property
    def local_id(self) -> str:
        return self._local_id

    @property
    def local(self) -> NodeState:
        return self._states[self._local_id]

    def __len__(self) -> int:
        """Nodes held, tombstones included."""
        return len(self._states)

    def __contains__(self, node: object) -> bool:
        return node in self._states

    def get(self, node: str) -> NodeState | None:
        return self._states.get(node)

    def states(self) -> list[NodeState]:
        """Every state held, tombstones included, sorted by node id."""
        return [self._states[n] for n in sorted(self._states)]

    def tombstones(self) -> dict[str, float]:
        """Tombstones of other nodes, gossiped or silent, and when this node first saw them
        (ms, its clock)."""
        return {**self._quiet_since_ms, **self._tombstone_seen_ms}

    def silent_tombstones(self) -> set[str]:
        """Tombstones past their gossiped half: held, no longer advertised."""
        return set(self._quiet_since_ms)

    def members_for_ring(self, include_joining: bool = False) -> list[Member]:
        """The ring's member list: normal and leaving nodes, sorted by node id.

        Joining nodes are left out: they own nothing until their data has streamed in, and a
        read must not go to a replica that holds none of it. `include_joining=True` gives the
        ring they are joining, which tells the shell what to stream to them. Down nodes stay
        in: liveness is the failure detector's business, not the ring's.
        """
        wanted = RING_STATUSES | {NodeStatus.JOINING} if include_joining else RING_STATUSES
        return [
            self._states[n].member()
            for n in sorted(self._states)
            if self._states[n].status in wanted
        ]

    # -- the local node's own state

    def beat(self, now_ms: float) -> NodeState:
        """A heartbeat: bump the local version (once per gossip round). Also expires tombstones.
        Returns the local state. A removed node stays removed, with its version unchanged."""
        self.expire_tombstones(now_ms)
        local = self.local
        if local.status is NodeStatus.REMOVED or local.version >= MAX_COUNTER:
            return local
        return self._set_local(msgspec.structs.replace(local, version=local.version + 1))

    def set_local_status(self, status: NodeStatus) -> bool:
        """Move the local node to `status` (join finished, decommission started or done).
        False if it already is there; ConfigError for a transition the lifecycle forbids."""
        try:
            status = NodeStatus(status)
        except ValueError:
            raise ConfigError("status", f"unknown status {status!r}") from None
        local = self.local
        if status is local.status:
            return False
        if status not in _STATUS_TRANSITIONS[local.status]:
            allowed = ", ".join(sorted(_STATUS_TRANSITIONS[local.status])) or "nothing"
            raise ConfigError(
                "status",
                f"{local.node_id} cannot go from {local.status} to {status} "
                f"(from {local.status}: {allowed})",
            )
        self._set_local(msgspec.structs.replace(local, status=status, version=local.version + 1))
        return True

    def update_local(self, **fields: Any) -> NodeState:
        """Change the local addresses, rack, dc, weight or load figures; bumps the version.
        node_id, generation and version are the module's to manage, status goes through
        `set_local_status`."""
        for name in ("node_id", "generation", "version", "status"):
            if name in fields:
                raise ConfigError(name, "cannot be set through update_local")
        local = self.local
        if local.status is NodeStatus.REMOVED:
            return local
        try:
            updated = msgspec.structs.replace(local, version=local.version + 1, **fields)
        except TypeError as e:
            raise ConfigError("fields", str(e)) from None
        problem = state_problem(updated)
        if problem is not None:
            raise ConfigError("local", problem)
        return self._set_local(updated)

    def known_ids(self) -> set[str]:
        """Every node held that is not a tombstone, this one included (unless it was removed)."""
        return {n for n, s in self._states.items() if s.status not in TOMBSTONE_STATUSES}

    def mark_removed(self, node: str, now_ms: float, configured: bool = False) -> list[StateChange]:
        """An operator removes `node`, which is down for good: write its tombstone.

        The tombstone is canonical (node id, the generation known here, the largest version,
        status removed, every other field at its default), so two nodes removing it at once
        write the same state. Returns the change, as `merge` does; empty if already removed.

        A node this one has never heard from is refused unless `configured` (the caller knows
        it from its static member list: it may have died before its first gossip got here).
        Its tombstone then takes generation `now_ms`, which supersedes every incarnation
        started before the removal, whatever other nodes heard of it.
        """
        if node == self._local_id:
            raise ConfigError("node", f"{node} cannot remove itself: leave instead")
        current = self._states.get(node)
        if current is None and not configured:
            raise ConfigError("node", f"{node} is not a member known to {self._local_id}")
        generation = current.generation if current is not None else int(now_ms)
        tombstone = NodeState(node, generation, MAX_COUNTER, NodeStatus.REMOVED)
        return self.merge([tombstone], now_ms)

    # -- the exchange

    def digest(self) -> list[DigestEntry]:
        """(node_id, generation, version) of every state held but silent tombstones, sorted.
        At most max_members + max_tombstones entries."""
        states, quiet = self._states, self._quiet_since_ms
        return [
            DigestEntry(n, states[n].generation, states[n].version)
            for n in sorted(states)
            if n not in quiet
        ]

    def delta_for(self, digest: Iterable[DigestEntry]) -> list[NodeState]:
        """The states a peer with this digest lacks or holds older versions of.

        At most max_states_per_message: nodes it does not know (or knows only in an older
        generation) first, then the largest version gaps, so the most out-of-date news goes
        first and a node left out this round is further behind, hence earlier, next round.
        """
        theirs = self._digest_map(digest)
        quiet = self._quiet_since_ms
        ranked = []
        for node, state in self._states.items():
            if node in quiet:
                continue
            have = theirs.get(node)
            if have is None or have[0] < state.generation:
                ranked.append((0, 0, node))
            elif have[0] == state.generation and have[1] < state.version:
                ranked.append((1, have[1] - state.version, node))
        chosen = heapq.nsmallest(self.max_states_per_message, ranked)
        return [self._states[node] for _, _, node in chosen]

    def request_for(self, digest: Iterable[DigestEntry]) -> list[str]:
        """Node ids whose states the peer with this digest holds newer than this node does,
        ranked as `delta_for` ranks, at most max_states_per_message."""
        ranked = []
        for node, (generation, version) in self._digest_map(digest).items():
            mine = self._states.get(node)
            if mine is None or mine.generation < generation:
                ranked.append((0, 0, node))
            elif mine.generation == generation and mine.version < version:
                ranked.append((1, mine.version - version, node))
        return [node for _, _, node in heapq.nsmallest(self.max_states_per_message, ranked)]

    def states_for(self, nodes: Iterable[str]) -> list[NodeState]:
        """The states held of `nodes` (a peer's request), unknown ones and silent tombstones
        skipped, in the order asked, each once, at most max_states_per_message."""
        out: list[NodeState] = []
        seen: set[str] = set()
        for node in nodes:
            if len(out) >= self.max_states_per_message:
                break
            state = self._states.get(node)
            if state is not None and node not in seen and node not in self._quiet_since_ms:
                seen.add(node)
                out.append(state)
        return out

    def merge(self, states: Sequence[NodeState], now_ms: float,
              sender: str | None = None) -> list[StateChange]:
        """Keep the newer state per node; return what changed, in the order of `states` (the
        sender's own state first).

        `sender`: the authenticated node the states came from, whose relays are held to the
        origin rules (module docstring); None for this node's own decisions.
        Refused without error, and counted: states that fail `state_problem`
        (`refused_invalid`), new nodes past max_members (`refused_full`), and what the sender
        may not say (`refused_origin`). A tombstone over max_tombstones evicts the oldest one,
        silent ones first. LimitError if more than max_states_per_message states are given
        (the peer broke the protocol).
        """
        if len(states) > self.max_states_per_message:
            raise LimitError(
                f"a gossip message holds at most max_states_per_message="
                f"{self.max_states_per_message} states, got {len(states)}"
            )
        self.expire_tombstones(now_ms)
        if sender is not None:
            own = [s for s in states if isinstance(s, NodeState) and s.node_id == sender]
            states = own + [s for s in states if not (isinstance(s, NodeState)
                                                      and s.node_id == sender)]
        changes: list[StateChange] = []
        for state in states:
            if state_problem(state) is not None:
                self.refused_invalid += 1
                continue
            if sender is not None and self.origin_problem(state, sender) is not None:
                self.refused_origin += 1
                continue
            node = state.node_id
            if node == self._local_id:
                change = self._merge_local(state)
                if change is not None:
                    changes.append(change)
                continue
            current = self._states.get(node)
            if current is not None and not newer(state, current):
                continue
            tombstones, quiet = self._tombstone_seen_ms, self._quiet_since_ms
            was_tombstone = current is not None and current.status in TOMBSTONE_STATUSES
            if state.status in TOMBSTONE_STATUSES:
                # A newer tombstone is news again: gossiped from now on, for the full TTL.
                tombstones.pop(node, None)
                quiet.pop(node, None)
                tombstones[node] = now_ms
                self._states[node] = state
                while len(tombstones) + len(quiet) > self.max_tombstones:
                    oldest = next(iter(quiet or tombstones))
                    quiet.pop(oldest, None)
                    tombstones.pop(oldest, None)
                    del self._states[oldest]
                    self._pinned.pop(oldest, None)
            else:
                if (current is None or was_tombstone) and self._live_count() >= self.max_members:
                    self.refused_full += 1
                    continue
                if was_tombstone:
                    tombstones.pop(node, None)
                    quiet.pop(node, None)
                self._states[node] = state
            if state.status not in TOMBSTONE_STATUSES:  # a tombstone's addresses lead nowhere
                self._pinned[node] = _pin(self._pinned.get(node), state)
            changes.append(StateChange(current, state))
        return changes

    def origin_problem(self, state: NodeState, sender: str) -> str | None:
        """Why `sender` may not tell this node `state`, or None when it may (module docstring,
        "Origin"). Pure: nothing changes."""
        node = state.node_id
        if node == sender:
            return None  # a node's word about itself
        if state.status in TOMBSTONE_STATUSES:
            vouching = self._states.get(sender)
            if vouching is None or vouching.status not in RING_STATUSES:
                return (f"{sender} is not a member ({vouching.status if vouching else 'unknown'}): "
                        f"it cannot say that {node} is {state.status}")
            return None
        pinned = self._pinned.get(node)
        if pinned is not None:
            moved = _moved_addresses(pinned, state)
            if moved:
                return f"{sender} relays a state of {node} with another {moved}: only {node} may move it"
        return None

    def expire_tombstones(self, now_ms: float) -> list[str]:
        """Silence tombstones first seen tombstone_ttl_ms or longer ago, and forget those seen
        twice that long ago; returns the node ids forgotten (the shell drops their detectors).
        Both dicts are in order of first sight, so this stops at the first young one."""
        ttl = self.tombstone_ttl_ms
        tombstones, quiet = self._tombstone_seen_ms, self._quiet_since_ms
        while tombstones:
            node, seen_ms = next(iter(tombstones.items()))
            if now_ms - seen_ms < ttl:
                break
            del tombstones[node]
            quiet[node] = seen_ms
        forgotten = []
        while quiet:
            node, seen_ms = next(iter(quiet.items()))
            if now_ms - seen_ms < 2 * ttl:
                break
            del quiet[node]
            del self._states[node]
            self._pinned.pop(node, None)
            forgotten.append(node)
        return forgotten

    # -- choosing whom to gossip with

    def choose_peers(
        self,
        rng: RandomSource,
        live: Set[str],
        seeds: Sequence[str],
        fanout: int = 1,
    ) -> list[str]:
        """Up to `fanout` (1..3) peers for this round: random live ones, and now and then a seed.

        `live` is the nodes the shell believes up; `seeds` the names of the seed nodes it
        dials. The local node is never chosen. With no live peer, one seed is chosen, so a
        node that knows nobody (cold start, or cut off) keeps asking the seeds. Otherwise a
        seed takes one of the places with probability seeds / (live peers + seeds), unless one
        was drawn already: seeds then hear from everyone every few rounds, which is what
        heals a partition that live-peer gossip alone would never bridge (Cassandra's rule).
        Deterministic for a given `rng` state: candidates are sorted before drawing.
        """
        if isinstance(fanout, bool) or not isinstance(fanout, int) or not 1 <= fanout <= MAX_FANOUT:
            raise ConfigError("fanout", f"must be an integer in 1..{MAX_FANOUT}, got {fanout!r}")
        me = self._local_id
        peers = sorted(n for n in live if n != me)
        seed_list = sorted({s for s in seeds if s != me})
        if not peers:
            return [rng.choice(seed_list)] if seed_list else []
        chosen = rng.sample(peers, min(fanout, len(peers)))
        if not seed_list or any(p in seed_list for p in chosen):
            return chosen
        if rng.random() < len(seed_list) / (len(peers) + len(seed_list)):
            seed = rng.choice(seed_list)
            if len(chosen) >= fanout:
                chosen[-1] = seed
            else:
                chosen.append(seed)
        return chosen

    # -- internals

    def _live_count(self) -> int:
        return len(self._states) - len(self._tombstone_seen_ms) - len(self._quiet_since_ms)

    def _digest_map(self, digest: Iterable[DigestEntry]) -> dict[str, tuple[int, int]]:
        entries = list(digest)
        most = self.max_members + self.max_tombstones
        if len(entries) > most:
            raise LimitError(
                f"a digest holds at most max_members + max_tombstones={most} entries, "
                f"got {len(entries)}"
            )
        return {e[0]: (e[1], e[2]) for e in entries}

    def _set_local(self, state: NodeState) -> NodeState:
        self._states[self._local_id] = state
        return state

    def _merge_local(self, state: NodeState) -> StateChange | None:
        """A peer's state of this node (see the module rules)."""
        local = self.local
        if not newer(state, local):
            return None
        if state.status is NodeStatus.REMOVED:
            self._set_local(state)
            return StateChange(local, state)
        if state.generation >= MAX_COUNTER:
            return None
        moved = msgspec.structs.replace(local, generation=state.generation + 1, version=1)
        self._set_local(moved)
        return StateChange(local, moved)


# --- one round ----------------------------------------------------------------------------------


def known_members(membership: Membership, seeds: Iterable[str]) -> set[str]:
    """The nodes a round may gossip with: every node held that is not a tombstone, and the
    seeds. With static membership every configured member is a seed and counts as known from
    the start: choose_peers prefers known live peers over seeds, so nodes that only knew their
    first contact would otherwise gossip in closed cliques."""
    return membership.known_ids() | set(seeds)


def plan_round(
    membership: Membership,
    detectors: Liveness,
    rng: RandomSource,
    now_ms: float,
    *,
    seeds: Sequence[str],
    fanout: int,
    probe_unreachable: bool = True,
    known: Set[str] | None = None,
    detector_now_ms: float | None = None,
) -> GossipRound:
    """The decisions of one gossip round, shared by node/gossiper.py and the simulator's
    testing/sim/node.py: beat, choose the peers, and what to send them.

    Beats (`membership.beat`), then draws up to `fanout` peers among the `known` members the
    detectors hold up (`choose_peers`: random live peers, a seed now and then). With
    `probe_unreachable` (the node's rule), also, with probability down / (live + 1), one
    member held down: every member being a seed, choose_peers never picks a node held down,
    and without this the two sides of a healed partition (each of 2 or more nodes) would never
    talk again (Cassandra's rule; the simulator found it, docs/benchmarks/scale.md).

    `known` defaults to `known_members(membership, seeds)`; a caller may pass the same set
    kept up to date from its merges, to save rebuilding it every round. Draws from `rng` in
    a fixed order (choose_peers, then the probe), so a seeded Random replays the same rounds.
    REQUIRES: the shell updated the local load figures (`update_local`) before, if at all.
    `detector_now_ms` is the time on the detectors' clock when it is not `now_ms`'s (the
    node times heartbeats on its monotonic clock, which a wall-clock jump does not move).
    """
    membership.beat(now_ms)
    if known is None:
        known = known_members(membership, seeds)
    me = membership.local_id
    is_up = detectors.is_up
    at = now_ms if detector_now_ms is None else detector_now_ms
    live = {n for n in known if is_up(n, at)}
    peers = membership.choose_peers(rng, live, seeds, fanout)
    if probe_unreachable:
        down = sorted(n for n in known if n not in live and n != me)
        if down and rng.random() < len(down) / (len(live) + 1):
            peers.append(rng.choice(down))
    # One digest serves every exchange of the round: they all start before any answer comes.
    return GossipRound(peers, membership.digest() if peers else [])


def round_delay_ms(interval_ms: float, rng: RandomSource, jitter: float = ROUND_JITTER) -> float:
    """How long until the next round: `interval_ms` jittered by +-`jitter`, uniformly."""
    return interval_ms * (1.0 - jitter + 2 * jitter * rng.random())
