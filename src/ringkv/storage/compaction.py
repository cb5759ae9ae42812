"""Flush and compaction jobs: pure file-to-file work that runs in a worker process.

A job is a picklable description (input paths, output numbers, options, and the file system to
do its IO through); the worker reads the inputs, merges them, writes fsynced output tables and
returns their `TableMeta`. It never touches the manifest: the engine installs the result, so a
crash mid-job leaves only orphan files that the next open deletes. Every file operation goes
through `job.fs`, so a test's fault-injecting disk reaches into the worker process too.

Merge rules (docs/compaction.md):
- inputs are given newest first; for each key the newest record wins, older ones are dropped;
- a tombstone is dropped only when no table in a deeper level can hold its key (the caller
  passes the key ranges of every deeper level); otherwise it is kept, to keep shadowing;
- the compaction filter sees every live record; a record it rejects is dropped, or turned into
  a tombstone when a deeper level may still hold an older version of the key (dropping it
  outright would resurrect that older version).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import repeat

from ringkv.storage import wal
from ringkv.storage.fs import PosixFileSystem, WritableFile
from ringkv.storage.options import CompactionFilter
from ringkv.storage.sstable import SSTableWriter, TableMeta, read_all_blocks, table_file_name


@dataclasses.dataclass
class TableSettings:
    block_bytes: int
    compression: str
    bloom_bits_per_key: int
    target_file_bytes: int


@dataclasses.dataclass
class CompactionJob:
    directory: str
    # Each input is a list of table paths forming one sorted run (one L0 table, or the
    # overlapping tables of one level in key order); runs are ordered newest first.
    runs: list[list[str]]
    output_numbers: list[int]
    settings: TableSettings
    # Per deeper level, sorted (smallest, largest) key ranges of its tables.
    deeper_ranges: list[list[tuple[bytes, bytes]]]
    compaction_filter: CompactionFilter | None = None
    rate_bytes_per_s: int = 0
    fs: PosixFileSystem = dataclasses.field(default_factory=PosixFileSystem)


@dataclasses.dataclass
class JobResult:
    outputs: list[TableMeta]
    bytes_read: int = 0
    bytes_written: int = 0
    records_in: int = 0
    records_out: int = 0
    dropped_overwritten: int = 0
    dropped_tombstones: int = 0
    filtered: int = 0
    seconds: float = 0.0


class RateLimitedFile:
    """A WritableFile that sleeps as needed so that writes average at most `rate_bytes_per_s`."""

    __slots__ = ("_file", "_rate", "_started")

    def __init__(self, file: WritableFile, rate_bytes_per_s: int):
        self._file = file
        self._rate = rate_bytes_per_s
        self._started = time.monotonic()

    @property
    def path(self) -> str:
        return self._file.path

    @property
    def size(self) -> int:
        return self._file.size

    def write(self, data: bytes) -> None:
        self._file.write(data)
        if self._rate:
            ahead = self._file.size / self._rate - (time.monotonic() - self._started)
            if ahead > 0.001:
                time.sleep(ahead)

    def sync(self) -> None:
        self._file.sync()

    def close(self) -> None:
        self._file.close()


def _open_output(fs: PosixFileSystem, directory: str, number: int, rate: int) -> RateLimitedFile:
    return RateLimitedFile(fs.create(os.path.join(directory, table_file_name(number))), rate)


RUN_BATCH_BLOCKS = 128  # blocks read from each run per merge step: ~4,000 entries, ~0.5 MiB


def _run_batches(fs: PosixFileSystem, paths: list[str], stats: JobResult):
    """(keys, values) lists of up to RUN_BATCH_BLOCKS consecutive blocks of one sorted run."""
    keys: list[bytes] = []
    vals: list[bytes | None] = []
    blocks = 0
    for path in paths:
        data = fs.read_all(path)
        stats.bytes_read += len(data)
        for bkeys, bvals in read_all_blocks(data, path):
            keys += bkeys
            vals += bvals
            blocks += 1
            if blocks == RUN_BATCH_BLOCKS:
                yield keys, vals
                keys, vals, blocks = [], [], 0
    if keys:
        yield keys, vals


def merge_runs(runs) -> Iterator[list[tuple[bytes, int, bytes | None]]]:
    """Merge sorted runs (iterators of (keys, values) batches, newest run first) into chunks of
    (key, run rank, value), sorted by key and then newest first.

    Streaming with bounded memory, and with the per-entry work in C: each step takes, from every
    run, the entries up to the smallest "last key" any run has buffered (so no key is split
    between two chunks), and one `list.sort()` merges them; Timsort finds the sorted runs and
    merges them at C speed, far faster than heapq.merge's Python generator.
    """
    bufs = []  # [keys, vals, position, iterator, rank]
    for rank, it in enumerate(runs):
        first = next(it, None)
        if first is not None:
            bufs.append([first[0], first[1], 0, it, rank])
    while bufs:
        bound = min(b[0][-1] for b in bufs)
        chunk: list[tuple[bytes, int, bytes | None]] = []
        for b in bufs:
            keys, vals, pos, _, rank = b
            end = bisect_right(keys, bound, pos)
            if end > pos:
                chunk += zip(keys[pos:end], repeat(rank, end - pos), vals[pos:end])
                b[2] = end
        for b in bufs:
            if b[2] == len(b[0]):
                nxt = next(b[3], None)
                if nxt is None:
                    b[0] = None
                else:
                    b[0], b[1], b[2] = nxt[0], nxt[1], 0
        bufs = [b for b in bufs if b[0] is not None]
        chunk.sort()
        yield chunk


def _may_exist_deeper(key: bytes, deeper: list[tuple[list[bytes], list[bytes]]]) -> bool:
    for smallest, largest in deeper:
        i = bisect_left(largest, key)
        if i < len(largest) and smallest[i] <= key:
            return True
    return False


def run_compaction(job: CompactionJob) -> JobResult:
    started = time.monotonic()
    stats = JobResult(outputs=[])
    deeper = [([r[0] for r in ranges], [r[1] for r in ranges]) for ranges in job.deeper_ranges]
    keep = job.compaction_filter
    s = job.settings
    numbers = iter(job.output_numbers)
    fs = job.fs
    writer: SSTableWriter | None = None
    out: RateLimitedFile | None = None
    try:
        for chunk in merge_runs([_run_batches(fs, run, stats) for run in job.runs]):
            stats.records_in += len(chunk)
            # The newest version of each key is the first of its equal keys (rank breaks ties).
            prev = None
            newest = []
            for entry in chunk:
                if entry[0] != prev:
                    newest.append(entry)
                    prev = entry[0]
            stats.dropped_overwritten += len(chunk) - len(newest)
            keys = [e[0] for e in newest]
            vals = [e[2] for e in newest]
            if keep is not None or None in vals:
                keys, vals = _apply_rules(keys, vals, keep, deeper, stats)
            if not keys:
                continue
            if writer is None:
                number = next(numbers)
                out = _open_output(fs, job.directory, number, job.rate_bytes_per_s)
                writer = SSTableWriter(out, number, s.block_bytes, s.compression, s.bloom_bits_per_key)
            writer.add_many(keys, vals)
            stats.records_out += len(keys)
            if writer.file_bytes >= s.target_file_bytes:
                stats.outputs.append(writer.finish())
                stats.bytes_written += out.size
                out.close()
                writer = None
        if writer is not None:
            stats.outputs.append(writer.finish())
            stats.bytes_written += out.size
            out.close()
            writer = None
    except BaseException:
        if out is not None:
            out.close()
        # Best effort: what is left (the disk may be gone) is an orphan the next open deletes.
        with contextlib.suppress(OSError):
            for meta in stats.outputs:
                fs.remove(os.path.join(job.directory, table_file_name(meta.number)))
            if writer is not None and out is not None:
                fs.remove(out.path)
        raise
    stats.seconds = time.monotonic() - started
    return stats


def _apply_rules(keys, vals, keep, deeper, stats: JobResult):
    """Tombstone dropping and the compaction filter (module docstring), for one chunk."""
    out_keys: list[bytes] = []
    out_vals: list[bytes | None] = []
    for key, value in zip(keys, vals):
        if value is None:
            if not _may_exist_deeper(key, deeper):
                stats.dropped_tombstones += 1
                continue
        elif keep is not None and not keep(key, value):
            stats.filtered += 1
            if not _may_exist_deeper(key, deeper):
                continue
            value = None
        out_keys.append(key)
        out_vals.append(value)
    return out_keys, out_vals


@dataclasses.dataclass
class FlushJob:
    directory: str
    wal_path: str
    number: int
    settings: TableSettings
    fs: PosixFileSystem = dataclasses.field(default_factory=PosixFileSystem)


def write_table(directory: str, number: int, latest, settings: TableSettings, fs=None) -> TableMeta:
    """Write `latest` (a dict key -> value-or-None, or (key, value) pairs) as one table in key
    order, fsynced. Removes the file on failure."""
    if not isinstance(latest, dict):
        latest = dict(latest)
    fs = fs or PosixFileSystem()
    path = os.path.join(directory, table_file_name(number))
    keys = sorted(latest)  # sorting the keys alone is cheaper than sorting (key, value) pairs
    vals = list(map(latest.__getitem__, keys))
    f = fs.create(path)
    try:
        writer = SSTableWriter(f, number, settings.block_bytes, settings.compression, settings.bloom_bits_per_key)
        writer.add_many(keys, vals)
        meta = writer.finish()
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):  # best effort: an orphan the next open deletes
            fs.remove(path)
        raise
    f.close()
    return meta


def run_flush(job: FlushJob) -> TableMeta:
    """Rebuild a frozen memtable from its log and write it as one table.

    Reading the log back costs a little I/O but means no memtable crosses the process
    boundary: the main process only waits, and the log is already in the page cache.
    """
    ops, _ = wal.read_log(job.fs.read_all(job.wal_path), job.wal_path)
    return write_table(job.directory, job.number, dict(ops), job.settings, job.fs)  # the last write wins
