"""Redis's list commands as pure functions over a decoded list (base.py says the contract).

A list is `list[bytes]`, head first. Each command checks its arguments in the order Redis
7.0's t_list.c does, so that a command with two faults answers the same error as Redis (e.g.
LRANGE parses its indexes before it looks at the key, LINDEX looks at the key first).

Replies that need the adapter's help, because a Python value cannot say them alone:
- LPOP/RPOP with a count on a missing key, and LMPOP when no key has an element, answer None;
  Redis writes a null *array* there (`*-1` in RESP2), where every other None of this module is
  a null bulk string (`$-1`).
- LSET and LTRIM answer `OK` (the str "OK", which survives msgpack as a str, unlike bytes):
  Redis's simple string `+OK`.

Writes keep the key's expire_at_ms (Redis keeps a list's TTL across pushes and pops); a list
created by a command (LPUSH, LMOVE's destination) has none. A list that empties is answered as
an empty entry, which the executor deletes, as Redis deletes an empty list's key.
"""

from __future__ import annotations

from typing import Any

from ringkv.errors import CommandError
from ringkv.service.datatypes.base import (
    KIND_LIST,
    SYNTAX_ERROR,
    Ctx,
    Entry,
    TypeCommand,
    Writes,
    expect,
    wrong_arity,
)
from ringkv.service.numbers import INT64_MIN, parse_int

OK = "OK"

NO_SUCH_KEY = "no such key"
INDEX_OUT_OF_RANGE = "index out of range"
MUST_BE_POSITIVE = "value is out of range, must be positive"
RANK_ZERO = (
    "RANK can't be zero: use 1 to start from the first match, 2 from the second ... "
    "or use negative to start from the end of the list"
)
COUNT_NEGATIVE = "COUNT can't be negative"
MAXLEN_NEGATIVE = "MAXLEN can't be negative"
NUMKEYS_NOT_POSITIVE = "numkeys should be greater than 0"
MPOP_COUNT_NOT_POSITIVE = "count should be greater than 0"

Entries = dict[bytes, Entry | None]


def _token(arg: bytes) -> bytes:
    """An option word as Redis's strcasecmp sees it: up to the first NUL, ASCII case folded."""
    return arg.split(b"\0", 1)[0].lower()


def _ranged_int(arg: bytes, low: int, message: str) -> int:
    """Redis's getRangeLongFromObjectOrReply with a message: `message` both when `arg` is not
    an integer and when it is below `low` (the top is LONG_MAX)."""
    try:
        n = parse_int(arg)
    except CommandError:
        raise CommandError(message) from None
    if n < low:
        raise CommandError(message)
    return n


def _position(arg: bytes) -> bool:
    """LEFT or RIGHT (any case): True for LEFT, the head."""
    word = _token(arg)
    if word == b"left":
        return True
    if word == b"right":
        return False
    raise CommandError(SYNTAX_ERROR)


def _span(length: int, start: int, stop: int) -> tuple[int, int]:
    """LRANGE's inclusive start/stop (negative counts from the tail) as a slice [lo, hi) of a
    list of `length`; lo >= hi when the range is empty. Never wider than the list, whatever
    the arguments (LRANGE k 0 9223372036854775807 builds at most the list)."""
    if start < 0:
        start += length
    if stop < 0:
        stop += length
    start = max(start, 0)
    if start > stop or start >= length:
        return 0, 0
    return start, min(stop, length - 1) + 1


def _kept(entry: Entry | None, value: list[bytes]) -> Entry:
    """The entry to write for `value`: the key's own entry (its TTL kept) or a new list."""
    if entry is None:
        return Entry(KIND_LIST, value, 0)
    entry.value = value
    return entry


# --- pushes ----------------------------------------------------------------------------------


def _push(args: list[bytes], entries: Entries, head: bool, only_existing: bool) -> tuple[Writes, Any]:
    key = args[0]
    entry = entries[key]
    items = expect(entry, KIND_LIST)
    if items is None:
        if only_existing:
            return {}, 0
        items = []
    elements = args[1:]
    if head:
        # Each element goes to the head in turn, so the last one named ends up first.
        items[:0] = elements[::-1]
    else:
        items.extend(elements)
    return {key: _kept(entry, items)}, len(items)


def _lpush(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return _push(args, entries, head=True, only_existing=False)


def _rpush(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return _push(args, entries, head=False, only_existing=False)


def _lpushx(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return _push(args, entries, head=True, only_existing=True)


def _rpushx(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return _push(args, entries, head=False, only_existing=True)


def _linsert(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    key, where, pivot, element = args
    word = _token(where)
    if word not in (b"before", b"after"):
        raise CommandError(SYNTAX_ERROR)
    entry = entries[key]
    items = expect(entry, KIND_LIST)
    if items is None:
        return {}, 0
    try:
        at = items.index(pivot)
    except ValueError:
        return {}, -1
    items.insert(at if word == b"before" else at + 1, element)
    return {key: _kept(entry, items)}, len(items)


# --- pops ------------------------------------------------------------------------------------


def _take(items: list[bytes], head: bool, count: int) -> list[bytes]:
    """Removes up to `count` items from one end of `items` and answers them in pop order (from
    the tail, the last item first)."""
    n = min(count, len(items))
    if head:
        taken = items[:n]
        del items[:n]
    else:
        taken = items[len(items) - n :][::-1]
        del items[len(items) - n :]
    return taken


def _pop(name: str, args: list[bytes], entries: Entries, head: bool) -> tuple[Writes, Any]:
    if len(args) > 2:
        raise wrong_arity(name)
    count = _ranged_int(args[1], 0, MUST_BE_POSITIVE) if len(args) == 2 else None
    key = args[0]
    entry = entries[key]
    items = expect(entry, KIND_LIST)
    if items is None:
        return {}, None  # a null array when a count was given: see the module docstring
    if count is None:
        taken = _take(items, head, 1)
        return {key: _kept(entry, items)}, taken[0]
    if count == 0:
        return {}, []
    taken = _take(items, head, count)
    return {key: _kept(entry, items)}, taken


def _lpop(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return _pop("LPOP", args, entries, head=True)


def _rpop(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return _pop("RPOP", args, entries, head=False)


def _lmpop_keys(args: list[bytes]) -> list[bytes]:
    """LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]: its keys; the errors Redis gives
    first when numkeys is bad or leaves no room for the direction."""
    numkeys = _ranged_int(args[0], 1, NUMKEYS_NOT_POSITIVE)
    if numkeys + 1 >= len(args):
        raise CommandError(SYNTAX_ERROR)
    return args[1 : numkeys + 1]


def _lmpop(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    keys = _lmpop_keys(args)
    at = len(keys) + 1
    head = _position(args[at])
    count = None
    rest = args[at + 1 :]
    i = 0
    while i < len(rest):
        if count is None and _token(rest[i]) == b"count" and i + 1 < len(rest):
            count = _ranged_int(rest[i + 1], 1, MPOP_COUNT_NOT_POSITIVE)
            i += 2
        else:
            raise CommandError(SYNTAX_ERROR)
    count = 1 if count is None else count
    for key in keys:
        entry = entries[key]
        items = expect(entry, KIND_LIST)
        if not items:
            continue
        taken = _take(items, head, count)
        return {key: _kept(entry, items)}, [key, taken]
    return {}, None  # a null array: see the module docstring


def _lmove_generic(args: list[bytes], entries: Entries, head_from: bool, head_to: bool) -> tuple[Writes, Any]:
    source, destination = args[0], args[1]
    source_entry = entries[source]
    items = expect(source_entry, KIND_LIST)
    if not items:
        return {}, None
    destination_entry = entries[destination]
    target = expect(destination_entry, KIND_LIST)
    # Only now may anything change: a destination of another type refuses the whole command.
    value = items.pop(0) if head_from else items.pop()
    writes: Writes = {source: _kept(source_entry, items)}
    if destination == source:
        target = items  # LMOVE l l ...: one list, popped then pushed (a rotation)
        destination_entry = source_entry
    elif target is None:
        target = []
    if head_to:
        target.insert(0, value)
    else:
        target.append(value)
    writes[destination] = _kept(destination_entry, target)
    return writes, value


def _lmove(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    head_from = _position(args[2])
    head_to = _position(args[3])
    return _lmove_generic(args, entries, head_from, head_to)


def _rpoplpush(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    return _lmove_generic(args, entries, head_from=False, head_to=True)


# --- reads -----------------------------------------------------------------------------------


def _llen(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    items = expect(entries[args[0]], KIND_LIST)
    return {}, len(items) if items is not None else 0


def _lrange(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    start, stop = parse_int(args[1]), parse_int(args[2])
    items = expect(entries[args[0]], KIND_LIST)
    if items is None:
        return {}, []
    lo, hi = _span(len(items), start, stop)
    return {}, items[lo:hi]


def _lindex(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    items = expect(entries[args[0]], KIND_LIST)
    if items is None:
        return {}, None
    index = parse_int(args[1])
    if -len(items) <= index < len(items):
        return {}, items[index]
    return {}, None


def _lpos(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    key, element = args[0], args[1]
    rank, count, maxlen = 1, None, 0
    j = 2
    while j < len(args):
        word = _token(args[j])
        more = j + 1 < len(args)
        if word == b"rank" and more:
            rank = parse_int(args[j + 1])
            if rank == 0:
                raise CommandError(RANK_ZERO)
        elif word == b"count" and more:
            count = _ranged_int(args[j + 1], 0, COUNT_NEGATIVE)
        elif word == b"maxlen" and more:
            maxlen = _ranged_int(args[j + 1], 0, MAXLEN_NEGATIVE)
        else:
            raise CommandError(SYNTAX_ERROR)
        j += 2
    items = expect(entries[key], KIND_LIST)
    if items is None:
        return {}, [] if count is not None else None
    from_tail = rank < 0
    # Redis negates RANK in a C long: -9223372036854775808 stays negative, so every match
    # qualifies and COUNT's stop test (matches - rank + 1 >= count) never holds.
    wrapped = rank == INT64_MIN
    rank = abs(rank)
    n = len(items)
    scan = n if maxlen == 0 else min(maxlen, n)
    positions = range(n - 1, n - 1 - scan, -1) if from_tail else range(scan)
    found: list[int] = []
    matches = 0
    for i in positions:
        if items[i] != element:
            continue
        matches += 1
        if not wrapped and matches < rank:
            continue
        if count is None:
            return {}, i
        found.append(i)
        if count and not wrapped and matches - rank + 1 >= count:
            break
    return {}, found if count is not None else None


# --- edits in place --------------------------------------------------------------------------


def _lset(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    key, element = args[0], args[2]
    entry = entries[key]
    items = expect(entry, KIND_LIST)
    if items is None:
        raise CommandError(NO_SUCH_KEY)
    index = parse_int(args[1])
    if not -len(items) <= index < len(items):
        raise CommandError(INDEX_OUT_OF_RANGE)
    items[index] = element
    return {key: _kept(entry, items)}, OK


def _lrem(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    key, element = args[0], args[2]
    count = parse_int(args[1])
    entry = entries[key]
    items = expect(entry, KIND_LIST)
    if items is None:
        return {}, 0
    limit = abs(count) if count else len(items)
    # Walk from the end the count's sign names, dropping up to `limit` matches.
    order = reversed(items) if count < 0 else iter(items)
    kept: list[bytes] = []
    removed = 0
    for item in order:
        if removed < limit and item == element:
            removed += 1
        else:
            kept.append(item)
    if not removed:
        return {}, 0
    if count < 0:
        kept.reverse()
    return {key: _kept(entry, kept)}, removed


def _ltrim(ctx: Ctx, args: list[bytes], entries: Entries) -> tuple[Writes, Any]:
    key = args[0]
    start, stop = parse_int(args[1]), parse_int(args[2])
    entry = entries[key]
    items = expect(entry, KIND_LIST)
    if items is None:
        return {}, OK
    lo, hi = _span(len(items), start, stop)
    if lo == 0 and hi == len(items):
        return {}, OK  # nothing trimmed: no write
    return {key: _kept(entry, items[lo:hi])}, OK


def _both_keys(args: list[bytes]) -> list[bytes]:
    return [args[0], args[1]]


COMMANDS: list[TypeCommand] = [
    TypeCommand("LPUSH", -3, True, _lpush),
    TypeCommand("RPUSH", -3, True, _rpush),
    TypeCommand("LPUSHX", -3, True, _lpushx),
    TypeCommand("RPUSHX", -3, True, _rpushx),
    TypeCommand("LINSERT", 5, True, _linsert),
    TypeCommand("LPOP", -2, True, _lpop),
    TypeCommand("RPOP", -2, True, _rpop),
    TypeCommand("LMPOP", -4, True, _lmpop, keys=_lmpop_keys, first_key=0, last_key=0, key_step=0),
    TypeCommand("LMOVE", 5, True, _lmove, keys=_both_keys, first_key=1, last_key=2, key_step=1),
    TypeCommand("RPOPLPUSH", 3, True, _rpoplpush, keys=_both_keys, first_key=1, last_key=2, key_step=1),
    TypeCommand("LLEN", 2, False, _llen),
    TypeCommand("LRANGE", 4, False, _lrange),
    TypeCommand("LINDEX", 3, False, _lindex),
    TypeCommand("LPOS", -3, False, _lpos),
    TypeCommand("LSET", 4, True, _lset),
    TypeCommand("LREM", 4, True, _lrem),
    TypeCommand("LTRIM", 4, True, _ltrim),
]


def null_is_array(name: str, args: list[bytes]) -> bool:
    """Whether a None reply of list command `name` (args after the name) is Redis's null array
    (`*-1` in RESP2) rather than a null bulk string (`$-1`): LMPOP always, LPOP and RPOP when
    given a count. RESP3 writes both as `_`."""
    name = name.upper()
    return name == "LMPOP" or (name in ("LPOP", "RPOP") and len(args) == 2)
