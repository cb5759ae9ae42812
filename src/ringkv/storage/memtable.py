"""The memtable: recent writes in memory, in front of the SSTables.

A dict gives O(1) puts and gets from C, which is what lets a Python engine keep up with
RocksDB on random writes; key order is built lazily, only when a scan asks for it:
`sorted_keys()` keeps a sorted base list plus a small sorted delta of keys added since, so a
scan after a few inserts costs O(delta) rather than a full sort.

Snapshots: a scan must not see writes that land while it runs. A `MemSnapshot` records, the
first time a key changes after the snapshot was taken, the value the key had then (its undo
entry). Reading through the snapshot consults the undo entries first. Writes pay for this only
while a snapshot is open.

A value of None is a tombstone. Not thread-safe for writers: the engine's write lock
serializes them; readers may run concurrently (dict reads are atomic under the GIL).
"""

from __future__ import annotations

import weakref
from bisect import bisect_left

# Bytes charged per entry on top of key and value, so many tiny entries still fill a memtable.
ENTRY_OVERHEAD_BYTES = 32
_ABSENT = object()
_DELTA_MERGE_MIN = 4096


class MemTable:
    __slots__ = (
        "__weakref__",
        "_base",
        "_delta",
        "_pending",
        "_snapshots",
        "approx_bytes",
        "data",
        "user_bytes",
        "wal",
        "wal_number",
    )

    def __init__(self, wal_number: int):
        self.data: dict[bytes, bytes | None] = {}
        self.approx_bytes = 0
        self.user_bytes = 0  # key and value bytes written into it, for write amplification
        self.wal_number = wal_number
        self.wal = None  # its WalWriter once frozen, until the flush thread syncs and closes it
        self._base: list[bytes] = []  # sorted; replaced, never mutated (snapshots hold it)
        self._delta: list[bytes] = []  # sorted; replaced, never mutated
        self._pending: list[bytes] = []  # keys added since the last sorted_keys(), unsorted
        self._snapshots: weakref.WeakSet[MemSnapshot] = weakref.WeakSet()

    def __len__(self) -> int:
        return len(self.data)

    def put(self, key: bytes, value: bytes | None) -> None:
        data = self.data
        if self._snapshots.data:  # see Engine.put
            self._save_undo(key)
        old = data.get(key, _ABSENT)
        data[key] = value
        if old is _ABSENT:
            self._pending.append(key)
            self.approx_bytes += len(key) + 4 + ENTRY_OVERHEAD_BYTES + (len(value) if value else 0)
        else:
            self.approx_bytes += (len(value) if value else 0) - (len(old) if old else 0)

    def _save_undo(self, key: bytes) -> None:
        old = self.data.get(key, _ABSENT)
        if old is _ABSENT:
            return  # a new key is invisible to older snapshots anyway
        for snap in self._snapshots:
            if key not in snap.undo:
                snap.undo[key] = old

    def get(self, key: bytes, default=_ABSENT):
        return self.data.get(key, default)

    def sorted_keys(self) -> tuple[list[bytes], list[bytes]]:
        """(base, delta): two sorted lists whose union is every key. Callers must not mutate them."""
        if self._pending:
            pending = self._pending
            self._pending = []
            pending.sort()
            # Timsort merges two sorted runs in linear time.
            self._delta = sorted(self._delta + pending) if self._delta else pending
            if len(self._delta) > max(_DELTA_MERGE_MIN, len(self._base) >> 3):
                self._base = sorted(self._base + self._delta)
                self._delta = []
        return self._base, self._delta

    def snapshot(self) -> MemSnapshot:
        snap = MemSnapshot(self)
        self._snapshots.add(snap)
        return snap


class MemSnapshot:
    """A frozen view of a memtable for one scan; released when dropped or closed."""

    __slots__ = ("__weakref__", "base", "delta", "mem", "undo")

    def __init__(self, mem: MemTable):
        self.mem = mem
        self.undo: dict[bytes, object] = {}
        self.base, self.delta = mem.sorted_keys()

    def release(self) -> None:
        self.mem._snapshots.discard(self)

    def items_from(self, start: bytes | None, end: bytes | None):
        """(key, value-or-None) in key order for start <= key < end, as of the snapshot."""
        data = self.mem.data
        undo = self.undo
        runs = []
        for keys in (self.base, self.delta):
            if not keys:
                continue
            lo = 0 if start is None else bisect_left(keys, start)
            hi = len(keys) if end is None else bisect_left(keys, end)
            if lo < hi:
                runs.append(keys[lo:hi] if (lo or hi != len(keys)) else keys)
        if not runs:
            return
        keys = runs[0] if len(runs) == 1 else sorted(runs[0] + runs[1])
        # The undo map must be consulted for every key, even if it is empty when iteration
        # starts: a key may be overwritten while the scan is running.
        # Every listed key existed when the snapshot was taken (keys added later are only in
        # the memtable's pending list), so an undo entry always holds a real old value.
        for k in keys:
            v = undo.get(k, _ABSENT)
            yield k, (data[k] if v is _ABSENT else v)
