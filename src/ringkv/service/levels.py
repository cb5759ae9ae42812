"""Consistency levels: how many of a key's N replicas a read or write waits for.

Named levels (ONE, QUORUM, ALL) or explicit counts, resolved against N when the key's N is
known (namespaces have their own N). The adapters parse what a client asked for with
`parse_level`; the coordinator resolves it per key with `resolve`.

The datacenter levels (LOCAL_ONE, LOCAL_QUORUM, EACH_QUORUM) count replicas per datacenter;
`resolve` gives the count they stand for among all N, for paths that count replicas without
telling datacenters apart, and `dc_needs` what they ask of each datacenter (docs/multi-dc.md).
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
    # Per datacenter (docs/multi-dc.md): one replica, or a majority of the replicas, of the
    # coordinator's datacenter; a majority of the replicas in every datacenter.
    LOCAL_ONE = "local_one"
    LOCAL_QUORUM = "local_quorum"
    EACH_QUORUM = "each_quorum"

    @property
    def per_dc(self) -> bool:
        """Whether the level counts replicas per datacenter."""
        return self in _PER_DC


# The members as module constants: resolve() runs once per request, and a member read off the
# enum class is an attribute lookup through its metaclass.
_ONE, _QUORUM, _ALL, _SERIAL, _SESSION = (ConsistencyLevel.ONE, ConsistencyLevel.QUORUM, ConsistencyLevel.ALL,
                                          ConsistencyLevel.SERIAL, ConsistencyLevel.SESSION)
_LOCAL_ONE, _LOCAL_QUORUM, _EACH_QUORUM = (ConsistencyLevel.LOCAL_ONE, ConsistencyLevel.LOCAL_QUORUM,
                                           ConsistencyLevel.EACH_QUORUM)
_PER_DC = frozenset((_LOCAL_ONE, _LOCAL_QUORUM, _EACH_QUORUM))
LEVEL_NAMES = "ONE, QUORUM, ALL, SERIAL, SESSION, LOCAL_ONE, LOCAL_QUORUM, EACH_QUORUM"


def resolve(level: ConsistencyLevel | int, n: int, *, field: str = "level") -> int:
    """The number of replicas `level` requires out of `n`.

    An int is an explicit r or w and must be in 1..n. `field` ("r" or "w") names the request
    field in the error, so the client learns which of its arguments was wrong. A datacenter
    level gives the count a path that does not tell datacenters apart waits for: LOCAL_ONE
    one replica, LOCAL_QUORUM and EACH_QUORUM a majority of all N (the single-key reads and
    writes wait per datacenter instead, with `dc_needs`).
    """
    if type(n) is not int or n < 1:  # a bool's type is bool, not int
        raise ConfigError("n", f"must be an integer >= 1, got {n!r}")
    if level is _QUORUM or level is _SERIAL:
        return n // 2 + 1
    if level is _ONE or level is _SESSION:
        return 1
    if level is _ALL:
        return n
    if level is _LOCAL_QUORUM or level is _EACH_QUORUM:
        return n // 2 + 1
    if level is _LOCAL_ONE:
        return 1
    if isinstance(level, bool) or not isinstance(level, int):
        raise ConfigError(field, f"expected a level ({LEVEL_NAMES}) or an integer, got {level!r}")
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
    raise ConfigError(field, f"expected {LEVEL_NAMES} or a replica count, got {str(value)[:64]!r}")


class DcNeed(NamedTuple):
    """What a datacenter level asks of one datacenter: `needed` of its replicas `members`."""

    dc: str
    members: frozenset[str]
    needed: int


def dc_needs(level: ConsistencyLevel, pref: tuple[str, ...], dc_of, local_dc: str) -> tuple[DcNeed, ...]:
    """What datacenter level `level` asks of each datacenter among `pref`, the key's replicas
    (`dc_of(node)` names a replica's datacenter): LOCAL_ONE one of `local_dc`'s, LOCAL_QUORUM
    a majority of them, EACH_QUORUM a majority in every datacenter holding replicas. A local
    level with no replica in `local_dc` asks for one that is not there (needed 1 of none), so
    the request fails, naming the datacenter."""
    by_dc: dict[str, list[str]] = {}
    for node in pref:
        by_dc.setdefault(dc_of(node), []).append(node)
    if level is _EACH_QUORUM:
        return tuple(DcNeed(dc, frozenset(nodes), len(nodes) // 2 + 1) for dc, nodes in sorted(by_dc.items()))
    local = by_dc.get(local_dc, [])
    needed = 1 if level is _LOCAL_ONE or not local else len(local) // 2 + 1
    return (DcNeed(local_dc, frozenset(local), needed),)


class Levels(NamedTuple):
    """A request's read level, write level, and whether stand-ins are refused (STRICT)."""

    r: ConsistencyLevel | int
    w: ConsistencyLevel | int
    strict: bool
