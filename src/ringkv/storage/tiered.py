"""Size-tiered ("universal") compaction: which sorted runs of a family to merge next.

Pure: a Version and the `Tiered` settings in, a `RunsPick` (or None) out; the engine runs and
installs it. The rules, in order (docs/compaction.md, "Size-tiered"), over the family's sorted
runs newest first (each level-0 table, then each merged run):

1. **Space.** With at least `min_merge_runs` runs, when the runs above the oldest hold more
   than `max_space_amplification_percent` % of the oldest run's bytes, merge every run: the
   overwritten versions and tombstones above the oldest run are what that space is.
2. **Size ratio.** From each run in turn, newest first, take the following runs while the next
   one is at most `size_ratio_percent` % larger than the average of those taken so far; the
   first span of at least `min_merge_runs` runs (at most `max_merge_runs`) is merged. Runs of
   similar size merge together (Cassandra's size-tiered buckets): a tier of `min_merge_runs`
   runs becomes one run of the next tier, so each record is rewritten about once per tier,
   log base `min_merge_runs` of the data over a flush, and never merely to absorb a smaller
   run into a much larger one. (RocksDB's universal rule compares the next run with the *sum*
   taken so far, which merges a run of 4 flushes with the next 4 flushes: about twice the
   writes, for fewer runs.)
3. **Read amplification.** With more than `max_runs // 2` runs and no merge from rule 2, merge
   the newest runs, enough to come back to that. Writers stall when a family holds `max_runs`
   runs (engine._make_room), so a lookup never probes more than `max_runs` runs.

A merged span that takes some level-0 tables takes the oldest ones too: the output is one
sorted run, and no level-0 table may lie below a run newer than it.
"""

from __future__ import annotations

from ringkv.storage.strategies import Tiered
from ringkv.storage.version import RunsPick, Version


def _run_bytes(run) -> int:
    return sum(t.meta.file_bytes for t in run)


def _span(version: Version, start: int, end: int) -> tuple[int, int]:
    """[start, end) widened so that, if it takes level-0 tables, it takes the oldest ones."""
    l0 = len(version.levels[0])
    if start < l0 and end < l0:
        end = l0
    return start, end


def pick(version: Version, strategy: Tiered) -> RunsPick | None:
    runs = version.sorted_runs()
    n = len(runs)
    if n < 2:
        return None
    sizes = [_run_bytes(r) for r in runs]
    if n >= strategy.min_merge_runs:
        newer, oldest = sum(sizes[:-1]), sizes[-1]
        if newer * 100 > strategy.max_space_amplification_percent * max(oldest, 1):
            amp = 100 * newer // max(oldest, 1)
            return RunsPick(runs, n / strategy.min_merge_runs, f"space amplification {amp}% of the oldest run")
        for start in range(0, n - strategy.min_merge_runs + 1):
            taken = sizes[start]
            end = start + 1
            while (
                end < n
                and end - start < strategy.max_merge_runs
                and sizes[end] * 100 * (end - start) <= taken * (100 + strategy.size_ratio_percent)
            ):
                taken += sizes[end]
                end += 1
            if end - start >= strategy.min_merge_runs:
                start, end = _span(version, start, end)
                return RunsPick(runs[start:end], n / strategy.min_merge_runs, f"{end - start} runs of similar size")
    half = strategy.max_runs // 2
    if n > half:
        start, end = _span(version, 0, max(2, n - half + 1))
        return RunsPick(runs[start:end], n / half, f"{n} runs, over half of max_runs={strategy.max_runs}")
    return None


def stalls(version: Version, strategy: Tiered, pending_runs: int) -> bool:
    """Whether a write must wait before adding another run (a frozen memtable): the family
    would hold more than `max_runs` runs once the `pending_runs` already frozen are flushed."""
    return len(version.sorted_runs()) + pending_runs + 1 > strategy.max_runs
