"""Time-window compaction: which tables of a family to delete unread, and which runs to merge.

Pure: a Version, the `TimeWindow` settings and the time in, a `RunsPick` (or None) out. Tables
belong to the window in which their records reached the engine (`TableMeta.created_ms`, a
flush's time, kept by merges); windows are `window_ms` wide. Arrival time, not a record's own
timestamp, is what orders an LSM tree: a newer table shadows an older one, so late data, repairs
and hints land in the window of their arrival, where they shadow what they must (docs/compaction.md).

Rules, by priority:

1. **Expired tables go as files.** A table whose every record is dead
   (`expiry_ms <= now`, and no record that only the compaction filter may drop) is deleted
   without being read, under the TTL rule: "safe" deletes it only when no kept table older
   than it has an overlapping key range (its records might shadow an older version there,
   which would come back); "aggressive" deletes it at once (tables without tombstones only).
2. **An ended window is merged into one run** (its level-0 tables and runs; a lone level-0
   table is moved, not rewritten), oldest window first, to bound how many runs a lookup
   probes. Tables whose window is unknown (written before the family was time-window) are left
   as they are, unless in level 0.
3. **A blocked expired table is merged down** into the older tables that keep it, when one of
   them will not expire within a window (a record that never expires, or a far later one): the
   merge drops its expired records through the compaction filter, and nothing is shadowed wrongly.
4. **Records only the filter may drop** (tombstones under the grace rule) are re-filtered once
   their time has come: the table's run is merged alone, at most once per window per table.
5. **The current window** merges its level-0 tables once it holds `min_merge_tables` of them;
   and whatever the clock does, level 0 never holds more than twice that.
"""

from __future__ import annotations

from ringkv.storage.sstable import Table
from ringkv.storage.strategies import TimeWindow
from ringkv.storage.version import RunsPick, Version

DROP_SCORE = 100.0  # deleting files costs nothing and frees space: first
WINDOW_MERGE_SCORE = 2.0
BLOCKED_MERGE_SCORE = 1.5
REFILTER_SCORE = 1.0


def window_of(table: Table, window_ms: int) -> int:
    return table.meta.created_ms // window_ms


def droppable(table: Table, now_ms: int) -> bool:
    m = table.meta
    return 0 < m.expiry_ms <= now_ms and m.filter_records == 0


def _overlap(a: Table, b: Table) -> bool:
    return a.smallest <= b.largest and b.smallest <= a.largest


def expired(runs: list[list[Table]], strategy: TimeWindow, now_ms: int) -> tuple[list[Table], list[tuple[int, Table, list[tuple[int, Table]]]]]:
    """(tables to delete, [(run index, table, [(run index, blocker)])] kept only because older
    kept tables overlap them), by the TTL rule. `runs` newest first."""
    if strategy.ttl_rule == "aggressive":
        return [t for run in runs for t in run if droppable(t, now_ms) and not t.meta.tombstones], []
    drop: list[Table] = []
    blocked: list[tuple[int, Table, list[tuple[int, Table]]]] = []
    kept: list[tuple[int, Table]] = []  # tables of older runs that stay
    for ri in range(len(runs) - 1, -1, -1):
        staying = []
        for t in runs[ri]:
            if droppable(t, now_ms):
                blockers = [(bi, k) for bi, k in kept if _overlap(t, k)]
                if not blockers:
                    drop.append(t)
                    continue
                blocked.append((ri, t, blockers))
            staying.append((ri, t))
        kept += staying
    return drop, blocked


def _run_window(run: list[Table], window_ms: int) -> int:
    return max(t.meta.created_ms for t in run) // window_ms


def pick(version: Version, strategy: TimeWindow, now_ms: int, refiltered: dict[int, int]) -> RunsPick | None:
    """`refiltered`: table number -> when (ms) a re-filtering merge wrote it (rule 4)."""
    runs = version.sorted_runs()
    if not runs:
        return None
    w_ms = strategy.window_ms
    l0 = len(version.levels[0])
    current = now_ms // w_ms

    drop, blocked = expired(runs, strategy, now_ms)
    if drop:
        return RunsPick([[t] for t in drop], DROP_SCORE, "every record expired", drop=True)

    # 2. Ended windows, oldest first. Windows never increase along the runs (newest first)
    # while the clock moves forward; a group that is not contiguous is left alone.
    windows = [_run_window(r, w_ms) if any(t.meta.created_ms for t in r) else -1 for r in runs]
    for w in sorted(set(windows)):
        if w >= current:
            break
        idx = [i for i, x in enumerate(windows) if x == w]
        if idx != list(range(idx[0], idx[-1] + 1)):
            continue
        has_l0 = idx[0] < l0
        if w < 0 and not has_l0:
            continue  # unknown windows in merged levels: left as they are
        if len(idx) == 1 and not has_l0:
            continue
        if has_l0 and idx[-1] < l0 - 1:
            continue  # older level-0 tables of another window lie below: they go first
        group = runs[idx[0] : idx[-1] + 1]
        created = max(t.meta.created_ms for r in group for t in r)
        p = RunsPick(group, WINDOW_MERGE_SCORE, f"window {w} ended", created_ms=created)
        if len(group) == 1:
            p.trivial_move = True  # one level-0 table: moved to a level of its own, not rewritten
        return p

    # 3. A blocked expired table, kept by older tables that will not expire soon.
    for ri, _, blockers in reversed(blocked):  # the oldest blocked table first
        if any(b.meta.expiry_ms == 0 or b.meta.expiry_ms > now_ms + w_ms or b.meta.filter_records for _, b in blockers):
            deepest = max(bi for bi, _ in blockers)
            group = runs[ri : deepest + 1]
            created = max(t.meta.created_ms for r in group for t in r)
            return RunsPick(group, BLOCKED_MERGE_SCORE, "an expired table blocked by older live ones", created_ms=created)

    # 4. Records only the compaction filter may drop, whose time has come.
    for ri in range(len(runs) - 1, l0 - 1, -1):
        run = runs[ri]
        due = [
            t for t in run
            if t.meta.filter_records and 0 < t.meta.expiry_ms <= now_ms
            and now_ms - refiltered.get(t.number, -w_ms) >= w_ms
        ]
        if due:
            created = max(t.meta.created_ms for t in run)
            return RunsPick([run], REFILTER_SCORE, "records the compaction filter may now drop", created_ms=created)

    # 5. The current window's level-0 tables; and a bound on level 0 whatever the clock does.
    level0 = version.levels[0]
    if l0 >= strategy.min_merge_tables and all(window_of(t, w_ms) >= current for t in level0):
        created = max(t.meta.created_ms for t in level0)
        return RunsPick([[t] for t in level0], l0 / strategy.min_merge_tables, "current window", created_ms=created)
    if l0 >= 2 * strategy.min_merge_tables:
        created = max(t.meta.created_ms for t in level0)
        return RunsPick([[t] for t in level0], l0 / strategy.min_merge_tables, "level 0 full", created_ms=created)
    return None


def window_groups(version: Version, window_ms: int) -> list[list[list[Table]]]:
    """The runs grouped by window (tables of unknown window together), oldest group first:
    what compact_range merges. Windows out of write order (a clock that stepped back) make one
    group of everything: merging runs that are not consecutive would reorder versions."""
    runs = version.sorted_runs()
    keys = [_run_window(r, window_ms) if any(t.meta.created_ms for t in r) else -1 for r in runs]
    groups: list[list[list[Table]]] = []
    seen: set[int] = set()
    prev = None
    for run, key in zip(runs, keys):
        if key != prev:
            if key in seen:
                return [runs]
            seen.add(key)
            groups.append([])
            prev = key
        groups[-1].append(run)
    return groups[::-1]
