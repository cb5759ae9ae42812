"""What this node does for its peers: the RPC service, one handler per message type.

`HANDLERS` names, per message type, the handler and whether it may answer on the RPC
connection's callback (`handle_now`, the fast path: no task, no await) or needs a task
(`handle`). A replica write is answered on the fast path when no fsync is to be waited for:
its log write is deferred, and `before_reply` puts it in the log before any acknowledgement
leaves (net/rpc.RpcServer.before_reply). Unknown types are refused with an error naming them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ringkv.errors import CommandError
from ringkv.net.rpc import NOT_HANDLED
from ringkv.node.antientropy import AntiEntropy
from ringkv.node.atomic_batches import AtomicBatches
from ringkv.node.consensus import Acceptor
from ringkv.node.forwarding import Forwarder
from ringkv.node.gossiper import Gossiper
from ringkv.node.handoff import HintStore
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import (
    MAX_KEYS_PER_GET_MANY,
    MAX_KEYS_PER_PUT_MANY,
    AeDigests,
    AeList,
    AtomicPart,
    BatchLogRemove,
    BatchLogStore,
    FlushAll,
    FlushAllReply,
    Forward,
    GossipStates,
    GossipSyn,
    NodeInfo,
    NodeInfoReply,
    PaxosCommit,
    PaxosPrepare,
    PaxosPropose,
    Repair,
    RepairReply,
    ReplicaAck,
    ReplicaGet,
    ReplicaGetMany,
    ReplicaPut,
    ReplicaPutMany,
    ReplicaRecord,
    ReplicaRecords,
    ScanPage,
    ScanRange,
    SyncPartition,
    SyncPartitionReply,
)
from ringkv.node.placement import Placement
from ringkv.service.limits import MAX_SCAN_COUNT

MAX_SYNC_SOURCES = 16  # sources of one SyncPartition: at most a preference list
_ACK = ReplicaAck()

# How a message may be answered: always on the fast path, never, or only when the node need
# not wait for an fsync (sync != always).
ALWAYS, NEVER, UNLESS_SYNC = "always", "never", "unless-sync"


class ReplicaService:
    def __init__(self, placement: Placement, store: LocalStore, forwarder: Forwarder, acceptor: Acceptor,
                 gossiper: Gossiper, anti_entropy: AntiEntropy, hints: HintStore | None, stats: dict[str, int],
                 node_info: Callable[[], NodeInfoReply], batches: AtomicBatches | None = None):
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
        # type -> (handler, fast path rule); a handler returns the reply or an awaitable of it.
        self.handlers: dict[type, tuple[Callable[[Any], Any], str]] = {
            ReplicaGet: (self._get, ALWAYS),
            ReplicaGetMany: (self._get_many, ALWAYS),
            ReplicaPut: (self._put, UNLESS_SYNC),
            ReplicaPutMany: (self._put_many, UNLESS_SYNC),
            GossipSyn: (gossiper.on_syn, ALWAYS),
            GossipStates: (self._gossip_states, ALWAYS),
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
            PaxosCommit: (acceptor.on_commit, NEVER),
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
        handler, rule = entry
        if rule is ALWAYS or (rule is UNLESS_SYNC and (not self.store.sync_always or self._is_hint(body))):
            return handler(body)
        return NOT_HANDLED

    async def handle(self, peer: str, body: Any) -> Any:
        entry = self.handlers.get(type(body))
        if entry is None:
            raise CommandError(f"unexpected message {type(body).__name__}")
        reply = entry[0](body)
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
        data = self.store.engine.get(body.skey)
        return ReplicaRecord(None if data is None else bytes(data))

    def _get_many(self, body: ReplicaGetMany) -> ReplicaRecords:
        if len(body.skeys) > MAX_KEYS_PER_GET_MANY:
            raise CommandError(f"{len(body.skeys)} keys in one ReplicaGetMany; the limit is {MAX_KEYS_PER_GET_MANY}")
        get = self.store.engine.get
        return ReplicaRecords([None if (d := get(k)) is None else bytes(d) for k in body.skeys])

    def _put(self, body: ReplicaPut) -> Any:
        if body.hint_for:
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

    def _gossip_states(self, body: GossipStates) -> ReplicaAck:
        self.gossiper.on_states(body)
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
        for source, min_replicas in body.sources:
            if source == self.node_id:
                continue
            result = await self.anti_entropy.compare(body.partition, source, min_replicas)
            if result.error:
                reply.failed[source] = result.error
            reply.pulled += result.pulled
            reply.pushed += result.pushed
        return reply

    def _paxos_prepare(self, body: PaxosPrepare) -> Any:
        # Written to the OS before the answer (sync=False, not deferred); under sync=always the
        # slow path awaits the fsync too.
        if self.store.sync_always:
            return self.acceptor.on_prepare(body)
        return self.acceptor.prepare(body.skey, tuple(body.ballot))[0]

    def _paxos_propose(self, body: PaxosPropose) -> Any:
        if self.store.sync_always:
            return self.acceptor.on_propose(body)
        return self.acceptor.propose(body.skey, tuple(body.ballot), body.value, body.base)[0]

    async def _flush_all(self, body: FlushAll) -> FlushAllReply:
        return FlushAllReply(await self.store.flush())
