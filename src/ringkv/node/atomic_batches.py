"""Atomic batches in a cluster: every key of a batch is written, or none is
(docs/atomic-batches.md states the guarantee; this module is its protocol).

A batch is split into parts, one per replica set: the keys whose preference lists hold the
same nodes (`group_by_replica_set`). A part runs on one replica of its set (`execute_part`:
this node when it is one, else the first reachable replica, sent an `AtomicPart`), which
writes every key of it in one engine WriteBatch, stamped with the batch's timestamp, and sends
the records to each other replica in one ReplicaPutMany, which that replica applies as one
WriteBatch too: on every replica, a part's keys commit together.

- One replica set: the part is the whole batch, unlogged. The executing replica chooses the
  timestamp after reading the keys, so every key takes its value.
- Several: the coordinator stamps the batch with its HLC now and stores it, before writing any
  key, in its own batch log and in one other live member's (node/batchlog.py); if no other
  member takes it, nothing is written and the client is told (503). Then every part runs,
  concurrently. When every part reached W, both copies are removed; a part that did not leaves
  its keys pending, and the batch in the logs. Every node replays (`run`) the entries of its
  log older than `replay_delay_ms` (twice that for a copy whose coordinator is up: it had the
  first go), with the current ring, until every part reaches W; then it removes both copies.

Timestamp rule (versioning/record.write_at): a replica writes a batch's value for a key only
if the key holds no sibling stamped at or after the batch; so a write made later than the
batch wins, and applying a part again writes nothing new: the replay is idempotent. A replica
that already holds the batch's value (or a later one) still sends its record on, so the other
replicas catch up. The replica that runs a part in a replay may be one that missed the first
application; it first merges in the other replicas' copies of the part's keys (`catch_up`),
else it would write the batch's values again under dots of its own: harmless for reads (same
values, same timestamp) but a second, concurrent version of each key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ringkv.clock import Clock
from ringkv.errors import (
    CommandError,
    CorruptionError,
    PeerUnavailableError,
    QuorumError,
    RingkvError,
    RpcError,
    RpcTimeoutError,
)
from ringkv.node.batchlog import BatchLog, BatchLogEntry, coordinator_of, decode_entry, encode_entry
from ringkv.node.faults import FaultState
from ringkv.node.forwarding import FORWARD_TIMEOUTS, RemoteCommandError, RemoteQuorumError
from ringkv.node.local_store import BatchItem, LocalStore
from ringkv.node.messages import (
    AtomicPart,
    AtomicPartReply,
    BatchLogRemove,
    BatchLogStore,
    ReplicaAck,
    ReplicaGetMany,
    ReplicaRecords,
)
from ringkv.node.placement import Placement
from ringkv.node.replica import storage_key
from ringkv.node.replica_calls import ReplicaCalls, failure_reason
from ringkv.node.write_path import WritePath
from ringkv.service.levels import Levels, resolve
from ringkv.service.limits import MAX_ATOMIC_BATCH_ITEMS
from ringkv.service.values import AtomicWrite
from ringkv.versioning.hlc import timestamp_ms

log = logging.getLogger("ringkv.batches")

# Other members asked, in turn, to keep the second copy of a batch before it is refused.
MAX_PARTNER_TRIES = 3
# Entries one replay round re-applies: a round's work is bounded, the next round goes on.
REPLAY_ENTRIES_PER_ROUND = 32

# Counters in INFO ringkv (as `atomic_*` and `batchlog_*`).
BATCH_STATS = (
    "atomic_batches",  # write_atomic calls coordinated here (with at least one item)
    "atomic_batches_logged",  # of those, spanning several replica sets: logged on two nodes
    "atomic_batches_pending",  # logged batches answered with keys left to the replay
    "atomic_keys_pending",  # the keys of those answers
    "atomic_batches_refused",  # not logged (no partner, a full log): nothing written, 503
    "atomic_parts_executed",  # parts written here (coordinated here or sent by another node)
    "batchlog_replayed",  # entries the replay finished (every key at W, copies removed)
    "batchlog_replay_failures",  # replay attempts that left keys short of W (tried again later)
    "batchlog_expired",  # entries dropped unreplayed: older than the tombstone grace period
    "batchlog_unreadable",  # entries dropped because they did not decode
)


def group_by_replica_set(prefs: Sequence[tuple[str, ...]]) -> list[tuple[tuple[str, ...], list[int]]]:
    """Group a batch's items by the replica set of their keys (the nodes of the preference
    list, in any order): [(the preference list of the set's first item, the indexes of its
    items in batch order)], sets in the order the batch first names them."""
    groups: dict[frozenset[str], tuple[tuple[str, ...], list[int]]] = {}
    for i, pref in enumerate(prefs):
        members = frozenset(pref)
        group = groups.get(members)
        if group is None:
            groups[members] = (pref, [i])
        else:
            group[1].append(i)
    return list(groups.values())


class AtomicBatches:
    """The coordinator of atomic batches, the executor of their parts, and the replay of this
    node's batch log (see the module docstring)."""

    def __init__(self, placement: Placement, calls: ReplicaCalls, store: LocalStore, writes: WritePath,
                 batch_log: BatchLog, faults: FaultState, clock: Clock, *, replay_delay_ms: int = 10_000,
                 replay_interval_ms: int = 2_000, max_age_ms: int = 864_000_000):
        self.node_id = placement.node_id
        self.placement = placement
        self.calls = calls
        self.store = store
        self.writes = writes
        self.log = batch_log
        self.faults = faults
        self.clock = clock
        self.replay_delay_ms = replay_delay_ms
        self.replay_interval_ms = replay_interval_ms
        # An entry older than this (from its timestamp) is dropped, not replayed: a delete made
        # after the batch may have been collected by then, and the replay would bring back the
        # value it deleted. The node passes the tombstone grace period.
        self.max_age_ms = max_age_ms
        self.stats = dict.fromkeys(BATCH_STATS, 0)
        self._in_flight: set[bytes] = set()  # batch ids being applied here: the replay skips them
        self._partner_turn = 0  # spreads second copies over the members

    def info(self) -> dict[str, int]:
        return {**self.stats, **self.log.stats}

    # ------------------------------------------------------------------ the coordinator

    async def write(self, namespace: bytes, items: list[BatchItem], levels: Levels) -> AtomicWrite:
        """KeyValueService.write_atomic on a cluster node. `items`: checked by
        LocalStore.check_batch (limits, distinct keys)."""
        if not items:
            return AtomicWrite(0, [], False)
        self.stats["atomic_batches"] += 1
        prefs = [self.placement.replicas_of(storage_key(namespace, key)) for key, _, _ in items]
        groups = group_by_replica_set(prefs)
        w = resolve(levels.w, len(prefs[0]), field="w")
        if len(groups) == 1:
            timestamp = await self._run_part(namespace, items, prefs[0], 0, w, levels.strict)
            return AtomicWrite(timestamp, [], False)
        entry = BatchLogEntry(self.node_id, namespace, self.store.replica.hlc_now(), w, levels.strict,
                              (self.node_id,), items)
        self._in_flight.add(entry.batch_id)
        try:
            entry = await self._log_on_two_nodes(entry)
            self.stats["atomic_batches_logged"] += 1
            await self.faults.batch_gate()
            pending = await self._apply(entry, prefs)
        finally:
            self._in_flight.discard(entry.batch_id)
        if pending:
            self.stats["atomic_batches_pending"] += 1
            self.stats["atomic_keys_pending"] += len(pending)
        else:
            self._forget(entry)
        return AtomicWrite(entry.timestamp, pending, True)

    def _partners(self) -> list[str]:
        """Members that may keep the second copy, those believed up first, in a turn that
        moves on with every batch."""
        others = [n for n in self.placement.known_nodes if n != self.node_id]
        if not others:
            return []
        self._partner_turn = (self._partner_turn + 1) % len(others)
        others = others[self._partner_turn:] + others[:self._partner_turn]
        return [n for n in others if self.calls.is_up(n)] + [n for n in others if not self.calls.is_up(n)]

    async def _log_on_two_nodes(self, entry: BatchLogEntry) -> BatchLogEntry:
        """Store the entry durably here and on one other member, and return it as stored (its
        copies named). Raises a 503 CommandError, with nothing logged anywhere, when that cannot
        be done (no other member takes it, or this node's log is full)."""
        partners = self._partners()
        failures: dict[str, str] = {}
        if not partners:  # a cluster of one member: its own copy is all there can be
            await self._log_here(entry)
            return entry
        batch_id = entry.batch_id
        timeout = self.calls.timeout_ms
        for node in partners[:MAX_PARTNER_TRIES]:
            logged = BatchLogEntry(entry.coordinator, entry.namespace, entry.timestamp, entry.w, entry.strict,
                                   (self.node_id, node), entry.items)
            data = await self._log_here(logged)
            try:  # send: a member believed down fails at once
                await self.calls.send(node, BatchLogStore(data), timeout)
            except RpcError as exc:
                failures[node] = failure_reason(exc)
                continue
            return logged
        self.log.remove(batch_id)
        self.stats["atomic_batches_refused"] += 1
        detail = "; ".join(f"{node} {why}" for node, why in sorted(failures.items()))
        raise CommandError(f"atomic batch refused, nothing was written: it spans several replica sets and "
                           f"must be logged on a second node first, and none took it: {detail}", status=503)

    async def _log_here(self, entry: BatchLogEntry) -> bytes:
        data = encode_entry(entry)
        try:
            lsn = self.log.add(data, entry.batch_id)
        except CommandError:
            self.stats["atomic_batches_refused"] += 1
            raise
        await self.log.durable(lsn)
        return data

    def _forget(self, entry: BatchLogEntry) -> None:
        """Every key is written at W: drop the entry here, and ask its other holders to."""
        self.log.remove(entry.batch_id)
        for node in entry.copies:
            if node != self.node_id:
                # Not waited for: a copy left behind is replayed later, which writes nothing new.
                self.calls.send(node, BatchLogRemove(entry.batch_id)).add_done_callback(_retrieve)

    async def _apply(self, entry: BatchLogEntry, prefs: list[tuple[str, ...]] | None = None,
                     catch_up: bool = False) -> list[bytes]:
        """Run every part of a logged batch concurrently; the keys of the parts that did not
        reach W (empty: the batch is complete). `catch_up`: a replay (see execute_part)."""
        items = entry.items
        if prefs is None:
            prefs = [self.placement.replicas_of(storage_key(entry.namespace, key)) for key, _, _ in items]

        async def part(pref: tuple[str, ...], indexes: list[int]) -> list[bytes]:
            try:
                await self._run_part(entry.namespace, [items[i] for i in indexes], pref, entry.timestamp,
                                     min(entry.w, len(pref)), entry.strict, catch_up)
            except RingkvError as exc:
                log.info("atomic batch %s: %d keys on %s not written at W yet: %s", entry.timestamp,
                         len(indexes), ",".join(pref), exc)
                return [items[i][0] for i in indexes]
            except Exception:  # a bug: the batch is logged, the replay tries again
                log.exception("atomic batch %s: a part failed", entry.timestamp)
                return [items[i][0] for i in indexes]
            return []

        results = await asyncio.gather(*(part(pref, indexes) for pref, indexes in group_by_replica_set(prefs)))
        return [key for keys in results for key in keys]

    async def _run_part(self, namespace: bytes, items: list[BatchItem], pref: tuple[str, ...], timestamp: int,
                        w: int, strict: bool, catch_up: bool = False) -> int:
        """Run a part where it must run: here when this node is a replica of its keys, else on
        the first reachable replica. Returns the part's timestamp once W replicas hold it."""
        if self.node_id in pref:
            return await self.execute_part(namespace, items, timestamp, w, strict, catch_up)
        order = [node for node in pref if self.calls.is_up(node)] or list(pref)
        failures = {node: "down (failure detector)" for node in pref if node not in order}
        body = AtomicPart(namespace, items, timestamp, w, strict, catch_up)
        timeout = self.calls.timeout_ms * FORWARD_TIMEOUTS
        for node in order:
            try:
                reply = await self.calls.call(node, body, timeout)
            except PeerUnavailableError as exc:
                failures[node] = failure_reason(exc)
                continue  # it never ran there: the next replica may run it
            except RpcTimeoutError:
                raise CommandError(
                    f"atomic batch sent to replica {node}, which did not answer within {timeout:g} ms: the batch "
                    "may or may not have been written (all of its keys or none)", status=504) from None
            except RpcError as exc:
                raise CommandError(f"atomic batch sent to replica {node}: {exc}", status=502) from None
            if reply.error:
                if reply.quorum:
                    raise RemoteQuorumError(reply.error)
                raise RemoteCommandError(reply.error, reply.kind, reply.status)
            return reply.timestamp
        raise QuorumError(1, 0, failures)

    # ------------------------------------------------------------------ the executing replica

    async def execute_part(self, namespace: bytes, items: list[BatchItem], timestamp: int, w: int,
                           strict: bool, catch_up: bool = False) -> int:
        """Write a part here, a replica of every key of it, in one WriteBatch stamped
        `timestamp` (0: chosen here), and replicate it at W. Returns the timestamp.

        `catch_up` (a replay): first merge in what the other replicas believed up hold of
        these keys, so that if the batch reached some of them before, this replica finds its
        values and writes no second version of them."""
        placement = self.placement
        skeys = [storage_key(namespace, key) for key, _, _ in items]
        pref = placement.replicas_of(skeys[0])
        members = frozenset(pref)
        if self.node_id not in members or any(frozenset(placement.replicas_of(s)) != members for s in skeys[1:]):
            raise CommandError(f"node {self.node_id} does not hold every key of this part of an atomic batch under "
                               "its ring (the ring is changing); nothing was written, retry", status=503)
        store = self.store
        if catch_up:
            await self._catch_up(skeys, pref)
        applied = store.write_atomic(namespace, items, timestamp or None)
        self.stats["atomic_parts_executed"] += 1
        await store.durable(applied.lsn)  # in our log (fsynced under sync=always) before it counts
        await self.writes.replicate_atomic(applied.written, applied.kept, pref, min(w, len(pref)), strict)
        return applied.timestamp

    async def _catch_up(self, skeys: list[bytes], pref: tuple[str, ...]) -> None:
        body = ReplicaGetMany(skeys)
        others = [node for node in pref if node != self.node_id and self.calls.is_up(node)]
        replies = await asyncio.gather(*(self.calls.send(node, body) for node in others), return_exceptions=True)
        records = [(skey, record) for reply in replies if isinstance(reply, ReplicaRecords)
                   for skey, record in zip(skeys, reply.records, strict=True) if record is not None]
        # A replica that does not answer in time and holds the batch from before ends up with
        # two versions of such keys (same value, same timestamp): a cost, not a loss.
        if records:
            await self.store.durable(self.store.apply_records(records))

    async def on_part(self, body: AtomicPart) -> AtomicPartReply:
        """The replica's side of `_run_part`."""
        try:
            if not body.items or len(body.items) > MAX_ATOMIC_BATCH_ITEMS:
                raise CommandError(f"an atomic batch part holds {len(body.items)} items; "
                                   f"1..{MAX_ATOMIC_BATCH_ITEMS} allowed")
            items = self.store.check_batch(body.items, body.namespace)
            n = len(self.placement.replicas_of(storage_key(body.namespace, items[0][0])))
            if not 1 <= body.w <= n:
                raise CommandError(f"atomic batch part at w={body.w}, outside 1..{n}")
            timestamp = await self.execute_part(body.namespace, items, body.timestamp, body.w, body.strict,
                                                body.catch_up)
        except QuorumError as exc:
            return AtomicPartReply(error=str(exc), status=503, quorum=True)
        except CommandError as exc:
            return AtomicPartReply(error=str(exc), kind=exc.kind, status=exc.status)
        except RingkvError as exc:
            return AtomicPartReply(error=str(exc), status=400)
        return AtomicPartReply(timestamp)

    # ------------------------------------------------------------------ a partner's copy

    async def on_log_store(self, body: BatchLogStore) -> ReplicaAck:
        entry = decode_entry(body.entry)  # CorruptionError: refused, the coordinator tries another
        lsn = self.log.add(bytes(body.entry), entry.batch_id)
        await self.log.durable(lsn)
        return ReplicaAck()

    def on_log_remove(self, body: BatchLogRemove) -> ReplicaAck:
        self.log.remove(body.batch_id)
        return ReplicaAck()

    # ------------------------------------------------------------------ the replay

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.replay_interval_ms / 1000)
            try:
                await self.replay_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("batch log replay round failed")

    def due(self, now_ms: int) -> list[bytes]:
        """The entries of this node's log whose replay is due, oldest first: received at least
        `replay_delay_ms` ago, or twice that for a copy whose coordinator is up, and not being
        applied here now."""
        out = []
        for batch_id, received_ms in self.log.received():
            if batch_id in self._in_flight:
                continue
            coordinator = coordinator_of(batch_id)
            delay = self.replay_delay_ms
            if coordinator != self.node_id and self.calls.is_up(coordinator):
                delay *= 2
            if now_ms - received_ms >= delay:
                out.append(batch_id)
        return out

    async def replay_due(self) -> int:
        """One replay round over the entries that are due (at most REPLAY_ENTRIES_PER_ROUND);
        returns how many were finished and removed."""
        finished = 0
        for batch_id in self.due(self.clock.now_ms())[:REPLAY_ENTRIES_PER_ROUND]:
            if batch_id in self._in_flight or batch_id not in self.log:
                continue  # taken up meanwhile, or removed by its other holder
            try:
                entry = self.log.get(batch_id)
            except CorruptionError as exc:
                log.error("batch log entry %r is unreadable and is dropped: %s", batch_id, exc)
                self.log.remove(batch_id)
                self.stats["batchlog_unreadable"] += 1
                continue
            if entry is None:
                continue
            if self.clock.now_ms() - timestamp_ms(entry.timestamp) >= self.max_age_ms:
                log.warning("atomic batch %s of %s is older than the tombstone grace period and is dropped "
                            "unreplayed: %d keys", entry.timestamp, entry.coordinator, len(entry.items))
                self.log.remove(batch_id)
                self.stats["batchlog_expired"] += 1
                continue
            self._in_flight.add(batch_id)
            try:
                pending = await self._apply(entry, catch_up=True)
            finally:
                self._in_flight.discard(batch_id)
            if pending:
                self.stats["batchlog_replay_failures"] += 1
                continue
            self._forget(entry)
            self.stats["batchlog_replayed"] += 1
            finished += 1
            log.info("atomic batch %s of %s replayed: %d keys written at W", entry.timestamp, entry.coordinator,
                     len(entry.items))
        return finished


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Retrieve a fire-and-forget call's outcome, so a failure is not reported as unhandled."""
    if not fut.cancelled():
        fut.exception()
