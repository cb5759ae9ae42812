"""Bounded caches: decoded data blocks (LRU by bytes) and open table files (LRU by count).

Both are safe for concurrent use. A hit takes no lock: `OrderedDict.get` and `move_to_end` are
single C calls under the GIL, and a `KeyError` from a concurrent eviction is harmless. Inserts
and evictions take a lock so the byte count stays exact.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ringkv.storage.fs import PosixFileSystem, RandomAccessFile


class BlockCache:
    __slots__ = ("_entries", "_lock", "capacity_bytes", "hits", "misses", "used_bytes")

    def __init__(self, capacity_bytes: int):
        self.capacity_bytes = capacity_bytes
        self.used_bytes = 0
        self._entries: OrderedDict = OrderedDict()  # key -> (value, charge_bytes)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key):
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        try:
            self._entries.move_to_end(key)
        except KeyError:
            pass
        return entry[0]

    def grow(self, key, extra_bytes: int) -> None:
        """Charge `key`'s entry `extra_bytes` more (its value grew: a block's hash index),
        evicting the least recently used entries if that goes over the budget. Nothing
        happens when the entry is gone (evicted meanwhile): its value is then not cached."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            self._entries[key] = (entry[0], entry[1] + extra_bytes)
            used = self.used_bytes + extra_bytes
            capacity = self.capacity_bytes
            popitem = self._entries.popitem
            while used > capacity and self._entries:
                used -= popitem(last=False)[1][1]
            self.used_bytes = used

    def charge_of(self, key) -> int:
        """The bytes `key`'s entry is charged (0 when it is not cached)."""
        entry = self._entries.get(key)
        return 0 if entry is None else entry[1]

    def put(self, key, value, charge_bytes: int) -> None:
        if charge_bytes > self.capacity_bytes:
            return  # larger than the whole cache: serve it uncached
        with self._lock:
            entries = self._entries
            if key in entries:
                return
            entries[key] = (value, charge_bytes)
            used = self.used_bytes + charge_bytes
            capacity = self.capacity_bytes
            popitem = entries.popitem
            while used > capacity:
                used -= popitem(last=False)[1][1]
            self.used_bytes = used

    def evict_table(self, number: int) -> None:
        """Drop every block of a deleted table so its memory is reclaimed at once."""
        with self._lock:
            # list() copies in one C call: a Python-level loop over the live dict could see a
            # lock-free hit's move_to_end in another thread and fail with "mutated during
            # iteration" (it did, under the concurrent readers-and-writers test).
            for key in [k for k in list(self._entries) if k[0] == number]:
                entry = self._entries.pop(key, None)
                if entry is not None:
                    self.used_bytes -= entry[1]


class TableCache:
    """Open files of tables, at most `capacity_files` at a time."""

    def __init__(self, fs: PosixFileSystem, capacity_files: int):
        self._fs = fs
        self.capacity_files = capacity_files
        self._files: OrderedDict[int, RandomAccessFile] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, number: int, path: str) -> RandomAccessFile:
        f = self._files.get(number)
        if f is not None:
            self.hits += 1
            try:
                self._files.move_to_end(number)
            except KeyError:
                pass
            return f
        with self._lock:
            f = self._files.get(number)
            if f is not None:
                return f
            self.misses += 1
            f = self._fs.open_read(path)
            self._files[number] = f
            while len(self._files) > self.capacity_files:
                _, old = self._files.popitem(last=False)
                # A reader holding `old` may still be inside pread; closing the descriptor
                # under it would fail that read, so closing is left to garbage collection.
                del old
            return f

    def evict(self, number: int) -> None:
        with self._lock:
            self._files.pop(number, None)

    def close(self) -> None:
        with self._lock:
            for f in list(self._files.values()):
                f.close()
            self._files.clear()

    def __len__(self) -> int:
        return len(self._files)
