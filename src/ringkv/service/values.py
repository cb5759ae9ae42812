"""What reads and versioned writes return, and what a version is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from xxhash import xxh3_64_hexdigest

from ringkv.versioning.dvv import decode_context

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


class AnyVersion:
    """`KeyValueService.write`'s expectation for a plain overwrite: whatever the key holds."""

    def __repr__(self) -> str:
        return "ANY_VERSION"


ANY_VERSION: Final = AnyVersion()


@dataclass(slots=True)
class Written:
    """What `KeyValueService.write` answers."""

    applied: bool  # the expectation held and the write was made
    created: bool  # the key had no live value before
    version: bytes | None  # the key's causal context after (None: the key has no record)
    timestamp: int  # HLC timestamp of the key's winning value after (0: none)


@dataclass(slots=True)
class AtomicWrite:
    """What `KeyValueService.write_atomic` answers: the batch is committed (every key will hold
    its value). `pending`: keys not yet written at W, which the batch log's replay writes
    (empty when every key is written). `timestamp`: the batch's HLC timestamp, which every
    value it wrote carries. `logged`: the batch spanned several replica sets and went through
    the batch log."""

    timestamp: int
    pending: list[bytes]
    logged: bool


def version_number(context: bytes | None) -> int:
    """A key's version as a number: the sum of the counters of its causal context, which is
    how many writes the context covers (0 without one).

    Every write that descends from a version has a larger number than it: a write adds its
    own dot to the context it replaces, and merging replicas' copies only adds dots. Two
    versions with the same number are the same version when the key's writes are ordered (one
    writer at a time, or every write a compare-and-set); concurrent writes can leave two
    different versions with one number, so a compare-and-set that must be exact even then
    compares the context itself (docs/http.md, "Versions")."""
    if not context:
        return 0
    return sum(decode_context(context).values())


def value_digest(value: bytes) -> bytes:
    """Redis 8.4's DIGEST of a value: XXH3-64, 16 lowercase hex digits (what SET and DELEX's
    IFDEQ and IFDNE compare against)."""
    return xxh3_64_hexdigest(value).encode()
