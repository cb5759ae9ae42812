"""This node's replica as the node's other parts use it: commands, incoming records, counts.

`LocalStore` owns the node's `Replica` (versioned records on the engine) and what the node
keeps about it in memory: live keys per ring partition and namespace (for DBSIZE and cluster
status), and the index of keys with an expiry (active expiry). Everything that changes a
record here goes through it, so the counts stay true:

- `execute(namespace, key, command)` runs a key command (node/commands.py) against the stored
  record: the command decides from the current winner, the store writes what it decided,
  versioned with this node's actor;
- `overwrite_now` is a plain SET's hot path, inlined;
- `apply_record` merges a record another replica made (replication, read repair, hints,
  anti-entropy);
- `drop_range`, `flush`, `expire_cycle` remove records.

Writes may be deferred (`defer=True`, or the overwrite fast path): they reach the log at the
next `commit_writes()`, which whoever acknowledges them calls first. Under sync=always,
`durable(lsn)` waits for the fsync off the loop. Nothing here suspends otherwise, and nothing
here knows of other nodes.
"""

from __future__ import annotations

import asyncio
import heapq
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ringkv.clock import Clock
from ringkv.cluster.hotkeys import WRITE, HotKeys
from ringkv.errors import CommandError, CorruptionError
from ringkv.node.commands import BLIND, STORED, Command, Put, fill_result
from ringkv.node.hot_cache import HotCache
from ringkv.node.namespaces import Namespaces
from ringkv.node.quotas import NamespaceUsage, QuotaGate, write_growth
from ringkv.node.replica import Replica, record_storage_key, split_storage_key, storage_key
from ringkv.node.score_index import ScoreIndex
from ringkv.service.datatypes.base import TYPE_NAMES, WrongTypeError
from ringkv.service.elements import ELEMENT_MARK, RESERVED_PREFIX, reserved_key_error
from ringkv.service.glob import GlobPattern
from ringkv.service.limits import (
    MAX_ATOMIC_BATCH_BYTES,
    MAX_ATOMIC_BATCH_ITEMS,
    MAX_KEY_BYTES,
    MAX_TOKEN,
)
from ringkv.storage import WriteBatch
from ringkv.versioning.dvv import check_known, decode_context
from ringkv.versioning.record import (
    KIND_CLEARED,
    ConflictPolicy,
    DottedValue,
    Record,
    Typed,
    check_storable,
    overwrite,
    pick_winner,
    write_at,
)

# One item of an atomic batch: (key, value, expire_at_ms; 0 = no expiry).
BatchItem = tuple[bytes, bytes, int]


@dataclass(slots=True)
class AtomicApplied:
    """What `LocalStore.write_atomic` did: `timestamp`, the batch's; `written`, the (storage
    key, record) pairs it wrote in one WriteBatch; `kept`, those of keys that already held a
    write stamped at or after the batch (left as they were); both to replicate. `lsn`: to wait
    on under sync=always (0: nothing written)."""

    timestamp: int
    written: list[tuple[bytes, bytes]]
    kept: list[tuple[bytes, bytes]]
    lsn: int

_TOKEN = struct.Struct(">Q")


class LocalStore:
    def __init__(
        self,
        replica: Replica,
        clock: Clock,
        *,
        namespaces: Namespaces,
        sync_always: bool = False,
        keys_max_count: int = 100_000,
        flush_enabled: bool = True,
        expiry_index_max_keys: int = 1_000_000,
        max_value_bytes: int = 1024 * 1024,
        partitions: int = 1024,
        quotas: QuotaGate | None = None,
        hot_keys: HotKeys | None = None,
        hot_cache: HotCache | None = None,
        score_index: ScoreIndex | None = None,
    ):
        self.replica = replica
        self.engine = replica.engine
        self.clock = clock
        self.namespaces = namespaces
        self.policy = namespaces.default.conflict_policy
        self.max_value_bytes = max_value_bytes
        self.keys_max_count = keys_max_count
        self.flush_enabled = flush_enabled
        # Called after FLUSHALL emptied this replica, with the namespace it kept (the system
        # one): state kept beside the records (consensus registers) forgets what it held.
        self.flush_listeners: list[Callable[[bytes], None]] = []
        self.sync_always = sync_always
        # Live keys per ring partition (the top log2(Q) bits of the token), for cluster-wide
        # DBSIZE and `ringkv cluster status`.
        self.partitions = partitions
        self._partition_shift = 64 - (partitions.bit_length() - 1)
        self._partition_keys = [0] * partitions  # of the default namespace
        self._ns_partition_keys: dict[bytes, list[int]] = {}  # of the others
        self.live_keys = 0
        # Live keys and bytes per namespace (node/quotas.py), and the quotas writes and
        # requests are checked against (None: no namespace has a quota).
        self.usage = quotas.usage if quotas is not None else NamespaceUsage(partitions)
        self.quotas = quotas
        self._fsync_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ringkv-fsync")
        self._expiry_heap: list[tuple[int, bytes]] = []
        self._expiry_max = expiry_index_max_keys
        # Counted keys that have a TTL, with the live bytes counted for them: when a record
        # vanishes without a write of ours (the compaction filter or a time-window table drop
        # collected it after it expired), active expiry finds it gone and takes it off the
        # counts here. Bounded like the heap: a key not indexed is not tracked.
        self._expiring: dict[bytes, int] = {}
        self.expired_keys = 0
        self.expiry_index_dropped = 0
        # What waits for this loop iteration's log write (`after_commit`).
        self._after_commit: list[Callable[[BaseException | None], None]] = []
        # The keys this node coordinates most (cluster/hotkeys.py), and, when a namespace has
        # hot_cache_ms, their cached records (node/hot_cache.py; None: no namespace caches).
        # Offered by the coordinator's paths only: a replica's merges are not requests.
        self.hot_keys = hot_keys or HotKeys(clock.now_ms)
        self.hot_cache = hot_cache
        # Sorted-set members by score (node/score_index.py), kept in step with every record
        # stored here (`_account`); None: range commands read and sort every member.
        self.score_index = score_index

    # ---------------------------------------------------------------- start-up and counts

    def load(self) -> None:
        """Count keys and index expiries from what is on disk (once, at start)."""
        heap: list[tuple[int, bytes]] = []
        decode = self.replica._decode
        self._partition_keys = [0] * self.partitions
        self._ns_partition_keys = {}
        self.live_keys = 0
        self.usage.clear()
        expiring: dict[bytes, int] = {}
        index = None if self.score_index is None else self.score_index.loader()
        with self.engine.scan() as it:
            for skey, data in it:
                record = decode(data)
                values_len, exp = _live(record)
                if index is not None and _is_element(skey):
                    index.add(bytes(skey), record)
                if values_len >= 0:
                    self._count(skey, 1)
                    nbytes = values_len + len(skey) - 9 - skey[8]  # the key's bytes count too
                    self.usage.add(skey, 0 if _is_element(skey) else 1, nbytes)
                    if exp and len(heap) < self._expiry_max:
                        expiring[skey] = nbytes
                if exp and len(heap) < self._expiry_max:
                    heap.append((exp, skey))
        if index is not None:
            index.flush()
        heapq.heapify(heap)
        self._expiry_heap = heap
        self._expiring = expiring

    def _count(self, skey: bytes, delta: int) -> None:
        if _is_element(skey):
            return  # a collection's element: DBSIZE counts its collection's key only
        self.live_keys += delta
        parts = self._partition_keys
        if skey[8]:
            ns = bytes(skey[9:9 + skey[8]])
            parts = self._ns_partition_keys.get(ns)
            if parts is None:
                parts = self._ns_partition_keys[ns] = [0] * self.partitions
        parts[int.from_bytes(skey[:8], "big") >> self._partition_shift] += delta

    def _account(self, skey: bytes, old: Record | None, new: Record | None) -> int:
        """Count a record's change from `old` to `new`: live keys (DBSIZE) and the namespace's
        keys and bytes (node/quotas.py). Returns `new`'s expiry (`_live`)."""
        if self.score_index is not None and _is_element(skey):
            self.score_index.update(skey, old, new)
        expiring = self._expiring
        if old is None and expiring and skey in expiring:
            self._uncount_vanished(skey)  # collected by compaction since it was counted
        old_len, _ = _live(old)
        new_len, expiry = _live(new)
        key_len = len(skey) - 9 - skey[8]  # the key's bytes count while it holds a value
        new_bytes = new_len + key_len if new_len >= 0 else 0
        if old_len != new_len:  # the values' size changed, or whether there is any
            old_bytes = old_len + key_len if old_len >= 0 else 0
            delta = (new_len >= 0) - (old_len >= 0)
            if delta:
                self._count(skey, delta)
            self.usage.add(skey, delta if delta == 0 or not _is_element(skey) else 0, new_bytes - old_bytes)
        if new_len >= 0 and expiry and (skey in expiring or len(expiring) < self._expiry_max):
            expiring[skey] = new_bytes
        elif expiring:
            expiring.pop(skey, None)
        return expiry

    def _uncount_vanished(self, skey: bytes) -> bool:
        """Take off the counts a key with a TTL whose record is gone though no write of ours
        removed it (the compaction filter, or a time-window table drop, collected it once it
        had expired). False when it was not counted."""
        nbytes = self._expiring.pop(skey, None)
        if nbytes is None:
            return False
        self._count(skey, -1)
        self.usage.add(skey, 0 if _is_element(skey) else -1, -nbytes)
        return True

    def partition_keys(self, namespace: bytes = b"") -> list[int]:
        """Live keys of `namespace` per ring partition on this replica."""
        if namespace:
            return list(self._ns_partition_keys.get(namespace) or [0] * self.partitions)
        return list(self._partition_keys)

    def namespace_partition_keys(self) -> dict[str, list[int]]:
        """partition_keys of every namespace but the default, by name."""
        return {ns.decode("utf-8", "replace"): list(parts) for ns, parts in self._ns_partition_keys.items()}

    def dbsize(self, namespace: bytes) -> int:
        if not self._ns_partition_keys:
            return self.live_keys if not namespace else 0
        parts = self._ns_partition_keys.get(namespace) if namespace else self._partition_keys
        return sum(parts) if parts else 0

    # ---------------------------------------------------------------- checks

    @staticmethod
    def check_key(key: bytes, namespace: bytes) -> None:
        """CommandError for a client's key storage refuses: too long, or in the internal key
        space (storage_key refuses that too; here it is found before a batch writes any key)."""
        if key[:2] == RESERVED_PREFIX:
            raise reserved_key_error(key)
        if len(key) + len(namespace) > MAX_KEY_BYTES:
            raise CommandError(
                f"key is {len(key)} bytes; the limit is {MAX_KEY_BYTES - len(namespace)} bytes "
                "(64 KiB less the storage prefix)",
                status=413,
            )

    def check_value(self, value: bytes | Typed | None) -> None:
        if value is not None and len(value) > self.max_value_bytes:
            if type(value) is Typed:
                raise CommandError(
                    f"the {TYPE_NAMES[value.kind]} would be {len(value)} bytes encoded; a collection is stored as one "
                    f"record, at most max_value_bytes={self.max_value_bytes}: nothing was written", status=413)
            raise CommandError(
                f"value is {len(value)} bytes; the limit is max_value_bytes={self.max_value_bytes}", status=413
            )

    def check_pairs(self, pairs: list[tuple[bytes, bytes]], namespace: bytes) -> dict[bytes, bytes]:
        """Validate every pair before writing any (MSET is all or nothing); a key named twice
        keeps its last value, as in Redis."""
        for key, value in pairs:
            self.check_key(key, namespace)
            self.check_value(value)
        return dict(pairs)

    def check_batch(self, items: list[BatchItem], namespace: bytes) -> list[BatchItem]:
        """Validate an atomic batch before any of it is written (docs/atomic-batches.md):
        every key and value within its limit, expiries >= 0, at most MAX_ATOMIC_BATCH_ITEMS
        items and MAX_ATOMIC_BATCH_BYTES of keys and values. A key named twice keeps its last
        value and expiry, in the place it was first named."""
        if len(items) > MAX_ATOMIC_BATCH_ITEMS:
            raise CommandError(f"an atomic batch holds {len(items)} items; the limit is {MAX_ATOMIC_BATCH_ITEMS}",
                               status=413)
        unique: dict[bytes, tuple[bytes, int]] = {}
        for i, (key, value, expire_at_ms) in enumerate(items):
            self.check_key(key, namespace)
            self.check_value(value)
            if type(expire_at_ms) is not int or expire_at_ms < 0:
                raise CommandError(f"item {i}: expire_at_ms must be an integer >= 0, got {expire_at_ms!r}")
            unique[key] = (value, expire_at_ms)
        total = sum(len(k) + len(v) for k, (v, _) in unique.items())
        if total > MAX_ATOMIC_BATCH_BYTES:
            raise CommandError(f"an atomic batch holds {total} bytes of keys and values; the limit is "
                               f"{MAX_ATOMIC_BATCH_BYTES} bytes: split it", status=413)
        return [(k, v, e) for k, (v, e) in unique.items()]

    def plain_sets(self, namespace: bytes) -> bool:
        """Whether a plain SET in `namespace` may take the overwrite fast path: siblings policy
        (an overwrite replaces every sibling) and no fsync to wait for."""
        return (
            self.policy is ConflictPolicy.SIBLINGS
            and (not namespace or self.namespaces.of_stored(namespace).conflict_policy is ConflictPolicy.SIBLINGS)
        )

    # ---------------------------------------------------------------- reads

    def read(self, skey: bytes) -> Record | None:
        return self.replica.read_skey(skey)

    def winner(self, skey: bytes) -> DottedValue | None:
        record = self.replica.read_skey(skey)
        return None if record is None else record.winner(self.clock.now_ms())

    def get_value_now(self, namespace: bytes, key: bytes) -> bytes | None:
        """A plain GET of the local replica (LocalService.get_value_now is bound to it), inlined:
        the clock is read only for a value that can expire."""
        skey = storage_key(namespace, key)
        if self.hot_keys.tick():  # HotKeys.offer, inlined
            self.hot_keys.count(skey)
        data = self.engine.get(skey)
        if data is None:
            return None
        record = self.replica._decode(data)
        siblings = record.siblings
        w = pick_winner(siblings)
        value = w.value  # None for a tombstone
        if type(value) is Typed or len(siblings) > 1:
            # A collection, or siblings: Record.winner's whole rule (a clear marker reads as
            # absent, a live collection meta beats a newer tombstone).
            w = record.winner(self.clock.now_ms())
            if w is None:
                return None
            if type(w.value) is Typed:
                raise WrongTypeError()
            return w.value
        if w.expire_at_ms and w.expire_at_ms <= self.clock.now_ms():
            return None
        return value

    # ---------------------------------------------------------------- writes

    def execute(self, namespace: bytes, key: bytes, command: Command) -> tuple[Any, Record | None, int]:
        """Run `command` on the stored record: (its result, the record stored now, the LSN to
        wait for under sync=always; 0 and the old record when the command wrote nothing)."""
        self.check_key(key, namespace)
        skey = storage_key(namespace, key)
        stored = self.replica.read_skey(skey)
        now = self.clock.now_ms()
        effect = command.apply(None if stored is None else stored.winner(now), now,
                               None if stored is None else stored.clock)
        if not effect.write:
            return effect.result, stored, 0
        if effect.context == STORED:
            context, blind = None, False
        elif effect.context == BLIND:
            context, blind = None, True
        else:
            # A client's context goes into the stored clock, so it may name only what this
            # record has seen (docs/security.md): a made-up one could lift a counter to its
            # limit or grow the clock without bound. A context from a replica ahead of this
            # one is refused here too; node/forwarding.Forwarder.execute first catches this
            # replica up from the others and runs the command again.
            context, blind = decode_context(effect.context), False
            check_known(stored.clock if stored is not None else {}, context)
        new, lsn = self.write(skey, namespace, key, stored, effect.value, effect.expire_at_ms,
                              context=context, blind=blind)
        return fill_result(effect.result, new), new, lsn

    def write(
        self,
        skey: bytes,
        namespace: bytes,
        key: bytes,
        stored: Record | None,
        value: bytes | None,
        expire_at_ms: int = 0,
        context=None,
        blind: bool = False,
    ) -> tuple[Record, int]:
        """Write with the stored clock as context (plain Redis overwrite) unless given one."""
        self.check_value(value)
        replaces = context is None and not blind
        if context is None and not blind and stored is not None:
            context = stored.clock
        if self.quotas is not None and namespace in self.quotas.sized:  # only growth is refused
            policy = self.namespaces.of_stored(namespace).conflict_policy
            self.quotas.check(namespace, *write_growth(stored, value, len(key),
                                                       replaces or policy is ConflictPolicy.LWW))
        new, lsn = self.replica.write(
            namespace, key, value, context=context, expire_at_ms=expire_at_ms,
            policy=self.namespaces.of_stored(namespace).conflict_policy,
            stored=stored, skey=skey,
        )
        self._account(skey, stored, new)
        self._index_expiry(expire_at_ms, skey)
        return new, lsn

    def put_now(self, namespace: bytes, key: bytes, value: bytes) -> int:
        """A plain SET with no coroutine (the adapters' hot path; LocalService.put_now is bound
        to it): the LSN to wait for, 0 unless sync=always. Overwrites in place when the policy
        allows (`plain_sets`), else writes through `execute`, which checks the key and value."""
        if (
            len(value) > self.max_value_bytes
            or len(key) + len(namespace) > MAX_KEY_BYTES
            or self.policy is not ConflictPolicy.SIBLINGS
            or (namespace and self.namespaces.of_stored(namespace).conflict_policy is not ConflictPolicy.SIBLINGS)
        ):
            lsn = self.execute(namespace, key, Put(value))[2]
        else:
            lsn = self.overwrite_now(storage_key(namespace, key), value)[1]
        # 0 unless there is an fsync to wait for: the adapter then replies at once, with no
        # coroutine made per SET (a 2x CPU cost per pipelined SET when it was forgotten).
        return lsn if self.sync_always else 0

    def overwrite_now(self, skey: bytes, value: bytes) -> tuple[bytes, int]:
        """A plain SET of a checked key and value in a namespace where `plain_sets` holds, as
        a deferred write: (the stored record's bytes, which a cluster replicates as they are;
        the LSN). Every SET passes here: calls are inlined where it costs little to read."""
        replica = self.replica
        engine = self.engine
        if self.hot_keys.tick():  # HotKeys.offer, inlined
            self.hot_keys.count(skey, WRITE)
        if self.hot_cache is not None:
            self.hot_cache.drop(skey)
        data = engine.get(skey)
        # The bytes of the stored record's values (what quotas.live_bytes counts but the key),
        # -1 when DBSIZE does not count it (`_live`); one sibling, the usual case, inline.
        if data is None:
            stored = None
            old_len = -1
        else:
            stored = replica._decode(data)
            siblings = stored.siblings
            if len(siblings) == 1:
                old = siblings[0].value
                old_len = -1 if old is None else len(old)
            else:
                old_len = _live(stored)[0]
        quotas = self.quotas
        if quotas is not None and quotas.sized:
            quotas.check(bytes(skey[9:9 + skey[8]]), 0 if old_len >= 0 else 1,
                         len(value) - old_len if old_len >= 0 else len(skey) - 9 - skey[8] + len(value))
        new = overwrite(stored, actor=replica.actor, value=value,
                        timestamp=replica.hlc.now(replica.wall.now_ms()))
        encoded = replica._encode(new)
        lsn = engine.put(skey, encoded, defer=True)
        if old_len < 0:
            self._count(skey, 1)
            self.usage.add(skey, 1, len(skey) - 9 - skey[8] + len(value))  # the key's bytes count too
        elif len(value) != old_len:  # a value of the same size changes no count
            self.usage.add(skey, 0, len(value) - old_len)
        return encoded, lsn

    def apply_record(self, skey: bytes, data: bytes, defer: bool = False) -> int:
        """Merge a record another replica made (replication, read repair) into ours; returns
        the LSN to wait on under sync=always (0 when ours already covered it). `defer` as for
        Engine.put: the caller must commit_writes() before acknowledging.

        Records come from peers, so nothing is stored before it is checked: `skey` well formed
        and the key's own (CorruptionError), the record decodable within its bounds
        (CorruptionError), the merge within them too (LimitError)."""
        check_storage_key(skey)
        incoming = self.replica._decode(data)
        stored = self.replica.read_skey(skey)
        policy = self.namespaces.policy_of_skey(skey) if skey[8] else self.policy
        merged = self.replica.merge_incoming(incoming, stored, policy)
        if merged == stored:
            return 0
        if merged is not incoming:  # the incoming record was checked as it was decoded
            check_storable(merged)
        if defer:
            lsn = self.engine.put(skey, self.replica._encode(merged), defer=True)
        else:
            lsn = self.replica._store(skey, merged)
        self._index_expiry(self._account(skey, stored, merged), skey)
        return lsn

    def store_record(self, skey: bytes, stored: Record | None, new: Record, defer: bool = False) -> tuple[bytes, int]:
        """Store `new`, which this replica made from its own `stored` record (a collection's
        element or meta write, node/elements.py): no merge, no decode. Returns the stored bytes
        (what the other replicas are sent) and the LSN. `defer` as apply_record's."""
        check_storable(new)
        data = self.replica._encode(new)
        lsn = self.engine.put(skey, data, defer=defer)
        self._index_expiry(self._account(skey, stored, new), skey)
        return data, lsn

    def apply_records(self, records: list[tuple[bytes, bytes]], defer: bool = False) -> int:
        """Merge several records other replicas made (ReplicaPutMany) in one WriteBatch: on this
        replica they all reach the log or none does, whatever crashes. Every record is decoded
        before anything is written (CorruptionError: nothing stored). Returns the LSN to wait
        on under sync=always (0: every record was already covered). `defer` as apply_record's."""
        replica = self.replica
        decode = replica._decode
        for skey, _ in records:
            check_storage_key(skey)
        incoming = [(skey, decode(data)) for skey, data in records]
        before: dict[bytes, Record | None] = {}
        after: dict[bytes, Record] = {}
        for skey, record in incoming:
            if skey in after:
                stored = after[skey]  # the same key twice in one message: fold both in
            else:
                stored = before[skey] = replica.read_skey(skey)
            policy = self.namespaces.policy_of_skey(skey) if skey[8] else self.policy
            after[skey] = replica.merge_incoming(record, stored, policy)
        batch = WriteBatch()
        changed = []
        for skey, merged in after.items():
            stored = before[skey]
            if merged != stored:
                check_storable(merged)
                batch.put(skey, replica._encode(merged))
                changed.append((skey, stored, merged))
        if not changed:
            return 0
        lsn = self.engine.write_batch(batch, sync=False, defer=defer)
        for skey, stored, merged in changed:
            self._index_expiry(self._account(skey, stored, merged), skey)
        return lsn

    def write_atomic(self, namespace: bytes, items: list[BatchItem], timestamp: int | None = None) -> AtomicApplied:
        """Write an atomic batch's items (checked by check_batch, keys distinct) on this replica,
        versioned with its actor, in one WriteBatch: all of them reach the log or none does,
        whatever crashes. Not deferred: in the log on return.

        Every value is stamped with the batch's timestamp. A key whose record holds a sibling
        stamped at or after it is left alone (record.write_at): a later write wins, and writing
        the same batch again is a no-op. `timestamp` None: choose it here, after the HLC has
        observed every stored sibling of the batch's keys, so that no key is left alone (but
        one stamped too far ahead of this node's clock to be observed). The HLC observes the
        timestamp, so this replica's next write orders after the batch."""
        replica = self.replica
        engine = self.engine
        policy = self.namespaces.of_stored(namespace).conflict_policy
        actor = replica.actor
        current: list[tuple[bytes, bytes | None, Record | None]] = []
        for key, _, _ in items:
            skey = storage_key(namespace, key)
            data = engine.get(skey)
            stored = None if data is None else replica._decode(data)
            current.append((skey, data, stored))
            if timestamp is None and stored is not None:
                replica.observe(max(s.timestamp for s in stored.siblings))
        if timestamp is None:
            timestamp = replica.hlc_now()
        else:
            replica.observe(timestamp)
        batch = WriteBatch()
        written: list[tuple[bytes, bytes]] = []
        kept: list[tuple[bytes, bytes]] = []
        changes: list[tuple[bytes, Record | None, Record, int]] = []
        for (_, value, expire_at_ms), (skey, data, stored) in zip(items, current, strict=True):
            new = write_at(stored, actor=actor, value=value, timestamp=timestamp, expire_at_ms=expire_at_ms,
                           policy=policy)
            if new is None:
                kept.append((skey, bytes(data)))
                continue
            encoded = replica._encode(new)
            batch.put(skey, encoded)
            written.append((skey, encoded))
            changes.append((skey, stored, new, expire_at_ms))
        lsn = engine.write_batch(batch, sync=False) if changes else 0
        for skey, stored, new, expire_at_ms in changes:
            self._account(skey, stored, new)
            self._index_expiry(expire_at_ms, skey)
        return AtomicApplied(timestamp, written, kept, lsn)

    def _index_expiry(self, expire_at_ms: int, skey: bytes) -> None:
        if not expire_at_ms:
            return
        if len(self._expiry_heap) < self._expiry_max:
            heapq.heappush(self._expiry_heap, (expire_at_ms, skey))
        else:
            self.expiry_index_dropped += 1

    @property
    def has_pending_writes(self) -> bool:
        return self.engine.has_deferred

    def commit_writes(self) -> None:
        """Hand every deferred write to the OS. Adapters call it before sending any reply."""
        self.engine.flush_deferred()

    def after_commit(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call `callback(None)` once every write deferred so far is in the log, or
        `callback(error)` when that log write fails: at the end of this loop iteration, one
        write() for every caller in it.

        What a write sends to other replicas waits for this. A replica must never hold a
        version this node's log lacks: a node restarted after a crash would make its next write
        with the same dot, and the replicas, already holding that dot, would take the new value
        for the old one and keep the old."""
        if not self._after_commit:
            asyncio.get_running_loop().call_soon(self._commit_for_waiters)
        self._after_commit.append(callback)

    def _commit_for_waiters(self) -> None:
        callbacks, self._after_commit = self._after_commit, []
        error: BaseException | None = None
        try:
            self.commit_writes()
        except Exception as exc:  # the log write failed: nothing deferred may be replicated
            error = exc
        for callback in callbacks:
            callback(error)

    async def durable(self, lsn: int) -> None:
        """Wait (off the loop) until the write at `lsn` is fsynced; no-op unless sync=always."""
        if self.sync_always and lsn:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._fsync_pool, self.engine.wait_durable, lsn)

    # ---------------------------------------------------------------- removing records

    async def flush(self) -> int:
        """Remove every record of this replica (FLUSHALL) but the system namespace's (the
        cluster's users); refused when `flush_enabled` is off."""
        if not self.flush_enabled:
            raise CommandError("FLUSHALL and FLUSHDB are disabled on this node (flush_enabled = false)")
        engine = self.engine
        system = self.namespaces.system.stored
        with engine.scan() as it:
            skeys = [k for k, _ in it if split_storage_key(k)[0] != system]
        lsn = 0
        for skey in skeys:
            lsn = engine.delete(skey, sync=False)
        kept = self._ns_partition_keys.get(system)
        self.live_keys = sum(kept) if kept else 0
        self._partition_keys = [0] * self.partitions
        self._ns_partition_keys = {system: kept} if kept else {}
        self.usage.clear(keep=(system,))
        self._expiry_heap = []
        self._expiring = {}
        self.hot_keys.clear()
        if self.hot_cache is not None:
            self.hot_cache.clear()
        if self.score_index is not None:
            self.score_index.clear(keep=system)
        for listener in self.flush_listeners:
            listener(system)
        await self.durable(lsn)
        return len(skeys)

    def drop_range(self, first_token: int, last_token: int, drop: Callable[[bytes], bool]) -> int:
        """Remove from this replica, for good and without tombstones, the records with tokens in
        [first_token, last_token] for which `drop(skey)` is true: data this node no longer
        holds as a replica (`ringkv admin cleanup`). Returns how many were removed."""
        engine = self.engine
        decode = self.replica._decode
        end = _TOKEN.pack(last_token + 1) if last_token < MAX_TOKEN else None
        with engine.scan(_TOKEN.pack(first_token), end) as it:
            doomed = [(bytes(skey), decode(data)) for skey, data in it if drop(skey)]
        for skey, record in doomed:
            engine.delete(skey, sync=False)
            self._account(skey, record, None)
        return len(doomed)

    def expire_cycle(self, budget: int = 200) -> int:
        """Remove up to `budget` records whose every sibling has expired (active expiry).

        Called from the event loop every 100 ms, as Redis's active expiry cycle is; a record
        whose TTL was changed since it was indexed is left alone.
        """
        heap = self._expiry_heap
        now = self.clock.now_ms()
        removed = 0
        while heap and budget and heap[0][0] <= now:
            _, skey = heapq.heappop(heap)
            budget -= 1
            record = self.replica.read_skey(skey)
            if record is None:
                removed += self._uncount_vanished(skey)
                continue
            if not record.is_dead(now) or any(s.value is None for s in record.siblings):
                continue
            self.replica.remove(skey)
            self._account(skey, record, None)
            removed += 1
        self.expired_keys += removed
        return removed

    # ---------------------------------------------------------------- the keyspace

    def scan_range(
        self,
        start_token: int,
        end_token: int,
        count: int,
        match: bytes | None = None,
        namespace: bytes = b"",
    ) -> tuple[list[bytes], int, int | None]:
        """Live keys with tokens in [start_token, end_token], in token order, examining about
        `count` records: (keys, records examined, token to resume at or None when done).

        A page never ends between two keys of one token, so resuming at a token is exact.
        """
        pattern = GlobPattern(match) if match is not None and match != b"*" else None
        now = self.clock.now_ms()
        decode = self.replica._decode
        keys: list[bytes] = []
        examined = 0
        last_token = None
        end = _TOKEN.pack(end_token + 1) if end_token < MAX_TOKEN else None
        with self.engine.scan(_TOKEN.pack(start_token), end) as it:
            for skey, data in it:
                tok = _TOKEN.unpack_from(skey)[0]
                if tok > end_token:
                    break
                if examined >= count and tok != last_token:
                    return keys, examined, tok  # resume at this token next time
                examined += 1
                last_token = tok
                ns, key = split_storage_key(skey)
                if ns != namespace or key[:2] == RESERVED_PREFIX:  # internal records are no keys
                    continue
                if pattern is not None and not pattern.matches(key):
                    continue
                if decode(data).winner(now) is None:
                    continue
                keys.append(key)
        return keys, examined, None

    def close(self) -> None:
        self._fsync_pool.shutdown(wait=True)
        if self.score_index is not None:
            self.score_index.close()


def _is_element(skey: bytes) -> bool:
    """Whether `skey` stores a collection's element (service/elements.py): bytes for quotas,
    but no key of its own for DBSIZE and key quotas."""
    n = 9 + skey[8]
    return skey[n:n + 3] == ELEMENT_MARK


def check_storage_key(skey: bytes) -> None:
    """CorruptionError unless `skey` is a storage key as node/replica.storage_key makes them:
    token, namespace length, namespace, key, with the token the key's (a record under another
    token would sit in a partition that does not own it, out of reach of reads and repair)."""
    n = len(skey)
    if n < 9 or n < 9 + skey[8] or n - 9 > MAX_KEY_BYTES:
        raise CorruptionError(f"storage key of {n} bytes is malformed (token u64, namespace length u8, "
                              f"namespace, key of at most {MAX_KEY_BYTES} bytes)")
    ns_len = skey[8]  # split_storage_key, inlined: every replicated record passes here
    if record_storage_key(skey[9:9 + ns_len], skey[9 + ns_len:]) != skey:
        raise CorruptionError("storage key's token is not its key's: refused")


def _live(record: Record | None) -> tuple[int, int]:
    """One pass over a record's siblings: (the bytes of its values, -1 when it holds none and
    DBSIZE does not count it, as Redis counts keys whose TTL passed until they are collected;
    its expiry: the latest of its values', 0 when any value never expires)."""
    if record is None:
        return -1, 0
    total = -1
    latest = 0
    forever = False
    for s in record.siblings:
        value = s.value
        if value is not None and (type(value) is not Typed or value.kind != KIND_CLEARED):  # a marker is absent
            total = len(value) if total < 0 else total + len(value)
            expire_at_ms = s.expire_at_ms
            if not expire_at_ms:
                forever = True
            elif expire_at_ms > latest:
                latest = expire_at_ms
    return total, 0 if forever else latest
