"""Flush and compaction jobs: pure file-to-file work that runs in a worker process.

A job is a picklable description (input paths, output numbers, options); the worker reads the
inputs, merges them, writes fsynced output tables and returns their `TableMeta`. It never
touches the manifest: the engine installs the result, so a crash mid-job leaves only orphan
files that the next open deletes.

Merge rules (docs/compaction.md):
- inputs are given newest first; for each key the newest record wins, older ones are dropped;
- a tombstone is dropped only when no table in a deeper level can hold its key (the caller
  passes the key ranges of every deeper level); otherwise it is kept, to keep shadowing;
- the compaction filter sees every live record; a record it rejects is dropped, or turned into
  a tombstone when a deeper level may still hold an older version of the key (dropping it
  outright would resurrect that older version).
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import time
from bisect import bisect_left
from operator import itemgetter

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


class RateLimitedFile(WritableFile):
    """Sleeps as needed so that writes average at most `rate_bytes_per_s`."""

    __slots__ = ("_rate", "_started")

    def __init__(self, path: str, fd: int, rate_bytes_per_s: int):
        super().__init__(path, fd)
        self._rate = rate_bytes_per_s
        self._started = time.monotonic()

    def write(self, data: bytes) -> None:
        super().write(data)
        if self._rate:
            ahead = self.size / self._rate - (time.monotonic() - self._started)
            if ahead > 0.001:
                time.sleep(ahead)


def _open_output(directory: str, number: int, rate: int) -> WritableFile:
    path = os.path.join(directory, table_file_name(number))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    return RateLimitedFile(path, fd, rate)


def _run_items(paths: list[str], stats: JobResult):
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        stats.bytes_read += len(data)
        for keys, vals in read_all_blocks(data, path):
            yield from zip(keys, vals)


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
    sources = [_run_items(run, stats) for run in job.runs]
    merged = sources[0] if len(sources) == 1 else heapq.merge(*sources, key=itemgetter(0))
    keep = job.compaction_filter
    s = job.settings
    numbers = iter(job.output_numbers)
    writer: SSTableWriter | None = None
    out: WritableFile | None = None
    last = None
    try:
        for key, value in merged:
            stats.records_in += 1
            if key == last:
                stats.dropped_overwritten += 1  # heapq.merge is stable: the newest came first
                continue
            last = key
            if value is None:
                if not _may_exist_deeper(key, deeper):
                    stats.dropped_tombstones += 1
                    continue
            elif keep is not None and not keep(key, value):
                stats.filtered += 1
                if not _may_exist_deeper(key, deeper):
                    continue
                value = None
            if writer is None:
                number = next(numbers)
                out = _open_output(job.directory, number, job.rate_bytes_per_s)
                writer = SSTableWriter(out, number, s.block_bytes, s.compression, s.bloom_bits_per_key)
            writer.add(key, value)
            stats.records_out += 1
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
        for meta in stats.outputs:
            PosixFileSystem().remove(os.path.join(job.directory, table_file_name(meta.number)))
        if writer is not None and out is not None:
            PosixFileSystem().remove(out.path)
        raise
    stats.seconds = time.monotonic() - started
    return stats


@dataclasses.dataclass
class FlushJob:
    directory: str
    wal_path: str
    number: int
    settings: TableSettings


def write_table(directory: str, number: int, items, settings: TableSettings, fs=None) -> TableMeta:
    """Write sorted (key, value-or-None) items as one table, fsynced. Removes it on failure."""
    fs = fs or PosixFileSystem()
    path = os.path.join(directory, table_file_name(number))
    f = fs.create(path)
    try:
        writer = SSTableWriter(f, number, settings.block_bytes, settings.compression, settings.bloom_bits_per_key)
        for key, value in items:
            writer.add(key, value)
        meta = writer.finish()
    except BaseException:
        f.close()
        fs.remove(path)
        raise
    f.close()
    return meta


def run_flush(job: FlushJob) -> TableMeta:
    """Rebuild a frozen memtable from its log and write it as one table.

    Reading the log back costs a little I/O but means no memtable crosses the process
    boundary: the main process only waits, and the log is already in the page cache.
    """
    with open(job.wal_path, "rb") as f:
        data = f.read()
    ops, _ = wal.read_log(data, job.wal_path)
    latest: dict[bytes, bytes | None] = {}
    for key, value in ops:
        latest[key] = value
    items = sorted(latest.items(), key=itemgetter(0))
    return write_table(job.directory, job.number, items, job.settings)
