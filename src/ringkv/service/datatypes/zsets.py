"""Sorted sets: Redis 7.0's Z* commands as pure functions over `dict[bytes, float]`.

A sorted set is stored as member -> score (codec.py); its order, (score, member bytes), is
computed when a command needs it, so a range command sorts the set: O(n log n) per command on
top of the O(n) decode of the record (Stage 1 keeps a collection as one record).

Parsing follows Redis to the byte, because the differential tests compare error texts:
- a score argument (ZADD, ZINCRBY, WEIGHTS) is read as Redis's string2d reads it: C strtod
  (decimal or hex, inf/infinity) that must use the whole argument, no leading space, no NaN,
  no overflow to infinity and no underflow to zero;
- a score range bound is read as zslParseRange reads it: `(` for exclusive, then strtod that
  may skip leading spaces, may overflow to inf, and accepts an empty text as 0;
- a lex bound is `-`, `+`, `[x` or `(x`;
- an integer (ranks, LIMIT, COUNT, numkeys) is a strict signed 64-bit decimal.

Lex ranges (ZRANGEBYLEX, ZLEXCOUNT, ZREMRANGEBYLEX) are defined by Redis only when every member
has the same score. With mixed scores we answer what Redis answers for a small (listpack) set:
walk the (score, member) order from the first element at or above min and stop at the first
above max. Redis answers differently for a set big enough to be a skiplist (there the answer
depends on the skiplist's random levels), so no single answer matches it there.

Scores are floats: replies carry them as Python floats (the adapter writes RESP2 bulk text or a
RESP3 double), except ZSCAN, whose scores are strings in Redis too (see `score_text`). A
WITHSCORES or counted ZPOPMIN/ZPOPMAX reply is the RESP2 flat [member, score, ...]; Redis 7
answers RESP3 clients with [[member, score], ...] there: `resp3_pairs` says when and
`pair_up` converts. Stored scores are never -0.0 (a -0 is stored as 0, as Redis's small sets
store it), so equal sets encode to equal bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringkv.errors import CommandError
from ringkv.service.datatypes.base import (
    KIND_SET,
    KIND_ZSET,
    NOT_FLOAT,
    NOT_INTEGER,
    SYNTAX_ERROR,
    Ctx,
    Entry,
    TypeCommand,
    Writes,
    WrongTypeError,
    expect,
)
from ringkv.service.glob import GlobPattern

NOT_A_RANGE_FLOAT = "min or max is not a float"
NOT_A_LEX_ITEM = "min or max not valid string range item"
NAN_RESULT = "resulting score is not a number (NaN)"
NOT_POSITIVE = "value is out of range, must be positive"
NOT_A_WEIGHT = "weight value is not a float"
XX_AND_NX = "XX and NX options at the same time are not compatible"
GT_LT_NX = "GT, LT, and/or NX options at the same time are not compatible"
INCR_ONE_PAIR = "INCR option supports a single increment-element pair"
LIMIT_NEEDS_BY = "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
BYLEX_NO_SCORES = "syntax error, WITHSCORES not supported in combination with BYLEX"
INVALID_CURSOR = "invalid cursor"

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
ULONG_MAX = (1 << 64) - 1
SCAN_DEFAULT_COUNT = 10  # ZSCAN's COUNT when not given, as Redis's
_INT_IN_DOUBLE = 4503599627370496  # 2**52: below it d2string writes an integral score as an integer

# --- numbers, as Redis reads them ------------------------------------------------------------

_LONG = re.compile(rb"-?[1-9][0-9]*|0")
_SPACE = b" \t\n\v\f\r"
# C strtod's longest prefix: hex before decimal (so "0x1" is not "0" then "x1"), "infinity"
# before "inf", "nan" (with an optional "(chars)").
_STRTOD = re.compile(
    rb"(?P<sign>[+-]?)(?:"
    rb"(?P<hex>0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?)"
    rb"|(?P<dec>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    rb"|(?P<inf>(?i:infinity|inf))"
    rb"|(?P<nan>(?i:nan)(?:\([0-9A-Za-z_]*\))?)"
    rb")"
)
_NONZERO_DIGIT = re.compile(rb"[1-9a-fA-F]")


def parse_long(data: bytes, message: str = NOT_INTEGER) -> int:
    """A C long as Redis's string2ll reads it: no sign but '-', no spaces, no leading zeros."""
    if len(data) > 20 or not _LONG.fullmatch(data):
        raise CommandError(message)
    n = int(data)
    if not INT64_MIN <= n <= INT64_MAX:
        raise CommandError(message)
    return n


def _strtod(data: bytes, start: int = 0) -> tuple[float, int, bool]:
    """C strtod from `start`: (value, end index, out of range). End is `start` when nothing
    converts; out of range is C's ERANGE for an overflow to inf or an underflow to zero."""
    i = start
    while i < len(data) and data[i] in _SPACE:
        i += 1
    m = _STRTOD.match(data, i)
    if m is None:
        return 0.0, start, False
    sign = -1.0 if m["sign"] == b"-" else 1.0
    if m["inf"] is not None:
        return sign * math.inf, m.end(), False
    if m["nan"] is not None:
        return math.nan, m.end(), False
    text = m["hex"] if m["hex"] is not None else m["dec"]
    try:
        value = float.fromhex(text.decode()) if m["hex"] is not None else float(text)
    except OverflowError:
        value = math.inf
    mantissa = text[2:] if m["hex"] is not None else text
    mantissa = re.split(rb"[pP]" if m["hex"] is not None else rb"[eE]", mantissa)[0]
    erange = math.isinf(value) or (value == 0.0 and _NONZERO_DIGIT.search(mantissa) is not None)
    return sign * value, m.end(), erange


def parse_score(data: bytes, message: str = NOT_FLOAT) -> float:
    """A score argument as Redis's string2d reads it (ZADD, ZINCRBY, WEIGHTS)."""
    if not data or data[0] in _SPACE:
        raise CommandError(message)
    value, end, erange = _strtod(data)
    if end != len(data) or erange or math.isnan(value):
        raise CommandError(message)
    return value


def _c_string(data: bytes) -> bytes:
    """What C code that stops at the first NUL sees of an argument."""
    nul = data.find(b"\x00")
    return data if nul < 0 else data[:nul]


def _score_bound(data: bytes) -> tuple[float, bool]:
    """One end of a score range (zslParseRange): (value, exclusive)."""
    text = _c_string(data)
    exclusive = text[:1] == b"("
    if exclusive:
        text = text[1:]
    value, end, _ = _strtod(text)
    if end != len(text) or math.isnan(value):
        raise CommandError(NOT_A_RANGE_FLOAT)
    return value, exclusive


# A lex bound is (rank, text): rank 0 is "-" (below every member), 2 is "+" (above every
# member), 1 a member text; tuples then compare as Redis's sdscmplex does.
LexBound = tuple[int, bytes]


def _lex_bound(data: bytes) -> tuple[LexBound, bool]:
    """One end of a lex range (zslParseLexRangeItem): (bound, exclusive)."""
    first = data[:1]
    if first in (b"+", b"-"):
        if len(data) > 1 and data[1] != 0:
            raise CommandError(NOT_A_LEX_ITEM)
        return ((2 if first == b"+" else 0), b""), True
    if first == b"(":
        return (1, data[1:]), True
    if first == b"[":
        return (1, data[1:]), False
    raise CommandError(NOT_A_LEX_ITEM)


def score_text(score: float) -> bytes:
    """A score as Redis 7.0's d2string writes it (ZSCAN's score strings): integers below 2**52
    in full, other values with %.17g."""
    if math.isnan(score):
        return b"nan"
    if math.isinf(score):
        return b"inf" if score > 0 else b"-inf"
    if score == 0:
        return b"-0" if math.copysign(1.0, score) < 0 else b"0"
    if -_INT_IN_DOUBLE < score < _INT_IN_DOUBLE and score == int(score):
        return b"%d" % int(score)
    return b"%.17g" % score


def _stored(score: float) -> float:
    return score + 0.0  # -0.0 becomes 0.0


# --- ranges over the (score, member) order ---------------------------------------------------

Pair = tuple[float, bytes]


def _ordered(zset: dict[bytes, float]) -> list[Pair]:
    return sorted((score, member) for member, score in zset.items())


class _Range:
    """A score or lex range: `gte_min(pair)` and `lte_max(pair)` as Redis tests an element
    against each end, and `empty` when the ends alone make it empty."""

    __slots__ = ("empty", "gte_min", "lte_max")

    def __init__(
        self, gte_min: Callable[[Pair], bool], lte_max: Callable[[Pair], bool], empty: bool
    ):
        self.gte_min = gte_min
        self.lte_max = lte_max
        self.empty = empty


def _score_range(lo: tuple[float, bool], hi: tuple[float, bool]) -> _Range:
    (mn, mnex), (mx, mxex) = lo, hi
    return _Range(
        (lambda p: p[0] > mn) if mnex else (lambda p: p[0] >= mn),
        (lambda p: p[0] < mx) if mxex else (lambda p: p[0] <= mx),
        mn > mx or (mn == mx and (mnex or mxex)),
    )


def _lex_range(lo: tuple[LexBound, bool], hi: tuple[LexBound, bool]) -> _Range:
    (mn, mnex), (mx, mxex) = lo, hi
    return _Range(
        (lambda p: (1, p[1]) > mn) if mnex else (lambda p: (1, p[1]) >= mn),
        (lambda p: (1, p[1]) < mx) if mxex else (lambda p: (1, p[1]) <= mx),
        mn > mx or (mn == mx and (mnex or mxex)),
    )


def _walk(
    order: list[Pair], rng: _Range, reverse: bool, offset: int = 0, limit: int = -1
) -> list[int]:
    """Indexes into `order` of the elements in `rng`, in reply order, as Redis walks a small
    set: from the first element in range (the last one when reversed), skip `offset` elements
    (a negative offset skips everything), then take elements while they are in range, at most
    `limit` of them (negative: no limit)."""
    if rng.empty or not order or not rng.gte_min(order[-1]) or not rng.lte_max(order[0]):
        return []
    n = len(order)
    if not reverse:
        start = next(i for i in range(n) if rng.gte_min(order[i]))
        if not rng.lte_max(order[start]):
            return []
        i, step, inside = start, 1, rng.lte_max
    else:
        start = next(i for i in range(n - 1, -1, -1) if rng.lte_max(order[i]))
        if not rng.gte_min(order[start]):
            return []
        i, step, inside = start, -1, rng.gte_min
    if offset < 0:
        return []
    i += step * offset
    out: list[int] = []
    while 0 <= i < n and limit != 0 and inside(order[i]):
        out.append(i)
        i += step
        limit -= 1
    return out


def _rank_slice(length: int, start: int, end: int) -> tuple[int, int] | None:
    """Redis's rank range: negative ranks count from the end; None when empty."""
    if start < 0:
        start += length
    if end < 0:
        end += length
    start = max(start, 0)
    if start > end or start >= length:
        return None
    return start, min(end, length - 1)


def _flat(pairs: list[Pair], withscores: bool) -> list[Any]:
    if not withscores:
        return [member for _, member in pairs]
    out: list[Any] = []
    for score, member in pairs:
        out.append(member)
        out.append(score)
    return out


def pair_up(reply: list[Any]) -> list[list[Any]]:
    """A flat [member, score, ...] reply as the [[member, score], ...] RESP3 clients get."""
    return [[reply[i], reply[i + 1]] for i in range(0, len(reply), 2)]


def resp3_pairs(name: str, args: list[bytes]) -> bool:
    """Whether Redis 7 answers a RESP3 client [[member, score], ...] where this module answers
    the flat list: a ZRANGE-family reply WITH SCORES, a ZPOPMIN/ZPOPMAX given a count."""
    name = name.upper()
    if name in ("ZPOPMIN", "ZPOPMAX"):
        return len(args) == 2
    if name in ("ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE"):
        return any(a.lower() == b"withscores" for a in args[3:])
    return False


def _zset_of(entry: Entry | None) -> dict[bytes, float] | None:
    return expect(entry, KIND_ZSET)


# --- ZADD, ZINCRBY ---------------------------------------------------------------------------

_ZADD_FLAGS = (b"nx", b"xx", b"ch", b"incr", b"gt", b"lt")


def zadd_options(args: list[bytes]) -> tuple[set[bytes], int]:
    """ZADD's flags (lower case) and the index of its first score in `args` (key first):
    flags are read up to the first argument that is none, as Redis reads them, so a member
    named like a flag is a member."""
    flags: set[bytes] = set()
    idx = 1
    while idx < len(args) and args[idx].lower() in _ZADD_FLAGS:
        flags.add(args[idx].lower())
        idx += 1
    return flags, idx


def _zadd_generic(
    args: list[bytes], entries: dict[bytes, Entry | None], incr: bool
) -> tuple[Writes, Any]:
    key = args[0]
    flags, idx = zadd_options(args)
    if incr:
        flags.add(b"incr")
    incr, nx, xx, gt, lt = (f in flags for f in (b"incr", b"nx", b"xx", b"gt", b"lt"))
    rest = len(args) - idx
    if rest % 2 or not rest:
        raise CommandError(SYNTAX_ERROR)
    if nx and xx:
        raise CommandError(XX_AND_NX)
    if (gt and nx) or (lt and nx) or (gt and lt):
        raise CommandError(GT_LT_NX)
    if incr and rest > 2:
        raise CommandError(INCR_ONE_PAIR)
    pairs = [(parse_score(args[i]), args[i + 1]) for i in range(idx, len(args), 2)]
    entry = entries[key]
    zset = _zset_of(entry)
    if zset is None:
        if xx:
            return {}, None if incr else 0
        zset = {}
        entry = Entry(KIND_ZSET, zset, 0)
    added = updated = processed = 0
    reply_score = 0.0
    for score, member in pairs:
        current = zset.get(member)
        if current is not None:
            if nx:
                continue
            if incr:
                score = current + score
                if math.isnan(score):
                    raise CommandError(NAN_RESULT)  # INCR has one pair: nothing changed yet
            if (lt and score >= current) or (gt and score <= current):
                continue
            if score != current:
                zset[member] = _stored(score)
                updated += 1
        else:
            if xx:
                continue
            zset[member] = _stored(score)
            added += 1
        processed += 1
        reply_score = score
    writes: Writes = {key: entry} if added or updated else {}
    if incr:
        return writes, reply_score if processed else None
    return writes, added + updated if b"ch" in flags else added


def _zadd(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    return _zadd_generic(args, entries, incr=False)


def _zincrby(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    return _zadd_generic(args, entries, incr=True)


# --- single-member reads and ZREM ------------------------------------------------------------


def _zrem(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    entry = entries[args[0]]
    zset = _zset_of(entry)
    if zset is None:
        return {}, 0
    removed = 0
    for member in args[1:]:
        if zset.pop(member, None) is not None:
            removed += 1
    return ({args[0]: entry} if removed else {}), removed


def _zscore(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    zset = _zset_of(entries[args[0]])
    return {}, None if zset is None else zset.get(args[1])


def _zmscore(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    zset = _zset_of(entries[args[0]]) or {}
    return {}, [zset.get(member) for member in args[1:]]


def _zcard(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    zset = _zset_of(entries[args[0]])
    return {}, 0 if zset is None else len(zset)


def _zrank_generic(
    args: list[bytes], entries: dict[bytes, Entry | None], reverse: bool
) -> tuple[Writes, Any]:
    zset = _zset_of(entries[args[0]])
    if zset is None or args[1] not in zset:
        return {}, None
    mine = (zset[args[1]], args[1])
    below = sum(1 for member, score in zset.items() if (score, member) < mine)
    return {}, len(zset) - 1 - below if reverse else below


def _zrank(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    return _zrank_generic(args, entries, reverse=False)


def _zrevrank(
    ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]
) -> tuple[Writes, Any]:
    return _zrank_generic(args, entries, reverse=True)


# --- counts and ranges -----------------------------------------------------------------------


def _zcount(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    rng = _score_range(_score_bound(args[1]), _score_bound(args[2]))
    zset = _zset_of(entries[args[0]])
    if zset is None:
        return {}, 0
    return {}, len(_walk(_ordered(zset), rng, reverse=False))


def _zlexcount(
    ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]
) -> tuple[Writes, Any]:
    rng = _lex_range(_lex_bound(args[1]), _lex_bound(args[2]))
    zset = _zset_of(entries[args[0]])
    if zset is None:
        return {}, 0
    return {}, len(_walk(_ordered(zset), rng, reverse=False))


RANK, SCORE, LEX = "rank", "score", "lex"


def _zrange_generic(
    args: list[bytes], entries: dict[bytes, Entry | None], by: str | None, reverse: bool | None
) -> tuple[Writes, Any]:
    """Redis's zrangeGenericCommand: `by` and `reverse` are fixed by the legacy commands
    (ZRANGEBYSCORE...) and None for ZRANGE, whose options choose them."""
    withscores = False
    offset, limit = 0, -1
    j = 3
    while j < len(args):
        word = args[j].lower()
        if word == b"withscores":
            withscores = True
        elif word == b"limit" and len(args) - j - 1 >= 2:
            offset = parse_long(args[j + 1])
            limit = parse_long(args[j + 2])
            j += 2
        elif reverse is None and word == b"rev":
            reverse = True
        elif by is None and word == b"bylex":
            by = LEX
        elif by is None and word == b"byscore":
            by = SCORE
        else:
            raise CommandError(SYNTAX_ERROR)
        j += 1
    reverse = bool(reverse)
    by = by or RANK
    if limit != -1 and by == RANK:
        raise CommandError(LIMIT_NEEDS_BY)
    if withscores and by == LEX:
        raise CommandError(BYLEX_NO_SCORES)
    lo_arg, hi_arg = (args[2], args[1]) if reverse and by != RANK else (args[1], args[2])
    rng: _Range | None = None
    if by == RANK:
        start, end = parse_long(args[1]), parse_long(args[2])
    elif by == SCORE:
        rng = _score_range(_score_bound(lo_arg), _score_bound(hi_arg))
    else:
        rng = _lex_range(_lex_bound(lo_arg), _lex_bound(hi_arg))
    zset = _zset_of(entries[args[0]])
    if zset is None:
        return {}, []
    order = _ordered(zset)
    if rng is None:
        span = _rank_slice(len(order), start, end)
        if span is None:
            return {}, []
        if reverse:
            order.reverse()
        picked = order[span[0] : span[1] + 1]
    else:
        picked = [order[i] for i in _walk(order, rng, reverse, offset, limit)]
    return {}, _flat(picked, withscores)


def _range_command(by: str | None, reverse: bool | None) -> Callable[..., tuple[Writes, Any]]:
    def run(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
        return _zrange_generic(args, entries, by, reverse)

    return run


def _zremrange_generic(
    args: list[bytes], entries: dict[bytes, Entry | None], by: str
) -> tuple[Writes, Any]:
    if by == RANK:
        start, end = parse_long(args[1]), parse_long(args[2])
    elif by == SCORE:
        rng = _score_range(_score_bound(args[1]), _score_bound(args[2]))
    else:
        rng = _lex_range(_lex_bound(args[1]), _lex_bound(args[2]))
    entry = entries[args[0]]
    zset = _zset_of(entry)
    if zset is None:
        return {}, 0
    order = _ordered(zset)
    if by == RANK:
        span = _rank_slice(len(order), start, end)
        doomed = order[span[0] : span[1] + 1] if span else []
    else:
        doomed = [order[i] for i in _walk(order, rng, reverse=False)]
    for _, member in doomed:
        del zset[member]
    return ({args[0]: entry} if doomed else {}), len(doomed)


def _remrange_command(by: str) -> Callable[..., tuple[Writes, Any]]:
    def run(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
        return _zremrange_generic(args, entries, by)

    return run


# --- ZPOPMIN, ZPOPMAX ------------------------------------------------------------------------


def _zpop_generic(
    args: list[bytes], entries: dict[bytes, Entry | None], biggest: bool
) -> tuple[Writes, Any]:
    if len(args) > 2:
        raise CommandError(SYNTAX_ERROR)
    count = 1
    if len(args) == 2:
        count = parse_long(args[1], NOT_POSITIVE)
        if count < 0:
            raise CommandError(NOT_POSITIVE)
    entry = entries[args[0]]
    zset = _zset_of(entry)
    if zset is None or count == 0:
        return {}, []
    order = _ordered(zset)
    popped = order[::-1][:count] if biggest else order[:count]
    for _, member in popped:
        del zset[member]
    return {args[0]: entry}, _flat(popped, withscores=True)


def _zpopmin(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    return _zpop_generic(args, entries, biggest=False)


def _zpopmax(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    return _zpop_generic(args, entries, biggest=True)


# --- which members a command walks -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Walk:
    """The members a command's answer depends on, when the set is walked in (score, member)
    order from its lowest score, or from its highest when `reverse`: the first `most` members
    (0: every one) with scores in [`low`, `high`] (an end left out when it is open); with
    `member` (ZRANK, ZREVRANK), the end the walk stops at is that member's score instead, and
    the walk is empty when it is absent. A store with a score index loads only those
    (node/elements.py): the command answers the same on them as on the whole set."""

    low: float = -math.inf
    high: float = math.inf
    most: int = 0
    member: bytes | None = None
    low_open: bool = False
    high_open: bool = False
    reverse: bool = False

    def reaches(self, score: float) -> bool:
        """Whether a member of `score` within [low, high] is in the walk's range."""
        return not ((self.low_open and score == self.low) or (self.high_open and score == self.high))


_NOTHING = Walk(0.0, 0.0, 1)  # arguments the command refuses: its error needs no member
_WALKED = frozenset({"ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZCOUNT", "ZRANK",
                     "ZREVRANK", "ZPOPMIN", "ZPOPMAX", "ZREMRANGEBYSCORE", "ZREMRANGEBYRANK"})


def walk_of(name: str, args: list[bytes]) -> Walk | None:
    """The `Walk` of a command (args: key first), or None when its answer may depend on every
    member: negative ranks (counted from the other end), lex ranges, ZCARD."""
    if name not in _WALKED:
        return None
    try:
        if name in ("ZRANK", "ZREVRANK"):
            return Walk(member=args[1], reverse=name == "ZREVRANK") if len(args) == 2 else _NOTHING
        if name in ("ZPOPMIN", "ZPOPMAX"):
            count = 1 if len(args) == 1 else parse_long(args[1], NOT_POSITIVE) if len(args) == 2 else -1
            return Walk(most=count, reverse=name == "ZPOPMAX") if count > 0 else _NOTHING
        if len(args) < 3:
            return _NOTHING
        if name in ("ZCOUNT", "ZREMRANGEBYSCORE"):
            return _score_walk(args[1], args[2], 0, False)
        if name == "ZREMRANGEBYRANK":
            return _rank_walk(args[1], args[2], False)
        by = "score" if name in ("ZRANGEBYSCORE", "ZREVRANGEBYSCORE") else "rank" if name == "ZREVRANGE" else None
        reverse, most = name.startswith("ZREV"), 0
        j = 3
        while j < len(args):
            word = args[j].lower()
            if word == b"limit" and len(args) - j - 1 >= 2:
                offset, count = parse_long(args[j + 1]), parse_long(args[j + 2])
                most = 1 if offset < 0 else 0 if count < 0 else max(1, offset + count)
                j += 2
            elif word == b"rev" and name == "ZRANGE":
                reverse = True
            elif word in (b"byscore", b"bylex") and name == "ZRANGE" and by is None:
                by = word.decode()[2:]
            elif word != b"withscores":
                return _NOTHING  # a syntax error
            j += 1
        if by == "lex":
            return None
        if by in (None, "rank"):
            return _rank_walk(args[1], args[2], reverse)
        # A reverse score range names its high end first.
        low, high = (args[2], args[1]) if reverse else (args[1], args[2])
        return _score_walk(low, high, most, reverse)
    except CommandError:
        return _NOTHING


def _score_walk(low: bytes, high: bytes, most: int, reverse: bool) -> Walk:
    (lo, lo_open), (hi, hi_open) = _score_bound(low), _score_bound(high)
    if hi < lo:  # an empty range: the walk starts at its own end
        lo, hi = (hi, hi) if reverse else (lo, lo)
    return Walk(lo, hi, most, low_open=lo_open, high_open=hi_open, reverse=reverse)


def _rank_walk(start: bytes, stop: bytes, reverse: bool) -> Walk | None:
    first, last = parse_long(start), parse_long(stop)
    if first < 0 or last < 0:
        return None  # counted from the other end: the set's size decides
    return Walk(most=last + 1 if last >= first else 1, reverse=reverse)


def walked(zset: dict[bytes, float], walk: Walk) -> dict[bytes, float]:
    """The members of `zset` that `walk` reaches (what a store with a score index loads)."""
    low, high = walk.low, walk.high
    if walk.member is not None:
        if walk.member not in zset:
            return {}
        if walk.reverse:
            low = zset[walk.member]
        else:
            high = zset[walk.member]
    inside = [(score, m) for m, score in zset.items() if low <= score <= high and walk.reaches(score)]
    inside.sort(reverse=walk.reverse)
    if walk.most:
        inside = inside[:walk.most]
    return {m: score for score, m in inside}


# --- ZUNIONSTORE, ZINTERSTORE ----------------------------------------------------------------


def _numkeys(args: list[bytes], name: str) -> int:
    """The source count of a STORE command (args: destination, numkeys, keys..., options)."""
    n = parse_long(args[1])
    if n < 1:
        raise CommandError(f"at least 1 input key is needed for '{name}' command")
    if n > len(args) - 2:
        raise CommandError(SYNTAX_ERROR)
    return n


def _store_keys(name: str) -> Callable[[list[bytes]], list[bytes]]:
    def keys(args: list[bytes]) -> list[bytes]:
        return [args[0], *args[2 : 2 + _numkeys(args, name)]]

    return keys


def _source(entry: Entry | None) -> dict[bytes, float]:
    """A ZUNIONSTORE/ZINTERSTORE input: a sorted set, or a set whose members score 1."""
    if entry is None:
        return {}
    if entry.kind == KIND_ZSET:
        return entry.value
    if entry.kind == KIND_SET:
        return dict.fromkeys(entry.value, 1.0)
    raise WrongTypeError()


def _aggregate(how: bytes, target: float, value: float) -> float:
    if how == b"sum":
        total = target + value
        return 0.0 if math.isnan(total) else total  # inf + -inf counts as 0, as in Redis
    if how == b"min":
        return value if value < target else target
    return value if value > target else target


def _store_generic(
    args: list[bytes], entries: dict[bytes, Entry | None], name: str
) -> tuple[Writes, Any]:
    n = _numkeys(args, name)
    sources = [_source(entries[key]) for key in args[2 : 2 + n]]
    weights = [1.0] * n
    how = b"sum"
    j = 2 + n
    while j < len(args):
        remaining = len(args) - j
        word = args[j].lower()
        if word == b"weights" and remaining >= n + 1:
            weights = [parse_score(w, NOT_A_WEIGHT) for w in args[j + 1 : j + 1 + n]]
            j += n + 1
        elif word == b"aggregate" and remaining >= 2:
            how = args[j + 1].lower()
            if how not in (b"sum", b"min", b"max"):
                raise CommandError(SYNTAX_ERROR)
            j += 2
        else:
            raise CommandError(SYNTAX_ERROR)
    # Redis visits the inputs smallest first (a stable sort on this platform); with infinities
    # the order decides the sum, so keep it.
    inputs = sorted(zip(sources, weights, strict=True), key=lambda sw: len(sw[0]))
    result: dict[bytes, float] = {}
    if name == "zinterstore":
        first, first_weight = inputs[0]
        for member, score in first.items():
            total = first_weight * score
            if math.isnan(total):
                total = 0.0
            for other, weight in inputs[1:]:
                value = other.get(member)
                if value is None:
                    break
                total = _aggregate(how, total, value * weight)
            else:
                result[member] = _stored(total)
    else:
        for source, weight in inputs:
            for member, score in source.items():
                value = weight * score
                if math.isnan(value):
                    value = 0.0
                current = result.get(member)
                result[member] = value if current is None else _aggregate(how, current, value)
        for member, score in result.items():
            result[member] = _stored(score)
    destination = args[0]
    if not result:
        return ({destination: None} if entries[destination] is not None else {}), 0
    return {destination: Entry(KIND_ZSET, result, 0)}, len(result)


def _zunionstore(
    ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]
) -> tuple[Writes, Any]:
    return _store_generic(args, entries, "zunionstore")


def _zinterstore(
    ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]
) -> tuple[Writes, Any]:
    return _store_generic(args, entries, "zinterstore")


# --- ZSCAN -----------------------------------------------------------------------------------

_CURSOR = re.compile(rb"([+-]?)([0-9]+)")


def parse_cursor(data: bytes) -> int:
    """A SCAN cursor as Redis reads it (C strtoul: an empty text is 0, '-n' wraps around)."""
    text = _c_string(data)
    if not text:
        return 0
    m = _CURSOR.fullmatch(text)
    if m is None or int(m[2]) > ULONG_MAX:
        raise CommandError(INVALID_CURSOR)
    n = int(m[2])
    return (ULONG_MAX + 1 - n) & ULONG_MAX if m[1] == b"-" else n


def _zscan(ctx: Ctx, args: list[bytes], entries: dict[bytes, Entry | None]) -> tuple[Writes, Any]:
    """The cursor is an index into the members in byte order; a full iteration from 0 meets
    every member present for all of it exactly once."""
    cursor = parse_cursor(args[1])
    zset = _zset_of(entries[args[0]])
    if zset is None:
        return {}, [b"0", []]
    count = SCAN_DEFAULT_COUNT
    pattern: GlobPattern | None = None
    j = 2
    while j < len(args):
        word = args[j].lower()
        if word == b"count" and len(args) - j >= 2:
            count = parse_long(args[j + 1])
            if count < 1:
                raise CommandError(SYNTAX_ERROR)
        elif word == b"match" and len(args) - j >= 2:
            pattern = None if args[j + 1] == b"*" else GlobPattern(args[j + 1])
        else:
            raise CommandError(SYNTAX_ERROR)
        j += 2
    members = sorted(zset)
    page = members[cursor : cursor + count]
    following = cursor + count if cursor + count < len(members) else 0
    out: list[bytes] = []
    for member in page:
        if pattern is None or pattern.matches(member):
            out.append(member)
            out.append(score_text(zset[member]))
    return {}, [b"%d" % following, out]


# --- the table -------------------------------------------------------------------------------


def _read(name: str, arity: int, run: Callable[..., tuple[Writes, Any]]) -> TypeCommand:
    return TypeCommand(name=name, arity=arity, write=False, run=run)


def _write(name: str, arity: int, run: Callable[..., tuple[Writes, Any]]) -> TypeCommand:
    return TypeCommand(name=name, arity=arity, write=True, run=run)


COMMANDS: list[TypeCommand] = [
    _write("ZADD", -4, _zadd),
    _write("ZINCRBY", 4, _zincrby),
    _write("ZREM", -3, _zrem),
    _read("ZSCORE", 3, _zscore),
    _read("ZMSCORE", -3, _zmscore),
    _read("ZCARD", 2, _zcard),
    _read("ZCOUNT", 4, _zcount),
    _read("ZLEXCOUNT", 4, _zlexcount),
    _read("ZRANGE", -4, _range_command(None, None)),
    _read("ZREVRANGE", -4, _range_command(RANK, True)),
    _read("ZRANGEBYSCORE", -4, _range_command(SCORE, False)),
    _read("ZREVRANGEBYSCORE", -4, _range_command(SCORE, True)),
    _read("ZRANGEBYLEX", -4, _range_command(LEX, False)),
    _read("ZREVRANGEBYLEX", -4, _range_command(LEX, True)),
    _read("ZRANK", 3, _zrank),
    _read("ZREVRANK", 3, _zrevrank),
    _write("ZPOPMIN", -2, _zpopmin),
    _write("ZPOPMAX", -2, _zpopmax),
    _write("ZREMRANGEBYRANK", 4, _remrange_command(RANK)),
    _write("ZREMRANGEBYSCORE", 4, _remrange_command(SCORE)),
    _write("ZREMRANGEBYLEX", 4, _remrange_command(LEX)),
    TypeCommand("ZUNIONSTORE", -4, True, _zunionstore, keys=_store_keys("zunionstore")),
    TypeCommand("ZINTERSTORE", -4, True, _zinterstore, keys=_store_keys("zinterstore")),
    _read("ZSCAN", -3, _zscan),
]
