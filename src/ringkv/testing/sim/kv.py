"""The data path in the simulator: replicas that keep records in memory, coordinators that run
every read and write through cluster/plans.py, hints and their delivery, over the simulated
network on virtual time (docs/simulator.md, "The data-path scenario").

What is real: placement (cluster/ring.Ring: preference lists and `fallbacks`), the plans and
quorums (cluster/plans.ReadPlan, WritePlan), versions (versioning/record.overwrite, merge,
Record, a HybridLogicalClock driven by virtual time), and liveness: `is_up` is the node's own
gossip and phi detectors (testing/sim/node.SimNode), as node/cluster.Cluster.is_up asks the
gossiper. What is simplified, and why it does not weaken the checks:

- A replica's store is a dict of Records that survives a crash whole: an acknowledgement
  means "in the log" in the node (docs/architecture.md), and a replica here applies a record
  and acknowledges it in one event. Hints are kept the same way (HintStore is an engine).
- Messages are `KvCall`/`KvReply` pairs with a call id, as the RPC envelope has. A reply that
  comes after its call timed out, or twice, is dropped, as the RPC client drops it. A call to
  a crashed node times out (the node would often fail faster, with "connection lost").
- The network may deliver a request twice. Replica messages are idempotent (a merge), and
  duplicates test that; a `Forward` runs once per call id, because TCP never delivers one
  request twice and a second run would be a second write.
- Writes run on a replica of the key: a client's contact node coordinates when it is one,
  else forwards to the first replica its detector holds up (the list's first if none), as
  `Forwarder.run` (node/forwarding.py) does. Reads run on the contact node, replica or not.
- Hint delivery is a periodic tick (`hint_interval_ms`) sending each target the detector
  holds up at most `max_hints_per_tick` hints; no back-off (node/handoff.HintDelivery backs
  off a failing target from 1 s to 60 s; that only slows delivery). A hint is removed when
  its ack comes back only if it was not changed meanwhile (see `Bug.HINT_RACE`).
- Reads ask R replicas (the node's default `read_fanout = "quorum"`; `read_fanout="all"`
  asks every one), the next one at once for each that fails, and one more after a fixed
  `speculate_after_ms` if still undecided, where the node waits an asked replica's recent
  p99. Read repair runs once every replica asked has answered (the node's default,
  "background"); only those can be repaired, and with no anti-entropy here, the final read
  at ALL of the data-path scenario is what repairs the others.
- No anti-entropy, no membership changes (so no `extra` nodes), no expiry, no deletes.
- With `dcs` (datacenters), member i is in datacenter dc(i mod dcs + 1), each keeps
  `replicas_per_dc` copies (cluster/ring.Ring's per-datacenter rings), writes go at
  EACH_QUORUM and reads at LOCAL_QUORUM in the contact node's datacenter, through the same
  per-datacenter needs as the node's (service/levels.dc_needs, Placement.read_scope).

Deliberately broken variants (`Bug`) are what the checker must catch (tests/testing/
test_sim_kv.py): they prove the checks can fail.
"""

from __future__ import annotations

import enum
import functools
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from ringkv.cluster.plans import READ_FANOUTS, ReadPlan, Send, WritePlan
from ringkv.cluster.quorum import ConsistencyLevel, resolve
from ringkv.cluster.ring import Member, Ring
from ringkv.errors import ClockSkewError, ConfigError
from ringkv.service.levels import dc_needs
from ringkv.testing.sim.network import NetworkConditions
from ringkv.testing.sim.node import GossipSettings
from ringkv.testing.simulator import Simulation
from ringkv.versioning import record as rec
from ringkv.versioning.dvv import Dot
from ringkv.versioning.hlc import HybridLogicalClock
from ringkv.versioning.record import Record

# Virtual time 0 as wall-clock ms, so HLC timestamps look like the node's (2023-11-14).
EPOCH_MS = 1_700_000_000_000
NAMESPACE = b""  # the default namespace: keys are placed as the node places them


class Bug(enum.StrEnum):
    """Deliberately broken variants; each must make the checker fail for some seed."""

    NONE = "none"
    # Acknowledge a write after W-1 acks (resolve's off-by-one): with N=3 at QUORUM, the
    # coordinator's own copy is enough.
    ACK_EARLY = "ack-early"
    # Every replica acknowledges every tenth ReplicaPut it is sent without storing it.
    DROP_WRITES = "drop-writes"
    # Hint delivery removes a hint when its ack comes back even if a newer miss was merged
    # into it meanwhile, as node/handoff.HintDelivery does today (it awaits the call, then
    # deletes the key): the newer miss is lost for hinted handoff.
    HINT_RACE = "hint-race"
    # A replica answers every digest ask with the digest it was sent, as if it held the
    # coordinator's record, instead of the digest of its own: a comparison that trusts what it
    # should check. A stale replica then counts toward R with a record it lacks.
    DIGEST_ECHO = "digest-echo"


@dataclass(frozen=True)
class KvSettings:
    """The data path's settings; the defaults are the node's where it has one."""

    replicas: int = 3  # N
    partitions: int = 16  # Q: small, so that a few keys share partitions and stand-ins
    replica_timeout_ms: float = 500.0
    forward_timeouts: int = 3  # node/cluster._FORWARD_TIMEOUTS
    hint_interval_ms: float = 250.0
    max_hints_per_tick: int = 64  # per target and tick: a bound, as hint_delivery_rate_per_s
    sloppy: bool = True  # stand-ins for failed replicas (False: every write is STRICT)
    read_repair: bool = True
    # Who a read asks (node/read_path.py): "quorum", R replicas, one more at once for each that
    # fails and one more `speculate_after_ms` after the start if still undecided (the node's
    # timer is an asked replica's recent p99; here a fixed delay, about the simulated network's
    # slowest round trip at its default delays); "all", every replica.
    read_fanout: str = "quorum"
    speculate_after_ms: float = 60.0
    # Digest reads (the node's `read_digests`, off by default there; on here, the path with
    # more cases): one replica asked sends its record, the others a digest of theirs, or the
    # record when it differs from the coordinator's.
    read_digests: bool = True
    bug: Bug = Bug.NONE
    dcs: int = 0  # datacenters (0: none, the ring counts N over all nodes)
    replicas_per_dc: int = 3  # with dcs: copies in each datacenter

    def __post_init__(self) -> None:
        if not self.replica_timeout_ms > 0:
            raise ConfigError("replica_timeout_ms", f"must be > 0, got {self.replica_timeout_ms!r}")
        if not self.hint_interval_ms > 0:
            raise ConfigError("hint_interval_ms", f"must be > 0, got {self.hint_interval_ms!r}")
        if self.read_fanout not in READ_FANOUTS:
            raise ConfigError("read_fanout", f"must be quorum or all, got {self.read_fanout!r}")
        if not self.speculate_after_ms > 0:
            raise ConfigError("speculate_after_ms", f"must be > 0, got {self.speculate_after_ms!r}")
        if self.max_hints_per_tick < 1:
            raise ConfigError("max_hints_per_tick", f"must be >= 1, got {self.max_hints_per_tick!r}")
        object.__setattr__(self, "bug", Bug(self.bug))


# --- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Get:
    key: bytes


@dataclass(frozen=True, slots=True)
class Got:
    record: Record | None


@dataclass(frozen=True, slots=True)
class GetDigest:
    key: bytes
    known: bytes | None  # the digest of the coordinator's record (None: it holds none yet)


@dataclass(frozen=True, slots=True)
class GotDigest:
    digest: bytes


def record_digest(record: Record | None) -> bytes:
    """A simulated record's digest: as node/messages.record_digest, of its encoding."""
    return b"" if record is None else sha256(rec.encode_record(record)).digest()[:16]


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    record: Record
    hint_for: str | None = None  # a stand-in keeps it as a hint for that replica


@dataclass(frozen=True, slots=True)
class Ack:
    pass


@dataclass(frozen=True, slots=True)
class Forward:
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a client learns of a write. `status` "ok" (acknowledged at W), "failed" (not
    acknowledged: it may still be stored somewhere) or "unknown" (no answer)."""

    status: str
    dot: Dot | None = None  # the write's dot, when the coordinator made the version
    sloppy: bool = False  # a stand-in's ack was among the W that acknowledged it
    error: str = ""
    coordinator: str = ""


@dataclass(frozen=True, slots=True)
class ReadResult:
    status: str  # "ok" or "failed" ("unknown" when the contact crashed)
    record: Record | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class KvCall:
    call_id: int
    body: Any


@dataclass(frozen=True, slots=True)
class KvReply:
    call_id: int
    body: Any


KV_MESSAGES = (KvCall, KvReply)


def merge_records(a: Record | None, b: Record | None) -> Record | None:
    """Two replicas' records of a key (None: no record), as node/cluster.merge_raw merges."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    return rec.merge(a, b)


def _same(a: Record | None, b: Record | None) -> bool:
    return a == b


@functools.lru_cache(maxsize=8)
def ring_of(members: tuple[str, ...], partitions: int, replicas: int, dcs: int = 0,
            replicas_per_dc: int = 3) -> Ring:
    """The ring of a member set (with `dcs`: member i in datacenter dc(i mod dcs + 1), each
    datacenter keeping `replicas_per_dc` copies). Cached: a Ring is immutable, and every seed
    of a scenario runs the same members."""
    if not dcs:
        return Ring([Member(m) for m in members], partitions=partitions, replicas=replicas)
    return Ring([Member(m, dc=f"dc{i % dcs + 1}") for i, m in enumerate(members)], partitions=partitions,
                replicas={f"dc{d + 1}": replicas_per_dc for d in range(dcs)})


# --- what survives a crash -----------------------------------------------------------------------


class ReplicaStore:
    """One node's durable state: its records, the hints it keeps for others, and its HLC
    (the node persists the highest timestamp it handed out, so a restart continues above)."""

    __slots__ = ("actor", "clock", "hints", "hints_stored", "puts_taken", "records")

    def __init__(self, node_id: str):
        self.actor = f"{node_id}@1".encode()  # node_id@epoch: the data directory survives
        self.records: dict[bytes, Record] = {}
        self.hints: dict[tuple[str, bytes], Record] = {}  # (target, key) -> record
        self.clock = HybridLogicalClock()
        self.hints_stored = 0
        self.puts_taken = 0  # ReplicaPuts taken as data, for Bug.DROP_WRITES

    def apply(self, key: bytes, incoming: Record, physical_ms: int) -> None:
        """Merge a record made elsewhere into ours (node/replica.Replica.apply_skey)."""
        try:
            self.clock.observe(max(s.timestamp for s in incoming.siblings), physical_ms)
        except ClockSkewError:
            pass  # stored, not followed: one broken clock must not drag ours along
        stored = self.records.get(key)
        self.records[key] = incoming if stored is None else rec.merge(stored, incoming)

    def add_hint(self, target: str, key: bytes, record: Record) -> None:
        """One hint per key and target; a later miss is merged in (node/handoff.HintStore)."""
        old = self.hints.get((target, key))
        self.hints[(target, key)] = record if old is None else rec.merge(old, record)
        self.hints_stored += 1


# --- one incarnation of a node -------------------------------------------------------------------


@dataclass(eq=False)
class _Write:
    plan: WritePlan
    key: bytes
    record: Record
    dot: Dot
    done: Callable[[WriteResult], None]
    replied: bool = False


@dataclass(eq=False)
class _Read:
    plan: ReadPlan
    key: bytes
    done: Callable[[ReadResult], None]
    replied: bool = False


@dataclass
class KvStats:
    writes_coordinated: int = 0
    reads_coordinated: int = 0
    forwards: int = 0
    stand_ins: int = 0
    hints_delivered: int = 0
    read_repairs: int = 0
    speculative_reads: int = 0
    digest_mismatches: int = 0
    quorum_failures: int = 0
    replica_timeouts: int = 0

    def add(self, other: KvStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class KvNode:
    """The data path of one incarnation of a node: the replica side (answers Get and Put),
    the coordinator side (reads, writes, forwards through the plans) and hint delivery. Its
    calls in flight, plans and timers die with it; its ReplicaStore does not."""

    __slots__ = (
        "_calls",
        "_forwards_seen",
        "_hints_in_flight",
        "_reads",
        "_writes",
        "alive",
        "generation",
        "node_id",
        "settings",
        "sim",
        "stats",
        "store",
    )

    def __init__(self, sim: KvSimulation, node_id: str, generation: int, store: ReplicaStore):
        self.sim = sim
        self.node_id = node_id
        self.generation = generation
        self.store = store
        self.settings = sim.kv
        self.alive = True
        self.stats = KvStats()
        self._calls: dict[int, tuple[Callable[[Any], None], Callable[[str], None]]] = {}
        self._writes: list[_Write] = []  # plans not finished yet, in start order
        self._reads: list[_Read] = []
        self._forwards_seen: set[int] = set()  # call ids of Forwards run here (at most one op each)
        self._hints_in_flight: dict[tuple[str, bytes], Record] = {}

    def __repr__(self) -> str:
        return f"KvNode({self.node_id!r}, generation={self.generation})"

    # -- liveness and time

    def is_up(self, node: str) -> bool:
        """What this node's failure detector believes (node/cluster.Cluster.is_up)."""
        return self.sim.nodes[self.node_id].is_up(node, self.sim.now_ms)

    def physical_ms(self) -> int:
        return EPOCH_MS + int(self.sim.now_ms)

    # -- calls

    def call(self, dst: str, body: Any, timeout_ms: float,
             on_reply: Callable[[Any], None], on_failure: Callable[[str], None]) -> None:
        """Send `body` to `dst`; exactly one of the callbacks runs, unless this incarnation
        dies first."""
        sim = self.sim
        call_id = next(sim.call_ids)
        self._calls[call_id] = (on_reply, on_failure)
        sim.network.send(self.node_id, dst, KvCall(call_id, body), sim.nodes[dst].generation)
        sim.queue.schedule(sim.now_ms + timeout_ms, self._timed_out, call_id, timeout_ms)

    def _timed_out(self, call_id: int, timeout_ms: float) -> None:
        entry = self._calls.pop(call_id, None)
        if entry is not None and self.alive:
            self.stats.replica_timeouts += 1
            entry[1](f"timed out after {timeout_ms:g} ms")

    def on_message(self, src: str, message: KvCall | KvReply) -> None:
        if type(message) is KvReply:
            entry = self._calls.pop(message.call_id, None)
            if entry is not None:  # else: after its timeout, or a duplicate
                entry[0](message.body)
            return
        reply = self.serve(src, message.call_id, message.body)
        if reply is not None:
            self.reply(src, message.call_id, reply)

    def reply(self, dst: str, call_id: int, body: Any) -> None:
        if self.alive:
            self.sim.network.send(self.node_id, dst, KvReply(call_id, body), self.sim.nodes[dst].generation)

    # -- the replica side (node/replica_service.ReplicaService)

    def serve(self, src: str, call_id: int, body: Any) -> Any:
        kind = type(body)
        store = self.store
        if kind is Get:
            return Got(store.records.get(body.key))
        if kind is GetDigest:
            record = store.records.get(body.key)
            digest = record_digest(record)
            if self.settings.bug is Bug.DIGEST_ECHO and body.known is not None:
                return GotDigest(body.known)
            if body.known is None or body.known == digest:
                return GotDigest(digest)
            return Got(record)
        if kind is Put:
            if body.hint_for is not None:
                store.add_hint(body.hint_for, body.key, body.record)
                return Ack()
            store.puts_taken += 1
            if self.settings.bug is Bug.DROP_WRITES and store.puts_taken % 10 == 0:
                return Ack()  # the broken replica: acknowledged, never stored
            store.apply(body.key, body.record, self.physical_ms())
            return Ack()
        if kind is Forward:
            if call_id in self._forwards_seen:
                return None  # the network's duplicate of a request TCP would deliver once
            self._forwards_seen.add(call_id)
            self.stats.forwards += 1
            self.coordinate_write(body.key, body.value, lambda result: self.reply(src, call_id, result))
            return None
        raise TypeError(f"{self.node_id} got an unexpected message {kind.__name__}")

    # -- writes

    def write(self, key: bytes, value: bytes, done: Callable[[WriteResult], None]) -> None:
        """A client's plain SET sent to this node: run here when a replica of the key, else
        forwarded to the first replica held up (node/forwarding.py, Forwarder.run)."""
        pref, _ = self.sim.placement(key)
        if self.node_id in pref:
            self.coordinate_write(key, value, done)
            return
        order = [n for n in pref if self.is_up(n)] or list(pref)
        timeout_ms = self.settings.replica_timeout_ms * self.settings.forward_timeouts

        def failed(reason: str) -> None:
            done(WriteResult("unknown", error=f"forwarded to replica {order[0]}, which {reason}: "
                                              "the write may or may not have been applied"))

        self.call(order[0], Forward(key, value), timeout_ms, done, failed)

    def coordinate_write(self, key: bytes, value: bytes, done: Callable[[WriteResult], None]) -> None:
        """Make the new version here (a dot of this node's actor), store it, and replicate it
        through a WritePlan at QUORUM (node/cluster_service.py put, node/write_path.py replicate)."""
        sim, store, s = self.sim, self.store, self.settings
        pref, partition = sim.placement(key)
        me = self.node_id
        new = rec.overwrite(store.records.get(key), actor=store.actor, value=value,
                            timestamp=store.clock.now(self.physical_ms()))
        store.records[key] = new
        w = resolve(ConsistencyLevel.QUORUM, len(pref), field="w")
        needs = ()
        if s.dcs:
            needs = dc_needs(ConsistencyLevel.EACH_QUORUM, pref, sim.ring.dc_of, sim.ring.dc_of(me))
            w = sum(n.needed for n in needs)
        if s.bug is Bug.ACK_EARLY:
            w = max(1, w - 1)
            needs = tuple(n._replace(needed=max(1, n.needed - 1)) for n in needs)
        ring = sim.ring
        fallbacks = None
        if s.sloppy and len(ring.node_ids) > len(pref):
            def fallbacks(failed: frozenset[str]) -> list[tuple[str, str | None]]:
                return [(r.node_id, r.hint_for) for r in ring.fallbacks(partition, failed, len(pref))]
        plan = WritePlan(pref, w, me=me, is_up=self.is_up, fallbacks=fallbacks, needs=needs)
        write = _Write(plan, key, new, new.siblings[0].dot, done)
        self.stats.writes_coordinated += 1
        self._writes.append(write)
        self._send_puts(write, plan.start())
        self._write_progress(write)

    def _send_puts(self, write: _Write, sends: Iterable[Send]) -> None:
        timeout_ms = self.settings.replica_timeout_ms
        for send in sends:
            if send.hint_for is not None:
                self.stats.stand_ins += 1
            self.call(send.node, Put(write.key, write.record, send.hint_for), timeout_ms,
                      functools.partial(self._put_acked, write, send),
                      functools.partial(self._put_failed, write, send))

    def _put_acked(self, write: _Write, send: Send, body: Any) -> None:
        self._send_puts(write, write.plan.on_ack(send))
        self._write_progress(write)

    def _put_failed(self, write: _Write, send: Send, reason: str) -> None:
        self._send_puts(write, write.plan.on_failure(send, reason))
        self._write_progress(write)

    def _write_progress(self, write: _Write) -> None:
        plan = write.plan
        if plan.done and not write.replied:
            write.replied = True
            if plan.succeeded:
                result = WriteResult("ok", write.dot, bool(plan.stand_ins), coordinator=self.node_id)
            else:
                self.stats.quorum_failures += 1
                result = WriteResult("failed", write.dot, error=str(plan.error), coordinator=self.node_id)
            write.done(result)
        if plan.finished:
            for node in plan.hints():
                self.store.add_hint(node, write.key, write.record)
            self._writes.remove(write)

    # -- reads

    def read(self, key: bytes, level: ConsistencyLevel, done: Callable[[ReadResult], None]) -> None:
        """A client's GET sent to this node: a ReadPlan over the key's replicas (R of them, or
        every one with read_fanout "all"), a replacement for each that fails, one speculative
        retry, read repair once every replica asked has answered (node/read_path.py,
        ReadPath.read)."""
        pref, _ = self.sim.placement(key)
        if level is ConsistencyLevel.LOCAL_QUORUM:  # Placement.read_scope: this datacenter's replicas
            dc_of = self.sim.ring.dc_of
            pref = tuple(n for n in pref if dc_of(n) == dc_of(self.node_id))
        r = resolve(level, len(pref), field="r")
        plan = ReadPlan(pref, r, me=self.node_id, is_up=self.is_up, merge=merge_records, same=_same,
                        fanout=self.settings.read_fanout,
                        digest=record_digest if self.settings.read_digests else None)
        read = _Read(plan, key, done)
        self.stats.reads_coordinated += 1
        self._reads.append(read)
        if plan.local:
            plan.on_record(self.node_id, self.store.records.get(key))
        self._ask(read, plan.start())
        if not plan.done and plan.unasked:
            sim = self.sim
            sim.queue.schedule(sim.now_ms + self.settings.speculate_after_ms, self._speculate, read)
        self._read_progress(read)

    def _ask(self, read: _Read, nodes: Iterable[str]) -> None:
        timeout_ms = self.settings.replica_timeout_ms
        plan = read.plan
        for node in nodes:
            ask = GetDigest(read.key, plan.known) if plan.asks_digest(node) else Get(read.key)
            self.call(node, ask, timeout_ms,
                      functools.partial(self._got, read, node),
                      functools.partial(self._get_failed, read, node))

    def _got(self, read: _Read, node: str, body: Got | GotDigest) -> None:
        plan = read.plan
        if type(body) is GotDigest:
            again = plan.on_digest(node, body.digest)
        else:
            if plan.asks_digest(node):
                self.stats.digest_mismatches += 1
            again = plan.on_record(node, body.record)
        if again:
            self.stats.digest_mismatches += len(again)
            self._ask(read, again)
        self._read_progress(read)

    def _get_failed(self, read: _Read, node: str, reason: str) -> None:
        self._ask(read, read.plan.on_failure(node, reason))
        self._read_progress(read)

    def _speculate(self, read: _Read) -> None:
        """The read's timer: if it is still undecided (and this incarnation still runs it),
        ask one more replica."""
        if not self.alive or read not in self._reads:
            return
        node = read.plan.speculate()
        if node is not None:
            self.stats.speculative_reads += 1
            self._ask(read, (node,))
        self._read_progress(read)

    def _read_progress(self, read: _Read) -> None:
        plan = read.plan
        if plan.done and not read.replied:
            read.replied = True
            if plan.succeeded:
                read.done(ReadResult("ok", plan.result))
            else:
                self.stats.quorum_failures += 1
                read.done(ReadResult("failed", error=str(plan.error)))
        if plan.finished:
            self._reads.remove(read)
            if self.settings.read_repair and plan.has_result and plan.result is not None:
                self._repair(read.key, plan.result, plan.repairs())

    def _repair(self, key: bytes, merged: Record, stale: list[str]) -> None:
        """Send the merge to the replicas that answered with less (Cluster.repair): the local
        copy at once, the others by a ReplicaPut nobody waits for."""
        for node in stale:
            self.stats.read_repairs += 1
            if node == self.node_id:
                self.store.apply(key, merged, self.physical_ms())
            else:
                self.call(node, Put(key, merged), self.settings.replica_timeout_ms, _ignore, _ignore)

    # -- hinted handoff

    def hint_tick(self) -> None:
        """Every hint_interval_ms: send each target the detector holds up its hints (at most
        max_hints_per_tick), each removed once acknowledged."""
        if not self.alive:
            return
        sim = self.sim
        in_flight = self._hints_in_flight
        sent: dict[str, int] = {}
        up: dict[str, bool] = {}
        for (target, key), record in list(self.store.hints.items()):
            if (target, key) in in_flight:
                continue
            if target not in up:
                up[target] = self.is_up(target)
            if not up[target] or sent.get(target, 0) >= self.settings.max_hints_per_tick:
                continue
            sent[target] = sent.get(target, 0) + 1
            in_flight[(target, key)] = record
            self.call(target, Put(key, record), self.settings.replica_timeout_ms,
                      functools.partial(self._hint_acked, target, key, record),
                      functools.partial(self._hint_failed, target, key))
        sim.queue.schedule(sim.now_ms + self.settings.hint_interval_ms, self.hint_tick)

    def _hint_acked(self, target: str, key: bytes, record: Record, body: Any) -> None:
        self._hints_in_flight.pop((target, key), None)
        hints = self.store.hints
        # Only what was delivered: a miss merged into the hint meanwhile must still go.
        delivered = hints.get((target, key)) == record or self.settings.bug is Bug.HINT_RACE
        if delivered and hints.pop((target, key), None) is not None:
            self.stats.hints_delivered += 1

    def _hint_failed(self, target: str, key: bytes, reason: str) -> None:
        self._hints_in_flight.pop((target, key), None)

    # -- crash

    def crash(self) -> list[bytes]:
        """This incarnation stops: what it had in flight is lost (its clients hear nothing:
        KvSimulation.crash answers them). Returns the keys of the writes it was still
        replicating: their hints were never kept."""
        self.alive = False
        self._calls.clear()
        cut = [w.key for w in self._writes]
        self._writes.clear()
        self._reads.clear()
        self._hints_in_flight.clear()
        return cut

    @property
    def idle(self) -> bool:
        """Nothing in flight: no call, plan or hint waits for an answer."""
        return not self._calls and not self._writes and not self._reads


def _ignore(*args: object) -> None:
    return None


# --- the simulation ------------------------------------------------------------------------------


class KvSimulation(Simulation):
    """A Simulation whose nodes also store and serve keys: every node gossips as before
    (its detectors are what the data path asks), and runs a KvNode beside it."""

    def __init__(
        self,
        nodes: int | Iterable[str],
        seed: int,
        network: NetworkConditions | None = None,
        gossip: GossipSettings | None = None,
        kv: KvSettings | None = None,
        *,
        keep_trace: int = 0,
    ):
        super().__init__(nodes, seed, network, gossip, keep_trace=keep_trace)
        self.kv = kv or KvSettings()
        self.ring = ring_of(self.members, self.kv.partitions, self.kv.replicas, self.kv.dcs, self.kv.replicas_per_dc)
        self.call_ids = itertools.count(1)
        self.stores = {n: ReplicaStore(n) for n in self.members}
        self.kv_nodes: dict[str, KvNode] = {}
        self.excused: set[bytes] = set()  # keys of writes a crash cut short (their hints died)
        self.crashes = 0
        # contact node -> client calls it has not answered: a crash answers them "unknown"
        self._open_ops: dict[str, dict[int, Callable[[], None]]] = {}
        self._op_ids = itertools.count(1)
        self._past_stats = KvStats()
        phase = self._root.getrandbits(64)
        for i, name in enumerate(self.members):
            node = self._start_kv(name, self.nodes[name].generation)
            # Hint ticks at distinct phases, from the seed, so nodes do not tick in lockstep.
            offset = ((phase >> (i % 48)) % 1000) / 1000 * self.kv.hint_interval_ms
            self.queue.schedule(offset, node.hint_tick)

    def placement(self, key: bytes) -> tuple[tuple[str, ...], int]:
        """The key's preference list and partition, as the node computes them."""
        partition = self.ring.partition_for_key(NAMESPACE, key)
        return self.ring.preference_list(partition), partition

    def _start_kv(self, name: str, generation: int) -> KvNode:
        node = KvNode(self, name, generation, self.stores[name])
        self.kv_nodes[name] = node
        return node

    # -- faults

    def crash(self, node: str) -> None:
        super().crash(node)
        kv = self.kv_nodes[node]
        self.excused.update(kv.crash())
        self._past_stats.add(kv.stats)
        self.crashes += 1
        # Its clients' connections drop: each learns nothing of what became of its request.
        open_ops = self._open_ops.pop(node, {})
        for token in list(open_ops):
            open_ops.pop(token)()

    def restart(self, node: str):
        new = super().restart(node)
        kv = self._start_kv(node, new.generation)
        self.queue.schedule(self.now_ms + self.kv.hint_interval_ms, kv.hint_tick)
        return new

    # -- clients

    def client_write(self, contact: str, key: bytes, value: bytes,
                     done: Callable[[WriteResult], None]) -> None:
        """A client sends SET to `contact`: refused at once if it is down."""
        self._record("op", "write", contact, key.decode("latin-1"))
        if not self.nodes[contact].running:
            done(WriteResult("failed", error=f"{contact} unavailable (connection refused)"))
            return
        finish = self._open_op(contact, done, WriteResult("unknown", error=f"{contact} crashed"))
        self.kv_nodes[contact].write(key, value, finish)

    def client_read(self, contact: str, key: bytes, level: ConsistencyLevel,
                    done: Callable[[ReadResult], None]) -> None:
        """A client sends GET (at `level`) to `contact`: refused at once if it is down."""
        self._record("op", "read", contact, key.decode("latin-1"))
        if not self.nodes[contact].running:
            done(ReadResult("failed", error=f"{contact} unavailable (connection refused)"))
            return
        finish = self._open_op(contact, done, ReadResult("unknown", error=f"{contact} crashed"))
        self.kv_nodes[contact].read(key, level, finish)

    def _open_op(self, contact: str, done: Callable[[Any], None], if_crashed: Any) -> Callable[[Any], None]:
        """`done`, answered once: by the contact, or "unknown" if the contact crashes first."""
        token = next(self._op_ids)
        open_ops = self._open_ops.setdefault(contact, {})
        open_ops[token] = lambda: done(if_crashed)

        def finish(result: Any) -> None:
            if open_ops.pop(token, None) is not None:
                done(result)
        return finish

    # -- what the checks look at

    def hints_pending(self) -> int:
        return sum(len(s.hints) for s in self.stores.values())

    def idle(self) -> bool:
        return all(self.kv_nodes[n].idle for n in self.running())

    def stats(self) -> KvStats:
        total = KvStats()
        total.add(self._past_stats)
        for node in self.kv_nodes.values():
            total.add(node.stats)
        return total

    # -- internals

    def _deliver(self, src: str, dst: str, message: object, dst_generation: int) -> None:
        if type(message) not in KV_MESSAGES:
            super()._deliver(src, dst, message, dst_generation)
            return
        node = self.nodes[dst]
        body = message.body
        if not node.running or node.generation != dst_generation:
            self._record("lost", src, dst, type(body).__name__)
            return
        self.messages_delivered += 1
        self._record("kv", src, dst, type(body).__name__)
        self.kv_nodes[dst].on_message(src, message)
