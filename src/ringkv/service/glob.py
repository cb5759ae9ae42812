"""Redis's glob: the one matcher of KEYS, SCAN and the SCAN family's MATCH (ZSCAN, HSCAN,
SSCAN), CONFIG GET and ACL key patterns (security/keypatterns.py).

The syntax and its corner cases are those of Redis 7.0's stringmatchlen, checked against a
real redis-server by tests/datatypes/test_zsets.py and tests/security/test_acl_units.py:

- `*` any run of bytes, `?` one byte, `\\x` the byte x (a trailing lone `\\` is itself),
  `[abc]` `[^abc]` `[a-z]` one byte of a class; `\\x` inside a class is x; `x-y` is a range
  whenever two bytes follow x (so `[a-]` is the range a..`]`), and reversed bounds swap.
- Range bounds compare as C `char`, signed on the x86-64 builds the reference runs on: a byte
  of 0x80 and above counts as negative, so `[a-\\xff]` is the bytes 0x00..0x61 and 0xff.
- A class left open runs to the end of the pattern (`[ab` is one byte, a or b); `[]` matches
  nothing and `[^]` any byte.
- An empty element matches only the empty pattern (`*` does not match it: Redis's loop stops
  before looking at the pattern when the element is empty).
- A pattern that needs more than 1000 nested `*` expansions matches nothing (Redis's guard
  against abusive patterns): more than 1000 `*` runs followed by something else.

Matching is the greedy algorithm with one remembered star (O(len(pattern) x len(element)) at
worst), not a regex, so a pattern of many stars cannot take exponential time (a backtracking
regex of `*a*a*a...b` can: one KEYS would stall the node). A literal and a literal followed by
one `*` (the usual shapes) are a comparison. Pure: no IO.
"""

from __future__ import annotations

_STAR = -1  # token: any run of bytes
_MAX_STAR_NESTING = 1000  # Redis's stringmatchlen gives up deeper than this


def _signed(byte: int) -> int:
    return byte - 256 if byte >= 128 else byte


def _class_members(pattern: bytes, i: int) -> tuple[frozenset[int], int]:
    """The bytes a class starting after its `[` (and `^`) at `i` names, and the index of its
    closing `]` (or len(pattern) when it is left open)."""
    n = len(pattern)
    members: set[int] = set()
    while i < n and pattern[i] != 0x5D:  # ]
        if pattern[i] == 0x5C and n - i >= 2:  # \x
            i += 1
            members.add(pattern[i])
        elif n - i >= 3 and pattern[i + 1] == 0x2D:  # x-y
            lo, hi = sorted((_signed(pattern[i]), _signed(pattern[i + 2])))
            members.update(b & 0xFF for b in range(lo, hi + 1))
            i += 2
        else:
            members.add(pattern[i])
        i += 1
    return frozenset(members), i


def _tokens(pattern: bytes) -> list:
    """The pattern as tokens: _STAR, a literal byte (int >= 0), None (any byte), or a
    (members, negated) class."""
    out: list = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x2A:  # *
            if not out or out[-1] != _STAR:
                out.append(_STAR)
        elif c == 0x3F:  # ?
            out.append(None)
        elif c == 0x5C and n - i >= 2:  # \x
            i += 1
            out.append(pattern[i])
        elif c == 0x5B:  # [
            negated = i + 1 < n and pattern[i + 1] == 0x5E  # ^
            members, i = _class_members(pattern, i + 2 if negated else i + 1)
            out.append((members, negated))
        else:
            out.append(c)
        i += 1
    return out


class GlobPattern:
    """A compiled MATCH pattern; `matches(element)` is Redis's answer. `only_star`: the pattern
    is `*` (or `**`...), which callers that treat "match everything" apart (KEYS *, SCAN with
    no MATCH, an ACL's allkeys) may check first."""

    __slots__ = ("_literal", "_prefix", "_tokens", "_too_deep", "only_star", "text")

    def __init__(self, pattern: bytes):
        self.text = pattern
        tokens = _tokens(pattern)
        self._tokens = tokens
        self._literal = bytes(tokens) if all(type(t) is int and t >= 0 for t in tokens) else None
        self.only_star = tokens == [_STAR]
        # "prefix*": a literal then one star, matched by startswith.
        self._prefix = (bytes(tokens[:-1]) if len(tokens) > 1 and tokens[-1] == _STAR
                        and all(type(t) is int and t >= 0 for t in tokens[:-1]) else None)
        # Each `*` run that has pattern after it is one more level of Redis's recursion.
        inner_stars = sum(1 for t in tokens[:-1] if t == _STAR)
        self._too_deep = inner_stars > _MAX_STAR_NESTING

    def matches(self, element: bytes) -> bool:
        if not element:
            return not self.text
        if self._literal is not None:
            return element == self._literal
        if self._prefix is not None:
            return element.startswith(self._prefix)
        if self._too_deep:
            return False
        return _match(self._tokens, element)

    def __repr__(self) -> str:
        return f"GlobPattern({self.text!r})"


def _one(token, byte: int) -> bool:
    if token is None:
        return True
    if type(token) is int:
        return token == byte
    members, negated = token
    return (byte in members) is not negated


def _match(tokens: list, data: bytes) -> bool:
    """When a byte fails, the last star takes one byte more and matching resumes after it: a
    later star can absorb whatever an earlier one would have, so only the latest choice needs
    revisiting."""
    ti = di = 0
    nt, nd = len(tokens), len(data)
    star_ti, star_di = -1, 0
    while di < nd:
        if ti < nt:
            t = tokens[ti]
            if t == _STAR:
                star_ti, star_di = ti, di
                ti += 1
                continue
            if _one(t, data[di]):
                ti += 1
                di += 1
                continue
        if star_ti < 0:
            return False
        star_di += 1
        di = star_di
        ti = star_ti + 1
    while ti < nt and tokens[ti] == _STAR:
        ti += 1
    return ti == nt


def glob_match(pattern: bytes, element: bytes) -> bool:
    """Whether `element` matches the Redis glob `pattern` (compile once with GlobPattern when
    matching many elements)."""
    return GlobPattern(pattern).matches(element)
