"""The data-type commands of both clients: hashes, sets, sorted sets, lists, and the whole-key
commands around them (TYPE, RENAME, COPY), named and shaped as redis-py's.

`DataTypeCommands` is a mixin of `Client` and `AsyncClient`: each method builds a `Request`
(commands.py says what one is) and returns `self._execute(request)`, which is the reply for
the blocking client and an awaitable of it for the asyncio one (redis-py shares its command
methods between its two clients the same way). Nothing here does IO.

Replies are converted as redis-py (decode_responses=False) converts them: HGETALL a dict,
SMEMBERS a set, ZSCORE a float, ZRANGE ... withscores a list of (member, score) tuples,
RENAME and LSET True, HEXISTS and SMOVE a bool; the rest as the node answers (bytes, int, a
list, None). Members, fields and values are bytes or str (UTF-8); scores and counts numbers.

Retries (retry.py): a request is resent after a lost connection only when a second copy
leaves the same state, as for the string commands: HSET, HDEL, SADD, SREM, ZADD (without
incr), ZREM, LSET and every read are; pushes and pops, the increments, HSETNX, SMOVE, SPOP,
the ZPOP and LTRIM / LREM / LINSERT, RENAME and COPY are not (a lost reply raises
`ResultUnknownError`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ringkv.client.commands import Data, Request, encode
from ringkv.client.options import Consistency
from ringkv.client.siblings import parse_versions

Number = int | float
Bound = Number | str | bytes  # a score or lex bound: 1.5, "(1.5", "-inf", "[a"
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


# ---------------------------------------------------------------------- arguments


def _values(values: Iterable[Data], what: str = "value") -> list[bytes]:
    if isinstance(values, str | bytes | bytearray | memoryview):
        raise TypeError(f"{what}s must be an iterable of {what}s, not a single {what}")
    return [encode(v, what) for v in values]


def _flatten(first: Data | Iterable[Data], rest: tuple[Data, ...], what: str = "key") -> list[bytes]:
    """redis-py's `list_or_args`: a single item or an iterable of them, then more items."""
    if isinstance(first, str | bytes | bytearray | memoryview):
        items = [encode(first, what)]
    else:
        items = _values(first, what)
    return items + [encode(x, what) for x in rest]


def _int(x: Any, what: str) -> bytes:
    if type(x) is not int or not _INT64_MIN <= x <= _INT64_MAX:
        raise ValueError(f"{what} must be a 64-bit signed integer, got {x!r}")
    return b"%d" % x


def _float(x: Any, what: str) -> bytes:
    if not isinstance(x, int | float) or isinstance(x, bool) or math.isnan(x):
        raise ValueError(f"{what} must be a number (not NaN), got {x!r}")
    return repr(float(x)).encode()


def _bound(x: Bound, what: str) -> bytes:
    """A range bound as Redis takes it: a number, or text such as "(1.5", "-inf", "[a"."""
    if isinstance(x, str | bytes):
        return encode(x, what)
    if isinstance(x, int) and not isinstance(x, bool):
        return b"%d" % x
    return _float(x, what)


# ---------------------------------------------------------------------- reply conversions


def _same(reply: Any) -> Any:
    return reply


def _int_reply(reply: Any) -> int:
    return int(reply)


def _bool(reply: Any) -> bool:
    return bool(reply)


def _ok(reply: Any) -> bool:
    return reply in (b"OK", "OK")


def _float_or_none(reply: Any) -> float | None:
    return None if reply is None else float(reply)


def _list(reply: Any) -> list[Any]:
    return [] if reply is None else list(reply)


def _set(reply: Any) -> set[bytes]:
    return set() if reply is None else set(reply)


def _text(reply: Any) -> bytes:
    return reply if isinstance(reply, bytes) else str(reply).encode()


def _pairs_dict(reply: Any) -> dict[bytes, bytes]:
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[0::2], reply[1::2], strict=True)) if reply else {}


def _scored(cast: Callable[[Any], Any] = float) -> Callable[[Any], list[tuple[bytes, Any]]]:
    def parse(reply: Any) -> list[tuple[bytes, Any]]:
        if not reply:
            return []
        if isinstance(reply[0], list | tuple):
            return [(m, cast(s)) for m, s in reply]
        return [(m, cast(s)) for m, s in zip(reply[0::2], reply[1::2], strict=True)]

    return parse


def _scan_reply(parse: Callable[[Any], Any]) -> Callable[[Any], tuple[int, Any]]:
    def page(reply: Any) -> tuple[int, Any]:
        cursor, items = reply
        return int(cursor), parse(items)

    return page


def _zmscore(reply: Any) -> list[float | None]:
    return [None if s is None else float(s) for s in reply]


# ---------------------------------------------------------------------- the mixin


class DataTypeCommands:
    """redis-py's data-type methods, for `Client` (answers the reply) and `AsyncClient`
    (answers an awaitable of it). See the module docstring."""

    __slots__ = ()

    # Provided by the client: the round trip, and its default consistency level.
    _execute: Callable[[Request[Any]], Any]
    _level: Callable[[str | Consistency | None], Consistency | None]

    def _send(self, idempotent: bool, parse: Callable[[Any], Any], *args: bytes) -> Any:
        name = args[0].decode()
        return self._execute(Request(name, args, idempotent, parse, self._level(None)))

    # -------------------------------------------------------------- hashes

    def hset(self, name: Data, key: Data | None = None, value: Data | None = None,
             mapping: Mapping[Data, Data] | None = None, items: Iterable[Data] | None = None) -> Any:
        """Set fields: `key` to `value`, every pair of `mapping`, and `items` (field, value, ...
        flat); the number of fields that were new."""
        if key is None and not mapping and not items:
            raise ValueError("hset needs key and value, mapping, or items")
        args = [encode(name)]
        if key is not None:
            if value is None:
                raise ValueError("hset with a key needs its value")
            args += [encode(key, "field"), encode(value, "value")]
        if items:
            flat = _values(items, "item")
            if len(flat) % 2:
                raise ValueError("items holds field, value pairs: an even number of them")
            args += flat
        for f, v in (mapping or {}).items():
            args += [encode(f, "field"), encode(v, "value")]
        return self._send(True, _int_reply, b"HSET", *args)

    def hsetnx(self, name: Data, key: Data, value: Data) -> Any:
        """Set a field only if the hash does not have it; 1 when set, 0 when it was there."""
        return self._send(False, _int_reply, b"HSETNX", encode(name), encode(key, "field"), encode(value, "value"))

    def hget(self, name: Data, key: Data) -> Any:
        return self._send(True, _same, b"HGET", encode(name), encode(key, "field"))

    def hget_versions(self, name: Data, key: Data) -> Any:
        """Every value of one hash field (RINGKV.HGETV): HSETs of the field on two replicas at
        once leave each value until the next write of the field (`hget` answers the newest). A
        `Versions`: `.siblings` (values and timestamps) and `.context`; no siblings when the
        hash has no such field."""
        return self._send(True, parse_versions, b"RINGKV.HGETV", encode(name), encode(key, "field"))

    def hmget(self, name: Data, keys: Data | Iterable[Data], *args: Data) -> Any:
        """The values of the fields, in order, None for each missing one."""
        return self._send(True, _list, b"HMGET", encode(name), *_flatten(keys, args, "field"))

    def hdel(self, name: Data, *keys: Data) -> Any:
        """Remove fields; the number that were there."""
        return self._send(True, _int_reply, b"HDEL", encode(name), *_values(keys, "field"))

    def hexists(self, name: Data, key: Data) -> Any:
        return self._send(True, _bool, b"HEXISTS", encode(name), encode(key, "field"))

    def hgetall(self, name: Data) -> Any:
        """Every field and value, as a dict ({} for a missing key)."""
        return self._send(True, _pairs_dict, b"HGETALL", encode(name))

    def hkeys(self, name: Data) -> Any:
        return self._send(True, _list, b"HKEYS", encode(name))

    def hvals(self, name: Data) -> Any:
        return self._send(True, _list, b"HVALS", encode(name))

    def hlen(self, name: Data) -> Any:
        return self._send(True, _int_reply, b"HLEN", encode(name))

    def hstrlen(self, name: Data, key: Data) -> Any:
        return self._send(True, _int_reply, b"HSTRLEN", encode(name), encode(key, "field"))

    def hincrby(self, name: Data, key: Data, amount: int = 1) -> Any:
        """Add `amount` to a field's integer (0 when missing); the new value."""
        return self._send(False, _int_reply, b"HINCRBY", encode(name), encode(key, "field"), _int(amount, "amount"))

    def hincrbyfloat(self, name: Data, key: Data, amount: float = 1.0) -> Any:
        """Add `amount` to a field's number; the new value, a float."""
        return self._send(False, float, b"HINCRBYFLOAT", encode(name), encode(key, "field"),
                          _float(amount, "amount"))

    def hrandfield(self, key: Data, count: int | None = None, withvalues: bool = False) -> Any:
        """A random field (None when the key is missing), or `count` of them (negative: may
        repeat) as a list, with their values after each field when `withvalues`."""
        args = [encode(key)]
        if count is not None:
            args.append(_int(count, "count"))
            if withvalues:
                args.append(b"WITHVALUES")
        elif withvalues:
            raise ValueError("withvalues needs a count")
        return self._send(True, _same, b"HRANDFIELD", *args)

    def hscan(self, name: Data, cursor: int = 0, match: Data | None = None, count: int | None = None) -> Any:
        """One HSCAN page: (next cursor, {field: value}); cursor 0 when done."""
        return self._send(True, _scan_reply(_pairs_dict), b"HSCAN", encode(name),
                          *_scan_args(cursor, match, count))

    # -------------------------------------------------------------- sets

    def sadd(self, name: Data, *values: Data) -> Any:
        """Add members; the number that were new."""
        return self._send(True, _int_reply, b"SADD", encode(name), *_values(values, "member"))

    def srem(self, name: Data, *values: Data) -> Any:
        """Remove members; the number that were there."""
        return self._send(True, _int_reply, b"SREM", encode(name), *_values(values, "member"))

    def sismember(self, name: Data, value: Data) -> Any:
        """1 when `value` is a member, else 0 (as redis-py answers)."""
        return self._send(True, _int_reply, b"SISMEMBER", encode(name), encode(value, "member"))

    def smismember(self, name: Data, values: Data | Iterable[Data], *args: Data) -> Any:
        """1 or 0 per value, in order."""
        return self._send(True, _list, b"SMISMEMBER", encode(name), *_flatten(values, args, "member"))

    def smembers(self, name: Data) -> Any:
        """Every member, as a set (empty for a missing key)."""
        return self._send(True, _set, b"SMEMBERS", encode(name))

    def scard(self, name: Data) -> Any:
        return self._send(True, _int_reply, b"SCARD", encode(name))

    def spop(self, name: Data, count: int | None = None) -> Any:
        """Remove and answer a random member (None when the set is empty), or a list of up to
        `count` of them."""
        extra = [] if count is None else [_int(count, "count")]
        return self._send(False, _same, b"SPOP", encode(name), *extra)

    def srandmember(self, name: Data, number: int | None = None) -> Any:
        """A random member, or a list of `number` of them (negative: may repeat)."""
        extra = [] if number is None else [_int(number, "number")]
        return self._send(True, _same, b"SRANDMEMBER", encode(name), *extra)

    def smove(self, src: Data, dst: Data, value: Data) -> Any:
        """Move a member from one set to another; True when it was in `src`."""
        return self._send(False, _bool, b"SMOVE", encode(src), encode(dst), encode(value, "member"))

    def sinter(self, keys: Data | Iterable[Data], *args: Data) -> Any:
        return self._send(True, _set, b"SINTER", *_flatten(keys, args))

    def sintercard(self, numkeys: int, keys: Iterable[Data], limit: int = 0) -> Any:
        names = _values(keys, "key")
        return self._send(True, _int_reply, b"SINTERCARD", _int(numkeys, "numkeys"), *names, b"LIMIT",
                          _int(limit, "limit"))

    def sunion(self, keys: Data | Iterable[Data], *args: Data) -> Any:
        return self._send(True, _set, b"SUNION", *_flatten(keys, args))

    def sdiff(self, keys: Data | Iterable[Data], *args: Data) -> Any:
        return self._send(True, _set, b"SDIFF", *_flatten(keys, args))

    def sinterstore(self, dest: Data, keys: Data | Iterable[Data], *args: Data) -> Any:
        return self._send(True, _int_reply, b"SINTERSTORE", encode(dest), *_flatten(keys, args))

    def sunionstore(self, dest: Data, keys: Data | Iterable[Data], *args: Data) -> Any:
        return self._send(True, _int_reply, b"SUNIONSTORE", encode(dest), *_flatten(keys, args))

    def sdiffstore(self, dest: Data, keys: Data | Iterable[Data], *args: Data) -> Any:
        return self._send(True, _int_reply, b"SDIFFSTORE", encode(dest), *_flatten(keys, args))

    def sscan(self, name: Data, cursor: int = 0, match: Data | None = None, count: int | None = None) -> Any:
        """One SSCAN page: (next cursor, [member, ...]); cursor 0 when done."""
        return self._send(True, _scan_reply(_list), b"SSCAN", encode(name), *_scan_args(cursor, match, count))

    # -------------------------------------------------------------- sorted sets

    def zadd(self, name: Data, mapping: Mapping[Data, Number], nx: bool = False, xx: bool = False,
             ch: bool = False, incr: bool = False, gt: bool = False, lt: bool = False) -> Any:
        """Add members with scores (`mapping` member -> score), or update their scores; the
        number added (with `ch`: added or changed). `incr`: one member, whose score is
        increased by its value; the new score, or None when a condition refused it."""
        if not mapping:
            raise ValueError("zadd needs at least one member -> score pair")
        if nx and xx:
            raise ValueError("zadd: nx and xx exclude each other")
        if (gt and lt) or (nx and (gt or lt)):
            raise ValueError("zadd: gt, lt and nx exclude each other")
        if incr and len(mapping) != 1:
            raise ValueError("zadd with incr takes exactly one member -> score pair")
        args = [encode(name)]
        args += [flag for on, flag in ((nx, b"NX"), (xx, b"XX"), (gt, b"GT"), (lt, b"LT"), (ch, b"CH"),
                                       (incr, b"INCR")) if on]
        for member, score in mapping.items():
            args += [_float(score, "score"), encode(member, "member")]
        return self._send(not incr, _float_or_none if incr else _int_reply, b"ZADD", *args)

    def zrem(self, name: Data, *values: Data) -> Any:
        return self._send(True, _int_reply, b"ZREM", encode(name), *_values(values, "member"))

    def zscore(self, name: Data, value: Data) -> Any:
        """The member's score, a float; None when it is not a member."""
        return self._send(True, _float_or_none, b"ZSCORE", encode(name), encode(value, "member"))

    def zscore_versions(self, name: Data, value: Data) -> Any:
        """Every score of one sorted-set member (RINGKV.ZSCOREV): ZADDs of the member on two
        replicas at once leave each score until the next write of the member (`zscore` answers
        the newest). A `Versions` whose siblings' values are the scores as text; no siblings
        when the sorted set has no such member."""
        return self._send(True, parse_versions, b"RINGKV.ZSCOREV", encode(name), encode(value, "member"))

    def zmscore(self, key: Data, members: Iterable[Data]) -> Any:
        names = _values(members, "member")
        if not names:
            raise ValueError("zmscore needs at least one member")
        return self._send(True, _zmscore, b"ZMSCORE", encode(key), *names)

    def zincrby(self, name: Data, amount: Number, value: Data) -> Any:
        """Add `amount` to the member's score (0 when missing); the new score."""
        return self._send(False, float, b"ZINCRBY", encode(name), _float(amount, "amount"), encode(value, "member"))

    def zcard(self, name: Data) -> Any:
        return self._send(True, _int_reply, b"ZCARD", encode(name))

    def zcount(self, name: Data, min: Bound, max: Bound) -> Any:
        return self._send(True, _int_reply, b"ZCOUNT", encode(name), _bound(min, "min"), _bound(max, "max"))

    def zlexcount(self, name: Data, min: Bound, max: Bound) -> Any:
        return self._send(True, _int_reply, b"ZLEXCOUNT", encode(name), _bound(min, "min"), _bound(max, "max"))

    def zrange(self, name: Data, start: Bound, end: Bound, desc: bool = False, withscores: bool = False,
               score_cast_func: Callable[[Any], Any] = float, byscore: bool = False, bylex: bool = False,
               offset: int | None = None, num: int | None = None) -> Any:
        """Members from `start` to `end`: ranks, or scores with `byscore`, or lex bounds with
        `bylex`; highest first with `desc` (then `start` is the high bound, as ZRANGE ... REV
        takes it). `offset` and `num` page a score or lex range. With `withscores`, a list of
        (member, score_cast_func(score))."""
        if byscore and bylex:
            raise ValueError("zrange: byscore and bylex exclude each other")
        if (offset is None) != (num is None):
            raise ValueError("zrange: give offset and num together")
        if offset is not None and not (byscore or bylex):
            raise ValueError("zrange: offset and num go with byscore or bylex")
        if bylex and withscores:
            raise ValueError("zrange: withscores does not go with bylex")
        args = [encode(name), _bound(start, "start"), _bound(end, "end")]
        if byscore:
            args.append(b"BYSCORE")
        if bylex:
            args.append(b"BYLEX")
        if desc:
            args.append(b"REV")
        if offset is not None:
            args += [b"LIMIT", _int(offset, "offset"), _int(num, "num")]
        if withscores:
            args.append(b"WITHSCORES")
        return self._send(True, _scored(score_cast_func) if withscores else _list, b"ZRANGE", *args)

    def zrevrange(self, name: Data, start: int, end: int, withscores: bool = False,
                  score_cast_func: Callable[[Any], Any] = float) -> Any:
        args = [encode(name), _int(start, "start"), _int(end, "end"), *([b"WITHSCORES"] if withscores else [])]
        return self._send(True, _scored(score_cast_func) if withscores else _list, b"ZREVRANGE", *args)

    def zrangebyscore(self, name: Data, min: Bound, max: Bound, start: int | None = None,
                      num: int | None = None, withscores: bool = False,
                      score_cast_func: Callable[[Any], Any] = float) -> Any:
        return self._by_score(b"ZRANGEBYSCORE", name, min, max, start, num, withscores, score_cast_func)

    def zrevrangebyscore(self, name: Data, max: Bound, min: Bound, start: int | None = None,
                         num: int | None = None, withscores: bool = False,
                         score_cast_func: Callable[[Any], Any] = float) -> Any:
        return self._by_score(b"ZREVRANGEBYSCORE", name, max, min, start, num, withscores, score_cast_func)

    def _by_score(self, command: bytes, name: Data, first: Bound, second: Bound, start: int | None,
                  num: int | None, withscores: bool, cast: Callable[[Any], Any]) -> Any:
        if (start is None) != (num is None):
            raise ValueError("give start and num together")
        args = [encode(name), _bound(first, "min"), _bound(second, "max")]
        if withscores:
            args.append(b"WITHSCORES")
        if start is not None:
            args += [b"LIMIT", _int(start, "start"), _int(num, "num")]
        return self._send(True, _scored(cast) if withscores else _list, command, *args)

    def zrangebylex(self, name: Data, min: Bound, max: Bound, start: int | None = None,
                    num: int | None = None) -> Any:
        return self._by_lex(b"ZRANGEBYLEX", name, min, max, start, num)

    def zrevrangebylex(self, name: Data, max: Bound, min: Bound, start: int | None = None,
                       num: int | None = None) -> Any:
        return self._by_lex(b"ZREVRANGEBYLEX", name, max, min, start, num)

    def _by_lex(self, command: bytes, name: Data, first: Bound, second: Bound, start: int | None,
                num: int | None) -> Any:
        if (start is None) != (num is None):
            raise ValueError("give start and num together")
        args = [encode(name), _bound(first, "min"), _bound(second, "max")]
        if start is not None:
            args += [b"LIMIT", _int(start, "start"), _int(num, "num")]
        return self._send(True, _list, command, *args)

    def zrank(self, name: Data, value: Data) -> Any:
        """The member's rank, lowest score first; None when it is not a member."""
        return self._send(True, _same, b"ZRANK", encode(name), encode(value, "member"))

    def zrevrank(self, name: Data, value: Data) -> Any:
        return self._send(True, _same, b"ZREVRANK", encode(name), encode(value, "member"))

    def zpopmin(self, name: Data, count: int | None = None) -> Any:
        """Remove and answer the lowest-scored members: a list of (member, score)."""
        extra = [] if count is None else [_int(count, "count")]
        return self._send(False, _scored(), b"ZPOPMIN", encode(name), *extra)

    def zpopmax(self, name: Data, count: int | None = None) -> Any:
        extra = [] if count is None else [_int(count, "count")]
        return self._send(False, _scored(), b"ZPOPMAX", encode(name), *extra)

    def zremrangebyrank(self, name: Data, min: int, max: int) -> Any:
        return self._send(False, _int_reply, b"ZREMRANGEBYRANK", encode(name), _int(min, "min"), _int(max, "max"))

    def zremrangebyscore(self, name: Data, min: Bound, max: Bound) -> Any:
        return self._send(True, _int_reply, b"ZREMRANGEBYSCORE", encode(name), _bound(min, "min"),
                          _bound(max, "max"))

    def zremrangebylex(self, name: Data, min: Bound, max: Bound) -> Any:
        return self._send(True, _int_reply, b"ZREMRANGEBYLEX", encode(name), _bound(min, "min"), _bound(max, "max"))

    def zunionstore(self, dest: Data, keys: Iterable[Data] | Mapping[Data, Number],
                    aggregate: str | None = None) -> Any:
        """Store the union of sorted sets (`keys`, or a mapping key -> weight) in `dest`;
        `aggregate` SUM (the default), MIN or MAX. The size of the result."""
        return self._send(True, _int_reply, b"ZUNIONSTORE", *_zstore_args(dest, keys, aggregate))

    def zinterstore(self, dest: Data, keys: Iterable[Data] | Mapping[Data, Number],
                    aggregate: str | None = None) -> Any:
        return self._send(True, _int_reply, b"ZINTERSTORE", *_zstore_args(dest, keys, aggregate))

    def zscan(self, name: Data, cursor: int = 0, match: Data | None = None, count: int | None = None,
              score_cast_func: Callable[[Any], Any] = float) -> Any:
        """One ZSCAN page: (next cursor, [(member, score), ...]); cursor 0 when done."""
        return self._send(True, _scan_reply(_scored(score_cast_func)), b"ZSCAN", encode(name),
                          *_scan_args(cursor, match, count))

    # -------------------------------------------------------------- lists

    def lpush(self, name: Data, *values: Data) -> Any:
        """Push each value at the head in turn; the list's length after."""
        return self._send(False, _int_reply, b"LPUSH", encode(name), *_values(values, "value"))

    def rpush(self, name: Data, *values: Data) -> Any:
        """Append the values at the tail; the list's length after."""
        return self._send(False, _int_reply, b"RPUSH", encode(name), *_values(values, "value"))

    def lpushx(self, name: Data, *values: Data) -> Any:
        """LPUSH only if the list exists (0 when it does not)."""
        return self._send(False, _int_reply, b"LPUSHX", encode(name), *_values(values, "value"))

    def rpushx(self, name: Data, *values: Data) -> Any:
        return self._send(False, _int_reply, b"RPUSHX", encode(name), *_values(values, "value"))

    def lpop(self, name: Data, count: int | None = None) -> Any:
        """Remove and answer the head (None when the list is empty), or a list of up to
        `count` items (None for a missing key, as Redis answers)."""
        extra = [] if count is None else [_int(count, "count")]
        return self._send(False, _same, b"LPOP", encode(name), *extra)

    def rpop(self, name: Data, count: int | None = None) -> Any:
        extra = [] if count is None else [_int(count, "count")]
        return self._send(False, _same, b"RPOP", encode(name), *extra)

    def llen(self, name: Data) -> Any:
        return self._send(True, _int_reply, b"LLEN", encode(name))

    def lrange(self, name: Data, start: int, end: int) -> Any:
        """Items from index `start` to `end` included (negative: from the tail)."""
        return self._send(True, _list, b"LRANGE", encode(name), _int(start, "start"), _int(end, "end"))

    def lindex(self, name: Data, index: int) -> Any:
        return self._send(True, _same, b"LINDEX", encode(name), _int(index, "index"))

    def lset(self, name: Data, index: int, value: Data) -> Any:
        """Replace the item at `index`; True (errors raise)."""
        return self._send(True, _ok, b"LSET", encode(name), _int(index, "index"), encode(value, "value"))

    def lrem(self, name: Data, count: int, value: Data) -> Any:
        """Remove `count` items equal to `value` (from the head; negative: from the tail; 0:
        all); the number removed."""
        return self._send(False, _int_reply, b"LREM", encode(name), _int(count, "count"), encode(value, "value"))

    def ltrim(self, name: Data, start: int, end: int) -> Any:
        """Keep only the items from `start` to `end`; True."""
        return self._send(False, _ok, b"LTRIM", encode(name), _int(start, "start"), _int(end, "end"))

    def linsert(self, name: Data, where: str, refvalue: Data, value: Data) -> Any:
        """Insert `value` BEFORE or AFTER (`where`) the first `refvalue`; the new length, -1
        when `refvalue` is not there, 0 when the list is missing."""
        side = where.upper()
        if side not in ("BEFORE", "AFTER"):
            raise ValueError(f"where must be BEFORE or AFTER, got {where!r}")
        return self._send(False, _int_reply, b"LINSERT", encode(name), side.encode(), encode(refvalue, "refvalue"),
                          encode(value, "value"))

    def lpos(self, name: Data, value: Data, rank: int | None = None, count: int | None = None,
             maxlen: int | None = None) -> Any:
        """The index of `value` (None when absent), or a list of up to `count` indexes."""
        args = [encode(name), encode(value, "value")]
        for option, x in ((b"RANK", rank), (b"COUNT", count), (b"MAXLEN", maxlen)):
            if x is not None:
                args += [option, _int(x, option.decode().lower())]
        return self._send(True, _same, b"LPOS", *args)

    def lmove(self, first_list: Data, second_list: Data, src: str = "LEFT", dest: str = "RIGHT") -> Any:
        """Pop from `src` side of one list and push on `dest` side of another; the item moved
        (None when the first is empty)."""
        sides = [s.upper() for s in (src, dest)]
        if any(s not in ("LEFT", "RIGHT") for s in sides):
            raise ValueError(f"src and dest must be LEFT or RIGHT, got {src!r}, {dest!r}")
        return self._send(False, _same, b"LMOVE", encode(first_list), encode(second_list),
                          *(s.encode() for s in sides))

    def rpoplpush(self, src: Data, dst: Data) -> Any:
        return self._send(False, _same, b"RPOPLPUSH", encode(src), encode(dst))

    def lmpop(self, num_keys: int, *args: Data, direction: str, count: int | None = 1) -> Any:
        """Pop up to `count` items from the first non-empty list of `args` from its LEFT or
        RIGHT (`direction`); [key, [items]], or None when every list is empty."""
        side = direction.upper()
        if side not in ("LEFT", "RIGHT"):
            raise ValueError(f"direction must be LEFT or RIGHT, got {direction!r}")
        extra = [] if count is None else [b"COUNT", _int(count, "count")]
        return self._send(False, _same, b"LMPOP", _int(num_keys, "num_keys"), *_values(args, "key"),
                          side.encode(), *extra)

    # -------------------------------------------------------------- whole keys

    def type(self, name: Data) -> Any:
        """The key's type as redis-py answers it: b"string", b"hash", b"list", b"set",
        b"zset", or b"none"."""
        return self._send(True, _text, b"TYPE", encode(name))

    def rename(self, src: Data, dst: Data) -> Any:
        """Rename a key (overwriting `dst`); True. A missing `src` raises ("no such key")."""
        return self._send(False, _ok, b"RENAME", encode(src), encode(dst))

    def renamenx(self, src: Data, dst: Data) -> Any:
        """Rename only if `dst` does not exist; True when renamed."""
        return self._send(False, _bool, b"RENAMENX", encode(src), encode(dst))

    def copy(self, source: Data, destination: Data, destination_db: int | None = None,
             replace: bool = False) -> Any:
        """Copy a key's value (and expiry) to `destination`; True when copied (False when
        `destination` exists and not `replace`). ringkv has one database: `destination_db`
        must be None or 0."""
        if destination_db not in (None, 0):
            raise ValueError("ringkv has one database (0): namespaces take the place of the others")
        extra = [b"REPLACE"] if replace else []
        return self._send(False, _bool, b"COPY", encode(source), encode(destination), *extra)

    def object(self, infotype: str, key: Data) -> Any:
        """OBJECT ENCODING / REFCOUNT / IDLETIME / FREQ of a key."""
        return self._send(True, _same, b"OBJECT", infotype.upper().encode(), encode(key))


def _scan_args(cursor: int, match: Data | None, count: int | None) -> list[bytes]:
    if type(cursor) is not int or cursor < 0:
        raise ValueError(f"cursor must be a non-negative integer, got {cursor!r}")
    args = [b"%d" % cursor]
    if match is not None:
        args += [b"MATCH", encode(match, "match pattern")]
    if count is not None:
        args += [b"COUNT", _int(count, "count")]
    return args


def _zstore_args(dest: Data, keys: Iterable[Data] | Mapping[Data, Number], aggregate: str | None) -> list[bytes]:
    weights: list[bytes] = []
    if isinstance(keys, Mapping):
        names = [encode(k) for k in keys]
        weights = [_float(w, "weight") for w in keys.values()]
    else:
        names = _values(keys, "key")
    if not names:
        raise ValueError("give at least one key")
    args = [encode(dest), b"%d" % len(names), *names]
    if weights:
        args += [b"WEIGHTS", *weights]
    if aggregate is not None:
        if aggregate.upper() not in ("SUM", "MIN", "MAX"):
            raise ValueError(f"aggregate must be SUM, MIN or MAX, got {aggregate!r}")
        args += [b"AGGREGATE", aggregate.upper().encode()]
    return args
