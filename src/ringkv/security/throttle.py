"""Slowing down password guessing: an exponential backoff per client address and per user name.

Each key (an IP address, or a user name) remembers its recent failures. The first
`free_failures` cost nothing; every later one doubles the wait before that key's next attempt,
from `base_ms` up to `max_ms`. An attempt waits for the longer of its address's and its user's
wait, so many connections from one address, or many addresses guessing one user's password, are
held back together. A key forgets its failures `forget_after_ms` after the last one; a
successful authentication clears the user's (not the address's: one good account must not
reset an address that guesses others).

Memory is bounded: at most `max_keys` keys of each kind, the least recently failed dropped
first (an attacker spreading over more addresses than that gains at most `free_failures` fast
guesses per address it cycles through). The price of a per-user wait is that guessing can
slow a real client of that user down, by at most `max_ms` per attempt.

Pure: time is an argument.
"""

from __future__ import annotations

from collections import OrderedDict


class FailureThrottle:
    def __init__(self, free_failures: int = 3, base_ms: int = 100, max_ms: int = 10_000, max_keys: int = 10_000,
                 forget_after_ms: int = 60_000):
        self.free_failures = free_failures
        self.base_ms = base_ms
        self.max_ms = max_ms
        self.max_keys = max_keys
        self.forget_after_ms = forget_after_ms
        # key -> [failures, not before (ms), last failure (ms)], least recent first
        self._state: OrderedDict[str, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._state)

    def wait_ms(self, key: str, now_ms: int) -> int:
        """How long an attempt for `key` must wait from now (0: go ahead)."""
        entry = self._state.get(key)
        if entry is None:
            return 0
        if now_ms - entry[2] >= self.forget_after_ms:
            del self._state[key]
            return 0
        return max(0, entry[1] - now_ms)

    def failed(self, key: str, now_ms: int) -> int:
        """Record a failure; the wait (ms) the key's next attempt gets."""
        entry = self._state.pop(key, None)
        if entry is None or now_ms - entry[2] >= self.forget_after_ms:
            entry = [0, 0, now_ms]
        entry[0] += 1
        entry[2] = now_ms
        over = entry[0] - self.free_failures
        delay = 0 if over <= 0 else min(self.max_ms, self.base_ms << min(over - 1, 32))
        entry[1] = now_ms + delay
        self._state[key] = entry
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)
        return delay

    def succeeded(self, key: str) -> None:
        self._state.pop(key, None)

    def failures(self, key: str) -> int:
        entry = self._state.get(key)
        return 0 if entry is None else entry[0]
