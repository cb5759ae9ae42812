"""The block cache under concurrent hits and table evictions (a reader that releases the last
reference to an old version evicts that version's dropped tables while other readers hit)."""

from __future__ import annotations

import sys
import threading

from ringkv.storage.cache import BlockCache


def test_evicting_a_table_while_other_threads_hit_never_fails():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        cache = BlockCache(1 << 30)
        for table in range(4):
            for block in range(2000):
                cache.put((table, block), b"x", 1)
        stop = threading.Event()
        errors: list[BaseException] = []

        def hit() -> None:
            try:
                while not stop.is_set():
                    for block in range(0, 2000, 7):
                        cache.get((3, block))
            except BaseException as exc:
                errors.append(exc)

        readers = [threading.Thread(target=hit) for _ in range(3)]
        for t in readers:
            t.start()
        try:
            for table in range(3):
                cache.evict_table(table)
                for block in range(2000):
                    cache.put((table, block), b"x", 1)
                cache.evict_table(table)
        finally:
            stop.set()
            for t in readers:
                t.join()
        assert errors == []
        assert cache.used_bytes == 2000  # only table 3 is left, counted exactly
    finally:
        sys.setswitchinterval(old)
