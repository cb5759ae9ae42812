"""Sibling-aware reads: what `get_versions` returns, and the rule a resolving `get` follows.

Concurrent writes to one key (two clients that read the same version and both wrote) are kept
as siblings. `get_versions` returns all of them with the causal context that covers them; a
write that passes that context back (`put_versioned(key, value, context)`) replaces exactly
those siblings. `get(key, resolver=...)` does both: when it finds more than one sibling it
calls the application's resolver with their values and writes the answer back with the
context, so the siblings collapse into one. Nothing here does IO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringkv.service.values import version_number

Resolver = Callable[[list[bytes]], Any]
"""`resolver(values) -> bytes` (or str). `AsyncClient` also takes one that returns an awaitable."""


@dataclass(frozen=True, slots=True)
class Sibling:
    """One live value of a key."""

    value: bytes
    timestamp: int  # hybrid logical clock timestamp of the write that made it
    ttl_ms: int  # milliseconds until it expires; -1 when it does not


@dataclass(frozen=True, slots=True)
class Versions:
    """Every live sibling of a key and the causal context covering them.

    `context` is None when the key has no record at all; a key whose values were all deleted
    has a context and no siblings. Pass `context` unchanged to `put_versioned` or
    `delete_versioned` to replace what this read saw.
    """

    context: bytes | None
    siblings: list[Sibling]

    @property
    def version_number(self) -> int:
        """The context's number, as the HTTP API's `version`: the count of the key's writes (0
        without a record); `cas` takes it as `expected_version` too (docs/http.md, Versions)."""
        return version_number(self.context)

    @property
    def values(self) -> list[bytes]:
        return [s.value for s in self.siblings]

    @property
    def version(self) -> bytes | None:
        """The version to pass to `cas` (or `cad`) as expected: the context when a value is
        live, None when none is (a compare-and-set then expects "no live value")."""
        return self.context if self.siblings else None

    def resolved_ttl_ms(self) -> int | None:
        """The TTL a resolved value is written with: the latest expiry among the siblings when
        every one of them expires (a merge of expiring values should expire too), else None."""
        ttls = [s.ttl_ms for s in self.siblings]
        if not ttls or min(ttls) < 0:
            return None
        return max(1, max(ttls))


def parse_versions(reply: Any) -> Versions:
    """RINGKV.GETV's reply: [context or nil, [[value, timestamp, ttl_ms], ...]]."""
    context, siblings = reply
    return Versions(context, [Sibling(value, int(ts), int(ttl)) for value, ts, ttl in siblings])
