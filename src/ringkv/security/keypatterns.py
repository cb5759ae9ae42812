"""Key patterns of ACL rules (`~user:*`, `%R~cache:?`): Redis's glob, matched without regular
expressions.

The syntax is Redis's (its stringmatchlen, which ACL key patterns, KEYS and SCAN MATCH share):
`*` any run of bytes, `?` one byte, `[abc]` `[^a]` `[a-z]` one byte of a class (reversed
bounds are swapped), `\\x` the byte x. Its corner cases are Redis's too, checked against a real
redis-server by tests/security/test_acl_units.py: a `[` without its `]` is a class running to
the end of the pattern (`[ab` is one byte a or b; `[` alone matches nothing), `x-` before the
last byte of a class is a range (`[a-]` is a..]), `[]` matches nothing and `[^]` any byte.
Range bounds compare bytes as unsigned (Redis compares C chars: they differ for ranges that
cross 0x7f).

Why not a regex: a rule's pattern is checked against every key a command names, and a
backtracking regex of many `*` can take time exponential in the key's length. Matching here
is the greedy algorithm with one remembered star: O(len(pattern) x len(key)) at worst, and
the common shapes (a literal, a prefix and `*`, `*` alone) are a comparison. Pure: no IO.
"""

from __future__ import annotations

_STAR = None  # a token: any run of bytes


class _Any:
    __slots__ = ()

    def __contains__(self, byte: int) -> bool:
        return True


_ANY = _Any()  # a token: one byte, any


class _Class:
    """One byte out of a set (or, negated, not in it)."""

    __slots__ = ("members", "negated")

    def __init__(self, members: frozenset[int], negated: bool):
        self.members = members
        self.negated = negated

    def __contains__(self, byte: int) -> bool:
        return (byte in self.members) is not self.negated


def _tokens(pattern: bytes) -> list:
    """The pattern as tokens: _STAR, _ANY, a _Class, or a literal byte (int)."""
    out: list = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x2A:  # *
            if not out or out[-1] is not _STAR:  # ** is *
                out.append(_STAR)
        elif c == 0x3F:  # ?
            out.append(_ANY)
        elif c == 0x5C and i + 1 < n:  # \x
            i += 1
            out.append(pattern[i])
        elif c == 0x5B:  # [
            # Redis's stringmatchlen, byte for byte: an escape first, then `]` closes, then
            # `x-y` is a range whenever two bytes follow the `x` (so `[a-]` is the range a..]),
            # and a class left open runs to the end of the pattern.
            j = i + 1
            negated = j < n and pattern[j] == 0x5E  # ^
            if negated:
                j += 1
            members: set[int] = set()
            while j < n and pattern[j] != 0x5D:  # ]
                if pattern[j] == 0x5C and n - j >= 2:
                    j += 1
                    members.add(pattern[j])
                elif n - j >= 3 and pattern[j + 1] == 0x2D:  # a-z
                    lo, hi = sorted((pattern[j], pattern[j + 2]))
                    members.update(range(lo, hi + 1))
                    j += 2
                else:
                    members.add(pattern[j])
                j += 1
            out.append(_Class(frozenset(members), negated))
            i = j  # the closing `]`, or the end of an open class
        else:
            out.append(c)
        i += 1
    return out


def _one(token, byte: int) -> bool:
    return token == byte if type(token) is int else byte in token


class KeyPattern:
    """A compiled pattern; `matches(key)` says whether the key is one of its keys."""

    __slots__ = ("_kind", "_literal", "_tokens", "text")

    def __init__(self, pattern: bytes):
        self.text = pattern
        tokens = _tokens(pattern)
        self._tokens = tokens
        literal = all(type(t) is int for t in tokens)
        if literal:
            self._kind, self._literal = "exact", bytes(tokens)
        elif tokens == [_STAR]:
            self._kind, self._literal = "all", b""
        elif tokens[-1] is _STAR and all(type(t) is int for t in tokens[:-1]):
            self._kind, self._literal = "prefix", bytes(tokens[:-1])
        else:
            self._kind, self._literal = "glob", b""

    @property
    def matches_everything(self) -> bool:
        return self._kind == "all"

    def matches(self, key: bytes) -> bool:
        kind = self._kind
        if kind == "all":
            return True
        if kind == "prefix":
            return key.startswith(self._literal)
        if kind == "exact":
            return key == self._literal
        return _match(self._tokens, key)

    def __repr__(self) -> str:
        return f"KeyPattern({self.text!r})"


def _match(tokens: list, key: bytes) -> bool:
    """Greedy matching with backtracking to the last star only: when a byte fails, the last
    star takes one byte more and matching resumes after it. Correct because a later star can
    absorb whatever an earlier one would have: only the most recent choice needs revisiting."""
    ti = ki = 0
    nt, nk = len(tokens), len(key)
    star_ti = -1
    star_ki = 0
    while ki < nk:
        if ti < nt:
            t = tokens[ti]
            if t is _STAR:
                star_ti, star_ki = ti, ki
                ti += 1
                continue
            if _one(t, key[ki]):
                ti += 1
                ki += 1
                continue
        if star_ti < 0:
            return False
        star_ki += 1
        ki = star_ki
        ti = star_ti + 1
    while ti < nt and tokens[ti] is _STAR:
        ti += 1
    return ti == nt
