"""Hinted handoff: writes a replica missed, kept here and delivered when it is back.

When a replica does not acknowledge a write (down, unreachable, or too slow), the coordinator
keeps the record as a *hint* for it. Hints live in an engine of their own
(`<data_dir>/hints`), so they survive this node's restart, under the key
`len(target) u8 ‖ target ‖ storage key`: one hint per key and target, a newer miss merged
into it (the merge of two records is the record the replica would have after both). The value
is `created_ms u64 BE ‖ record bytes`; `created_ms` is when the first write of the key was
missed, so the hint window survives restarts.

`HintDelivery` runs in the node's loop: for each target with hints, if the target looks up
(its failure detector says so, when there is one), it sends the hints with `ReplicaPut`, at
most `hint_delivery_rate_per_s` per second, deleting each once acknowledged. A target that
fails backs off (doubling from 1 s to 60 s). Hints older than `max_hint_window_ms` (default
3 h, as Dynamo and Cassandra) are dropped: anti-entropy is the safety net after that. The
store is bounded by `max_hints`; past it new hints are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Callable

from ringkv.clock import SYSTEM_CLOCK, Clock
from ringkv.errors import RpcError
from ringkv.node.messages import ReplicaPut
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import split_storage_key
from ringkv.storage import Engine, Options
from ringkv.versioning import record as rec
from ringkv.versioning.record import ConflictPolicy

log = logging.getLogger("ringkv.handoff")

_CREATED = struct.Struct(">Q")
BACKOFF_MIN_MS = 1_000
BACKOFF_MAX_MS = 60_000
SCAN_BATCH = 256  # hints read per target per delivery round


def _prefix(target: str) -> bytes:
    t = target.encode()
    return bytes((len(t),)) + t


class HintStore:
    """The durable hints of one node (see the module docstring)."""

    def __init__(self, data_dir: str, clock: Clock = SYSTEM_CLOCK, *, max_hints: int = 1_000_000,
                 max_hint_window_ms: int = 3 * 3600 * 1000, policy: ConflictPolicy = ConflictPolicy.SIBLINGS,
                 sync: str = "interval", namespaces: Namespaces | None = None, encryption_keys=None):
        self.engine = Engine.open(os.path.join(data_dir, "hints"),
                                  Options(sync=sync, memtable_bytes=4 * 1024 * 1024, background="thread",
                                          block_cache_bytes=8 * 1024 * 1024, max_value_bytes=64 * 1024 * 1024,
                                          encryption_keys=encryption_keys))
        self.clock = clock
        self.max_hints = max_hints
        self.max_hint_window_ms = max_hint_window_ms
        self.policy = policy
        self.namespaces = namespaces or Namespaces(1, policy.value)  # each namespace's policy
        self.stats = {"hints_stored": 0, "hints_delivered": 0, "hints_dropped_full": 0,
                      "hints_expired": 0, "hints_pending": 0}
        self._targets: dict[str, int] = {}  # target -> hints pending
        with self.engine.scan() as it:
            for key, _ in it:
                target = key[1:1 + key[0]].decode()
                self._targets[target] = self._targets.get(target, 0) + 1
        self.stats["hints_pending"] = sum(self._targets.values())

    def add(self, target: str, skey: bytes, record: bytes) -> bool:
        """Keep `record` for `target`; False when the store is full (the hint is dropped)."""
        key = _prefix(target) + skey
        old = self.engine.get(key)
        if old is None:
            if self.stats["hints_pending"] >= self.max_hints:
                self.stats["hints_dropped_full"] += 1
                return False
            created = self.clock.now_ms()
            data = record
            self._targets[target] = self._targets.get(target, 0) + 1
            self.stats["hints_pending"] += 1
        else:
            created = _CREATED.unpack_from(old)[0]
            merged = rec.merge(rec.decode_record(bytes(old[8:])), rec.decode_record(record),
                             self.namespaces.policy_of_skey(skey))
            data = rec.encode_record(merged)
        self.engine.put(key, _CREATED.pack(created) + data, sync=False)
        self.stats["hints_stored"] += 1
        return True

    def read(self, skey: bytes, targets: list[str]) -> bytes | None:
        """The merge of the hints kept for `skey` on behalf of any of `targets`, left in place
        (a session read consults them, node/session_reads.py); None when there is none."""
        merged: rec.Record | None = None
        policy = self.namespaces.policy_of_skey(skey)
        for target in targets:
            data = self.engine.get(_prefix(target) + skey)
            if data is None:
                continue
            hint = rec.decode_record(bytes(data[8:]))
            merged = hint if merged is None else rec.merge(merged, hint, policy)
        return None if merged is None else rec.encode_record(merged)

    def targets(self) -> list[str]:
        return [t for t, n in self._targets.items() if n > 0]

    def pending(self, target: str | None = None) -> int:
        if target is None:
            return self.stats["hints_pending"]
        return self._targets.get(target, 0)

    def batch(self, target: str, limit: int = SCAN_BATCH) -> list[tuple[bytes, int, bytes]]:
        """Up to `limit` hints for `target`: (storage key, created_ms, record)."""
        prefix = _prefix(target)
        out = []
        with self.engine.scan_prefix(prefix) as it:
            for key, value in it:
                out.append((bytes(key[len(prefix):]), _CREATED.unpack_from(value)[0], bytes(value[8:])))
                if len(out) >= limit:
                    break
        return out

    def remove_delivered(self, target: str, skey: bytes, record: bytes) -> bool:
        """Remove the hint once `record` was delivered, unless a newer miss was merged into it
        meanwhile (then it stays, to be sent again): False in that case."""
        stored = self.engine.get(_prefix(target) + skey)
        if stored is None:
            return True
        if bytes(stored[8:]) != record:
            return False
        self.remove(target, skey)
        return True

    def remove(self, target: str, skey: bytes, expired: bool = False) -> None:
        self.engine.delete(_prefix(target) + skey, sync=False)
        self._targets[target] -= 1
        self.stats["hints_pending"] -= 1
        self.stats["hints_expired" if expired else "hints_delivered"] += 1

    def forget(self, keep_namespace: bytes) -> int:
        """After FLUSHALL: drop every hint outside `keep_namespace` (the system one), for a
        hint delivered later would bring a flushed key back. Returns how many were dropped."""
        doomed = []
        with self.engine.scan() as it:
            for key, _ in it:
                skey = bytes(key[1 + key[0]:])
                if split_storage_key(skey)[0] != keep_namespace:
                    doomed.append((key[1:1 + key[0]].decode(), bytes(key)))
        for target, key in doomed:
            self.engine.delete(key, sync=False)
            self._targets[target] -= 1
            self.stats["hints_pending"] -= 1
        return len(doomed)

    def close(self) -> None:
        self.engine.flush()
        self.engine.close()


class HintDelivery:
    """Sends stored hints to their targets (see the module docstring)."""

    def __init__(self, store: HintStore, call: Callable, *, is_up: Callable[[str], bool] | None = None,
                 rate_per_s: int = 1000, timeout_ms: float = 2000.0, interval_ms: int = 1000):
        self.store = store
        self.call = call  # async (node, body, timeout_ms) -> reply
        self.is_up = is_up or (lambda node: True)
        self.rate_per_s = rate_per_s
        self.timeout_ms = timeout_ms
        self.interval_ms = interval_ms
        self._retry_at: dict[str, tuple[float, int]] = {}  # target -> (monotonic ms, backoff ms)
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """A target may be back (e.g. the failure detector saw it): try now."""
        self._retry_at.clear()
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # a timeout is the periodic round
                await asyncio.wait_for(self._wake.wait(), self.interval_ms / 1000)
            self._wake.clear()
            try:
                await self.deliver_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hint delivery round failed")

    async def deliver_round(self) -> int:
        """One pass over every target with hints; returns how many were delivered."""
        loop = asyncio.get_running_loop()
        delivered = 0
        for target in self.store.targets():
            now = loop.time() * 1000
            retry = self._retry_at.get(target)
            if retry is not None and now < retry[0]:
                continue
            if not self.is_up(target):
                continue
            delivered += await self._deliver(target, loop)
        return delivered

    async def _deliver(self, target: str, loop) -> int:
        store = self.store
        sent = 0
        window_start = loop.time()
        while True:
            hints = store.batch(target)
            if not hints:
                self._retry_at.pop(target, None)
                if sent:
                    log.info("delivered %d hints to %s", sent, target)
                return sent
            oldest_allowed = store.clock.now_ms() - store.max_hint_window_ms
            for skey, created, record in hints:
                if created < oldest_allowed:
                    store.remove(target, skey, expired=True)
                    continue
                try:
                    await self.call(target, ReplicaPut(skey, record), self.timeout_ms)
                except RpcError as exc:
                    backoff = min(BACKOFF_MAX_MS, 2 * self._retry_at.get(target, (0, BACKOFF_MIN_MS // 2))[1])
                    self._retry_at[target] = (loop.time() * 1000 + backoff, backoff)
                    log.debug("hints for %s not delivered (%s); next try in %d ms", target, exc, backoff)
                    return sent
                # Sending took a round trip, in which a new miss of this key may have been
                # merged into the hint: then it is kept and sent again.
                if not store.remove_delivered(target, skey, record):
                    continue
                sent += 1
                if sent % self.rate_per_s == 0:  # rate limit: at most rate_per_s per second
                    elapsed = loop.time() - window_start
                    if elapsed < 1.0:
                        await asyncio.sleep(1.0 - elapsed)
                    window_start = loop.time()
