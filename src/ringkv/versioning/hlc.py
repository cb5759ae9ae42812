"""Hybrid logical clock: timestamps that follow physical time and never go backwards.

Physical time is an input (`physical_ms`), never read here, so the simulator can drive the
clock. A timestamp is one unsigned 64-bit int: milliseconds since the Unix epoch in the high 48
bits, a logical counter in the low 16 (layout in docs/formats/record.md). Because the counter
sits below the milliseconds, comparing two timestamps as ints compares (ms, logical).

Contract: every result of `now()` and `observe()` on one clock is strictly greater than every
earlier result of that clock, whatever the physical times passed in (they may go backwards),
and is at least `physical_ms` shifted into place. A remote timestamp more than
`max_offset_ms` ahead of physical time is refused with `ClockSkewError` and changes nothing.

Counter overflow: the next timestamp is always "previous + 1" when physical time has not moved
on, so 65,536 events in one millisecond carry into the millisecond part; the clock then runs up
to that far ahead of physical time until physical time catches up. Not thread-safe: one clock
belongs to one event loop.
"""

from __future__ import annotations

from ringkv.errors import ClockSkewError, ConfigError

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_PHYSICAL_MS = (1 << 48) - 1
MAX_TIMESTAMP = (1 << 64) - 1


def make_timestamp(physical_ms: int, logical: int = 0) -> int:
    """The timestamp for (physical_ms, logical). REQUIRES: both fit their bit fields."""
    if not 0 <= physical_ms <= MAX_PHYSICAL_MS:
        raise ValueError(f"physical_ms {physical_ms} does not fit 48 bits")
    if not 0 <= logical <= LOGICAL_MASK:
        raise ValueError(f"logical {logical} does not fit 16 bits")
    return (physical_ms << LOGICAL_BITS) | logical


def split_timestamp(ts: int) -> tuple[int, int]:
    """(milliseconds since the epoch, logical counter) of a timestamp."""
    return ts >> LOGICAL_BITS, ts & LOGICAL_MASK


def timestamp_ms(ts: int) -> int:
    """The millisecond part of a timestamp: when, in physical time, the event happened."""
    return ts >> LOGICAL_BITS


class HybridLogicalClock:
    """One node's hybrid logical clock (Kulkarni et al., 2014), packed into a 64-bit int.

    `last_ts` lets a restarted node continue above the highest timestamp it persisted.
    """

    __slots__ = ("_last", "max_offset_ms")

    def __init__(self, max_offset_ms: int = 500, last_ts: int = 0):
        if max_offset_ms < 0:
            raise ConfigError("max_offset_ms", f"must be >= 0, got {max_offset_ms}")
        if not 0 <= last_ts <= MAX_TIMESTAMP:
            raise ValueError(f"last_ts {last_ts} is not a 64-bit timestamp")
        self.max_offset_ms = max_offset_ms
        self._last = last_ts

    @property
    def last_ts(self) -> int:
        """The most recent timestamp this clock handed out (0 before the first)."""
        return self._last

    def now(self, physical_ms: int) -> int:
        """A timestamp for a local event (a write this node coordinates, a message it sends)."""
        # Every write stamps one, so the checks of _check_physical and _advance are inlined.
        if not 0 <= physical_ms <= MAX_PHYSICAL_MS:
            _check_physical(physical_ms)
        # Packed form of the HLC rule: a newer millisecond starts at logical 0, otherwise the
        # counter ticks; "+ 1" on the packed int carries an overflowing counter into the ms.
        ts = self._last + 1
        physical = physical_ms << LOGICAL_BITS
        if physical > ts:
            ts = physical
        if ts > MAX_TIMESTAMP:
            return self._advance(ts)  # raises
        self._last = ts
        return ts

    def observe(self, remote_ts: int, physical_ms: int) -> int:
        """Merge a timestamp received from another node; returns a timestamp for the receipt.

        Raises ClockSkewError, leaving the clock unchanged, when `remote_ts` is more than
        `max_offset_ms` ahead of `physical_ms`.
        """
        _check_physical(physical_ms)
        if not 0 <= remote_ts <= MAX_TIMESTAMP:
            raise ValueError(f"remote timestamp {remote_ts} is not a 64-bit timestamp")
        remote_ms = remote_ts >> LOGICAL_BITS
        if remote_ms - physical_ms > self.max_offset_ms:
            raise ClockSkewError(remote_ms, physical_ms, self.max_offset_ms)
        # The three cases of the HLC receive rule (local, remote or physical time is largest)
        # collapse to one max over packed ints.
        ts = max(self._last + 1, remote_ts + 1, physical_ms << LOGICAL_BITS)
        return self._advance(ts)

    def _advance(self, ts: int) -> int:
        if ts > MAX_TIMESTAMP:
            # Year 10889, or a last_ts that was corrupt: refuse rather than wrap around.
            raise OverflowError("hybrid logical clock passed 2**64 - 1")
        self._last = ts
        return ts

    def __repr__(self) -> str:
        ms, logical = split_timestamp(self._last)
        return f"HybridLogicalClock(max_offset_ms={self.max_offset_ms}, last={ms}.{logical})"


def _check_physical(physical_ms: int) -> None:
    if not 0 <= physical_ms <= MAX_PHYSICAL_MS:
        raise ValueError(f"physical_ms {physical_ms} is outside 0..2**48-1")
