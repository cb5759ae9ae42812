"""One system's measurement, run inside its worker process: the phases in db_bench's order, each
timed with a `Stopwatch`, the checks of what was timed, and the probes of the process tree
(disk writes and peak RSS, from /proc) and of the store's directory (bytes on disk).

    result = run_sequence(adapter, Workload(spec), root)

`run_sequence` runs fillseq on a store of its own (then deletes it), then fillrandom,
overwrite, an untimed settle, readrandom, readmissing and scan on a second store, and checks
every answer. It raises `BenchmarkCorrectnessError`, once every phase has run, if any answer
was wrong: a fast wrong answer is not a result. Linux only: the probes read /proc.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ringkv.bench.engine.store_adapter import StoreAdapter
from ringkv.bench.engine.workload import Workload

PHASES = ("fillseq", "fillrandom", "overwrite", "readrandom", "readmissing", "scan")
# Scans whose keys are compared with the expected key range after the scan phase.
CHECKED_SCANS = 32


class BenchmarkCorrectnessError(AssertionError):
    """A system under test returned a wrong answer while being timed; its figures are void."""


# ---------------------------------------------------------------------------------------------
# Probes of the process tree: disk writes, memory, directory size.


def _read_proc_io(pid: int | str) -> dict[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        out[name.strip()] = int(value)
    return out


def _descendant_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; the fields after its last ")"
        # are state, ppid, ...
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            out.append(child)
            stack.append(child)
    return out


def process_tree_writes() -> dict[str, int] | None:
    """write_bytes and cancelled_write_bytes of this process and every live descendant.

    /proc/<pid>/io counts all threads of a process and every child it has reaped (the kernel
    folds a reaped child's counters into its parent's), so adding the live descendants covers
    background threads and worker processes, whether or not they have exited. write_bytes is
    charged when a page becomes dirty, to the process that dirtied it: it counts 4 KiB pages,
    not the bytes of each write() call.
    """
    own = _read_proc_io("self")
    if own is None:
        return None
    total = {
        "write_bytes": own["write_bytes"],
        "cancelled_write_bytes": own["cancelled_write_bytes"],
    }
    for pid in _descendant_pids(os.getpid()):
        io = _read_proc_io(pid)
        if io is not None:
            total["write_bytes"] += io["write_bytes"]
            total["cancelled_write_bytes"] += io["cancelled_write_bytes"]
    return total


def status_kib(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants_peak_rss_kib() -> int:
    """Largest VmHWM among live descendants, or of reaped children (RUSAGE_CHILDREN)."""
    live = [status_kib(pid, "VmHWM") for pid in _descendant_pids(os.getpid())]
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max([reaped, *live])


def dir_bytes(path: Path) -> tuple[int, int]:
    """(allocated, apparent) bytes of the files under `path`.

    Allocated (st_blocks) is what the disk holds: a sparse or preallocated file counts for the
    blocks it really has, not its length.
    """
    allocated = apparent = 0
    for dirpath, _, filenames in os.walk(path):
        for filename in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, filename))
            except FileNotFoundError:  # a file deleted by a background thread meanwhile
                continue
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


# ---------------------------------------------------------------------------------------------
# The phase sequence of one system.


class Stopwatch:
    """Wall time, which is what is reported, and the worker's CPU time over the same span.

    CPU time (all threads of the worker, not its child processes) is kept to judge the wall
    figure: a single-threaded read loop whose wall time far exceeds its CPU time was waiting,
    on the disk or for a core that another process held.
    """

    __slots__ = ("_cpu0", "_wall0", "cpu", "wall")

    def __enter__(self) -> Stopwatch:
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0


def _timed_puts(
    put: Callable[[bytes, bytes], object], keys: Iterable[bytes], values: Iterator[bytes]
) -> Stopwatch:
    with Stopwatch() as watch:
        for key, value in zip(keys, values):
            put(key, value)
    return watch


def _timed_gets(
    get: Callable[[bytes], bytes | None], keys: Iterable[bytes]
) -> tuple[Stopwatch, int]:
    """Time taken and how many keys were found."""
    found = 0
    with Stopwatch() as watch:
        for key in keys:
            if get(key) is not None:
                found += 1
    return watch, found


def _timed_scans(
    scan: Callable[[bytes, int], list[tuple[bytes, bytes]]], starts: Iterable[bytes], count: int
) -> tuple[Stopwatch, int]:
    """Time taken and how many entries the scans returned in all."""
    entries = 0
    with Stopwatch() as watch:
        for key in starts:
            entries += len(scan(key, count))
    return watch, entries


def _phase(ops: int, watch: Stopwatch) -> dict[str, float]:
    return {
        "ops": ops,
        "seconds": watch.wall,
        "cpu_seconds": watch.cpu,
        "ops_per_s": ops / watch.wall if watch.wall > 0 else 0.0,
    }


def _wrong_values(adapter: StoreAdapter, expected: dict[bytes, bytes]) -> int:
    return sum(1 for key, value in expected.items() if adapter.get(key) != value)


def _writes_between(before: dict[str, int] | None, after: dict[str, int] | None) -> int | None:
    if before is None or after is None:
        return None
    return after["write_bytes"] - before["write_bytes"]


def run_sequence(adapter: StoreAdapter, workload: Workload, root: Path) -> dict[str, Any]:
    """Run every phase on `adapter` under `root` and return its figures.

    Raises BenchmarkCorrectnessError, after all phases, if any answer was wrong.
    """
    spec = workload.spec
    phases: dict[str, dict[str, float]] = {}
    problems: list[str] = []

    # fillseq on its own fresh store, which is then thrown away.
    path = root / "fillseq"
    adapter.open(path)
    watch = _timed_puts(adapter.put, workload.sorted_keys, workload.fill_values())
    phases["fillseq"] = _phase(spec.keys, watch)
    wrong = _wrong_values(adapter, workload.fillseq_expected_values())
    if wrong:
        problems.append(
            f"after fillseq, {wrong} of {len(workload.sampled_keys)} sampled keys "
            "read back a wrong or missing value"
        )
    adapter.close()
    shutil.rmtree(path)

    # The store every later phase uses.
    path = root / "store"
    io_start = process_tree_writes()
    adapter.open(path)
    watch = _timed_puts(adapter.put, workload.fill_order, workload.fill_values())
    phases["fillrandom"] = _phase(spec.keys, watch)
    io_fill = process_tree_writes()
    watch = _timed_puts(adapter.put, workload.overwrite_keys, workload.overwrite_values())
    phases["overwrite"] = _phase(spec.keys, watch)
    io_overwrite = process_tree_writes()

    start = time.perf_counter()
    adapter.flush_and_settle()
    settle_seconds = time.perf_counter() - start
    io_settle = process_tree_writes()
    allocated, apparent = dir_bytes(path)
    engine_stats = adapter.engine_stats()

    watch, found_existing = _timed_gets(adapter.get, workload.read_keys)
    phases["readrandom"] = _phase(spec.reads, watch)
    if found_existing != spec.reads:
        problems.append(
            f"readrandom: {spec.reads - found_existing} of {spec.reads} reads of "
            "existing keys returned None"
        )
    watch, found_missing = _timed_gets(adapter.get, workload.missing_keys)
    phases["readmissing"] = _phase(spec.reads, watch)
    if found_missing:
        problems.append(
            f"readmissing: {found_missing} of {spec.reads} reads of absent keys returned a value"
        )
    watch, entries = _timed_scans(adapter.scan, workload.scan_starts, spec.scan_count)
    phases["scan"] = _phase(spec.scans, watch)
    if entries != workload.scan_expected_entries:
        problems.append(
            f"scan-{spec.scan_count}: returned {entries} entries in all, expected "
            f"{workload.scan_expected_entries}"
        )

    # Checks of content, outside the clock: final values of sampled keys, keys of some scans.
    wrong = _wrong_values(adapter, workload.expected_values())
    if wrong:
        problems.append(
            f"after overwrite, {wrong} of {len(workload.sampled_keys)} sampled keys "
            "read back a wrong value"
        )
    bad_scans = 0
    for index in workload.scan_start_indexes[:CHECKED_SCANS]:
        got = [key for key, _ in adapter.scan(workload.sorted_keys[index], spec.scan_count)]
        if got != workload.sorted_keys[index : index + spec.scan_count]:
            bad_scans += 1
    if bad_scans:
        problems.append(
            f"scan-{spec.scan_count}: {bad_scans} of the checked scans returned the wrong keys"
        )

    result: dict[str, Any] = {
        "system": adapter.name,
        "library_version": adapter.library_version(),
        "settings": adapter.settings(),
        "memtable_bytes": adapter.memtable_bytes(),
        "phases": phases,
        "settle_seconds": settle_seconds,
        "engine_stats": engine_stats,
        "checks": {
            "readrandom_found": found_existing,
            "readmissing_found": found_missing,
            "problems": problems,
            "scan_entries": entries,
            "scan_expected_entries": workload.scan_expected_entries,
        },
    }
    result["children_peak_rss_kib"] = descendants_peak_rss_kib()
    adapter.close()
    io_close = process_tree_writes()
    result["children_peak_rss_kib"] = max(
        result["children_peak_rss_kib"], descendants_peak_rss_kib()
    )

    user_bytes_loaded = 2 * spec.live_user_bytes  # fillrandom + overwrite
    to_settle = _writes_between(io_start, io_settle)
    to_close = _writes_between(io_start, io_close)
    result["disk"] = {
        "user_bytes_written": user_bytes_loaded,
        "live_user_bytes": spec.live_user_bytes,
        "written_fillrandom": _writes_between(io_start, io_fill),
        "written_overwrite": _writes_between(io_fill, io_overwrite),
        "written_settle": _writes_between(io_overwrite, io_settle),
        "written_to_settle": to_settle,
        "written_to_close": to_close,
        "cancelled_to_close": (
            None
            if io_start is None or io_close is None
            else io_close["cancelled_write_bytes"] - io_start["cancelled_write_bytes"]
        ),
        "write_amplification": None if to_settle is None else to_settle / user_bytes_loaded,
        "write_amplification_to_close": None if to_close is None else to_close / user_bytes_loaded,
        "allocated_bytes": allocated,
        "apparent_bytes": apparent,
        "space_amplification": allocated / spec.live_user_bytes,
    }
    if problems:
        raise BenchmarkCorrectnessError(
            f"{adapter.name} answered wrongly while being measured; its figures are void:\n  "
            + "\n  ".join(problems)
        )
    return result
