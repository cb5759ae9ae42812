"""A Version: one immutable arrangement of one column family's tables into levels, and the
picking of leveled compactions (tiered.py and time_window.py pick for the other strategies).

Level 0 holds flushed memtables, newest first, whose key ranges may overlap. Every deeper level
holds tables with disjoint ranges, sorted by key, and is older than every level above it. A
point lookup therefore checks L0 tables newest to oldest, then at most one table per level.

Every strategy keeps that shape, which is what reads, scans and the tombstone rule rely on: its
*sorted runs*, newest first, are each level-0 table alone and then each non-empty deeper level.
Leveled compaction keeps `max_levels` levels, sized by the level targets; tiered and
time-window compaction keep one level per run they have merged, as many as they need.

Versions never change; flushes and compactions build a new one. Scans pin the version they
started on, and the engine deletes a table file only once no live version holds it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from ringkv.storage.options import Options
from ringkv.storage.sstable import MISSING, Table


class Version:
    __slots__ = ("__weakref__", "_deep", "_largest", "levels")

    def __init__(self, levels: list[list[Table]]):
        self.levels = levels
        self._largest = [[t.largest for t in level] for level in levels]
        # (largest keys, tables) of each non-empty level below 0: what a point lookup walks.
        self._deep = [(self._largest[li], levels[li]) for li in range(1, len(levels)) if levels[li]]

    def get(self, key: bytes):
        """Newest value (None for a tombstone) or MISSING."""
        for t in self.levels[0]:
            if t.smallest <= key <= t.largest and t.bloom.may_contain(key):
                v = t.get(key)
                if v is not MISSING:
                    return v
        for lk, tables in self._deep:
            i = bisect_left(lk, key)
            if i < len(lk):
                t = tables[i]
                if t.smallest <= key and t.bloom.may_contain(key):
                    v = t.get(key)
                    if v is not MISSING:
                        return v
        return MISSING

    def overlapping(self, level: int, smallest: bytes | None, largest: bytes | None) -> list[Table]:
        """Tables of `level` (>= 1) whose range meets [smallest, largest]; None is unbounded."""
        tables = self.levels[level]
        lo = 0 if smallest is None else bisect_left(self._largest[level], smallest)
        out = []
        for t in tables[lo:]:
            if largest is not None and t.smallest > largest:
                break
            out.append(t)
        return out

    def level_tables_from(self, level: int, start: bytes | None) -> list[Table]:
        lo = 0 if start is None else bisect_left(self._largest[level], start)
        return self.levels[level][lo:]

    def numbers(self) -> set[int]:
        return {t.number for level in self.levels for t in level}

    def level_bytes(self, level: int) -> int:
        return sum(t.meta.file_bytes for t in self.levels[level])

    def ranges_below(self, level: int) -> list[list[tuple[bytes, bytes]]]:
        """Key ranges of every level deeper than `level`, for the tombstone-drop rule."""
        return [[(t.smallest, t.largest) for t in lv] for lv in self.levels[level + 1 :] if lv]

    def sorted_runs(self) -> list[list[Table]]:
        """Newest first: each level-0 table alone, then each non-empty deeper level."""
        return [[t] for t in self.levels[0]] + [lv for lv in self.levels[1:] if lv]

    def replace_runs(self, removed: set[int], output: list[Table]) -> Version:
        """The version with the tables numbered in `removed` gone and, if `output` is given,
        one sorted run `output` where they were.

        REQUIRES: with an output, `removed` is whole consecutive runs, and those that are level-0
        tables are the oldest ones (the output is a level, and no level-0 table may be older
        than a level). Without an output, any tables may go (an expired table's deletion).
        Empty deeper levels are dropped: the shape tiered and time-window compaction keep.
        """
        runs: list[tuple[bool, list[Table]]] = [(True, [t]) for t in self.levels[0]]
        runs += [(False, lv) for lv in self.levels[1:] if lv]
        out: list[tuple[bool, list[Table]]] = []
        placed = not output
        for is_l0, tables in runs:
            kept = [t for t in tables if t.number not in removed]
            if len(kept) < len(tables) and not placed:
                assert not kept, "a merge replaces whole runs"
                out.append((False, list(output)))
                placed = True
            if kept:
                out.append((is_l0, kept))
        assert placed, "the runs to replace are not in this version"
        level0 = []
        i = 0
        while i < len(out) and out[i][0]:
            level0.append(out[i][1][0])
            i += 1
        rest = out[i:]
        assert not any(is_l0 for is_l0, _ in rest), "a level-0 table would sit below a merged run"
        return Version([level0] + [tables for _, tables in rest])

    def padded(self, levels: int) -> Version:
        """The same tables in at least `levels` levels (leveled compaction's shape)."""
        if len(self.levels) >= levels:
            return self
        return Version(self.levels + [[] for _ in range(levels - len(self.levels))])

    def with_changes(self, removed: set[int], added: dict[int, list[Table]]) -> Version:
        levels = []
        for li, level in enumerate(self.levels):
            kept = [t for t in level if t.number not in removed]
            new = added.get(li, [])
            if li == 0:
                kept = new + kept  # new L0 tables are the newest
            else:
                kept = sorted(kept + new, key=lambda t: t.smallest)
            levels.append(kept)
        return Version(levels)


class CompactionPick:
    """A leveled compaction: tables of `level` and the overlapping ones of the next level.

    Every pick (this one, tiered.py's and time_window.py's) answers the same questions:
    `runs()` (the inputs as sorted runs, newest first), `tables()`, `deeper_ranges(version)`
    (key ranges older than the output, for the tombstone rule), `apply(version, outputs)` (the
    version with the result installed), `score` (urgency, >= 1 when due), whether it is a
    `trivial_move` or a `drop` (no merge: a manifest edit only), and what it is (`describe()`).
    """

    __slots__ = ("inputs", "level", "output_level", "score", "trivial_move")
    drop = False
    created_ms = 0

    def __init__(self, level: int, inputs: list[Table], overlaps: list[Table], trivial_move: bool, score: float = 1.0):
        self.level = level
        self.output_level = level + 1
        # Sorted runs, newest first: each L0 table alone, then the rest of `level`, then the
        # overlapping tables of the next level.
        self.inputs = inputs, overlaps
        self.trivial_move = trivial_move
        self.score = score

    def runs(self) -> list[list[Table]]:
        upper, lower = self.inputs
        runs = [[t] for t in upper] if self.level == 0 else [upper]
        if lower:
            runs.append(lower)
        return runs

    def tables(self) -> list[Table]:
        return self.inputs[0] + self.inputs[1]

    def deeper_ranges(self, version: Version) -> list[list[tuple[bytes, bytes]]]:
        return version.ranges_below(self.output_level)

    def apply(self, version: Version, outputs: list[Table]) -> Version:
        removed = {t.number for t in self.tables()}
        if self.trivial_move:
            return version.with_changes(removed, {self.output_level: list(self.inputs[0])})
        return version.with_changes(removed, {self.output_level: outputs})

    def describe(self) -> str:
        what = "move" if self.trivial_move else "merge"
        return f"leveled {what} of {len(self.inputs[0])} level-{self.level} and {len(self.inputs[1])} level-{self.output_level} tables"


class RunsPick:
    """A merge of consecutive sorted runs into one (tiered and time-window compaction), or,
    with `drop`, the deletion of tables without reading them (expired time windows)."""

    __slots__ = ("_runs", "created_ms", "drop", "reason", "score", "trivial_move")

    def __init__(self, runs: list[list[Table]], score: float, reason: str, drop: bool = False, created_ms: int = 0):
        self._runs = runs
        self.score = score
        self.reason = reason
        self.drop = drop
        # One level-0 table given a level of its own, unread (time-window compaction).
        self.trivial_move = False
        # What the output's created_ms will be (time-window: the window the run belongs to).
        self.created_ms = created_ms

    def runs(self) -> list[list[Table]]:
        return self._runs

    def tables(self) -> list[Table]:
        return [t for run in self._runs for t in run]

    def deeper_ranges(self, version: Version) -> list[list[tuple[bytes, bytes]]]:
        """Ranges of every run older than the oldest one merged."""
        numbers = {t.number for t in self.tables()}
        runs = version.sorted_runs()
        last = max(i for i, run in enumerate(runs) if any(t.number in numbers for t in run))
        return [[(t.smallest, t.largest) for t in run] for run in runs[last + 1 :]]

    def apply(self, version: Version, outputs: list[Table]) -> Version:
        return version.replace_runs({t.number for t in self.tables()}, [] if self.drop else outputs)

    def describe(self) -> str:
        n = len(self.tables())
        if self.drop:
            return f"deletion of {n} expired table(s) ({self.reason})"
        if self.trivial_move:
            return f"move of {n} table(s) ({self.reason})"
        return f"merge of {len(self._runs)} run(s), {n} table(s) ({self.reason})"


def level_max_bytes(options: Options, level: int) -> int:
    return options.level1_max_bytes * options.level_size_multiplier ** (level - 1)


def scores(version: Version, options: Options) -> list[float]:
    out = [len(version.levels[0]) / options.level0_compaction_trigger_files]
    for li in range(1, len(version.levels) - 1):
        out.append(version.level_bytes(li) / level_max_bytes(options, li))
    return out


def pick_compaction(version: Version, options: Options, pointers: dict[int, bytes]) -> CompactionPick | None:
    """The most urgent compaction (LevelDB's size-based rule), or None when none is due."""
    sc = scores(version, options)
    best = max(range(len(sc)), key=sc.__getitem__)
    if sc[best] < 1.0:
        return None
    return pick_for_level(version, best, pointers, sc[best])


def pick_for_level(version: Version, level: int, pointers: dict[int, bytes], score: float = 1.0) -> CompactionPick | None:
    tables = version.levels[level]
    if not tables:
        return None
    if level == 0:
        upper = list(tables)
        smallest = min(t.smallest for t in upper)
        largest = max(t.largest for t in upper)
    else:
        # Round-robin through the level's key space so every range gets compacted in turn.
        ptr = pointers.get(level)
        i = 0 if ptr is None else bisect_right([t.largest for t in tables], ptr)
        upper = [tables[i % len(tables)]]
        smallest, largest = upper[0].smallest, upper[0].largest
    lower = version.overlapping(level + 1, smallest, largest)
    trivial = level > 0 and not lower and len(upper) == 1
    return CompactionPick(level, upper, lower, trivial, score)


def pick_range(version: Version, level: int, start: bytes | None, end: bytes | None) -> CompactionPick | None:
    """Everything of `level` that meets [start, end] (for compact_range), or None."""
    if level == 0:
        # Level-0 tables overlap each other: moving only the ones meeting the range below
        # older ones that stay would let the older values shadow them. Take all of level 0.
        tables = version.levels[0]
        meets = any(
            (start is None or t.largest >= start) and (end is None or t.smallest <= end) for t in tables
        )
        upper = list(tables) if meets else []
    else:
        upper = version.overlapping(level, start, end)
    if not upper:
        return None
    smallest = min(t.smallest for t in upper)
    largest = max(t.largest for t in upper)
    lower = version.overlapping(level + 1, smallest, largest)
    return CompactionPick(level, upper, lower, False)
