"""Hot keys: the keys a node is asked for most, now, in bounded memory.

A Space-Saving summary (Metwally, Agrawal and El Abbadi, 2005) over a sample of the requests:
at most `capacity` keys are counted. A key already counted adds one; a new key, while there is
room, starts at one; else it takes the place of the key with the smallest count and starts
from that count plus one, remembering the inherited part as its `error`. What that buys, for a
stream of m offers (tests/cluster/test_hotkeys.py checks each with hypothesis):

- a key offered more than m / capacity times is always among those counted;
- a counted key's true count lies in [count - error, count];
- the counts add up to m.

Two things make it fit a node's request path:

- **Sampling.** One request in about `sample_every` is counted. `tick()` says which: a C-level
  step through a fixed cycle of about SAMPLE_PATTERN_GAPS gaps drawn at random (mean
  `sample_every`), so a key that comes back at a fixed period is not always missed or always
  hit, and the other requests cost one call that runs no Python. Frequencies are estimated
  from the sample.
- **Decay.** Every `half_life_ms` all counts (and errors) are halved and keys left at zero
  are dropped, so the summary shows the present load and a key that was hot an hour ago
  leaves it. The clock is read every REFRESH_EVERY_SAMPLES samples and before a report, not
  per request.

`hot` is the set of keys whose guaranteed count (count - error) is at least `min_share` of
all the (decayed) offers and at least `min_count`: the keys the node's mitigations act on
(node/read_path.py spreads their reads at ONE; node/hot_cache.py caches them). It is
recomputed every REFRESH_EVERY_SAMPLES samples and before a report, so a lookup is one set
membership.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import NamedTuple

DEFAULT_CAPACITY_KEYS = 64
DEFAULT_SAMPLE_EVERY = 16
DEFAULT_HALF_LIFE_MS = 10_000
DEFAULT_MIN_SHARE = 0.01
DEFAULT_MIN_COUNT = 8
MAX_CAPACITY_KEYS = 4096
REFRESH_EVERY_SAMPLES = 64
SAMPLE_PATTERN_GAPS = 256  # gaps in `tick`'s cycle: about 256 * sample_every requests long
_MASK_64 = (1 << 64) - 1

READ = 0
WRITE = 1


class HotKey(NamedTuple):
    """One counted key, as reports show it."""

    key: bytes
    count: int  # sampled offers counted for it (an upper bound of its true sampled count)
    error: int  # how much of `count` it may have inherited from the key it replaced
    reads: int  # sampled reads and writes since it was last counted afresh
    writes: int
    per_s: float  # estimated requests per second (all of them, not only the sampled)


class HotKeys:
    """A Space-Saving summary of sampled keys with decay (see the module docstring)."""

    __slots__ = ("_entries", "_floor", "_floor_keys", "_halvings", "_last_decay_ms", "_now_ms", "_since_refresh",
                 "capacity", "half_life_ms", "hot", "min_count", "min_share", "sample_every", "tick", "total")

    def __init__(self, now_ms: Callable[[], int], *, capacity: int = DEFAULT_CAPACITY_KEYS,
                 sample_every: int = DEFAULT_SAMPLE_EVERY, half_life_ms: int = DEFAULT_HALF_LIFE_MS,
                 min_share: float = DEFAULT_MIN_SHARE, min_count: int = DEFAULT_MIN_COUNT,
                 seed: int = 0x9E3779B97F4A7C15):
        if not 1 <= capacity <= MAX_CAPACITY_KEYS:
            raise ValueError(f"capacity must be in 1..{MAX_CAPACITY_KEYS} keys, got {capacity}")
        if sample_every < 1 or half_life_ms < 1 or not 0 <= min_share <= 1 or min_count < 1:
            raise ValueError("sample_every, half_life_ms and min_count must be >= 1, min_share in [0, 1]")
        self._now_ms = now_ms
        self.capacity = capacity
        self.sample_every = sample_every
        self.half_life_ms = half_life_ms
        self.min_share = min_share
        self.min_count = min_count
        self.tick: Callable[[], bool] = itertools.cycle(_sample_pattern(sample_every, seed)).__next__
        # key -> [count, error, reads, writes]; lists, changed in place on the hot path.
        self._entries: dict[bytes, list[int]] = {}
        # The smallest count at the last scan of a full summary, and the keys that had it then
        # (see _evict); emptied whenever keys leave other than by eviction.
        self._floor = 0
        self._floor_keys: list[bytes] = []
        self.total = 0
        self.hot: frozenset[bytes] = frozenset()
        self._since_refresh = 0
        self._last_decay_ms = now_ms()
        self._halvings = 0  # since the summary started (or was cleared), at most 64

    def offer(self, key: bytes, kind: int = READ) -> None:
        """One request for `key` (READ or WRITE): counted about once in `sample_every`. The
        hottest paths inline it (`if hot.tick(): hot.count(key)`), building the key only when
        it is counted."""
        if self.tick():
            self.count(key, kind)

    def count(self, key: bytes, kind: int = READ) -> None:
        """Count one sampled request for `key` (what `offer` does when it samples)."""
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            if len(entries) < self.capacity:
                entry = entries[key] = [0, 0, 0, 0]
            else:
                floor = self._evict()
                entry = entries[key] = [floor, floor, 0, 0]
        entry[0] += 1
        entry[2 + kind] += 1
        self.total += 1
        self._since_refresh += 1
        if self._since_refresh >= REFRESH_EVERY_SAMPLES:
            self._tick()

    def _evict(self) -> int:
        """Drop a key of the smallest count from the full summary; returns that count.

        Any key of the smallest count will do. One scan finds every key that has it; they are
        evicted one by one until none is left at it, and only then is the summary scanned again.
        While a key found by the scan still has its count, that count is still the smallest:
        counts only grow, and a key let in by an eviction starts above it. A stream of new keys
        (random keys, the usual case on a big keyspace) so costs one scan per `capacity`
        evictions instead of one per eviction (7% of a pipelined GET's CPU when it scanned)."""
        entries = self._entries
        floor_keys = self._floor_keys
        while floor_keys:
            key = floor_keys.pop()
            entry = entries.get(key)
            if entry is not None and entry[0] == self._floor:
                del entries[key]
                return self._floor
        floor = self._floor = min([entry[0] for entry in entries.values()])
        floor_keys += [k for k, entry in entries.items() if entry[0] == floor]
        del entries[floor_keys.pop()]
        return floor

    def _tick(self) -> None:
        """Every REFRESH_EVERY_SAMPLES samples (and before a report): halve the counts if a
        half-life has passed, and recompute the hot set."""
        now = self._now_ms()
        if now - self._last_decay_ms >= self.half_life_ms:
            self._decay(now)
        else:
            self._refresh()

    def _decay(self, now: int) -> None:
        halvings = min(63, (now - self._last_decay_ms) // self.half_life_ms)
        self._last_decay_ms += halvings * self.half_life_ms
        self._halvings = min(64, self._halvings + halvings)
        kept: dict[bytes, list[int]] = {}
        for key, (count, error, reads, writes) in self._entries.items():
            count >>= halvings
            if count:
                kept[key] = [count, error >> halvings, reads >> halvings, writes >> halvings]
        self._entries = kept
        self._floor_keys = []  # counts fell and keys left: the next eviction scans again
        self.total = sum(e[0] for e in kept.values())
        self._refresh()

    def _refresh(self) -> None:
        self._since_refresh = 0
        bar = max(self.min_count, self.min_share * self.total)
        self.hot = frozenset(k for k, e in self._entries.items() if e[0] - e[1] >= bar)

    def __len__(self) -> int:
        """Keys counted now (at most `capacity`)."""
        return len(self._entries)

    def is_hot(self, key: bytes) -> bool:
        return key in self.hot

    def top(self, limit: int | None = None) -> list[HotKey]:
        """The counted keys, most requested first (ties by key), at most `limit`."""
        self._tick()
        now = self._now_ms()
        # A steady rate r per ms since the start leaves a count of r * W, W the decayed time:
        # the time since the last halving, plus H/2 + H/4 + ... for each halving before it.
        window_ms = now - self._last_decay_ms + self.half_life_ms * (1 - 2.0 ** -self._halvings)
        scale = self.sample_every * 1000.0 / max(1.0, window_ms)
        ranked = sorted(self._entries.items(), key=lambda kv: (-kv[1][0], kv[0]))
        if limit is not None:
            ranked = ranked[:limit]
        return [HotKey(k, c, e, r, w, round(c * scale, 1)) for k, (c, e, r, w) in ranked]

    def clear(self) -> None:
        """Forget every count (FLUSHALL, or an operator's reset)."""
        self._entries = {}
        self._floor_keys = []
        self.total = 0
        self.hot = frozenset()
        self._since_refresh = 0
        self._last_decay_ms = self._now_ms()
        self._halvings = 0


def _sample_pattern(sample_every: int, seed: int) -> list[bool]:
    """`tick`'s cycle: SAMPLE_PATTERN_GAPS gaps drawn uniformly in 1 .. 2 * sample_every - 1
    (mean `sample_every`), each a run of False ended by one True. xorshift64 (Marsaglia): pure
    and the same on every run, enough to break a key's period."""
    if sample_every == 1:
        return [True]
    x = (seed & _MASK_64) or 1
    pattern: list[bool] = []
    for _ in range(SAMPLE_PATTERN_GAPS):
        x ^= (x << 13) & _MASK_64
        x ^= x >> 7
        x ^= (x << 17) & _MASK_64
        gap = 1 + x % (2 * sample_every - 1)
        pattern += [False] * (gap - 1)
        pattern.append(True)
    return pattern
