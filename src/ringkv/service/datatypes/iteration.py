"""Paging through a collection (HSCAN, SSCAN) and drawing from one at random (HRANDFIELD,
SRANDMEMBER, SPOP), shared by the collection types.

SCAN cursors: Redis's cursor walks its hash table in reverse-binary bucket order; ours is an
index into the collection's elements in byte order (the order the codec stores them in), and
0 again when the walk is done. The guarantee is Redis's: a full iteration of a collection that
does not change meanwhile returns every element exactly once (Redis only promises "at least
once"); an element added or removed during the walk may or may not be returned, and one that
sorts before the cursor after other elements were removed may be skipped. COUNT is how many
elements one call examines (Redis's "amount of work"), MATCH filters the examined ones, so a
page may be empty while the cursor is not 0, as in Redis.

Random draws are deterministic for a given `ctx.random` and collection: they draw from the
elements in byte order, never in Python's set or dict order (which depends on the process's
hash seed), so every replica running SPOP in a consensus round pops the same members.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ringkv.errors import CommandError
from ringkv.service.datatypes.base import NOT_INTEGER, SYNTAX_ERROR, Ctx
from ringkv.service.glob import GlobPattern
from ringkv.service.numbers import INT64_MAX, INT64_MIN, parse_int

ULONG_MAX = (1 << 64) - 1
INVALID_CURSOR = "invalid cursor"
DEFAULT_SCAN_COUNT = 10  # Redis's default COUNT
# A negative count (HRANDFIELD, SRANDMEMBER) repeats elements, so its reply is not bounded by
# the collection's size. Redis 7.0 answers whatever was asked (until the client's output
# buffer limit closes the connection); ringkv refuses a draw whose reply would pass this many
# bytes, counting each element drawn as its length plus PICK_OVERHEAD_BYTES of framing. It is
# half the 16 MiB inter-node frame, so the reply of a read forwarded to a replica fits one.
MAX_RANDOM_REPLY_BYTES = 8 * 1024 * 1024
PICK_OVERHEAD_BYTES = 16
OUT_OF_RANGE = "value is out of range"
COUNT_RANGE = f"value is out of range, value must between {-INT64_MAX} and {INT64_MAX}"


def option_word(arg: bytes) -> bytes:
    """An option word as Redis's strcasecmp sees it: up to the first NUL, ASCII case folded."""
    return arg.split(b"\0", 1)[0].lower()


def parse_cursor(arg: bytes) -> int:
    """Redis's parseScanCursorOrReply: C's strtoul in base 10, with its quirks (an empty text
    is 0, a sign is allowed and "-1" wraps to 2**64 - 1), no leading space, nothing after the
    digits, nothing past 2**64 - 1. Redis hands strtoul a C string, so a NUL ends the text."""
    text = arg.split(b"\0", 1)[0]
    if text[:1] in (b" ", b"\t", b"\n", b"\v", b"\f", b"\r"):
        raise CommandError(INVALID_CURSOR)
    negative = text[:1] == b"-"
    digits = text[1:] if text[:1] in (b"+", b"-") else text
    if not digits:
        if text:  # a bare sign: strtoul reads nothing and leaves the sign behind
            raise CommandError(INVALID_CURSOR)
        return 0
    if not digits.isdigit() or not digits.isascii():
        raise CommandError(INVALID_CURSOR)
    value = int(digits.lstrip(b"0") or b"0")
    if value > ULONG_MAX:
        raise CommandError(INVALID_CURSOR)
    return (-value) & ULONG_MAX if negative else value


@dataclass(frozen=True, slots=True)
class ScanOptions:
    count: int
    pattern: GlobPattern | None  # None: every element (MATCH * as well: Redis skips matching)


def parse_scan_options(args: list[bytes]) -> ScanOptions:
    """The options after HSCAN/SSCAN's cursor: COUNT n (n >= 1) and MATCH pattern, each any
    number of times (the last wins), as scanGenericCommand reads them."""
    count = DEFAULT_SCAN_COUNT
    pattern: GlobPattern | None = None
    i = 0
    while i < len(args):
        word = option_word(args[i])
        more = len(args) - i >= 2
        if word == b"count" and more:
            count = parse_int(args[i + 1])
            if count < 1:
                raise CommandError(SYNTAX_ERROR)
        elif word == b"match" and more:
            pattern = None if args[i + 1] == b"*" else GlobPattern(args[i + 1])
        else:
            raise CommandError(SYNTAX_ERROR)
        i += 2
    return ScanOptions(count, pattern)


def scan_page(ordered: list[bytes], cursor: int, options: ScanOptions) -> tuple[bytes, list[bytes]]:
    """One page of a SCAN over `ordered` (the elements in byte order): the next cursor, as
    the bulk string Redis answers, and the matching elements of the page."""
    page = ordered[cursor : cursor + options.count]
    following = cursor + options.count
    next_cursor = following if following < len(ordered) else 0
    if options.pattern is not None:
        matches = options.pattern.matches
        page = [element for element in page if matches(element)]
    return b"%d" % next_cursor, page


def parse_random_count(arg: bytes) -> int:
    """HRANDFIELD/SRANDMEMBER's count: getRangeLongFromObjectOrReply(-LONG_MAX, LONG_MAX)."""
    try:
        n = parse_int(arg)
    except CommandError:
        raise CommandError(NOT_INTEGER) from None
    if n == INT64_MIN:
        raise CommandError(COUNT_RANGE)
    return n


def draw(ctx: Ctx, ordered: list[bytes], count: int, size_of: Callable[[bytes], int]) -> list[bytes]:
    """Redis's draw for a count (not 0) from the nonempty `ordered`: a positive count gives
    min(count, size) distinct elements, a negative one -count elements with repeats.
    `size_of(element)` is the bytes one draw puts in the reply (for the bound on repeats)."""
    if count > 0:
        if count >= len(ordered):
            return list(ordered)
        return ctx.random.sample(ordered, count)
    picks = -count
    if picks * PICK_OVERHEAD_BYTES > MAX_RANDOM_REPLY_BYTES:
        raise _too_many(picks)
    drawn = ctx.random.choices(ordered, k=picks)
    total = sum(size_of(element) for element in drawn) + picks * PICK_OVERHEAD_BYTES
    if total > MAX_RANDOM_REPLY_BYTES:
        raise _too_many(picks)
    return drawn


def _too_many(picks: int) -> CommandError:
    return CommandError(
        f"a count of -{picks} would draw a reply over {MAX_RANDOM_REPLY_BYTES} bytes "
        f"(max_random_reply_bytes; each element drawn counts its length plus {PICK_OVERHEAD_BYTES})"
    )


def flat(pairs: Iterable[tuple[bytes, Any]]) -> list[Any]:
    """[k1, v1, k2, v2, ...]: the RESP2 shape of field-value replies (HSCAN, HRANDFIELD)."""
    return [item for pair in pairs for item in pair]
