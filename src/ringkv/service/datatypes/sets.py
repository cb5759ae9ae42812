"""Redis's set commands as pure functions over a decoded set (base.py says the contract).

A set is `set[bytes]`. Each command checks its arguments and keys in the order Redis 7.0's
t_set.c does, so a command with two faults answers Redis's error. Worth knowing:
- SINTER, SINTERCARD, SINTERSTORE, SUNION*, SDIFF* look at every key's type before anything
  else: a WRONGTYPE key anywhere fails the command, even after a missing key.
- SMOVE answers 0 when the source is missing without looking at the destination's type; with
  source == destination it only says whether the member is there.
- SPOP's count is parsed before the key is looked at; SRANDMEMBER too.
- The STORE forms replace the destination whatever it held (its TTL goes with it), and delete
  it when the result is empty; they answer the result's size.

Replies: SMEMBERS, SINTER, SUNION, SDIFF a Python set (a RESP3 set); SPOP with a count a list
that `shape` turns into a set (it is a write, and its reply travels as msgpack); SRANDMEMBER
with a count a list (an array in Redis too: it may repeat members); SSCAN [cursor, members].
Draws and pops are deterministic for a given ctx.random (iteration.py says why).

Writes keep the key's expire_at_ms; a set created by SADD or SMOVE has none. Only keys that
changed are written; a set left empty is answered empty and the executor deletes it.
"""

from __future__ import annotations

from typing import Any

from ringkv.errors import CommandError
from ringkv.service.datatypes.base import (
    KIND_SET,
    SYNTAX_ERROR,
    Ctx,
    Entry,
    TypeCommand,
    Writes,
    expect,
)
from ringkv.service.datatypes.iteration import (
    draw,
    option_word,
    parse_cursor,
    parse_random_count,
    parse_scan_options,
    scan_page,
)
from ringkv.service.numbers import parse_int

MUST_BE_POSITIVE = "value is out of range, must be positive"
NUMKEYS_NOT_POSITIVE = "numkeys should be greater than 0"
NUMKEYS_TOO_MANY = "Number of keys can't be greater than number of args"
LIMIT_NEGATIVE = "LIMIT can't be negative"

Entries = dict[bytes, Entry | None]


def _set(entries: Entries, key: bytes) -> set[bytes] | None:
    return expect(entries[key], KIND_SET)


def _nonnegative(arg: bytes, message: str) -> int:
    """getRangeLongFromObjectOrReply(0, LONG_MAX) with a message: `message` both when `arg` is
    not an integer and when it is negative."""
    try:
        n = parse_int(arg)
    except CommandError:
        raise CommandError(message) from None
    if n < 0:
        raise CommandError(message)
    return n


def _sets_of(entries: Entries, keys: list[bytes]) -> list[set[bytes] | None]:
    """Every key's set (None: missing), after checking every key's type, as Redis's
    sinterGenericCommand and sunionDiffGenericCommand do before they compute anything."""
    return [_set(entries, key) for key in keys]


def _intersection(sets: list[set[bytes] | None]) -> set[bytes]:
    if any(s is None for s in sets):
        return set()
    present = sorted((s for s in sets if s is not None), key=len)  # smallest first, as Redis
    result = set(present[0])
    for other in present[1:]:
        result &= other
        if not result:
            break
    return result


def _union(sets: list[set[bytes] | None]) -> set[bytes]:
    result: set[bytes] = set()
    for s in sets:
        if s:
            result |= s
    return result


def _difference(sets: list[set[bytes] | None]) -> set[bytes]:
    first = sets[0]
    if not first:
        return set()
    result = set(first)
    for other in sets[1:]:
        if other:
            result -= other
            if not result:
                break
    return result


def _sadd(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    key = args[0]
    entry = entries[key]
    expect(entry, KIND_SET)
    if entry is None:
        entry = Entry(KIND_SET, set(), 0)
    members = entry.value
    before = len(members)
    members.update(args[1:])
    added = len(members) - before
    return ({key: entry} if added else {}), added


def _srem(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    key = args[0]
    entry = entries[key]
    members = expect(entry, KIND_SET)
    if not members:
        return {}, 0
    before = len(members)
    members.difference_update(args[1:])
    removed = before - len(members)
    return ({key: entry} if removed else {}), removed


def _smove(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    source_key, destination_key, member = args
    source = entries[source_key]
    if source is None:
        return {}, 0
    members = expect(source, KIND_SET)
    destination = entries[destination_key]
    expect(destination, KIND_SET)
    if source_key == destination_key:
        return {}, int(member in members)
    if member not in members:
        return {}, 0
    members.remove(member)
    writes: Writes = {source_key: source}
    if destination is None:
        writes[destination_key] = Entry(KIND_SET, {member}, 0)
    elif member not in destination.value:
        destination.value.add(member)
        writes[destination_key] = destination
    return writes, 1


def _sismember(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    members = _set(entries, args[0])
    return {}, int(members is not None and args[1] in members)


def _smismember(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    members = _set(entries, args[0]) or set()
    return {}, [int(member in members) for member in args[1:]]


def _smembers(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return {}, set(_set(entries, args[0]) or ())


def _scard(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return {}, len(_set(entries, args[0]) or ())


def _spop(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    key = args[0]
    if len(args) > 2:
        raise CommandError(SYNTAX_ERROR)
    if len(args) == 1:
        entry = entries[key]
        members = expect(entry, KIND_SET)
        if not members:
            return {}, None
        popped = ctx.random.choice(sorted(members))
        members.remove(popped)
        return {key: entry}, popped
    count = _nonnegative(args[1], MUST_BE_POSITIVE)
    entry = entries[key]
    members = expect(entry, KIND_SET)
    if not members or count == 0:
        return {}, []
    popped = draw(ctx, sorted(members), count, len)
    members.difference_update(popped)
    return {key: entry}, popped


def _spop_shape(reply: Any) -> Any:
    """SPOP with a count answers a set (RESP3 `~`); without one a member or nil."""
    return set(reply) if isinstance(reply, list) else reply


def _srandmember(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    if len(args) > 2:
        raise CommandError(SYNTAX_ERROR)
    if len(args) == 1:
        members = _set(entries, args[0])
        if not members:
            return {}, None
        return {}, ctx.random.choice(sorted(members))
    count = parse_random_count(args[1])
    members = _set(entries, args[0])
    if not members or count == 0:
        return {}, []
    return {}, draw(ctx, sorted(members), count, len)


def _sinter(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return {}, _intersection(_sets_of(entries, args))


def _sintercard_keys(args: list[bytes]) -> list[bytes]:
    numkeys = _numkeys(args)
    return args[1 : 1 + numkeys]


def _numkeys(args: list[bytes]) -> int:
    try:
        numkeys = parse_int(args[0])
    except CommandError:
        raise CommandError(NUMKEYS_NOT_POSITIVE) from None
    if numkeys < 1:
        raise CommandError(NUMKEYS_NOT_POSITIVE)
    if numkeys > len(args) - 1:
        raise CommandError(NUMKEYS_TOO_MANY)
    return numkeys


def _sintercard(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    numkeys = _numkeys(args)
    limit = 0
    options = args[1 + numkeys :]
    i = 0
    while i < len(options):
        if option_word(options[i]) == b"limit" and i + 1 < len(options):
            limit = _nonnegative(options[i + 1], LIMIT_NEGATIVE)
            i += 2
        else:
            raise CommandError(SYNTAX_ERROR)
    size = len(_intersection(_sets_of(entries, args[1 : 1 + numkeys])))
    return {}, min(size, limit) if limit else size


def _sunion(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return {}, _union(_sets_of(entries, args))


def _sdiff(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return {}, _difference(_sets_of(entries, args))


def _store(result: set[bytes], destination: bytes, entries: Entries) -> tuple[Writes, Any]:
    """A STORE form's outcome: the destination holds the result (a new set, no TTL) or is
    deleted when the result is empty; the reply is the result's size."""
    if not result:
        return ({destination: None} if entries[destination] is not None else {}), 0
    return {destination: Entry(KIND_SET, result, 0)}, len(result)


def _sinterstore(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return _store(_intersection(_sets_of(entries, args[1:])), args[0], entries)


def _sunionstore(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return _store(_union(_sets_of(entries, args[1:])), args[0], entries)


def _sdiffstore(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return _store(_difference(_sets_of(entries, args[1:])), args[0], entries)


def _sscan(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    cursor = parse_cursor(args[1])
    members = _set(entries, args[0])
    if members is None:
        return {}, [b"0", []]
    options = parse_scan_options(args[2:])
    next_cursor, page = scan_page(sorted(members), cursor, options)
    return {}, [next_cursor, page]


def _all_keys(args: list[bytes]) -> list[bytes]:
    return list(args)


def _two_keys(args: list[bytes]) -> list[bytes]:
    return [args[0], args[1]]


COMMANDS: list[TypeCommand] = [
    TypeCommand("SADD", -3, True, _sadd),
    TypeCommand("SREM", -3, True, _srem),
    TypeCommand("SISMEMBER", 3, False, _sismember),
    TypeCommand("SMISMEMBER", -3, False, _smismember),
    TypeCommand("SMEMBERS", 2, False, _smembers),
    TypeCommand("SCARD", 2, False, _scard),
    TypeCommand("SPOP", -2, True, _spop, shape=_spop_shape),
    TypeCommand("SRANDMEMBER", -2, False, _srandmember),
    TypeCommand("SMOVE", 4, True, _smove, keys=_two_keys, last_key=2),
    TypeCommand("SINTER", -2, False, _sinter, keys=_all_keys, last_key=-1),
    TypeCommand(
        "SINTERCARD", -3, False, _sintercard, keys=_sintercard_keys, first_key=0, last_key=0, key_step=0
    ),
    TypeCommand("SUNION", -2, False, _sunion, keys=_all_keys, last_key=-1),
    TypeCommand("SDIFF", -2, False, _sdiff, keys=_all_keys, last_key=-1),
    TypeCommand("SINTERSTORE", -3, True, _sinterstore, keys=_all_keys, last_key=-1),
    TypeCommand("SUNIONSTORE", -3, True, _sunionstore, keys=_all_keys, last_key=-1),
    TypeCommand("SDIFFSTORE", -3, True, _sdiffstore, keys=_all_keys, last_key=-1),
    TypeCommand("SSCAN", -3, False, _sscan),
]
