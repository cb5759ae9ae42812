"""The coordinator: every client request, whatever its protocol, is one call here.

The RESP and HTTP adapters translate wire bytes into these calls and their results back into
wire bytes; they know nothing of replicas, records or the disk. Today the coordinator runs a
cluster of one: it reads and writes the local replica. The cluster issue replaces the inside of
these methods (fan out to the key's N replicas, wait for R or W) and leaves their signatures.

Every method is a coroutine. On a single node none of them suspends except to wait for an
fsync under `sync="always"`, so the adapters run them eagerly (`drive`): a GET costs no task and
no event-loop round trip.

Read-modify-write commands (INCR, APPEND, SET NX/XX/GET, ...) read and write with no await in
between, so the event loop serializes them per key.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import re
import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ringkv.cluster.quorum import ConsistencyLevel, parse_level, resolve
from ringkv.errors import RingkvError
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import Replica, now_ms, split_storage_key, storage_key
from ringkv.versioning.dvv import decode_context, encode_context
from ringkv.versioning.record import ConflictPolicy, Record, Sibling, overwrite, pick_winner

DEFAULT_NAMESPACE = b""
# A storage key is token (8) | namespace length (1) | namespace | key, and the engine takes
# keys up to 64 KiB.
MAX_KEY_BYTES = 65536 - 9
PENDING = object()  # a *_now fast path could not answer without IO: await the coroutine
_TOKEN = struct.Struct(">Q")
MAX_TOKEN = (1 << 64) - 1


class CommandError(RingkvError):
    """A request that cannot be applied; `message` is what the client is told.

    `kind` is the Redis error prefix (ERR, WRONGTYPE, ...), and `status` the HTTP status the
    REST API answers with.
    """

    def __init__(self, message: str, kind: str = "ERR", status: int = 400):
        super().__init__(message)
        self.kind = kind
        self.status = status


NOT_AN_INTEGER = "value is not an integer or out of range"
NOT_A_FLOAT = "value is not a valid float"
INCR_OVERFLOW = "increment or decrement would overflow"
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


@dataclass(slots=True)
class Value:
    """What a read returns: the winning value with its version and expiry."""

    value: bytes
    timestamp: int  # HLC timestamp of the write
    expire_at_ms: int  # 0: no expiry
    context: bytes  # opaque causal context (encoded version vector)


@dataclass(slots=True)
class Versions:
    """What a sibling-aware read returns: every live sibling and the causal context."""

    siblings: list[Value]
    context: bytes | None


def parse_int(data: bytes) -> int:
    """Redis's rule for integer arguments and values: a signed 64-bit decimal, no spaces."""
    if not data or len(data) > 20 or data != data.strip() or data.startswith(b"+"):
        raise CommandError(NOT_AN_INTEGER)
    try:
        n = int(data)
    except ValueError:
        raise CommandError(NOT_AN_INTEGER) from None
    if not _INT64_MIN <= n <= _INT64_MAX or (len(data) > 1 and data[0:1] == b"0") or data.startswith(b"-0"):
        raise CommandError(NOT_AN_INTEGER)
    return n


def parse_float(data: bytes) -> float:
    try:
        if data != data.strip():
            raise ValueError
        f = float(data)
    except ValueError:
        raise CommandError(NOT_A_FLOAT) from None
    if math.isnan(f):
        raise CommandError(NOT_A_FLOAT)
    return f


def format_float(f: float) -> bytes:
    """INCRBYFLOAT's reply: the shortest decimal that reads back the same, no exponent."""
    if f == int(f) and abs(f) < 1e17:
        return b"%d" % int(f)
    text = repr(f)
    if "e" in text or "E" in text:
        text = f"{f:.17f}".rstrip("0").rstrip(".")
    return text.encode()


def glob_to_regex(pattern: bytes) -> re.Pattern[bytes]:
    """Redis's glob (`*`, `?`, `[abc]`, `[^a]`, `[a-z]`, backslash escapes) as a bytes regex."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        if c == b"*":
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i : i + 1]))
        elif c == b"[":
            j = i + 1
            neg = j < n and pattern[j : j + 1] == b"^"
            if neg:
                j += 1
            parts = []
            while j < n and pattern[j : j + 1] != b"]":
                if pattern[j : j + 1] == b"\\" and j + 1 < n:
                    j += 1
                    parts.append(re.escape(pattern[j : j + 1]))
                elif j + 2 < n and pattern[j + 1 : j + 2] == b"-" and pattern[j + 2 : j + 3] != b"]":
                    lo, hi = sorted((pattern[j : j + 1], pattern[j + 2 : j + 3]))
                    parts.append(re.escape(lo) + b"-" + re.escape(hi))
                    j += 2
                else:
                    parts.append(re.escape(pattern[j : j + 1]))
                j += 1
            if j >= n:  # no closing bracket: Redis matches the rest literally
                out.append(re.escape(pattern[i:]))
                break
            body = b"".join(parts)
            out.append(b"[" + (b"^" if neg else b"") + body + b"]" if body else (b"[^\\s\\S]" if not neg else b"."))
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile(b"".join(out) + rb"\Z", re.DOTALL)


class LocalCoordinator:
    """The coordinator of a cluster of one (see the module docstring)."""

    def __init__(
        self,
        replica: Replica,
        *,
        policy: ConflictPolicy = ConflictPolicy.SIBLINGS,
        sync_always: bool = False,
        keys_max_count: int = 100_000,
        flush_enabled: bool = True,
        expiry_index_max_keys: int = 1_000_000,
        max_value_bytes: int = 1024 * 1024,
        partitions: int = 1024,
        namespaces: Namespaces | None = None,
    ):
        self.replica = replica
        # Each namespace's N and conflict policy (node/namespaces.py); `policy` is the default's.
        self.namespaces = namespaces or Namespaces(1, policy.value)
        # Live keys per ring partition (the top log2(Q) bits of the token), for cluster-wide
        # DBSIZE and `ringkv cluster status`.
        self.partitions = partitions
        self._partition_shift = 64 - (partitions.bit_length() - 1)
        self._partition_keys = [0] * partitions  # of the default namespace
        self._ns_partition_keys: dict[bytes, list[int]] = {}  # of the others
        self.max_value_bytes = max_value_bytes
        self.policy = policy
        self.keys_max_count = keys_max_count
        self.flush_enabled = flush_enabled
        self._sync_always = sync_always
        self._fsync_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ringkv-fsync")
        self._live_keys = 0
        self._expiry_heap: list[tuple[int, bytes]] = []
        self._expiry_max = expiry_index_max_keys
        self.expired_keys = 0
        self.expiry_index_dropped = 0

    # ---------------------------------------------------------------- consistency

    # One replica: every level means "this node". Explicit counts are still checked, so a
    # client learns at once that r=2 cannot be met here.
    levels = (ConsistencyLevel.QUORUM, ConsistencyLevel.QUORUM, False)

    def at(self, r=None, w=None, strict=None) -> LocalCoordinator:
        if r is not None:
            resolve(parse_level(r, "r"), 1, field="r")
        if w is not None:
            resolve(parse_level(w, "w"), 1, field="w")
        return self

    # ---------------------------------------------------------------- start-up

    def load(self) -> None:
        """Count keys and index expiries from what is on disk (once, at start)."""
        live = 0
        heap: list[tuple[int, bytes]] = []
        decode = self.replica._decode
        self._partition_keys = [0] * self.partitions
        self._ns_partition_keys = {}
        with self.replica.engine.scan() as it:
            for skey, data in it:
                record = decode(data)
                if _counted(record):
                    live += 1
                    self._count(skey, 1)
                exp = _max_expiry(record)
                if exp and len(heap) < self._expiry_max:
                    heap.append((exp, skey))
        heapq.heapify(heap)
        self._live_keys = live
        self._expiry_heap = heap

    def _count(self, skey: bytes, delta: int) -> None:
        self._live_keys += delta
        parts = self._partition_keys
        if skey[8]:
            ns = bytes(skey[9:9 + skey[8]])
            parts = self._ns_partition_keys.get(ns)
            if parts is None:
                parts = self._ns_partition_keys[ns] = [0] * self.partitions
        parts[int.from_bytes(skey[:8], "big") >> self._partition_shift] += delta

    def partition_keys(self, namespace: bytes = DEFAULT_NAMESPACE) -> list[int]:
        """Live keys of `namespace` per ring partition on this replica."""
        if namespace:
            return list(self._ns_partition_keys.get(namespace) or [0] * self.partitions)
        return list(self._partition_keys)

    def namespace_partition_keys(self) -> dict[str, list[int]]:
        """partition_keys of every namespace but the default, by name."""
        return {ns.decode("utf-8", "replace"): list(parts) for ns, parts in self._ns_partition_keys.items()}

    # ---------------------------------------------------------------- helpers

    @property
    def sync_always(self) -> bool:
        return self._sync_always

    async def durable(self, lsn: int) -> None:
        """Wait (off the loop) until the write at `lsn` is fsynced; no-op unless sync=always."""
        await self._durable(lsn)

    async def _durable(self, lsn: int) -> None:
        if self._sync_always and lsn:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._fsync_pool, self.replica.engine.wait_durable, lsn)

    @staticmethod
    def _check_key(key: bytes, namespace: bytes) -> None:
        if len(key) + len(namespace) > MAX_KEY_BYTES:
            raise CommandError(
                f"key is {len(key)} bytes; the limit is {MAX_KEY_BYTES - len(namespace)} bytes "
                "(64 KiB less the storage prefix)",
                status=413,
            )

    def _check_value(self, value: bytes) -> None:
        if len(value) > self.max_value_bytes:
            raise CommandError(
                f"value is {len(value)} bytes; the limit is max_value_bytes={self.max_value_bytes}", status=413
            )

    def _read(self, key: bytes, namespace: bytes) -> tuple[bytes, Record | None]:
        if len(key) + len(namespace) > MAX_KEY_BYTES:
            self._check_key(key, namespace)
        skey = storage_key(namespace, key)
        return skey, self.replica.read_skey(skey)

    def _write(
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
        if value is not None and len(value) > self.max_value_bytes:
            raise CommandError(
                f"value is {len(value)} bytes; the limit is max_value_bytes={self.max_value_bytes}", status=413
            )
        if context is None and not blind and stored is not None:
            context = stored.clock
        new, lsn = self.replica.write(
            namespace, key, value, context=context, expire_at_ms=expire_at_ms,
            policy=self.namespaces.of_stored(namespace).conflict_policy,
            stored=stored, skey=skey,
        )
        delta = _counted(new) - (_counted(stored) if stored is not None else 0)
        if delta:
            self._count(skey, delta)
        if expire_at_ms and len(self._expiry_heap) < self._expiry_max:
            heapq.heappush(self._expiry_heap, (expire_at_ms, skey))
        elif expire_at_ms:
            self.expiry_index_dropped += 1
        return new, lsn

    @staticmethod
    def _winner(record: Record | None, now: int) -> Sibling | None:
        return None if record is None else record.winner(now)

    # ---------------------------------------------------------------- reads

    async def get(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> Value | None:
        record = self.replica.read(namespace, key)
        if record is None:
            return None
        w = record.winner(now_ms())
        if w is None:
            return None
        return Value(w.value, w.timestamp, w.expire_at_ms, encode_context(record.clock))

    async def get_value(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> bytes | None:
        """The winning value only: a plain GET."""
        return self.get_value_now(key, namespace)

    def get_value_now(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE):
        """GET without a coroutine, for the adapters' hot path; returns PENDING when the answer
        needs IO (never on a single node; the cluster coordinator will return it for remote
        keys, and the adapter then awaits get_value)."""
        data = self.replica.engine.get(storage_key(namespace, key))
        if data is None:
            return None
        # Record.winner(now) inlined: the clock is read only for a value that can expire.
        w = pick_winner(self.replica._decode(data).siblings)
        if w.expire_at_ms and w.expire_at_ms <= now_ms():
            return None
        return w.value  # None for a tombstone

    async def get_versions(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> Versions:
        record = self.replica.read(namespace, key)
        if record is None:
            return Versions([], None)
        now = now_ms()
        sibs = [
            Value(s.value, s.timestamp, s.expire_at_ms, b"")
            for s in record.live_siblings(now)
        ]
        return Versions(sibs, encode_context(record.clock))

    async def exists(self, keys: Iterable[bytes], namespace: bytes = DEFAULT_NAMESPACE) -> int:
        now = now_ms()
        n = 0
        for key in keys:
            if self._winner(self.replica.read(namespace, key), now) is not None:
                n += 1
        return n

    async def mget(self, keys: list[bytes], namespace: bytes = DEFAULT_NAMESPACE) -> list[bytes | None]:
        return [await self.get_value(k, namespace) for k in keys]

    async def ttl_ms(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> int:
        """Milliseconds left, -1 for a key without expiry, -2 for a missing key (Redis's PTTL)."""
        now = now_ms()
        w = self._winner(self.replica.read(namespace, key), now)
        if w is None:
            return -2
        if not w.expire_at_ms:
            return -1
        return max(0, w.expire_at_ms - now)

    # ---------------------------------------------------------------- writes

    async def set(
        self,
        key: bytes,
        value: bytes,
        *,
        namespace: bytes = DEFAULT_NAMESPACE,
        expire_at_ms: int = 0,
        keep_ttl: bool = False,
        condition: str | None = None,
        return_old: bool = False,
    ) -> tuple[bool, bytes | None]:
        """SET with its options: returns (applied, old value when `return_old`).

        `condition` is None, "nx" (only if missing) or "xx" (only if present).
        """
        skey, stored = self._read(key, namespace)
        old = None
        if condition is not None or return_old or keep_ttl:
            w = self._winner(stored, now_ms())
            old = w.value if w is not None else None
            if (condition == "nx" and w is not None) or (condition == "xx" and w is None):
                return False, old
            if keep_ttl and w is not None:
                expire_at_ms = w.expire_at_ms
        _, lsn = self._write(skey, namespace, key, stored, value, expire_at_ms)
        await self._durable(lsn)
        return True, old

    async def put(self, key: bytes, value: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> None:
        """A plain overwrite: SET without options."""
        lsn = self.put_now(key, value, namespace)
        if self._sync_always:
            await self._durable(lsn)

    def put_now(self, key: bytes, value: bytes, namespace: bytes = DEFAULT_NAMESPACE):
        """SET without a coroutine (see get_value_now); returns the LSN to wait for under
        sync=always, or PENDING. The common case is inlined: one read, one overwrite."""
        if (
            len(value) > self.max_value_bytes
            or len(key) + len(namespace) > MAX_KEY_BYTES
            or (namespace and self.namespaces.of_stored(namespace).conflict_policy is not ConflictPolicy.SIBLINGS)
            or self.policy is not ConflictPolicy.SIBLINGS
        ):
            skey, stored = self._read(key, namespace)
            return self._write(skey, namespace, key, stored, value)[1]
        replica = self.replica
        skey = storage_key(namespace, key)
        engine = replica.engine
        data = engine.get(skey)
        stored = None if data is None else replica._decode(data)
        new = overwrite(stored, actor=replica.actor, value=value, timestamp=replica.clock.now(now_ms()))
        # Deferred: the adapter calls commit_writes() once per event-loop iteration, before
        # any reply goes out, so a burst of SETs costs one write() to the log.
        lsn = engine.put(skey, replica._encode(new), defer=True)
        if stored is None or not _counted(stored):
            self._count(skey, 1)
        return lsn

    def overwrite_now(self, skey: bytes, value: bytes) -> bytes:
        """put_now's overwrite for a caller that checked the key, the value and the policy and
        holds the storage key: a deferred write (see put_now); returns the stored record's
        bytes, which the cluster coordinator replicates as they are."""
        replica = self.replica
        engine = replica.engine
        data = engine.get(skey)
        stored = None if data is None else replica._decode(data)
        new = overwrite(stored, actor=replica.actor, value=value, timestamp=replica.clock.now(now_ms()))
        encoded = replica._encode(new)
        engine.put(skey, encoded, defer=True)
        if stored is None or not _counted(stored):
            self._count(skey, 1)
        return encoded

    @property
    def has_pending_writes(self) -> bool:
        return self.replica.engine.has_deferred

    def commit_writes(self) -> None:
        """Hand every deferred write to the OS. Adapters call it before sending any reply."""
        self.replica.engine.flush_deferred()

    def apply_record(self, skey: bytes, data: bytes, defer: bool = False) -> int:
        """Merge a record another replica made (replication, read repair) into ours; returns
        the LSN to wait on under sync=always (0 when ours already covered it). `defer` as for
        Engine.put: the caller must commit_writes() before acknowledging."""
        incoming = self.replica._decode(data)  # CorruptionError on garbage: nothing stored
        stored = self.replica.read_skey(skey)
        policy = self.namespaces.policy_of_skey(skey) if skey[8] else self.policy
        merged, lsn = self.replica.apply_skey(skey, incoming, stored, policy, defer=defer)
        if lsn:
            delta = _counted(merged) - (_counted(stored) if stored is not None else 0)
            if delta:
                self._count(skey, delta)
            exp = _max_expiry(merged)
            if exp and len(self._expiry_heap) < self._expiry_max:
                heapq.heappush(self._expiry_heap, (exp, skey))
        return lsn

    async def put_versioned(
        self,
        key: bytes,
        value: bytes | None,
        context: bytes | None,
        *,
        namespace: bytes = DEFAULT_NAMESPACE,
        expire_at_ms: int = 0,
    ) -> bytes:
        """A sibling-aware write: replaces exactly what `context` saw (None: a blind write,
        which becomes a sibling of whatever is there). Returns the new context."""
        ctx = decode_context(context) if context else None
        skey, stored = self._read(key, namespace)
        new, lsn = self._write(skey, namespace, key, stored, value, expire_at_ms, context=ctx, blind=ctx is None)
        await self._durable(lsn)
        return encode_context(new.clock)

    def _check_pairs(self, pairs: list[tuple[bytes, bytes]], namespace: bytes) -> dict[bytes, bytes]:
        """Validate every pair before writing any (MSET is all or nothing); a key named twice
        keeps its last value, as in Redis."""
        for key, value in pairs:
            self._check_key(key, namespace)
            if len(value) > self.max_value_bytes:
                raise CommandError(
                    f"value is {len(value)} bytes; the limit is max_value_bytes={self.max_value_bytes}", status=413
                )
        return dict(pairs)

    async def mset(self, pairs: list[tuple[bytes, bytes]], namespace: bytes = DEFAULT_NAMESPACE) -> None:
        lsn = 0
        for key, value in self._check_pairs(pairs, namespace).items():
            skey, stored = self._read(key, namespace)
            _, lsn = self._write(skey, namespace, key, stored, value)
        await self._durable(lsn)

    async def msetnx(self, pairs: list[tuple[bytes, bytes]], namespace: bytes = DEFAULT_NAMESPACE) -> bool:
        unique = self._check_pairs(pairs, namespace)
        now = now_ms()
        reads = [(k, v, *self._read(k, namespace)) for k, v in unique.items()]
        if any(self._winner(stored, now) is not None for _, _, _, stored in reads):
            return False
        lsn = 0
        for key, value, skey, stored in reads:
            _, lsn = self._write(skey, namespace, key, stored, value)
        await self._durable(lsn)
        return True

    async def delete(self, keys: Iterable[bytes], namespace: bytes = DEFAULT_NAMESPACE) -> int:
        """Write tombstones; returns how many keys existed (Redis's DEL)."""
        now = now_ms()
        n = 0
        lsn = 0
        for key in keys:
            skey, stored = self._read(key, namespace)
            if self._winner(stored, now) is None:
                continue
            n += 1
            _, lsn = self._write(skey, namespace, key, stored, None)
        await self._durable(lsn)
        return n

    async def getdel(self, key: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> bytes | None:
        skey, stored = self._read(key, namespace)
        w = self._winner(stored, now_ms())
        if w is None:
            return None
        _, lsn = self._write(skey, namespace, key, stored, None)
        await self._durable(lsn)
        return w.value

    async def incr_by(self, key: bytes, delta: int, namespace: bytes = DEFAULT_NAMESPACE) -> int:
        skey, stored = self._read(key, namespace)
        w = self._winner(stored, now_ms())
        current = parse_int(w.value) if w is not None else 0
        new = current + delta
        if not _INT64_MIN <= new <= _INT64_MAX:
            raise CommandError(INCR_OVERFLOW)
        _, lsn = self._write(skey, namespace, key, stored, b"%d" % new, w.expire_at_ms if w else 0)
        await self._durable(lsn)
        return new

    async def incr_by_float(self, key: bytes, delta: float, namespace: bytes = DEFAULT_NAMESPACE) -> bytes:
        skey, stored = self._read(key, namespace)
        w = self._winner(stored, now_ms())
        current = parse_float(w.value) if w is not None else 0.0
        new = current + delta
        if math.isnan(new) or math.isinf(new):
            raise CommandError("increment would produce NaN or Infinity")
        text = format_float(new)
        _, lsn = self._write(skey, namespace, key, stored, text, w.expire_at_ms if w else 0)
        await self._durable(lsn)
        return text

    async def append(self, key: bytes, value: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> int:
        skey, stored = self._read(key, namespace)
        w = self._winner(stored, now_ms())
        new = (w.value if w is not None else b"") + value
        _, lsn = self._write(skey, namespace, key, stored, new, w.expire_at_ms if w else 0)
        await self._durable(lsn)
        return len(new)

    async def expire_at(
        self, key: bytes, expire_at_ms: int, condition: str | None = None, namespace: bytes = DEFAULT_NAMESPACE
    ) -> bool:
        """Set (or with 0, remove: PERSIST) a key's expiry. `condition`: nx, xx, gt, lt.

        A time in the past deletes the key, as Redis does.
        """
        skey, stored = self._read(key, namespace)
        now = now_ms()
        w = self._winner(stored, now)
        if w is None:
            return False
        cur = w.expire_at_ms
        if expire_at_ms == 0 and cur == 0:
            return False  # PERSIST of a key without expiry
        if condition == "nx" and cur:
            return False
        if condition == "xx" and not cur:
            return False
        if condition == "gt" and (not cur or expire_at_ms <= cur):
            return False
        if condition == "lt" and cur and expire_at_ms >= cur:
            return False
        if expire_at_ms and expire_at_ms <= now:
            _, lsn = self._write(skey, namespace, key, stored, None)
        else:
            _, lsn = self._write(skey, namespace, key, stored, w.value, expire_at_ms)
        await self._durable(lsn)
        return True

    async def getex(
        self,
        key: bytes,
        expire_at_ms: int | None,
        namespace: bytes = DEFAULT_NAMESPACE,
    ) -> bytes | None:
        """GET that also sets (ms > 0) or removes (0) the expiry; None leaves it."""
        skey, stored = self._read(key, namespace)
        now = now_ms()
        w = self._winner(stored, now)
        if w is None:
            return None
        if expire_at_ms is not None and expire_at_ms != w.expire_at_ms:
            if expire_at_ms and expire_at_ms <= now:
                _, lsn = self._write(skey, namespace, key, stored, None)
            else:
                _, lsn = self._write(skey, namespace, key, stored, w.value, expire_at_ms)
            await self._durable(lsn)
        return w.value

    async def flushall(self) -> int:
        """Remove every key (FLUSHALL/FLUSHDB); refused when `flush_enabled` is off."""
        if not self.flush_enabled:
            raise CommandError("FLUSHALL and FLUSHDB are disabled on this node (flush_enabled = false)")
        engine = self.replica.engine
        n = 0
        lsn = 0
        with engine.scan() as it:
            skeys = [k for k, _ in it]
        for skey in skeys:
            lsn = engine.delete(skey, sync=False)
            n += 1
        self._live_keys = 0
        self._partition_keys = [0] * self.partitions
        self._ns_partition_keys = {}
        self._expiry_heap = []
        await self._durable(lsn)
        return n

    def drop_range(self, first_token: int, last_token: int, drop) -> int:
        """Remove from this replica, for good and without tombstones, the records with tokens in
        [first_token, last_token] for which `drop(skey)` is true: data this node no longer
        holds as a replica (`ringkv admin cleanup`). Returns how many were removed."""
        engine = self.replica.engine
        decode = self.replica._decode
        end = _TOKEN.pack(last_token + 1) if last_token < MAX_TOKEN else None
        with engine.scan(_TOKEN.pack(first_token), end) as it:
            doomed = [(bytes(skey), _counted(decode(data))) for skey, data in it if drop(skey)]
        for skey, counted in doomed:
            engine.delete(skey, sync=False)
            if counted:
                self._count(skey, -1)
        return len(doomed)

    # ---------------------------------------------------------------- keyspace

    async def dbsize(self, namespace: bytes = DEFAULT_NAMESPACE) -> int:
        if not self._ns_partition_keys:
            return self._live_keys if not namespace else 0
        parts = self._ns_partition_keys.get(namespace) if namespace else self._partition_keys
        return sum(parts) if parts else 0

    async def scan(
        self,
        cursor: int,
        count: int = 10,
        match: bytes | None = None,
        namespace: bytes = DEFAULT_NAMESPACE,
    ) -> tuple[int, list[bytes]]:
        """One page of keys in token order from `cursor` (0 starts; 0 returned means done).

        The cursor is the token to resume from, so it stays valid whatever is written between
        calls: keys present for the whole scan are returned exactly once (Redis's guarantee).
        """
        if not 0 <= cursor <= MAX_TOKEN:
            raise CommandError("invalid cursor")
        keys, _, next_token = self.scan_range(cursor, MAX_TOKEN, count, match, namespace)
        return (0 if next_token is None else next_token), keys

    def scan_range(
        self,
        start_token: int,
        end_token: int,
        count: int,
        match: bytes | None = None,
        namespace: bytes = DEFAULT_NAMESPACE,
    ) -> tuple[list[bytes], int, int | None]:
        """Live keys with tokens in [start_token, end_token], in token order, examining about
        `count` records: (keys, records examined, token to resume at or None when done).

        A page never ends between two keys of one token, so resuming at a token is exact.
        """
        regex = glob_to_regex(match) if match is not None and match != b"*" else None
        now = now_ms()
        decode = self.replica._decode
        keys: list[bytes] = []
        examined = 0
        last_token = None
        end = _TOKEN.pack(end_token + 1) if end_token < MAX_TOKEN else None
        with self.replica.engine.scan(_TOKEN.pack(start_token), end) as it:
            for skey, data in it:
                tok = _TOKEN.unpack_from(skey)[0]
                if tok > end_token:
                    break
                if examined >= count and tok != last_token:
                    return keys, examined, tok  # resume at this token next time
                examined += 1
                last_token = tok
                ns, key = split_storage_key(skey)
                if ns != namespace:
                    continue
                if regex is not None and regex.match(key) is None:
                    continue
                if decode(data).winner(now) is None:
                    continue
                keys.append(key)
        return keys, examined, None

    async def keys(self, pattern: bytes, namespace: bytes = DEFAULT_NAMESPACE) -> list[bytes]:
        if self._live_keys > self.keys_max_count:
            raise CommandError(
                f"KEYS refused: the keyspace holds {self._live_keys} keys, over keys_max_count="
                f"{self.keys_max_count}; use SCAN with MATCH to page through it"
            )
        out: list[bytes] = []
        cursor = 0
        while True:
            cursor, page = await self.scan(cursor, 1000, pattern, namespace)
            out.extend(page)
            if cursor == 0:
                return out

    # ---------------------------------------------------------------- expiry

    def expire_cycle(self, budget: int = 200) -> int:
        """Remove up to `budget` records whose every sibling has expired (active expiry).

        Called from the event loop every 100 ms, as Redis's active expiry cycle is; a record
        whose TTL was changed since it was indexed is left alone.
        """
        heap = self._expiry_heap
        now = now_ms()
        removed = 0
        while heap and budget and heap[0][0] <= now:
            _, skey = heapq.heappop(heap)
            budget -= 1
            record = self.replica.read_skey(skey)
            if record is None or not record.is_dead(now) or any(s.value is None for s in record.siblings):
                continue
            self.replica.remove(skey)
            if _counted(record):
                self._count(skey, -1)
            removed += 1
        self.expired_keys += removed
        return removed

    def close(self) -> None:
        self._fsync_pool.shutdown(wait=True)


def _counted(record: Record | None) -> bool:
    """Whether DBSIZE counts the record: it holds a value (expired or not, as Redis counts
    keys whose TTL passed until they are collected)."""
    if record is None:
        return False
    for s in record.siblings:
        if s.value is not None:
            return True
    return False


def _max_expiry(record: Record) -> int:
    exps = [s.expire_at_ms for s in record.siblings if s.value is not None]
    return max(exps) if exps and all(exps) else 0


