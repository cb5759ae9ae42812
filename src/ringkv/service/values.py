"""What reads return."""

from __future__ import annotations

from dataclasses import dataclass

from xxhash import xxh3_64_hexdigest

# What a `*_now` fast path answers when it cannot answer without IO: the adapter then awaits
# the coroutine form of the same call.
PENDING = object()


@dataclass(slots=True)
class Value:
    """The winning value of a key with its version and expiry."""

    value: bytes
    timestamp: int  # HLC timestamp of the write
    expire_at_ms: int  # 0: no expiry
    context: bytes  # opaque causal context (encoded version vector)


@dataclass(slots=True)
class SiblingSet:
    """What a sibling-aware read returns: every live sibling and the causal context that a
    write must pass to replace exactly these (None: the key has no record at all)."""

    siblings: list[Value]
    context: bytes | None


def value_digest(value: bytes) -> bytes:
    """Redis 8.4's DIGEST of a value: XXH3-64, 16 lowercase hex digits (what SET and DELEX's
    IFDEQ and IFDNE compare against)."""
    return xxh3_64_hexdigest(value).encode()
