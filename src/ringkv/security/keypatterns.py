"""Key patterns of ACL rules (`~user:*`, `%R~cache:?`): Redis's glob, as service/glob.py
matches it for KEYS and SCAN too (one matcher, Redis's stringmatchlen byte for byte, with no
regular expression: a rule's pattern is checked against every key a command names, and a
backtracking regex of many `*` can take time exponential in the key's length).

One difference from KEYS: a rule of `*` alone names every key, the empty key included, as
Redis's `~*` (allkeys) does. Checked against a real redis-server by
tests/security/test_acl_units.py. Pure: no IO.
"""

from __future__ import annotations

from ringkv.service.glob import GlobPattern


class KeyPattern(GlobPattern):
    """A compiled pattern; `matches(key)` says whether the key is one of its keys."""

    __slots__ = ()

    @property
    def matches_everything(self) -> bool:
        return self.only_star

    def matches(self, key: bytes) -> bool:
        return True if self.only_star else GlobPattern.matches(self, key)

    def __repr__(self) -> str:
        return f"KeyPattern({self.text!r})"
