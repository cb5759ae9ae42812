"""The replica: versioned records of one node, on its storage engine.

Every value is stored as a `versioning.Record` (dotted version vector, siblings, HLC timestamps,
expiry) under the storage key `token u64 BE | len(namespace) u8 | namespace | key`, so that a
ring partition is one contiguous key range (docs/architecture.md).

Two kinds of write reach a replica:
- `write` coordinates a client write here: the new sibling gets a dot of this node's actor;
- `apply` merges a record another replica made (replication, read repair, hints, streaming).

Both return the stored record and the WAL LSN, which the caller waits on (off the event loop)
when the sync policy is `always`. Synchronous and cheap: no call here waits on the disk.
"""

from __future__ import annotations

import struct

from xxhash import xxh3_64_digest

from ringkv.clock import SYSTEM_CLOCK, Clock
from ringkv.errors import ClockSkewError, LimitError
from ringkv.service.elements import (
    ELEMENT_MARK,
    RESERVED_PREFIX,
    element_key,
    elements_prefix,
    owner_of,
    reserved_key_error,
)
from ringkv.service.limits import MAX_NAMESPACE_BYTES
from ringkv.storage import Engine
from ringkv.versioning import record as rec
from ringkv.versioning.hlc import HybridLogicalClock
from ringkv.versioning.record import ConflictPolicy, Record

_TOKEN = struct.Struct(">Q")


_PREFIXES: dict[bytes, tuple[bytes, bytes]] = {}
MAX_CACHED_NAMESPACES = 1024


def storage_key(namespace: bytes, key: bytes) -> bytes:
    """token u64 BE | len(namespace) u8 | namespace | key, with token = ring.token(namespace, key)
    (computed from the key's hash tag when it has one: cluster/ring.hash_part).

    On every request's path, so the per-namespace prefixes are cached and the token's 8
    big-endian bytes come straight from xxh3's digest (its canonical form is big-endian).
    """
    p = _PREFIXES.get(namespace)
    if p is None:
        p = (len(namespace).to_bytes(4, "big") + namespace, bytes((len(namespace),)) + namespace)
        if len(_PREFIXES) < MAX_CACHED_NAMESPACES:
            _PREFIXES[namespace] = p
    # hash_part inlined (the hot path): keys without a `{` hash whole. `find`, not `in`: a
    # bytes `in` first tries its operand as an integer and formats the TypeError it discards
    # (twice the time, and the one string formatting in a profile of a pipelined SET).
    hashed = key
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            hashed = key[start + 1:end]
    if key[:2] == RESERVED_PREFIX:  # internal records are placed by record_storage_key
        raise reserved_key_error(key)
    return xxh3_64_digest(p[0] + hashed) + p[1] + key


def record_storage_key(namespace: bytes, key: bytes) -> bytes:
    """`storage_key` of any record's key, a collection's element key (service/elements.py)
    included: an element is placed by its collection's key. For keys that come from storage
    or a peer, never from a client (storage_key refuses a client's reserved key)."""
    if key[:3] != ELEMENT_MARK:
        return storage_key(namespace, key)
    owner = storage_key(namespace, owner_of(key))
    return owner[:9 + len(namespace)] + key


def element_storage_key(skey: bytes, element: bytes) -> bytes:
    """The storage key of `element` of the collection stored under `skey`."""
    n = 9 + skey[8]
    return skey[:n] + element_key(skey[n:], element)


def elements_range(skey: bytes) -> tuple[bytes, bytes]:
    """[start, end) of the storage keys of every element of the collection stored under
    `skey`, in element byte order."""
    n = 9 + skey[8]
    start = skey[:n] + elements_prefix(skey[n:])
    return start, _after_prefix(start)


def _after_prefix(prefix: bytes) -> bytes:
    """The least key greater than every key that begins with `prefix` (which does not end in
    0xff bytes only: an element prefix ends with its collection key, after a length)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def split_storage_key(skey: bytes) -> tuple[bytes, bytes]:
    """(namespace, key) of a storage key."""
    n = skey[8]
    return skey[9 : 9 + n], skey[9 + n :]


class Replica:
    """A node's versioned records. `wall` is the node's clock (ringkv/clock.py); `hlc` the
    hybrid logical clock that stamps this replica's writes, fed from it."""

    __slots__ = ("_decode", "_encode", "actor", "engine", "hlc", "wall")

    def __init__(self, engine: Engine, actor: bytes, wall: Clock = SYSTEM_CLOCK,
                 hlc: HybridLogicalClock | None = None):
        self.engine = engine
        self.actor = actor
        self.wall = wall
        self.hlc = hlc or HybridLogicalClock()
        self._encode = rec.encode_record
        self._decode = rec.decode_record

    def hlc_now(self) -> int:
        """A timestamp for a write made here now."""
        return self.hlc.now(self.wall.now_ms())

    def read(self, namespace: bytes, key: bytes) -> Record | None:
        data = self.engine.get(storage_key(namespace, key))
        return None if data is None else self._decode(data)

    def read_skey(self, skey: bytes) -> Record | None:
        data = self.engine.get(skey)
        return None if data is None else self._decode(data)

    def write(
        self,
        namespace: bytes,
        key: bytes,
        value: bytes | None,
        *,
        context,
        expire_at_ms: int = 0,
        policy: ConflictPolicy = ConflictPolicy.SIBLINGS,
        stored: Record | None = None,
        skey: bytes | None = None,
    ) -> tuple[Record, int]:
        """Coordinate a write of `value` (None deletes) with the client's causal `context`.

        `stored` and `skey`, when the caller already read them, save a second lookup.
        """
        if len(namespace) > MAX_NAMESPACE_BYTES:
            raise LimitError(f"namespace is {len(namespace)} bytes; the limit is {MAX_NAMESPACE_BYTES}")
        if skey is None:
            skey = storage_key(namespace, key)
            stored = self.read_skey(skey)
        new = rec.apply_write(
            stored,
            actor=self.actor,
            context=context,
            value=value,
            timestamp=self.hlc_now(),
            expire_at_ms=expire_at_ms,
            policy=policy,
        )
        return new, self._store(skey, new)

    def apply(
        self, namespace: bytes, key: bytes, incoming: Record, policy: ConflictPolicy = ConflictPolicy.SIBLINGS
    ) -> tuple[Record, int]:
        """Merge a record made elsewhere into ours; returns the merged record."""
        skey = storage_key(namespace, key)
        stored = self.read_skey(skey)
        self._observe(incoming)
        merged = incoming if stored is None else rec.merge(stored, incoming, policy)
        if merged == stored:
            return merged, 0
        return merged, self._store(skey, merged)

    def apply_skey(
        self, skey: bytes, incoming: Record, stored: Record | None, policy: ConflictPolicy,
        defer: bool = False,
    ) -> tuple[Record, int]:
        """`apply` for a caller that holds the storage key and has read the stored record."""
        self._observe(incoming)
        merged = incoming if stored is None else rec.merge(stored, incoming, policy)
        if merged == stored:
            return merged, 0
        if defer:
            return merged, self.engine.put(skey, self._encode(merged), defer=True)
        return merged, self._store(skey, merged)

    def _observe(self, incoming: Record) -> None:
        self.observe(max(s.timestamp for s in incoming.siblings))

    def observe(self, timestamp: int) -> None:
        """Keep our HLC ahead of every timestamp we store, so our next write orders after it.
        A timestamp too far ahead of our wall clock is stored but not followed: one node's
        broken clock must not drag every other node's clock into the future."""
        try:
            self.hlc.observe(timestamp, self.wall.now_ms())
        except ClockSkewError:
            pass

    def merge_incoming(self, incoming: Record, stored: Record | None, policy: ConflictPolicy) -> Record:
        """What `apply_skey` would store, without storing it (a caller writing many records in
        one WriteBatch). Every record a peer replicates passes here."""
        siblings = incoming.siblings
        self.observe(siblings[0].timestamp if len(siblings) == 1 else max(s.timestamp for s in siblings))
        return incoming if stored is None else rec.merge(stored, incoming, policy)

    def _store(self, skey: bytes, record: Record) -> int:
        return self.engine.put(skey, self._encode(record), sync=False)

    def remove(self, skey: bytes) -> int:
        """Physically remove a record (active expiry of a record every sibling of which is dead)."""
        return self.engine.delete(skey, sync=False)
