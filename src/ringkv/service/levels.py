"""Consistency levels: how many of a key's N replicas a read or write waits for.

Named levels (ONE, QUORUM, ALL) or explicit counts, resolved against N when the key's N is
known (namespaces have their own N). The adapters parse what a client asked for with
`parse_level`; the coordinator resolves it per key with `resolve`.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from ringkv.errors import ConfigError


class ConsistencyLevel(enum.Enum):
    """How many of a key's N replicas must answer: one, a majority, or all of them. SERIAL is a
    read through the key's consensus path (a majority, and any unfinished round completed
    first: linearizable with CAS and the other read-modify-write commands); a write at SERIAL
    is a write at QUORUM. SESSION is ONE with the session guarantees (read-your-writes and
    monotonic reads, service/session.py): a request at SESSION runs in the client's session,
    starting one when it has none."""

    ONE = "one"
    QUORUM = "quorum"
    ALL = "all"
    SERIAL = "serial"
    SESSION = "session"


# The members as module constants: resolve() runs once per request, and a member read off the
# enum class is an attribute lookup through its metaclass.
_ONE, _QUORUM, _ALL, _SERIAL, _SESSION = (ConsistencyLevel.ONE, ConsistencyLevel.QUORUM, ConsistencyLevel.ALL,
                                          ConsistencyLevel.SERIAL, ConsistencyLevel.SESSION)


def resolve(level: ConsistencyLevel | int, n: int, *, field: str = "level") -> int:
    """The number of replicas `level` requires out of `n`.

    An int is an explicit r or w and must be in 1..n. `field` ("r" or "w") names the request
    field in the error, so the client learns which of its arguments was wrong.
    """
    if type(n) is not int or n < 1:  # a bool's type is bool, not int
        raise ConfigError("n", f"must be an integer >= 1, got {n!r}")
    if level is _QUORUM or level is _SERIAL:
        return n // 2 + 1
    if level is _ONE or level is _SESSION:
        return 1
    if level is _ALL:
        return n
    if isinstance(level, bool) or not isinstance(level, int):
        raise ConfigError(field, f"expected one, quorum, all or an integer, got {level!r}")
    if not 1 <= level <= n:
        raise ConfigError(field, f"must be in 1..{n} (the key's replica count), got {level}")
    return level


def parse_level(value: str | ConsistencyLevel | int, field: str = "level") -> ConsistencyLevel | int:
    """A level from its name (`one`, `quorum`, `all`, any case) or a count (an int or digits).
    Counts are checked against N by `resolve`, when N is known."""
    if isinstance(value, ConsistencyLevel) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit() and len(text) <= 3:
            return int(text)
        try:
            return ConsistencyLevel(text)
        except ValueError:
            pass
    raise ConfigError(field, f"expected ONE, QUORUM, ALL, SERIAL, SESSION or a replica count, got {str(value)[:64]!r}")


class Levels(NamedTuple):
    """A request's read level, write level, and whether stand-ins are refused (STRICT)."""

    r: ConsistencyLevel | int
    w: ConsistencyLevel | int
    strict: bool
