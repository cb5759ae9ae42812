"""Key commands as data: what a write does to a key's current value, decided without IO.

Every write command of the data path (SET with its options, INCRBY, APPEND, EXPIRE, CAS, ...)
is a tagged msgspec Struct. `apply(winner, now_ms, clock)` takes the key's current winning value
(None when the key is missing, expired or deleted) and the record's clock (its version; None
without a record) and returns an `Effect`: whether to write, the new value (None: a tombstone)
and expiry, the causal context the write replaces, and the result the client gets (`NEW_VERSION`
where the result is the version the write makes, `NEW_TIMESTAMP` where it is the timestamp of the
key's winning value after it: only the executor knows those). The same function runs wherever
the command runs: on a single node, on the
replica a command was forwarded to (the struct itself travels in `Forward`), and inside a
consensus round. Replies travel as msgpack, which has no tuple: `decode_result` restores the
shape a command's caller expects.

`reads_current` tells whether the result depends on the current value (a read-modify-write,
serialized per key) or is a blind overwrite that replaces whatever it finds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from ringkv.errors import CommandError
from ringkv.service import longdouble
from ringkv.service.datatypes import COMMANDS as TYPE_COMMANDS
from ringkv.service.datatypes import codec
from ringkv.service.datatypes.base import KIND_STRING, Ctx, Entry, WrongTypeError
from ringkv.service.datatypes.convergent import clear_marker, is_meta
from ringkv.service.numbers import INT64_MAX, INT64_MIN, format_float, parse_float, parse_int
from ringkv.service.values import value_digest
from ringkv.versioning.dvv import check_known, decode_context, encode_context
from ringkv.versioning.record import META_OFFSET, DottedValue, Record, Typed, pick_winner

INCR_OVERFLOW = "increment or decrement would overflow"

# Effect.result, for a command that answers the version its write makes (the executor puts the
# new record's encoded clock in its place) or the timestamp of the key's winning value after it.
NEW_VERSION = "new-version"
NEW_TIMESTAMP = "new-timestamp"


def fill_result(result: Any, record: Record) -> Any:
    """`result` with NEW_VERSION and NEW_TIMESTAMP (alone or in a tuple) replaced by what the
    new `record` says."""
    if result == NEW_VERSION:
        return encode_context(record.clock)
    if type(result) is tuple and (NEW_VERSION in result or NEW_TIMESTAMP in result):
        return tuple(
            encode_context(record.clock) if r == NEW_VERSION
            else pick_winner(record.siblings).timestamp if r == NEW_TIMESTAMP and record.siblings
            else 0 if r == NEW_TIMESTAMP else r
            for r in result)
    return result


# Effect.context: replace what is stored (a plain overwrite), replace nothing (a blind,
# sibling-making write), or replace what an explicit context saw (bytes from the client).
STORED = "stored"
BLIND = "blind"


@dataclass(slots=True, frozen=True)
class Effect:
    """What a command does to its key: `write` or not, and what it answers."""

    write: bool
    value: bytes | None = None  # None with write: a tombstone
    expire_at_ms: int = 0
    context: bytes | str = STORED  # STORED, BLIND, or an encoded context
    result: Any = None


def _unchanged(result: Any) -> Effect:
    return Effect(False, result=result)


def string_value(winner: DottedValue | None) -> bytes | None:
    """The string a live winner holds (None: no live value); WRONGTYPE when it holds a
    collection. Every command that reads a value as a string takes it through here."""
    if winner is None:
        return None
    value = winner.value
    if type(value) is Typed:
        raise WrongTypeError()
    return value


class _NotLoaded:  # private, shared with node/elements.py
    """The value of a collection stored per element where its members were not loaded: enough
    for a command of another type (WRONGTYPE), and loud for anything else."""

    def _refuse(self, *_: Any) -> Any:
        raise CommandError("a collection stored one record per element reached a command that reads it whole; "
                           "this is a bug (node/elements.py runs such commands)")

    __iter__ = __len__ = __contains__ = __bool__ = _refuse


def entry_of(winner: DottedValue | None) -> Entry | None:
    """What a data-type command sees of a key whose winner is `winner` (None: missing). A
    collection stored per element (node/elements.py loads those) shows its type only."""
    if winner is None:
        return None
    value = winner.value
    if type(value) is Typed:
        if is_meta(value):
            return Entry(value.kind - META_OFFSET, _NotLoaded(), winner.expire_at_ms)
        return Entry(value.kind, codec.decode(value.kind, value.data), winner.expire_at_ms)
    return Entry(KIND_STRING, value, winner.expire_at_ms)


def stored_value(entry: Entry) -> bytes | Typed:
    """The record value that stores `entry` (a non-empty one)."""
    if entry.kind == KIND_STRING:
        return entry.value
    return Typed(entry.kind, codec.encode(entry.kind, entry.value))


def entry_effect(before: Entry | None, after: Entry | None, result: Any) -> Effect:
    """The write that takes a key from `before` to `after` (None or an empty collection: the key
    is deleted), answering `result`."""
    if after is None or after.is_empty():
        return _unchanged(result) if before is None else Effect(True, None, result=result)
    return Effect(True, stored_value(after), after.expire_at_ms, result=result)


class Command(msgspec.Struct, tag=True, array_like=True, frozen=True):
    """A write command of one key."""

    reads_current: ClassVar[bool] = True

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:  # pragma: no cover - abstract
        raise NotImplementedError(type(self).__name__)

    def decode_result(self, raw: Any) -> Any:
        return raw

    def group_keys(self) -> list[bytes] | None:
        """The keys a command of several keys names (they share one hash tag's consensus
        register, which applies it to all of them at once: node/consensus.apply_group_command);
        None for a command of one key."""
        return None


class Put(Command, tag="Put", frozen=True):
    """A plain SET: overwrite whatever is there, no expiry."""

    value: bytes
    reads_current: ClassVar[bool] = False

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        return Effect(True, self.value, result=None)


class Set(Command, tag="Set", frozen=True):
    """SET with options: (applied, old value when `return_old`). `condition`: None; "nx" (only
    if missing); "xx" (only if present); "ifeq"/"ifne" (only if the current value is / is not
    `match`; a missing key is not created by ifeq, is by ifne); "ifdeq"/"ifdne" (the same with
    `match` the value's digest, 16 hex digits of XXH3, as Redis 8.4's DIGEST). `keep_ttl` keeps
    the current expiry."""

    value: bytes
    expire_at_ms: int = 0
    keep_ttl: bool = False
    condition: str | None = None
    return_old: bool = False
    match: bytes | None = None

    @property
    def reads_current(self) -> bool:  # type: ignore[override]
        return bool(self.condition or self.return_old or self.keep_ttl)

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        # NX, XX and a plain SET look only at existence and overwrite any type; GET and the
        # value conditions read the value as a string (WRONGTYPE for a collection).
        if self.return_old or (self.condition is not None and self.condition.startswith("if")):
            old = string_value(winner)
        else:
            old = None if winner is None else b""
        if not condition_holds(self.condition, self.match, old):
            return _unchanged((False, old if self.return_old else None))
        expire = self.expire_at_ms
        if self.keep_ttl and winner is not None:
            expire = winner.expire_at_ms
        return Effect(True, self.value, expire, result=(True, old if self.return_old else None))

    def decode_result(self, raw: Any) -> Any:
        return tuple(raw)


def condition_holds(condition: str | None, match: bytes | None, old: bytes | None) -> bool:
    """SET's and DELEX's conditions on the current value `old` (None: the key is missing)."""
    if condition is None:
        return True
    if condition == "nx":
        return old is None
    if condition == "xx":
        return old is not None
    if condition == "ifeq":
        return old is not None and old == match
    if condition == "ifne":
        return old is None or old != match
    if condition == "ifdeq":
        return old is not None and value_digest(old) == (match or b"").lower()
    if condition == "ifdne":
        return old is None or value_digest(old) != (match or b"").lower()
    raise CommandError(f"unknown condition {condition!r}")


class DeleteIf(Command, tag="DeleteIf", frozen=True):
    """DELEX: delete the key if `condition` holds (None: if it exists); 1 when deleted."""

    condition: str | None = None
    match: bytes | None = None

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        if winner is None or not condition_holds(
                self.condition, self.match, winner.value if self.condition is None else string_value(winner)):
            return _unchanged(0)
        return Effect(True, None, result=1)


class CompareAndSet(Command, tag="CompareAndSet", frozen=True):
    """Write `value` (None: delete) only if the key's version is still `expected` (the causal
    context a read returned; None: the key has no live value). (True, the new version) when
    written, else (False, the current version, None when the key has no live value). An
    `expected` naming versions the key's clock never had is refused (InvalidContextError), as
    every client context is (dvv.check_known): it cannot be a version the key was at."""

    expected: bytes | None
    value: bytes | None
    expire_at_ms: int = 0

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        current = None if winner is None or clock is None else clock
        if self.expected is None:
            matches = winner is None
        else:
            expected = decode_context(self.expected)
            check_known(clock or {}, expected)
            matches = current is not None and expected == current
        if not matches:
            return _unchanged((False, None if current is None else encode_context(current)))
        return Effect(True, self.value, self.expire_at_ms, result=(True, NEW_VERSION))

    def decode_result(self, raw: Any) -> Any:
        return tuple(raw)


class Write(Command, tag="Write", frozen=True):
    """The HTTP API's PUT and DELETE: write `value` (None: delete) when `expect` holds, and
    answer (applied, created, the key's version after, the timestamp of its winning value
    after). `expect`: "any" (a plain overwrite, as SET; a delete of a missing key writes
    nothing), "missing" (the key has no live value), "context" (the key's version is exactly
    `context`, the causal context a read returned) or "number" (the key's version number is
    `number`: `version_number` of its context). `created`: the key had no live value before.
    When nothing is written, the version and timestamp are the key's current ones (None and 0
    without a record)."""

    value: bytes | None
    expire_at_ms: int = 0
    expect: str = "any"
    context: bytes | None = None
    number: int = 0

    @property
    def reads_current(self) -> bool:  # type: ignore[override]
        # An overwrite replaces whatever it finds; a delete answers whether there was a live
        # value, so it is serialized per key, as DEL is.
        return self.expect != "any" or self.value is None

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        live = winner is not None
        expect = self.expect
        if expect == "any":
            holds = live or self.value is not None
        elif expect == "missing":
            holds = not live
        elif expect == "context":
            expected = None if self.context is None else decode_context(self.context)
            if expected is not None:
                check_known(clock or {}, expected)  # as CompareAndSet's
            holds = live and clock is not None and expected == clock
        elif expect == "number":
            holds = live and clock is not None and sum(clock.values()) == self.number
        else:
            raise CommandError(f"unknown expectation {expect!r}")
        if not holds:
            return _unchanged((False, not live, None if clock is None else encode_context(clock),
                               winner.timestamp if winner is not None else 0))
        return Effect(True, self.value, self.expire_at_ms, result=(True, not live, NEW_VERSION, NEW_TIMESTAMP))

    def decode_result(self, raw: Any) -> Any:
        return tuple(raw)


def write_command(value: bytes | None, expire_at_ms: int, expected: Any,
                  check_value: Callable[[bytes | None], None]) -> Write:
    """`KeyValueService.write`'s command, its arguments checked before any hop (a bad
    context or value fails here)."""
    check_value(value)
    if isinstance(expected, bytes):
        if not expected:
            raise CommandError("the expected version is empty: pass the version a read returned")
        decode_context(expected)
        return Write(value, expire_at_ms, "context", expected)
    if isinstance(expected, int) and not isinstance(expected, bool):
        if expected < 0:
            raise CommandError(f"the expected version number is {expected}; version numbers are >= 0")
        # 0 is the version number of a key without a record: no live value.
        return Write(value, expire_at_ms, "number", number=expected) if expected else Write(value, expire_at_ms, "missing")
    if expected is None:
        return Write(value, expire_at_ms, "missing")
    return Write(value, expire_at_ms)


class PutVersioned(Command, tag="PutVersioned", frozen=True):
    """A sibling-aware write (RINGKV.PUTV / DELV): replaces exactly what `context` saw, or
    nothing when it is None (a blind write). Answers the new context (NEW_VERSION). The
    executor refuses a context naming versions its record never had (LocalStore.execute)."""

    value: bytes | None
    context: bytes | None
    expire_at_ms: int = 0
    reads_current: ClassVar[bool] = False

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        return Effect(True, self.value, self.expire_at_ms, context=self.context or BLIND, result=NEW_VERSION)


class Delete(Command, tag="Delete", frozen=True):
    """DEL of one key: 1 when it existed (and is now a tombstone), else 0. A collection stored
    one record per element gets a clear marker instead of a tombstone: every element born in
    the record's clock is gone (docs/formats/elements.md)."""

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        if winner is None:
            return _unchanged(0)
        if is_meta(winner.value):
            return Effect(True, clear_marker(clock or {}), result=1)
        return Effect(True, None, result=1)


class GetDel(Command, tag="GetDel", frozen=True):
    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        if winner is None:
            return _unchanged(None)
        return Effect(True, None, result=string_value(winner))


class IncrBy(Command, tag="IncrBy", frozen=True):
    """INCRBY: the new value; with `versioned`, (the new value, the version the write makes)."""

    delta: int
    versioned: bool = False

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        current = parse_int(string_value(winner)) if winner is not None else 0
        new = current + self.delta
        if not INT64_MIN <= new <= INT64_MAX:
            raise CommandError(INCR_OVERFLOW)
        return Effect(True, b"%d" % new, winner.expire_at_ms if winner else 0,
                      result=(new, NEW_VERSION) if self.versioned else new)

    def decode_result(self, raw: Any) -> Any:
        return tuple(raw) if self.versioned else raw


class IncrByFloat(Command, tag="IncrByFloat", frozen=True):
    """INCRBYFLOAT: `increment` is the client's text, added to the stored number in Redis's
    `long double` and printed as Redis prints it (service/longdouble.py), digit for digit.
    `delta` is what a node of an earlier build sends instead (a double), still applied as one."""

    delta: float = 0.0
    increment: bytes = b""

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        expire_at_ms = winner.expire_at_ms if winner else 0
        if not self.increment:
            current = parse_float(string_value(winner)) if winner is not None else 0.0
            new = current + self.delta
            if math.isnan(new) or math.isinf(new):
                raise CommandError(_NOT_FINITE)
            text = format_float(new)
            return Effect(True, text, expire_at_ms, result=text)
        stored = longdouble.parse(string_value(winner)) if winner is not None else 0
        by = longdouble.parse(self.increment)
        if stored is None or by is None:
            raise CommandError("value is not a valid float")
        if isinstance(stored, float) or isinstance(by, float):
            raise CommandError(_NOT_FINITE)  # an infinity read on either side: an infinite or NaN sum
        total = longdouble.add(stored, by)
        if isinstance(total, float):  # overflowed
            raise CommandError(_NOT_FINITE)
        text = longdouble.format_human(total)
        return Effect(True, text, expire_at_ms, result=text)


_NOT_FINITE = "increment would produce NaN or Infinity"


class Append(Command, tag="Append", frozen=True):
    value: bytes

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        new = (string_value(winner) if winner is not None else b"") + self.value
        return Effect(True, new, winner.expire_at_ms if winner else 0, result=len(new))


class ExpireAt(Command, tag="ExpireAt", frozen=True):
    """Set (or with 0, remove: PERSIST) the expiry; `condition` nx, xx, gt, lt. A time in the
    past deletes the key, as Redis does. Answers whether anything changed."""

    expire_at_ms: int
    condition: str | None = None

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        if winner is None:
            return _unchanged(False)
        cur = winner.expire_at_ms
        at = self.expire_at_ms
        c = self.condition
        if (
            (at == 0 and cur == 0)  # PERSIST of a key without expiry
            or (c == "nx" and cur)
            or (c == "xx" and not cur)
            or (c == "gt" and (not cur or at <= cur))
            or (c == "lt" and cur and at >= cur)
        ):
            return _unchanged(False)
        if at and at <= now_ms:
            return Effect(True, None, result=True)
        return Effect(True, winner.value, at, result=True)


class GetEx(Command, tag="GetEx", frozen=True):
    """GET that also sets (ms > 0) or removes (0) the expiry."""

    expire_at_ms: int

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        if winner is None:
            return _unchanged(None)
        string_value(winner)
        at = self.expire_at_ms
        if at == winner.expire_at_ms:
            return _unchanged(winner.value)
        if at and at <= now_ms:
            return Effect(True, None, result=winner.value)
        return Effect(True, winner.value, at, result=winner.value)


class SerialRead(Command, tag="SerialRead", frozen=True):
    """A linearizable read (SERIAL): writes nothing. Where it runs, the consensus path answers
    the key's whole record (encoded, or None), which `apply` cannot see. With `keys` (keys of
    one hash tag, the first being the key it is sent for), the records of all of them, as of
    one instant: one round of the tag's register (MGET at SERIAL)."""

    keys: tuple[bytes, ...] = ()

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        return _unchanged(None)


class MSetNX(Command, tag="MSetNX", frozen=True):
    """MSETNX: set every pair's key, or none of them if any key exists; True when set. The
    keys share one hash tag (or are one key), so they share one consensus register
    (node/consensus.GroupRegister), which applies the command to all of them at once: it has
    no one-key `apply`, and runs only on the consensus path."""

    pairs: tuple[tuple[bytes, bytes], ...]

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        raise CommandError("MSETNX of several keys runs only on the consensus path (rmw = \"paxos\")")

    def decode_result(self, raw: Any) -> Any:
        return bool(raw)

    def group_keys(self) -> list[bytes] | None:
        return [k for k, _ in self.pairs]


class TypeWrite(Command, tag="TypeWrite", frozen=True):
    """A data-type write (service/datatypes: HSET, SADD, LPUSH, ZADD, SMOVE, RENAME, ...):
    the command `name` with its arguments after the name. Its keys are what its table entry
    says; a command of one key runs as any other here, one of several as a group command
    (`group_keys`, `apply_many`), on one hash tag's register in a cluster."""

    name: str
    args: tuple[bytes, ...]

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        spec = TYPE_COMMANDS[self.name]
        args = list(self.args)
        keys = spec.keys(args)
        if len(set(keys)) != 1:
            raise CommandError(f"{self.name} names several keys and runs only as a group command")
        key = keys[0]
        before = entry_of(winner)
        writes, reply = spec.run(Ctx(now_ms), args, {key: before})
        if key not in writes:
            return _unchanged(reply)
        return entry_effect(before, writes[key], reply)

    def apply_many(self, winners: dict[bytes, DottedValue | None], now_ms: int) -> tuple[dict[bytes, Effect], Any]:
        """The command on several keys at once: each key's effect (only keys it writes) and
        the reply. `winners` has every key the command names."""
        spec = TYPE_COMMANDS[self.name]
        before = {key: entry_of(w) for key, w in winners.items()}
        entries = {key: None if e is None else Entry(e.kind, e.value, e.expire_at_ms) for key, e in before.items()}
        writes, reply = spec.run(Ctx(now_ms), list(self.args), entries)
        effects = {}
        for key, after in writes.items():
            effect = entry_effect(before.get(key), after, None)
            if effect.write:
                effects[key] = effect
        return effects, reply

    def group_keys(self) -> list[bytes] | None:
        keys = TYPE_COMMANDS[self.name].keys(list(self.args))
        return keys if len(set(keys)) > 1 else None

    def decode_result(self, raw: Any) -> Any:
        return TYPE_COMMANDS[self.name].shape(raw)


class Replace(Command, tag="Replace", frozen=True):
    """An effect decided elsewhere (one key's part of a group command), applied as it is.
    Never travels: made and applied where the group command runs."""

    value: bytes | Typed | None
    expire_at_ms: int = 0

    def apply(self, winner: DottedValue | None, now_ms: int, clock: Mapping[bytes, int] | None = None) -> Effect:
        return Effect(True, self.value, self.expire_at_ms)


KeyCommand = (
    SerialRead | Put | Set | Write | PutVersioned | Delete | DeleteIf | CompareAndSet | GetDel | IncrBy | IncrByFloat | Append
    | ExpireAt | GetEx | MSetNX | TypeWrite
)
