"""Dotted version vectors with per-value dots: which stored values a write replaces.

An object's causal state is a version vector (`clock`, actor -> counter) that covers every
write the object has seen, plus siblings, each carrying the dot (actor, counter) of the write
that made it. This is the scheme Riak 2.0 adopted (`dvv_enabled`) to end sibling explosion: a
write replaces exactly the siblings its causal context saw, nothing more, nothing less.

The functions here are generic over the sibling type: anything with a `.dot` attribute (the
stored `DottedValue` of record.py, or a test's model). They never mutate their arguments; treat
every clock as immutable. Canonical form, which Merkle hashing of encoded records relies on:
every clock returned has its actors in byte order and no zero entries; every sibling list is in
dot order. A dot names exactly one write (actor ids carry an epoch so a node that lost its data
never reissues a dot), so two siblings with the same dot are the same value.

Contexts handed to clients are opaque bytes; their layout is in docs/formats/record.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Annotated, Protocol, TypeVar

import msgspec

from ringkv.errors import InvalidContextError

Actor = bytes
VersionVector = dict[Actor, int]
"""actor -> highest counter seen. A missing actor means 0. Treated as immutable."""

# Node id + data-directory epoch fits easily; a bound keeps hostile contexts small.
MAX_ACTOR_BYTES = 255
MAX_CONTEXT_BYTES = 64 * 1024
CONTEXT_FORMAT_VERSION = 1

_ActorField = Annotated[bytes, msgspec.Meta(max_length=MAX_ACTOR_BYTES)]
_CounterField = Annotated[int, msgspec.Meta(ge=1)]
ClockField = dict[_ActorField, _CounterField]
"""The msgspec type of a stored or transmitted clock: decoding checks bounds in C."""


class Dot(msgspec.Struct, frozen=True, order=True, array_like=True, gc=False):
    """The identity of one write: the actor that coordinated it and that actor's counter.

    Ordered by (actor bytes, counter); hashable. gc=False: a Dot holds no references.
    """

    actor: _ActorField
    counter: _CounterField


class Dotted(Protocol):
    @property
    def dot(self) -> Dot: ...


S = TypeVar("S", bound=Dotted)
_by_dot = attrgetter("dot")


# --- version vector relations ---------------------------------------------------------------


def covers(clock: Mapping[Actor, int], dot: Dot) -> bool:
    """Whether `clock` has seen the write named by `dot`."""
    return clock.get(dot.actor, 0) >= dot.counter


def descends(a: Mapping[Actor, int], b: Mapping[Actor, int]) -> bool:
    """Whether `a` has seen everything `b` has (a >= b pointwise). Every clock descends {}."""
    return all(a.get(actor, 0) >= counter for actor, counter in b.items())


def dominates(a: Mapping[Actor, int], b: Mapping[Actor, int]) -> bool:
    """Whether `a` has seen everything `b` has and more (a > b)."""
    return descends(a, b) and not descends(b, a)


def concurrent(a: Mapping[Actor, int], b: Mapping[Actor, int]) -> bool:
    """Whether each of `a` and `b` has seen something the other has not."""
    return not descends(a, b) and not descends(b, a)


def equal(a: Mapping[Actor, int], b: Mapping[Actor, int]) -> bool:
    """Whether `a` and `b` have seen the same writes (zero entries count as missing)."""
    return descends(a, b) and descends(b, a)


def join(a: Mapping[Actor, int], b: Mapping[Actor, int]) -> VersionVector:
    """The pointwise maximum: a clock that has seen what either has. Canonical form."""
    return _canonical(_max_into({actor: c for actor, c in a.items() if c > 0}, b))


def _max_into(out: VersionVector, b: Mapping[Actor, int]) -> VersionVector:
    for actor, counter in b.items():
        if counter > out.get(actor, 0):
            out[actor] = counter
    return out


def _canonical(clock: VersionVector) -> VersionVector:
    # Actor order makes the encoded bytes a function of the clock's contents alone, so two
    # replicas holding the same record hash it the same in their Merkle trees.
    if len(clock) > 1:
        return dict(sorted(clock.items()))
    return clock


# --- writes and merges ----------------------------------------------------------------------


def next_dot(actor: Actor, clock: Mapping[Actor, int], context: Mapping[Actor, int]) -> Dot:
    """The dot of a new write by `actor` to an object with `clock`, from a client that read
    `context`: one past the highest counter of `actor` either has seen."""
    return Dot(actor, max(clock.get(actor, 0), context.get(actor, 0)) + 1)


def write(
    clock: Mapping[Actor, int],
    siblings: Sequence[S],
    actor: Actor,
    context: Mapping[Actor, int] | None,
) -> tuple[Dot, VersionVector, list[S]]:
    """Plan a write by `actor` carrying `context` (None or {} for a blind write).

    Returns the new value's dot, the object's new clock, and the siblings that stay: those the
    context did not see (they are concurrent with the write). The caller adds its new value,
    tagged with the dot, to the survivors (in dot order: see `in_dot_order`).
    """
    ctx = context or {}
    dot = next_dot(actor, clock, ctx)
    new_clock = _max_into({a: c for a, c in clock.items() if c > 0}, ctx)
    new_clock[actor] = dot.counter
    survivors = [s for s in siblings if not covers(ctx, s.dot)]
    return dot, _canonical(new_clock), survivors


def merge(
    clock_x: Mapping[Actor, int],
    siblings_x: Sequence[S],
    clock_y: Mapping[Actor, int],
    siblings_y: Sequence[S],
) -> tuple[VersionVector, list[S]]:
    """Sync two replicas' copies of an object; commutative, associative and idempotent.

    A sibling survives unless the other side has seen its dot (its clock covers it) and no
    longer holds it, which means a write there replaced it. Per dot this is the join of
    unseen < live < replaced, which is why the three laws hold.
    """
    dots_x = {s.dot for s in siblings_x}
    dots_y = {s.dot for s in siblings_y}
    kept = [s for s in siblings_x if s.dot in dots_y or not covers(clock_y, s.dot)]
    kept.extend(s for s in siblings_y if s.dot not in dots_x and not covers(clock_x, s.dot))
    kept.sort(key=_by_dot)
    return join(clock_x, clock_y), kept


def in_dot_order(siblings: list[S]) -> list[S]:
    """Sort `siblings` in place into canonical (dot) order and return the list."""
    if len(siblings) > 1:
        siblings.sort(key=_by_dot)
    return siblings


# --- opaque contexts for clients ------------------------------------------------------------

_context_encoder = msgspec.msgpack.Encoder()
_context_decoder = msgspec.msgpack.Decoder(ClockField)
_CONTEXT_VERSION_BYTE = bytes([CONTEXT_FORMAT_VERSION])


def encode_context(clock: Mapping[Actor, int]) -> bytes:
    """The opaque bytes a read hands a client: format version, then the clock as msgpack."""
    return _CONTEXT_VERSION_BYTE + _context_encoder.encode(join({}, clock))


def decode_context(data: bytes | bytearray | memoryview) -> VersionVector:
    """The clock in a context a client sent back. Raises InvalidContextError on anything
    `encode_context` did not produce (garbage, truncation, oversize, unknown version)."""
    if len(data) > MAX_CONTEXT_BYTES:
        raise InvalidContextError(
            f"causal context is {len(data)} bytes, over the {MAX_CONTEXT_BYTES}-byte limit"
        )
    if len(data) == 0:
        raise InvalidContextError("causal context is empty: pass the context a read returned")
    if data[0] != CONTEXT_FORMAT_VERSION:
        raise InvalidContextError(
            f"causal context has format version {data[0]}, expected {CONTEXT_FORMAT_VERSION}: "
            "pass the context a read returned, unchanged"
        )
    try:
        clock = _context_decoder.decode(memoryview(data)[1:])
    except msgspec.DecodeError as exc:
        raise InvalidContextError(
            f"causal context is not valid ({exc}): pass the context a read returned, unchanged"
        ) from None
    return _canonical(clock)
