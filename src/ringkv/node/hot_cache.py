"""A coordinator's short cache of hot keys' records (docs/hot-keys.md).

In a namespace with `hot_cache_ms` > 0, a read at ONE of a key this node finds hot
(cluster/hotkeys.py) is answered from here when an entry is younger than `hot_cache_ms`;
otherwise it reads as usual and keeps the answer. What that promises, and what not:

- an answer is at most `hot_cache_ms` older than what a ONE read would have returned when
  it was made: a write through another node is missed for at most that long;
- a write this node coordinates drops the key's entry before it answers, and a read of the
  key that started before such a write does not keep what it read: a client that writes
  through a node reads its write back through it;
- only reads at ONE are cached; QUORUM, ALL, SERIAL and session reads never look here, so
  R + W > N and the session guarantees are untouched.

Bounded by `max_keys` entries (the hot-key summary's capacity: only hot keys are cached);
when it is full of live entries a new one is not kept.
"""

from __future__ import annotations

from collections import deque

MISS = object()  # `get`'s answer when the cache cannot answer
RECENT_DROPS = 1024  # writes remembered to judge reads in flight; past it such reads keep nothing


class HotCache:
    __slots__ = ("_entries", "_recent", "generation", "hits", "max_keys", "misses")

    def __init__(self, max_keys: int):
        self.max_keys = max_keys
        # storage key -> (expires at, ms on the node's clock; the record's bytes or None)
        self._entries: dict[bytes, tuple[int, bytes | None]] = {}
        # Bumped by every drop; the last RECENT_DROPS drops are remembered with theirs, so a read
        # keeps what it read only if no write of its key came after it began.
        self.generation = 0
        self._recent: deque[tuple[int, bytes | None]] = deque(maxlen=RECENT_DROPS)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, skey: bytes, now_ms: int):
        """The record's bytes (None: no record) while the entry lives, else MISS."""
        entry = self._entries.get(skey)
        if entry is not None and entry[0] > now_ms:
            self.hits += 1
            return entry[1]
        self.misses += 1
        return MISS

    def put(self, skey: bytes, data: bytes | None, expires_at_ms: int, now_ms: int, generation: int) -> bool:
        """Keep what a read that began at `generation` returned; False when it is not kept (a
        write came in between, or the cache is full of live entries)."""
        if generation != self.generation:
            if self.generation - generation > len(self._recent):
                return False  # more writes since than remembered: any could be of this key
            for when, key in reversed(self._recent):
                if when <= generation:
                    break
                if key == skey or key is None:
                    return False
        entries = self._entries
        if skey not in entries and len(entries) >= self.max_keys:
            for key in [k for k, (expires, _) in entries.items() if expires <= now_ms]:
                del entries[key]
            if len(entries) >= self.max_keys:
                return False
        entries[skey] = (expires_at_ms, data)
        return True

    def drop(self, skey: bytes) -> None:
        """A write of `skey` through this node: its entry goes, and reads in flight keep nothing."""
        self.generation += 1
        self._recent.append((self.generation, skey))
        self._entries.pop(skey, None)

    def clear(self) -> None:
        """FLUSHALL: every entry goes, and reads in flight keep nothing (None: every key)."""
        self.generation += 1
        self._recent.append((self.generation, None))
        self._entries.clear()
