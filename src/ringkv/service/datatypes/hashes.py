"""Redis's hash commands as pure functions over a decoded hash (base.py says the contract).

A hash is `dict[bytes, bytes]`, field -> value. Each command checks its arguments in the order
Redis 7.0's t_hash.c does, so a command with two faults answers Redis's error: HINCRBY and
HINCRBYFLOAT parse the increment before they look at the key, HRANDFIELD parses its count and
options first, HSCAN its cursor first and its options only once the key is found to be a hash.

Replies: HGETALL a dict (a RESP3 map; flat in RESP2); HRANDFIELD WITHVALUES and HSCAN a flat
field, value, ... list (Redis 7.0 answers HRANDFIELD WITHVALUES in RESP3 as [field, value]
pairs: the adapter may reshape it); HMSET the str "OK" (Redis's +OK).

HINCRBYFLOAT adds in `long double` as Redis does (service/longdouble.py), so its answers and
stored values are Redis's digit for digit. Writes keep the key's expire_at_ms; a hash created
by a command has none; a hash left empty by HDEL is answered empty and the executor deletes it.
Only keys that changed are written.
"""

from __future__ import annotations

from typing import Any

from ringkv.errors import CommandError
from ringkv.service import longdouble
from ringkv.service.datatypes.base import (
    KIND_HASH,
    SYNTAX_ERROR,
    Ctx,
    Entry,
    TypeCommand,
    Writes,
    expect,
    wrong_arity,
)
from ringkv.service.datatypes.iteration import (
    OUT_OF_RANGE,
    draw,
    flat,
    option_word,
    parse_cursor,
    parse_random_count,
    parse_scan_options,
    scan_page,
)
from ringkv.service.numbers import INT64_MAX, INT64_MIN, parse_int

OK = "OK"
HASH_NOT_INTEGER = "hash value is not an integer"
HASH_NOT_FLOAT = "hash value is not a float"
WOULD_OVERFLOW = "increment or decrement would overflow"
INCREMENT_NOT_FINITE = "value is NaN or Infinity"
RESULT_NOT_FINITE = "increment would produce NaN or Infinity"
NOT_A_FLOAT = "value is not a valid float"
# HRANDFIELD WITHVALUES doubles the reply, so Redis bounds the count by LONG_MAX / 2.
WITHVALUES_COUNT_MAX = INT64_MAX // 2

Entries = dict[bytes, Entry | None]


def _hash(entries: Entries, key: bytes) -> dict[bytes, bytes] | None:
    return expect(entries[key], KIND_HASH)


def _for_write(entries: Entries, key: bytes) -> Entry:
    """The key's entry to change in place, or a new empty hash (no expiry) when it is missing;
    WrongTypeError when it holds another type (hashTypeLookupWriteOrCreate)."""
    entry = entries[key]
    expect(entry, KIND_HASH)
    return entry if entry is not None else Entry(KIND_HASH, {}, 0)


def _hset_pairs(name: str, args: list[bytes]) -> list[tuple[bytes, bytes]]:
    if len(args) % 2 == 0:  # the key, then field value pairs
        raise wrong_arity(name)
    return list(zip(args[1::2], args[2::2], strict=True))


def _set_fields(entries: Entries, args: list[bytes], name: str) -> tuple[Writes, int]:
    pairs = _hset_pairs(name, args)
    entry = _for_write(entries, args[0])
    fields = entry.value
    created = changed = 0
    for field, value in pairs:
        old = fields.get(field)
        if old is None:
            created += 1
        if old != value:
            fields[field] = value
            changed += 1
    return ({args[0]: entry} if changed else {}), created


def _hset(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return _set_fields(entries, args, "HSET")


def _hmset(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    writes, _ = _set_fields(entries, args, "HMSET")
    return writes, OK


def _hsetnx(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    key, field, value = args
    entry = _for_write(entries, key)
    if field in entry.value:
        return {}, 0
    entry.value[field] = value
    return {key: entry}, 1


def _hget(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    fields = _hash(entries, args[0])
    return {}, None if fields is None else fields.get(args[1])


def _hmget(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    fields = _hash(entries, args[0]) or {}
    return {}, [fields.get(field) for field in args[1:]]


def _hdel(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    entry = entries[args[0]]
    fields = expect(entry, KIND_HASH)
    if not fields:
        return {}, 0
    deleted = 0
    for field in args[1:]:
        if fields.pop(field, None) is not None:
            deleted += 1
    return ({args[0]: entry} if deleted else {}), deleted


def _hexists(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    fields = _hash(entries, args[0])
    return {}, int(fields is not None and args[1] in fields)


def _hgetall(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return {}, dict(_hash(entries, args[0]) or {})


def _hkeys(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return {}, list(_hash(entries, args[0]) or ())


def _hvals(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return {}, list((_hash(entries, args[0]) or {}).values())


def _hlen(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return {}, len(_hash(entries, args[0]) or ())


def _hstrlen(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    fields = _hash(entries, args[0]) or {}
    return {}, len(fields.get(args[1], b""))


def _hincrby(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    key, field, increment = args
    by = parse_int(increment)
    entry = _for_write(entries, key)
    old = entry.value.get(field)
    if old is None:
        current = 0
    else:
        try:
            current = parse_int(old)
        except CommandError:
            raise CommandError(HASH_NOT_INTEGER) from None
    result = current + by
    if not INT64_MIN <= result <= INT64_MAX:
        raise CommandError(WOULD_OVERFLOW)
    entry.value[field] = b"%d" % result
    return {key: entry}, result


def _hincrbyfloat(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    key, field, increment = args
    by = longdouble.parse(increment)
    if by is None:
        raise CommandError(NOT_A_FLOAT)
    if isinstance(by, float):  # strtold read an infinity
        raise CommandError(INCREMENT_NOT_FINITE)
    entry = _for_write(entries, key)
    old = entry.value.get(field)
    current = longdouble.parse(old) if old is not None else 0
    if current is None:
        raise CommandError(HASH_NOT_FLOAT)
    if isinstance(current, float):  # a stored "inf" reads as infinity; adding keeps it so
        raise CommandError(RESULT_NOT_FINITE)
    result = longdouble.add(current, by)
    if isinstance(result, float):
        raise CommandError(RESULT_NOT_FINITE)
    text = longdouble.format_human(result)
    entry.value[field] = text
    return {key: entry}, text


def _hrandfield(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    if len(args) == 1:
        fields = _hash(entries, args[0])
        if not fields:
            return {}, None
        return {}, ctx.random.choice(sorted(fields))
    count = parse_random_count(args[1])
    if len(args) > 3 or (len(args) == 3 and option_word(args[2]) != b"withvalues"):
        raise CommandError(SYNTAX_ERROR)
    with_values = len(args) == 3
    if with_values and not -WITHVALUES_COUNT_MAX <= count <= WITHVALUES_COUNT_MAX:
        raise CommandError(OUT_OF_RANGE)
    fields = _hash(entries, args[0])
    if not fields or count == 0:
        return {}, []
    ordered = sorted(fields)
    if with_values:
        drawn = draw(ctx, ordered, count, lambda field: len(field) + len(fields[field]))
        return {}, flat((field, fields[field]) for field in drawn)
    return {}, draw(ctx, ordered, count, len)


def _hscan(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    cursor = parse_cursor(args[1])
    fields = _hash(entries, args[0])
    if fields is None:
        return {}, [b"0", []]
    options = parse_scan_options(args[2:])
    next_cursor, page = scan_page(sorted(fields), cursor, options)
    return {}, [next_cursor, flat((field, fields[field]) for field in page)]


COMMANDS: list[TypeCommand] = [
    TypeCommand("HSET", -4, True, _hset),
    TypeCommand("HSETNX", 4, True, _hsetnx),
    TypeCommand("HMSET", -4, True, _hmset),
    TypeCommand("HGET", 3, False, _hget),
    TypeCommand("HMGET", -3, False, _hmget),
    TypeCommand("HDEL", -3, True, _hdel),
    TypeCommand("HEXISTS", 3, False, _hexists),
    TypeCommand("HGETALL", 2, False, _hgetall),
    TypeCommand("HKEYS", 2, False, _hkeys),
    TypeCommand("HVALS", 2, False, _hvals),
    TypeCommand("HLEN", 2, False, _hlen),
    TypeCommand("HSTRLEN", 3, False, _hstrlen),
    TypeCommand("HINCRBY", 4, True, _hincrby),
    TypeCommand("HINCRBYFLOAT", 4, True, _hincrbyfloat),
    TypeCommand("HRANDFIELD", -2, False, _hrandfield),
    TypeCommand("HSCAN", -3, False, _hscan),
]
