"""Collections stored one record per element, and the rules that make replicas converge
without a consensus round (docs/data-types.md, "One record per element: the design").

Pure functions over versioned records (versioning/record.py); the node reads and writes the
records, these decide what they mean and what to write. A collection is:

- its **meta record**, under the collection's key. Its siblings' values:
  - `Typed(meta_kind(kind), encode_clock(cleared))`: a live meta. The collection exists.
  - `Typed(KIND_CLEARED, encode_clock(cleared))`: a clear marker (DEL, or the last element
    removed). The collection is absent.
  - None (a tombstone), a string, a collection stored whole: as for any key.
- an **element record** per member or field, under its element key (service/elements.py).
  Its live siblings' values are `encode_element(kind, birth, value)`; a removed element is a
  tombstone.

**Births and clears.** A write that adds elements first writes each element, stamped with its
birth: the dot the executing replica's next write of the meta record will have (its counter
in the meta record's clock plus one), and then writes the meta record, which takes exactly
that dot. So every birth is a dot of the meta record's clock, and a clock that covers it has
seen the write that made the element. A clear marker carries `cleared`, a version vector: an
element whose birth it covers is gone. Deleting a collection of any size is one write: a
marker whose `cleared` is the meta record's clock (every element the deleting replica could
know of). A collection created again later starts from that `cleared`, so old elements stay
gone, and elements added since are not.

**What a replica sees** (`meta_state`, `visible`):
- The meta record's winner is its newest sibling (timestamp, then dot), as for any key, but
  when that is a tombstone, a clear marker or has expired and a live meta sibling exists, the
  newest live meta wins: an add concurrent with a delete keeps the collection (add wins).
- The collection's `cleared` is the join of every meta and marker sibling's `cleared`; when
  the collection is absent, a new one starts from the join of that and the record's clock.
- An element is present when a live sibling of its record was born outside `cleared` (and is
  of the collection's kind); of several, the newest is the value (a hash field's concurrent
  writes: the winner rule of plain keys).

Concurrent SADD and SREM of one member: the SREM's tombstone replaces the siblings its replica
held; a concurrent add is a sibling it did not see, and stays (an add-wins observed-remove
set). Concurrent DEL and SADD: the DEL's marker covers the births it saw; the SADD's element
was born outside them, and its meta sibling keeps the collection.

**Emptying.** When a write removes the last element a replica can see, it writes a clear
marker so that the key is absent, as in Redis. This is safe only when the replica has seen
every element whose birth its meta record's clock holds: an element of a concurrent add the
replica saw the meta write of, but not the element, would be cleared. The write order (element
at W before the meta record) and the read (of the elements at R with R + W > N, replicas of
the key's home only: `strict`) make that hold; a node that cannot read enough replicas leaves
the empty collection in place instead (the next write that empties it, or a DEL, removes it).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from ringkv.errors import CorruptionError
from ringkv.service.datatypes.base import KIND_HASH, KIND_LIST, KIND_SET, KIND_ZSET
from ringkv.versioning.dvv import Dot, VersionVector, join
from ringkv.versioning.record import (
    KIND_CLEARED,
    META_OFFSET,
    DottedValue,
    Record,
    Typed,
    is_cleared,
    overwrite,
    pick_winner,
)

ELEMENT_KINDS = (KIND_HASH, KIND_LIST, KIND_SET, KIND_ZSET)


def meta_kind(kind: int) -> int:
    return META_OFFSET + kind


def is_meta(value: object) -> bool:
    """A live meta's value (not a clear marker)."""
    return type(value) is Typed and META_OFFSET < value.kind < KIND_CLEARED


_clock_enc = msgspec.msgpack.Encoder()
_clock_dec = msgspec.msgpack.Decoder(list[tuple[bytes, int]])
_element_dec = msgspec.msgpack.Decoder(tuple[int, list[tuple[bytes, int]], bytes])


def encode_clock(clock: Mapping[bytes, int]) -> bytes:
    return _clock_enc.encode(sorted(clock.items()))


def decode_clock(data: bytes) -> VersionVector:
    try:
        pairs = _clock_dec.decode(data)
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"a collection's cleared clock does not decode: {exc}") from None
    if any(counter < 1 for _, counter in pairs):
        raise CorruptionError("a collection's cleared clock holds a counter below 1")
    return dict(pairs)


def encode_element(kind: int, births: list[Dot], value: bytes = b"") -> bytes:
    """An element sibling's stored value: its collection's kind, its births (see
    `write_element`), and its value (a hash field's value, a sorted-set member's score as
    `encode_score` writes it; empty for a set member)."""
    return _clock_enc.encode((kind, sorted((b.actor, b.counter) for b in births), value))


def decode_element(data: bytes) -> tuple[int, list[Dot], bytes]:
    try:
        kind, births, value = _element_dec.decode(data)
        return kind, [Dot(actor, counter) for actor, counter in births], value
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptionError(f"a collection's element does not decode: {exc}") from None


_SCORE = struct.Struct(">d")


def encode_score(score: float) -> bytes:
    """A sorted-set member's element value: its score, an IEEE 754 double, big-endian."""
    return _SCORE.pack(score)


def decode_score(data: bytes) -> float:
    if len(data) != 8:
        raise CorruptionError(f"a sorted-set member's score is {len(data)} bytes, not 8")
    return _SCORE.unpack(data)[0]


def _covered(clock: Mapping[bytes, int], dot: Dot) -> bool:
    return clock.get(dot.actor, 0) >= dot.counter


# ------------------------------------------------------------------------ the meta record


@dataclass(frozen=True, slots=True)
class MetaState:
    """What a collection's meta record says at a moment.

    `kind`: the collection's KIND_* when it exists, 0 when the key is absent, -1 when it holds
    something else (`other`: that winning sibling, a string or a collection stored whole).
    `cleared`: the births that are gone (for a key that holds no collection: where a new one
    starts, every birth the record has seen, since whatever replaced them saw them).
    `expire_at_ms`: the live meta's expiry (0: none)."""

    kind: int
    cleared: VersionVector
    expire_at_ms: int = 0
    other: DottedValue | None = None

    @property
    def exists(self) -> bool:
        return self.kind > 0


def meta_state(record: Record | None, now_ms: int) -> MetaState:
    if record is None:
        return MetaState(0, {})
    cleared: VersionVector = {}
    for s in record.siblings:
        if is_meta(s.value) or is_cleared(s.value):
            cleared = join(cleared, decode_clock(s.value.data))
    best = record.winner(now_ms)  # the rule above is the record's own (versioning/record.py)
    if best is None:
        return MetaState(0, join(cleared, record.clock))
    if is_meta(best.value):
        return MetaState(best.value.kind - META_OFFSET, cleared, best.expire_at_ms)
    return MetaState(-1, join(cleared, record.clock), other=best)


# ------------------------------------------------------------------------ elements


def visible(record: Record | None, state: MetaState, now_ms: int) -> DottedValue | None:
    """The element's present sibling in a collection in `state` (None: not a member)."""
    present = present_siblings(record, state, now_ms)
    return pick_winner(present) if present else None


def present_siblings(record: Record | None, state: MetaState, now_ms: int) -> list[DottedValue]:
    """Every present sibling of an element's record: concurrent writes of one hash field that no
    write has replaced (`visible` picks the winner among them)."""
    if record is None or not state.exists:
        return []
    return [s for s in record.siblings if s.is_live(now_ms) and _born_in(s, state)]


def _born_in(sibling: DottedValue, state: MetaState) -> bool:
    kind, births, _ = decode_element(sibling.value)
    return kind == state.kind and any(not _covered(state.cleared, b) for b in births)


def element_value(sibling: DottedValue) -> bytes:
    return decode_element(sibling.value)[2]


def births(records: Iterable[Record | None]) -> VersionVector:
    """The join of the births of every live sibling of `records` (what a replica saw born)."""
    seen: VersionVector = {}
    for record in records:
        if record is None:
            continue
        for s in record.siblings:
            if s.value is not None:
                for birth in decode_element(s.value)[1]:
                    if seen.get(birth.actor, 0) < birth.counter:
                        seen[birth.actor] = birth.counter
    return seen


# ------------------------------------------------------------------------ writes


def next_birth(meta: Record | None, actor: bytes) -> Dot:
    """The dot `actor`'s next write of the meta record will have (see `write_meta`)."""
    return Dot(actor, (meta.clock.get(actor, 0) if meta is not None else 0) + 1)


def write_element(stored: Record | None, state: MetaState, meta: Record | None, *, actor: bytes, timestamp: int,
                  kind: int, birth: Dot, value: bytes = b"") -> Record:
    """The element record after `actor` adds (or sets) it, born at `birth`: it replaces every
    sibling it holds. A replaced sibling may be another replica's add whose meta write has not
    reached this one (its birth is neither cleared nor in `meta`'s clock): its births go on in
    the new sibling, else a DEL that saw this write but not that one would clear both. Births
    the meta record's clock holds need not: a replica that sees this write's meta sees them."""
    births = carried_births(stored, state, meta.clock if meta is not None else {})
    births.add(birth)
    return overwrite(stored, actor=actor, value=encode_element(kind, list(births), value), timestamp=timestamp)


def carried_births(stored: Record | None, state: MetaState, known: Mapping[bytes, int]) -> set[Dot]:
    """The births of `stored`'s live siblings that neither `state.cleared` nor `known` covers:
    what a write replacing them must carry on (`write_element`). With `known` empty, every
    birth still in the collection: an update that keeps the element's birth (HINCRBY of a
    present field, node/elements.py) carries them all, so it is removed by exactly the
    removes that would have removed the element."""
    births: set[Dot] = set()
    if stored is not None:
        for s in stored.siblings:
            if s.value is not None:
                births.update(b for b in decode_element(s.value)[1]
                              if not _covered(state.cleared, b) and not _covered(known, b))
    return births


def remove_element(stored: Record | None, *, actor: bytes, timestamp: int) -> Record:
    """The element record after `actor` removes it: a tombstone over what it holds."""
    return overwrite(stored, actor=actor, value=None, timestamp=timestamp)


def write_meta(stored: Record | None, state: MetaState, *, actor: bytes, timestamp: int, kind: int) -> Record:
    """The meta record after `actor` wrote elements born at `next_birth(stored, actor)`: a live
    meta of `kind` that keeps the collection's `cleared` and expiry (a write keeps the TTL, as
    in Redis). Its dot is that birth (overwrite takes the actor's next counter)."""
    return overwrite(stored, actor=actor, value=Typed(meta_kind(kind), encode_clock(state.cleared)),
                     timestamp=timestamp, expire_at_ms=state.expire_at_ms if state.exists else 0)


def clear_marker(cleared: Mapping[bytes, int]) -> Typed:
    """A clear marker's value: every birth `cleared` covers is gone. A DEL's is the meta
    record's clock (node/commands.Delete)."""
    return Typed(KIND_CLEARED, encode_clock(cleared))


def clear_meta(stored: Record | None, state: MetaState, *, actor: bytes, timestamp: int, whole: bool) -> Record:
    """The meta record after `actor` clears the collection: DEL (`whole`: every birth the
    record's clock holds is gone) or the removal of its last element (only what was cleared
    before stays cleared: the elements removed are tombstones already)."""
    cleared = join(state.cleared, stored.clock) if whole and stored is not None else state.cleared
    return overwrite(stored, actor=actor, value=clear_marker(cleared), timestamp=timestamp)
