"""What this node does for its peers: the RPC service, one handler per message type.

`HANDLERS` names, per message type, the handler and whether it may answer on the RPC
connection's callback (`handle_now`, the fast path: no task, no await) or needs a task
(`handle`). A replica write is answered on the fast path when no fsync is to be waited for:
its log write is deferred, and `before_reply` puts it in the log before any acknowledgement
leaves (net/rpc.RpcServer.before_reply). Unknown types are refused with an error naming them.

Records from peers are checked before anything keeps them (docs/security.md): a storage key
well formed and its key's, a record that decodes within its bounds (versioning/record.py),
a context that decodes; ReplicaPut and ReplicaPutMany through LocalStore.apply_record(s),
hints, proposals and commits here. A bad one is refused with an error naming what is wrong,
and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from ringkv.errors import CommandError
from ringkv.net.rpc import NOT_HANDLED
from ringkv.node.antientropy import AntiEntropy, layouts_from_wire
from ringkv.node.atomic_batches import AtomicBatches
from ringkv.node.backup import read_backup_page
from ringkv.node.consensus import Acceptor, check_register_value
from ringkv.node.forwarding import Forwarder
from ringkv.node.gossiper import Gossiper, MemberRefusedError
from ringkv.node.handoff import HintStore
from ringkv.node.local_store import LocalStore, check_storage_key
from ringkv.node.messages import (
    MAX_HINT_GET_TARGETS,
    MAX_KEYS_PER_GET_MANY,
    MAX_KEYS_PER_PUT_MANY,
    MAX_RELAY_TARGETS,
    AeDigests,
    AeList,
    AtomicPart,
    BackupRange,
    BatchLogRemove,
    BatchLogStore,
    FlushAll,
    FlushAllReply,
    Forward,
    ForwardVersioned,
    GossipStates,
    GossipSyn,
    HintGet,
    NodeInfo,
    NodeInfoReply,
    PaxosCommit,
    PaxosPrepare,
    PaxosPropose,
    RelayReply,
    Repair,
    RepairReply,
    ReplicaAck,
    ReplicaDigest,
    ReplicaGet,
    ReplicaGetDigest,
    ReplicaGetMany,
    ReplicaGetRange,
    ReplicaPut,
    ReplicaPutMany,
    ReplicaPutRelay,
    ReplicaRecord,
    ReplicaRecords,
    ScanPage,
    ScanRange,
    SyncPartition,
    SyncPartitionReply,
    record_digest,
)
from ringkv.node.placement import Placement
from ringkv.node.range_reads import read_range_page
from ringkv.node.replica_calls import outcome
from ringkv.service.limits import MAX_SCAN_COUNT
from ringkv.versioning.record import decode_record

MAX_SYNC_SOURCES = 16  # sources of one SyncPartition: at most a preference list
_ACK = ReplicaAck()

# How a message may be answered: always on the fast path, never, or only when the node need
# not wait for an fsync (sync != always). FROM_PEER: always on the fast path, and the handler
# also takes the authenticated peer's id (gossip: cluster/gossip.py's origin rules).
ALWAYS, NEVER, UNLESS_SYNC, FROM_PEER = "always", "never", "unless-sync", "from-peer"
_GOSSIP = (GossipSyn, GossipStates)  # a former member's gossip is judged state by state


class ReplicaService:
    def __init__(self, placement: Placement, store: LocalStore, forwarder: Forwarder, acceptor: Acceptor,
                 gossiper: Gossiper, anti_entropy: AntiEntropy, hints: HintStore | None, stats: dict[str, int],
                 node_info: Callable[[], NodeInfoReply], batches: AtomicBatches | None = None,
                 refused: dict[str, str] | None = None):
        """`refused`: node -> why, the former members (left, removed) whose requests are
        refused but for gossip, which decides itself (node/membership.py, MembershipRecord)."""
        self.node_id = placement.node_id
        self.placement = placement
        self.store = store
        self.forwarder = forwarder
        self.acceptor = acceptor
        self.gossiper = gossiper
        self.anti_entropy = anti_entropy
        self.hints = hints
        self.stats = stats
        self.node_info = node_info
        self.refused = refused if refused is not None else {}
        # type -> (handler, fast path rule); a handler returns the reply or an awaitable of it.
        self.handlers: dict[type, tuple[Callable[[Any], Any], str]] = {
            ReplicaGet: (self._get, ALWAYS),
            ReplicaGetDigest: (self._get_digest, ALWAYS),
            ReplicaGetMany: (self._get_many, ALWAYS),
            ReplicaPut: (self._put, UNLESS_SYNC),
            ReplicaPutMany: (self._put_many, UNLESS_SYNC),
            ReplicaPutRelay: (self._relay, NEVER),
            GossipSyn: (gossiper.on_syn, ALWAYS),
            GossipStates: (self._gossip_states, FROM_PEER),
            AeDigests: (anti_entropy.on_digests, ALWAYS),
            AeList: (anti_entropy.on_list, ALWAYS),
            Forward: (forwarder.on_forward, NEVER),
            ScanRange: (self._scan_range, NEVER),
            NodeInfo: (lambda body: self.node_info(), NEVER),
            Repair: (self._repair, NEVER),
            SyncPartition: (self._sync_partition, NEVER),
            FlushAll: (self._flush_all, NEVER),
            PaxosPrepare: (self._paxos_prepare, UNLESS_SYNC),
            PaxosPropose: (self._paxos_propose, UNLESS_SYNC),
            PaxosCommit: (self._paxos_commit, UNLESS_SYNC),
            # Session reads and writes (node/session_reads.py)
            HintGet: (self._hint_get, ALWAYS),
            ForwardVersioned: (forwarder.on_forward_versioned, NEVER),
            # Cluster backups (node/backup.py): one page of a partition's records.
            BackupRange: (lambda body: read_backup_page(self.store, self.placement.ring, body), NEVER),
            # A page of a collection's elements (node/range_reads.py).
            ReplicaGetRange: (lambda body: read_range_page(self.store, body), ALWAYS),
        }
        if batches is not None:
            self.handlers.update({
                AtomicPart: (batches.on_part, NEVER),
                BatchLogStore: (batches.on_log_store, NEVER),
                BatchLogRemove: (batches.on_log_remove, ALWAYS),
            })

    # ------------------------------------------------------------------ the transport's hooks

    def handle_now(self, peer: str, body: Any) -> Any:
        """The RPC fast path: the reply, or NOT_HANDLED to have `handle` answer in a task."""
        entry = self.handlers.get(type(body))
        if entry is None:
            return NOT_HANDLED
        if self.refused and peer in self.refused and type(body) not in _GOSSIP:
            raise MemberRefusedError(self.refused[peer])
        handler, rule = entry
        if rule is ALWAYS or (rule is UNLESS_SYNC and (not self.store.sync_always or self._is_hint(body))):
            return handler(body)
        if rule is FROM_PEER:
            return handler(peer, body)
        return NOT_HANDLED

    async def handle(self, peer: str, body: Any) -> Any:
        entry = self.handlers.get(type(body))
        if entry is None:
            raise CommandError(f"unexpected message {type(body).__name__}")
        if self.refused and peer in self.refused and type(body) not in _GOSSIP:
            raise MemberRefusedError(self.refused[peer])
        reply = entry[0](peer, body) if entry[1] is FROM_PEER else entry[0](body)
        if hasattr(reply, "__await__"):
            reply = await reply
        return reply

    def before_reply(self) -> None:
        """Replicas acknowledge only what is in their log."""
        if self.store.has_pending_writes:
            self.store.commit_writes()

    # ------------------------------------------------------------------ handlers

    @staticmethod
    def _is_hint(body: Any) -> bool:
        return type(body) is ReplicaPut and bool(body.hint_for)

    def _get(self, body: ReplicaGet) -> ReplicaRecord:
        self.stats["replica_reads"] += 1
        data = self.store.engine.get(body.skey)
        return ReplicaRecord(None if data is None else bytes(data))

    def _get_digest(self, body: ReplicaGetDigest) -> ReplicaDigest | ReplicaRecord:
        """The digest of the record, or the record itself when the coordinator holds another."""
        self.stats["replica_reads"] += 1
        self.stats["replica_digest_reads"] += 1
        data = self.store.engine.get(body.skey)
        record = None if data is None else bytes(data)
        digest = record_digest(record)
        known = body.known
        if known is None or known == digest:
            return ReplicaDigest(digest)
        return ReplicaRecord(record)

    def _hint_get(self, body: HintGet) -> ReplicaRecord:
        if len(body.targets) > MAX_HINT_GET_TARGETS:
            raise CommandError(f"{len(body.targets)} targets in one HintGet; the limit is {MAX_HINT_GET_TARGETS}")
        check_storage_key(body.skey)
        return ReplicaRecord(None if self.hints is None else self.hints.read(body.skey, body.targets))

    def _get_many(self, body: ReplicaGetMany) -> ReplicaRecords:
        if len(body.skeys) > MAX_KEYS_PER_GET_MANY:
            raise CommandError(f"{len(body.skeys)} keys in one ReplicaGetMany; the limit is {MAX_KEYS_PER_GET_MANY}")
        get = self.store.engine.get
        return ReplicaRecords([None if (d := get(k)) is None else bytes(d) for k in body.skeys])

    async def _relay(self, body: ReplicaPutRelay) -> RelayReply:
        """A write another datacenter's coordinator sent here once for all of this datacenter's
        replicas of the key: stored here, then sent on to the others (docs/multi-dc.md)."""
        if len(body.targets) > MAX_RELAY_TARGETS:
            raise CommandError(f"{len(body.targets)} targets in one ReplicaPutRelay; the limit is {MAX_RELAY_TARGETS}")
        if not 0 <= body.enough <= 1 + len(body.targets):
            raise CommandError(f"ReplicaPutRelay asks for {body.enough} copies of {1 + len(body.targets)} replicas")
        store = self.store
        lsn = store.apply_record(body.skey, body.record)  # checks the key and the record
        if store.has_pending_writes:
            store.commit_writes()
        await store.durable(lsn)
        self.stats["relayed_writes"] += 1
        calls = self.forwarder.calls
        put = ReplicaPut(body.skey, body.record)
        targets = [t for t in dict.fromkeys(body.targets) if t != self.node_id]
        sent = {calls.send(t, put): t for t in targets}
        enough = body.enough or 1 + len(targets)
        acked, failed = [self.node_id], []
        waiting = set(sent)
        while waiting and len(acked) < enough:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                self._relay_answered(sent[fut], body, acked, failed, fut)
        if waiting:
            # Enough hold it for the coordinator's level (EACH_QUORUM's majority here): it need
            # not wait on a slow replica. The rest still get it, or a hint.
            self.stats["relays_answered_early"] += 1
            for fut in waiting:
                fut.add_done_callback(functools.partial(self._relay_answered, sent[fut], body, None, None))
        return RelayReply(acked, failed, [sent[f] for f in waiting])

    def _relay_answered(self, target: str, body: ReplicaPutRelay, acked: list[str] | None,
                        failed: list[list[str]] | None, fut: asyncio.Future) -> None:
        ok, reason = outcome(fut)
        if ok:
            if acked is not None:
                acked.append(target)
            return
        if failed is not None:
            failed.append([target, reason])
        if self.hints is not None:
            self.hints.add(target, body.skey, body.record)

    def _put(self, body: ReplicaPut) -> Any:
        if body.hint_for:
            # Kept as bytes and delivered later: checked now, as a record to store would be.
            check_storage_key(body.skey)
            decode_record(body.record)
            if self.hints is None or not self.hints.add(body.hint_for, body.skey, body.record):
                raise CommandError(f"cannot keep a hint for {body.hint_for}: hint store absent or full")
            self.stats["hints_taken"] += 1
            return _ACK
        if not self.store.sync_always:
            # Deferred: before_reply writes the log before this acknowledgement leaves.
            self.store.apply_record(body.skey, body.record, defer=True)
            return _ACK
        return self._durable_ack(self.store.apply_record(body.skey, body.record))

    def _put_many(self, body: ReplicaPutMany) -> Any:
        if len(body.records) > MAX_KEYS_PER_PUT_MANY:
            raise CommandError(f"{len(body.records)} records in one ReplicaPutMany; the limit is "
                               f"{MAX_KEYS_PER_PUT_MANY}")
        # One WriteBatch: the records reach this replica's log all together or not at all, so an
        # atomic batch's part commits together here too (node/atomic_batches.py).
        if not self.store.sync_always:
            self.store.apply_records(body.records, defer=True)  # before_reply writes the log
            return _ACK
        return self._durable_ack(self.store.apply_records(body.records))

    async def _durable_ack(self, lsn: int) -> ReplicaAck:
        await self.store.durable(lsn)
        return ReplicaAck()

    def _gossip_states(self, peer: str, body: GossipStates) -> ReplicaAck:
        self.gossiper.on_states(peer, body)
        return _ACK

    def _scan_range(self, body: ScanRange) -> ScanPage:
        keys, examined, nxt = self.store.scan_range(
            body.start_token, body.end_token, max(1, min(body.count, MAX_SCAN_COUNT)), body.match, body.namespace)
        return ScanPage(keys, examined, nxt)

    async def _repair(self, body: Repair) -> RepairReply:
        return RepairReply(await self.anti_entropy.repair_all())

    async def _sync_partition(self, body: SyncPartition) -> SyncPartitionReply:
        if not 0 <= body.partition < self.placement.ring.partitions or len(body.sources) > MAX_SYNC_SOURCES:
            raise CommandError(f"SyncPartition: partition {body.partition} out of range or more than "
                               f"{MAX_SYNC_SOURCES} sources")
        reply = SyncPartitionReply({}, 0, 0)
        for source, wire in body.sources:
            if source == self.node_id:
                continue
            result = await self.anti_entropy.compare(body.partition, source, layouts_from_wire(wire))
            if result.error:
                reply.failed[source] = result.error
            reply.pulled += result.pulled
            reply.pushed += result.pushed
        return reply

    def _paxos_prepare(self, body: PaxosPrepare) -> Any:
        check_storage_key(body.skey)
        # Written to the OS before the answer (sync=False, not deferred); under sync=always the
        # slow path awaits the fsync too.
        if self.store.sync_always:
            return self.acceptor.on_prepare(body)
        return self.acceptor.prepare(body.skey, tuple(body.ballot), body.keys)[0]

    def _paxos_propose(self, body: PaxosPropose) -> Any:
        # The accepted value is kept as bytes and may become the key's record: checked first.
        check_storage_key(body.skey)
        check_register_value(body.skey, body.value, body.base)
        if self.store.sync_always:
            return self.acceptor.on_propose(body)
        return self.acceptor.propose(body.skey, tuple(body.ballot), body.value, body.base)[0]

    def _paxos_commit(self, body: PaxosCommit) -> Any:
        check_storage_key(body.skey)
        check_register_value(body.skey, body.record)  # before the acceptor notes the commit
        if self.store.sync_always:
            return self.acceptor.on_commit(body)
        # Both writes reach the OS here, before the answer: no fsync to wait for.
        self.acceptor.commit(body.skey, tuple(body.ballot), body.record)
        return _ACK

    async def _flush_all(self, body: FlushAll) -> FlushAllReply:
        return FlushAllReply(await self.store.flush())
