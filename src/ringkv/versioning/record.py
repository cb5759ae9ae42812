"""The stored record: what the storage engine keeps as the value of a key.

Implements docs/formats/record.md. A record is a clock plus siblings; a sibling is a dot, a
value (bytes, or None for a tombstone), an HLC timestamp and an expiry (ms since the epoch,
0 = never). The coordinating replica builds the new record with `apply_write`; every other
replica, read repair and anti-entropy fold records together with `merge`.

Winner rule (what a plain GET returns, the same on every node): among all siblings, the one
with the highest HLC timestamp, ties broken by the highest dot (actor bytes, then counter).
The winner is picked before liveness is looked at: if it is a tombstone, or expired
(0 < expire_at_ms <= now_ms), the key is not found, even if an older concurrent sibling is
live. Sibling-aware reads return `live_siblings(now_ms)` and the record's clock as context.

Collections stored one record per element (docs/formats/elements.md) add two kinds of typed
value to a key's record: a collection's meta (kinds META_OFFSET + 1..4) and a clear marker
(KIND_CLEARED), which reads as absent, as a tombstone does. When the winner is a tombstone, a
clear marker or expired and a live meta is among the siblings, the newest live meta wins
instead: a write of the collection concurrent with its delete keeps it (add wins). Records
without those kinds (every string, every collection stored whole) follow the rule above.

Conflict policy per namespace: `siblings` keeps every value no write has superseded (dotted
version vectors, see dvv.py); `lww` keeps only the winner, by the rule above, and ignores
causality, as Cassandra does: the HLC is what orders writes there.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated

import msgspec

from ringkv.errors import CorruptionError, LimitError
from ringkv.versioning import dvv
from ringkv.versioning.dvv import MAX_CLOCK_ACTORS, Actor, ClockField, Dot, VersionVector
from ringkv.versioning.hlc import timestamp_ms

FORMAT_VERSION = 1
# Siblings: a client write that would leave a record holding more than MAX_SIBLINGS is refused
# (a blind or partial-context write adds one; a write with the context of a read resolves them
# all). Replicas that took writes apart can merge to more, up to MAX_RECORD_SIBLINGS, the most
# a stored or received record may hold (16 replica incarnations each adding MAX_SIBLINGS
# without ever syncing): a merge beyond it is refused where it would be stored.
MAX_SIBLINGS = 64
MAX_RECORD_SIBLINGS = 1024
# A record's bytes beyond its values: the clock (at most MAX_CLOCK_ACTORS actors of 255 bytes
# and a 9-byte counter) and, per sibling, its dot, timestamp, expiry and msgpack headers.
# docs/formats/record.md works both out.
MAX_CLOCK_BYTES = 5 + MAX_CLOCK_ACTORS * (2 + dvv.MAX_ACTOR_BYTES + 9)
SIBLING_OVERHEAD_BYTES = 1 + (1 + 2 + dvv.MAX_ACTOR_BYTES + 9) + 5 + 9 + 9

_Timestamp = Annotated[int, msgspec.Meta(ge=0)]


class ConflictPolicy(enum.StrEnum):
    """How a namespace resolves concurrent writes."""

    SIBLINGS = "siblings"
    LWW = "lww"


# Typed kinds of collections stored one record per element (docs/formats/elements.md): a
# collection's meta record holds META_OFFSET + its kind (1..4, service/datatypes/base.py), or
# a clear marker.
META_OFFSET = 16
KIND_CLEARED = 32


class Typed(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A value that is not a string: a collection (a hash, list, set or sorted set) stored
    whole, as `kind` (service/datatypes/base.py KIND_*, >= 1) and its encoding `data`
    (service/datatypes/codec.py). A string is stored as bare bytes, so records of strings are
    byte for byte what they were before collections existed."""

    kind: Annotated[int, msgspec.Meta(ge=1, le=255)]
    data: bytes

    def __len__(self) -> int:
        """The bytes it stores, which the value limits count."""
        return len(self.data)


class DottedValue(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One value of a key, tagged with the write that made it (its dot): a sibling of the
    record. (The client's `Sibling` is what a sibling-aware read answers.) gc=False: it holds no
    cycles."""

    dot: Dot
    value: bytes | Typed | None
    """None is a tombstone: a versioned delete; Typed a collection; bytes a string."""
    timestamp: _Timestamp
    """HLC timestamp of the write (hlc.py), used by the winner rule and lww."""
    expire_at_ms: _Timestamp = 0
    """Milliseconds since the epoch at which the value stops being visible; 0 = never."""

    @property
    def is_tombstone(self) -> bool:
        return self.value is None

    def is_expired(self, now_ms: int) -> bool:
        return 0 < self.expire_at_ms <= now_ms

    def is_live(self, now_ms: int) -> bool:
        """Visible to reads: not a tombstone and not expired."""
        return self.value is not None and not 0 < self.expire_at_ms <= now_ms

    def dead_since_ms(self) -> int | None:
        """When this sibling stopped being visible (a tombstone from its write's millisecond,
        an expiring value from expire_at_ms), or None if it never will on its own."""
        if self.value is None:
            return timestamp_ms(self.timestamp)
        return self.expire_at_ms or None


def _is_meta(value: object) -> bool:
    return type(value) is Typed and META_OFFSET < value.kind < KIND_CLEARED


def is_cleared(value: object) -> bool:
    """Whether a sibling's value is a clear marker (it reads as absent)."""
    return type(value) is Typed and value.kind == KIND_CLEARED


def _winner_key(sibling: DottedValue) -> tuple[int, Dot]:
    return sibling.timestamp, sibling.dot


def pick_winner(siblings: tuple[DottedValue, ...] | list[DottedValue]) -> DottedValue:
    """The sibling the winner rule picks, live or not. REQUIRES: `siblings` is not empty.

    Dots are unique, so the key is a total order and the pick does not depend on the order of
    `siblings`.
    """
    if len(siblings) == 1:
        return siblings[0]  # the common case: no concurrent writes
    return max(siblings, key=_winner_key)


class Record(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A key's stored versions. Immutable; build new ones with `apply_write` and `merge`.

    Invariants (checked by `decode_record`): at least one sibling; the clock covers every
    sibling's dot. Canonical form (produced by this module): clock in actor order, siblings
    in dot order, so equal records encode to equal bytes.
    """

    clock: ClockField
    siblings: Annotated[tuple[DottedValue, ...], msgspec.Meta(max_length=MAX_RECORD_SIBLINGS)]

    @property
    def context(self) -> VersionVector:
        """The causal context a read returns: everything this record has seen."""
        return self.clock

    def winner(self, now_ms: int) -> DottedValue | None:
        """What a plain GET returns at `now_ms`: the winner, or None (not found) when the
        winner is a tombstone, a clear marker or has expired and no live collection meta is
        among the siblings (the module docstring's rule)."""
        siblings = self.siblings
        best = pick_winner(siblings)
        if best.is_live(now_ms):
            value = best.value
            if type(value) is not Typed or value.kind != KIND_CLEARED:
                return best
        if len(siblings) == 1:
            return None
        metas = [s for s in siblings if _is_meta(s.value) and s.is_live(now_ms)]
        return pick_winner(metas) if metas else None

    def live_siblings(self, now_ms: int) -> list[DottedValue]:
        """The values a sibling-aware read returns: no tombstones, clear markers or expired
        values."""
        return [s for s in self.siblings if s.is_live(now_ms) and not is_cleared(s.value)]

    def is_dead(self, now_ms: int, grace_ms: int = 0) -> bool:
        """Whether every sibling is a tombstone or expired, and has been for `grace_ms`.

        A compaction filter may drop the record when this holds for the namespace's grace
        period (and anti-entropy has run since); a tombstone counts as dead from its HLC
        millisecond, an expiring value from its expire_at_ms.
        """
        horizon_ms = now_ms - grace_ms
        for s in self.siblings:
            since_ms = s.dead_since_ms()
            if since_ms is None or since_ms > horizon_ms:
                return False
        return True


def apply_write(
    stored: Record | None,
    *,
    actor: Actor,
    context: Mapping[Actor, int] | None,
    value: bytes | None,
    timestamp: int,
    expire_at_ms: int = 0,
    policy: ConflictPolicy = ConflictPolicy.SIBLINGS,
) -> Record:
    """The record after `actor` coordinates a write of `value` (None deletes) to `stored`
    (None when the key has no record here).

    `context` is the clock the client read, or None for a blind write. Under `siblings` the
    write replaces exactly the siblings its context saw; a blind write replaces nothing and
    becomes a sibling of what is there. Under `lww` only the winner is kept.

    LimitError when the write would push the record past a bound: a counter past
    dvv.MAX_COUNTER, more than MAX_CLOCK_ACTORS actors, or more than MAX_SIBLINGS siblings
    where it had fewer. Whether a client's context names only what `stored` knows is the
    caller's check (dvv.check_known), made where the write runs.
    """
    clock: Mapping[Actor, int] = stored.clock if stored is not None else {}
    siblings: tuple[DottedValue, ...] = stored.siblings if stored is not None else ()
    dot, new_clock, survivors = dvv.write(clock, siblings, actor, context)
    new = DottedValue(dot, value, timestamp, expire_at_ms)
    if policy is ConflictPolicy.LWW:
        return Record(new_clock, (pick_winner((*siblings, new)),))
    survivors.append(new)
    if len(survivors) > MAX_SIBLINGS and len(survivors) > len(siblings):
        raise LimitError(
            f"the key holds {len(siblings)} siblings and this write would keep them all, over "
            f"MAX_SIBLINGS={MAX_SIBLINGS}: write with the context of a read (RINGKV.GETV, GET /versions) "
            "to resolve them")
    return Record(new_clock, tuple(dvv.in_dot_order(survivors)))


def overwrite(
    stored: Record | None,
    *,
    actor: Actor,
    value: bytes | None,
    timestamp: int,
    expire_at_ms: int = 0,
) -> Record:
    """The record after `actor` overwrites everything it stores: exactly
    `apply_write(stored, context=stored.clock, policy=SIBLINGS, ...)`, without the general
    machinery. This is a plain Redis SET on the coordinating replica, the hottest write there is.
    """
    if stored is None:
        return Record({actor: 1}, (DottedValue(Dot(actor, 1), value, timestamp, expire_at_ms),))
    clock = stored.clock
    n = clock.get(actor, 0) + 1
    if actor in clock:
        if n > dvv.MAX_COUNTER:
            dvv.next_dot(actor, clock, {})  # raises the LimitError naming the bound
        clock = dict(clock)
        clock[actor] = n
    else:
        clock = dict(sorted((*clock.items(), (actor, n))))  # canonical: actors in byte order
        dvv.check_actors(clock)
    # Every stored sibling is covered by the stored clock, so the context replaces them all.
    return Record(clock, (DottedValue(Dot(actor, n), value, timestamp, expire_at_ms),))


def write_at(
    stored: Record | None,
    *,
    actor: Actor,
    value: bytes | None,
    timestamp: int,
    expire_at_ms: int = 0,
    policy: ConflictPolicy = ConflictPolicy.SIBLINGS,
) -> Record | None:
    """The record after `actor` overwrites `stored` with a value stamped `timestamp` (an atomic
    batch's, docs/atomic-batches.md), or None when `stored` holds a sibling, tombstones
    included, stamped at or after it: a write made later than the batch wins, and applying
    the same batch twice writes once (the second application finds its own timestamp).

    The written record is a plain overwrite's (context: the stored clock, a dot of `actor`)
    with the sibling's timestamp exactly `timestamp`.
    """
    if stored is not None:
        for s in stored.siblings:
            if s.timestamp >= timestamp:
                return None
        if policy is ConflictPolicy.SIBLINGS:
            return overwrite(stored, actor=actor, value=value, timestamp=timestamp, expire_at_ms=expire_at_ms)
        return apply_write(stored, actor=actor, context=stored.clock, value=value, timestamp=timestamp,
                           expire_at_ms=expire_at_ms, policy=policy)
    return overwrite(None, actor=actor, value=value, timestamp=timestamp, expire_at_ms=expire_at_ms)


def merge(a: Record, b: Record, policy: ConflictPolicy = ConflictPolicy.SIBLINGS) -> Record:
    """Fold two replicas' records of one key together: commutative, associative, idempotent.

    Under `siblings` this is the dotted-version-vector sync (dvv.merge); under `lww` the
    winner of both records' siblings, whatever their causality. The result is not checked
    against the bounds (a read may merge what it never stores); `check_storable` is, before a
    merge is stored.
    """
    if a == b:
        # Read repair and anti-entropy mostly compare equal copies.
        return a
    if policy is ConflictPolicy.LWW:
        return Record(dvv.join(a.clock, b.clock), (pick_winner((*a.siblings, *b.siblings)),))
    clock, siblings = dvv.merge(a.clock, a.siblings, b.clock, b.siblings)
    return Record(clock, tuple(siblings))


def check_storable(record: Record) -> None:
    """LimitError unless `record` is within the bounds `decode_record` checks: what a replica
    stores must decode again. Counters need no check here: merges take maxima of decoded ones."""
    dvv.check_actors(record.clock)
    if len(record.siblings) > MAX_RECORD_SIBLINGS:
        raise LimitError(f"a record of {len(record.siblings)} siblings is over MAX_RECORD_SIBLINGS="
                         f"{MAX_RECORD_SIBLINGS}")


# --- encoding -------------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)
_VERSION_BYTE = bytes([FORMAT_VERSION])

# Hot path of every GET and SET. Measured on the 2-core dev box (Python 3.11.7, msgspec 0.22):
# encode + decode of a record with one sibling and a 100-byte value (~140 bytes stored) takes
# about 0.8-1.0 us: encode 0.2 us, decode 0.6-0.7 us of which ~0.2 us is the invariant checks.
# Reproduce: PYTHONPATH=src python -m timeit
#   -s "from ringkv.versioning.record import Record, DottedValue, encode_record, decode_record"
#   -s "from ringkv.versioning.dvv import Dot"
#   -s "r = Record({b'n1': 1}, (DottedValue(Dot(b'n1', 1), b'x' * 100, 1 << 60),))"
#   "decode_record(encode_record(r))"


def encode_record(record: Record) -> bytes:
    """The stored bytes of `record`: format version byte, then the record as msgpack.

    REQUIRES: `record` in canonical form (everything this module builds is).
    """
    return _VERSION_BYTE + _encoder.encode(record)


def decode_record(data: bytes | bytearray | memoryview) -> Record:
    """The record stored in `data`. Raises CorruptionError on a wrong format version, garbage,
    truncation, trailing bytes, a record over its bounds (a counter over dvv.MAX_COUNTER, more
    than MAX_CLOCK_ACTORS actors or MAX_RECORD_SIBLINGS siblings), or one that breaks its
    invariants; and nothing else, whatever the bytes (records arrive from peers too)."""
    if len(data) == 0:
        raise CorruptionError("record is empty")
    if data[0] != FORMAT_VERSION:
        raise CorruptionError(
            f"record has format version {data[0]}, this build reads version {FORMAT_VERSION}"
        )
    # Slicing bytes copies; under 4 KiB the copy is cheaper than a memoryview (~0.15 us on a
    # 144-byte record), above it the view saves copying the value.
    body = data[1:] if len(data) <= 4096 else memoryview(data)[1:]
    try:
        record = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"record does not decode: {exc}") from None
    if not record.siblings:
        raise CorruptionError("record has no siblings")
    clock = record.clock
    for s in record.siblings:
        if clock.get(s.dot.actor, 0) < s.dot.counter:
            raise CorruptionError(f"record's clock does not cover the dot of a sibling: {s.dot}")
    return record
