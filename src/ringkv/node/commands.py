"""Key commands as data: what a write does to a key's current value, decided without IO.

Every write command of the data path (SET with its options, INCRBY, APPEND, EXPIRE, ...) is a
tagged msgspec Struct. `apply(winner, now_ms)` takes the key's current winning value (None
when the key is missing, expired or deleted) and returns an `Effect`: whether to write, the new
value (None: a tombstone) and expiry, the causal context the write replaces, and the result the
client gets. The same function runs wherever the command runs: on a single node, on the
replica a command was forwarded to (the struct itself travels in `Forward`), and inside a
consensus round. Replies travel as msgpack, which has no tuple: `decode_result` restores the
shape a command's caller expects.

`reads_current` tells whether the result depends on the current value (a read-modify-write,
serialized per key) or is a blind overwrite that replaces whatever it finds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from ringkv.errors import CommandError
from ringkv.service.numbers import INT64_MAX, INT64_MIN, format_float, parse_float, parse_int
from ringkv.versioning.record import DottedValue

INCR_OVERFLOW = "increment or decrement would overflow"

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


class Command(msgspec.Struct, tag=True, array_like=True, frozen=True):
    """A write command of one key."""

    reads_current: ClassVar[bool] = True

    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:  # pragma: no cover - abstract
        raise NotImplementedError(type(self).__name__)

    def decode_result(self, raw: Any) -> Any:
        return raw


class Put(Command, tag="Put", frozen=True):
    """A plain SET: overwrite whatever is there, no expiry."""

    value: bytes
    reads_current: ClassVar[bool] = False

    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:
        return Effect(True, self.value, result=None)


class Set(Command, tag="Set", frozen=True):
    """SET with options: (applied, old value when `return_old`). `condition` is None, "nx"
    (only if missing) or "xx" (only if present); `keep_ttl` keeps the current expiry."""

    value: bytes
    expire_at_ms: int = 0
    keep_ttl: bool = False
    condition: str | None = None
    return_old: bool = False

    @property
    def reads_current(self) -> bool:  # type: ignore[override]
        return bool(self.condition or self.return_old or self.keep_ttl)

    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:
        old = winner.value if winner is not None else None
        if (self.condition == "nx" and winner is not None) or (self.condition == "xx" and winner is None):
            return _unchanged((False, old))
        expire = self.expire_at_ms
        if self.keep_ttl and winner is not None:
            expire = winner.expire_at_ms
        return Effect(True, self.value, expire, result=(True, old if self.reads_current else None))

    def decode_result(self, raw: Any) -> Any:
        return tuple(raw)


class PutVersioned(Command, tag="PutVersioned", frozen=True):
    """A sibling-aware write (RINGKV.PUTV / DELV): replaces exactly what `context` saw, or
    nothing when it is None (a blind write). Answers the new context, which only the node that
    stored the record knows: `apply` leaves it to the caller (Effect.result is None)."""

    value: bytes | None
    context: bytes | None
    expire_at_ms: int = 0
    reads_current: ClassVar[bool] = False

    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:
        return Effect(True, self.value, self.expire_at_ms, context=self.context or BLIND)


class Delete(Command, tag="Delete", frozen=True):
    """DEL of one key: 1 when it existed (and is now a tombstone), else 0."""

    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:
        if winner is None:
            return _unchanged(0)
        return Effect(True, None, result=1)


class GetDel(Command, tag="GetDel", frozen=True):
    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:
        if winner is None:
            return _unchanged(None)
        return Effect(True, None, result=winner.value)


class IncrBy(Command, tag="IncrBy", frozen=True):
    delta: int

    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:
        current = parse_int(winner.value) if winner is not None else 0
        new = current + self.delta
        if not INT64_MIN <= new <= INT64_MAX:
            raise CommandError(INCR_OVERFLOW)
        return Effect(True, b"%d" % new, winner.expire_at_ms if winner else 0, result=new)


class IncrByFloat(Command, tag="IncrByFloat", frozen=True):
    delta: float

    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:
        current = parse_float(winner.value) if winner is not None else 0.0
        new = current + self.delta
        if math.isnan(new) or math.isinf(new):
            raise CommandError("increment would produce NaN or Infinity")
        text = format_float(new)
        return Effect(True, text, winner.expire_at_ms if winner else 0, result=text)


class Append(Command, tag="Append", frozen=True):
    value: bytes

    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:
        new = (winner.value if winner is not None else b"") + self.value
        return Effect(True, new, winner.expire_at_ms if winner else 0, result=len(new))


class ExpireAt(Command, tag="ExpireAt", frozen=True):
    """Set (or with 0, remove: PERSIST) the expiry; `condition` nx, xx, gt, lt. A time in the
    past deletes the key, as Redis does. Answers whether anything changed."""

    expire_at_ms: int
    condition: str | None = None

    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:
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

    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:
        if winner is None:
            return _unchanged(None)
        at = self.expire_at_ms
        if at == winner.expire_at_ms:
            return _unchanged(winner.value)
        if at and at <= now_ms:
            return Effect(True, None, result=winner.value)
        return Effect(True, winner.value, at, result=winner.value)


class SerialRead(Command, tag="SerialRead", frozen=True):
    """A linearizable read (SERIAL): writes nothing. Where it runs, the consensus path answers
    the key's whole record (encoded, or None), which `apply` cannot see."""

    def apply(self, winner: DottedValue | None, now_ms: int) -> Effect:
        return _unchanged(None)


KeyCommand = SerialRead | Put | Set | PutVersioned | Delete | GetDel | IncrBy | IncrByFloat | Append | ExpireAt | GetEx
