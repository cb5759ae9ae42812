"""A key drawn at random from a key range, without reading the range: what SRANDMEMBER, SPOP
and HRANDFIELD need of a collection of a million elements (node/elements.py).

A draw weighs every place the range's entries are kept by how many it holds there: each
memtable by its keys in the range (counted in its sorted key lists), each table by its data
blocks that overlap the range times the table's entries per block (its index and metadata,
both resident). It picks one place by weight, then one block of it and one key of the block
in the range (one block read, usually cached).

What the draw is not: exact. A key written in several places (a memtable and an older table)
weighs once per place, a key whose newest entry is a tombstone can be drawn, blocks hold
about, not exactly, the table's mean (the blocks at the range's edges are read and counted
exactly). The caller reads the key it got and draws again when it is not what it wants; it
gives up after a few draws and reads the range instead.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any


def draw(memtables: Iterable[tuple[Sequence[bytes], Sequence[bytes]]], versions: Iterable[Any],
         start: bytes, end: bytes, rng: random.Random) -> bytes | None:
    """A key in [start, end) drawn as the module docstring says, from `memtables` (each as its
    `sorted_keys()` lists) and the tables of `versions` (storage/version.Version); None exactly
    when nothing is stored in the range."""
    places: list[tuple[float, Any, int, int]] = []  # (weight, keys or a table, lo, hi)
    total = 0.0

    def keys_place(keys: Sequence[bytes], lo: int, hi: int) -> None:
        nonlocal total
        if hi > lo:
            places.append((hi - lo, keys, lo, hi))
            total += hi - lo

    for lists in memtables:
        for keys in lists:
            keys_place(keys, bisect_left(keys, start), bisect_left(keys, end))
    for version in versions:
        for level in version.levels:
            for table in level:
                if table.largest < start or table.smallest >= end:
                    continue
                index = table._index_keys  # each block's last key
                blocks = len(index)
                lo = bisect_left(index, start)  # the first block with a key >= start
                if lo == blocks:
                    continue
                hi = min(bisect_left(index, end), blocks - 1)  # the last block that may hold a key < end
                # The edge blocks are counted exactly (read, usually from the cache): a range
                # that lies inside one block of a table, or ends early in its last block, weighs
                # what it holds there, and a draw never lands on a block without its keys.
                first = table._block(lo)[0]
                if hi == lo:
                    keys_place(first, bisect_left(first, start), bisect_left(first, end))
                    continue
                keys_place(first, bisect_left(first, start), len(first))
                last = table._block(hi)[0]
                keys_place(last, 0, bisect_left(last, end))
                if hi - lo > 1:
                    weight = (hi - lo - 1) * table.meta.entries / blocks
                    places.append((weight, table, lo + 1, hi - 1))
                    total += weight
    if not places:
        return None
    point = rng.random() * total
    chosen = places[-1]  # (rounding may leave `point` just above the last weight)
    for place in places:
        point -= place[0]
        if point < 0:
            chosen = place
            break
    _, where, lo, hi = chosen
    if isinstance(where, list):
        return where[rng.randrange(lo, hi)]
    keys = where._block(rng.randint(lo, hi))[0]  # a middle block: every key of it is in the range
    return keys[rng.randrange(len(keys))]
