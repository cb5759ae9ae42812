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

Contexts handed to clients are opaque bytes; their layout is in docs/formats/record.md. A client
may hand back only what a read gave out: `check_known` refuses a context naming versions the
key's clock never had (docs/security.md, "Untrusted versions"). Every clock is bounded:
counters at most MAX_COUNTER, at most MAX_CLOCK_ACTORS actors, checked wherever one is decoded
and wherever a write would grow one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Annotated, Protocol, TypeVar

import msgspec

from ringkv.errors import InvalidContextError, LimitError

Actor = bytes
VersionVector = dict[Actor, int]
"""actor -> highest counter seen. A missing actor means 0. Treated as immutable."""

# Node id + data-directory epoch fits easily; a bound keeps hostile contexts small.
MAX_ACTOR_BYTES = 255
MAX_CONTEXT_BYTES = 64 * 1024
CONTEXT_FORMAT_VERSION = 1
# The highest counter a clock or dot may hold (2^53 - 1, writes per actor per key). A counter
# grows by one per write its actor coordinates, so no key reaches it (at a million writes a
# second it takes 285 years), and it stays far from 2^64, where msgpack can no longer encode
# counter + 1, and exact in JSON numbers. Legacy consensus dots were ballot counters, wall-clock
# microseconds (about 1.8e15 in 2026): under it too.
MAX_COUNTER = (1 << 53) - 1
# The most actors one clock names. A key's actors are the replica incarnations (node id +
# data-directory epoch) that ever coordinated a write of it; 128 is many times what
# membership changes make, and 128 actors of MAX_ACTOR_BYTES still encode in 34 KiB, inside
# MAX_CONTEXT_BYTES, so every clock a key can hold is a context its reader can send back.
MAX_CLOCK_ACTORS = 128
# The refusal of a context that names what the key never had (an invented actor, a counter
# above the stored one): shown to clients after "invalid causal context: ".
UNKNOWN_VERSIONS = "it names versions this key never had; read the key again"

_ActorField = Annotated[bytes, msgspec.Meta(max_length=MAX_ACTOR_BYTES)]
_CounterField = Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNTER)]
ClockField = Annotated[dict[_ActorField, _CounterField], msgspec.Meta(max_length=MAX_CLOCK_ACTORS)]
"""The msgspec type of a stored or transmitted clock: decoding checks the bounds in C."""


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
    `context`: one past the highest counter of `actor` either has seen. LimitError when that
    would pass MAX_COUNTER (only a clock no write of ours made can be there)."""
    counter = max(clock.get(actor, 0), context.get(actor, 0)) + 1
    if counter > MAX_COUNTER:
        raise LimitError(f"the key's version counter of actor {actor.decode('utf-8', 'replace')} is at "
                         f"MAX_COUNTER={MAX_COUNTER}: no further write by it can be versioned")
    return Dot(actor, counter)


def check_actors(clock: Mapping[Actor, int]) -> None:
    """LimitError when `clock` names more than MAX_CLOCK_ACTORS actors (a record holding it
    could not be decoded)."""
    if len(clock) > MAX_CLOCK_ACTORS:
        raise LimitError(f"a clock of {len(clock)} actors is over MAX_CLOCK_ACTORS={MAX_CLOCK_ACTORS}")


def check_known(clock: Mapping[Actor, int], context: Mapping[Actor, int]) -> None:
    """Refuse a client's `context` unless the key's `clock` has seen all of it: every actor
    it names is in `clock` with at least its counter (InvalidContextError, UNKNOWN_VERSIONS).

    A context is what a read of the key gave out, so it cannot name more than the key has;
    one that does was made up, and taking it in would let a client lift counters to the
    limit (locking the key) or add actors without bound. REQUIRES: `context` decoded (no zero
    entries), so "descends" is exactly the rule.
    """
    if not descends(clock, context):
        raise InvalidContextError(UNKNOWN_VERSIONS)


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
    check_actors(new_clock)
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
_unbounded_clock_decoder = msgspec.msgpack.Decoder(dict[bytes, int])


def _is_clock(body: memoryview) -> bool:
    """Whether `body` is a well-formed clock (actors of at most MAX_ACTOR_BYTES, counters of
    at least 1) past only the bounds of what a key can hold: MAX_COUNTER, MAX_CLOCK_ACTORS."""
    try:
        clock = _unbounded_clock_decoder.decode(body)
    except msgspec.DecodeError:
        return False
    return all(len(a) <= MAX_ACTOR_BYTES and c >= 1 for a, c in clock.items())

_CONTEXT_VERSION_BYTE = bytes([CONTEXT_FORMAT_VERSION])


def encode_context(clock: Mapping[Actor, int]) -> bytes:
    """The opaque bytes a read hands a client: format version, then the clock as msgpack."""
    return _CONTEXT_VERSION_BYTE + _context_encoder.encode(join({}, clock))


def decode_context(data: bytes | bytearray | memoryview) -> VersionVector:
    """The clock in a context a client sent back. Raises InvalidContextError on anything
    `encode_context` did not produce (garbage, truncation, oversize, unknown version, a
    counter over MAX_COUNTER, more than MAX_CLOCK_ACTORS actors), and nothing else. Whether
    the key ever had these versions is `check_known`'s question, asked where the write runs."""
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
        if isinstance(exc, msgspec.ValidationError) and _is_clock(memoryview(data)[1:]):
            # A well-formed clock past a bound (a counter near 2^64, an invented crowd of
            # actors): no key ever had such versions.
            raise InvalidContextError(
                f"it names versions this key never had (counters are 1..{MAX_COUNTER}, at most "
                f"{MAX_CLOCK_ACTORS} actors of at most {MAX_ACTOR_BYTES} bytes); read the key again"
            ) from None
        raise InvalidContextError(
            f"causal context is not valid ({exc}): pass the context a read returned, unchanged"
        ) from None
    return _canonical(clock)
