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

Outputs of a time-window family also record when their records expire (`Options.expiry_of`,
summed up per table by `ExpiryTally`) and the window they belong to (`created_ms`). A job given
a router (a flush, or the re-routing of a store at open) splits its output by column family.
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
from ringkv.storage.options import CompactionFilter, ExpiryExtractor, FamilyRouter
from ringkv.storage.sealing import KeyRing
from ringkv.storage.sstable import SSTableWriter, TableMeta, read_all_blocks, table_file_name


@dataclasses.dataclass
class TableSettings:
    block_bytes: int
    compression: str
    bloom_bits_per_key: int
    target_file_bytes: int
    keys: KeyRing | None = None  # seals new tables and logs, opens sealed ones (Options.encryption_keys)


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
    # Output tables' created_ms (their time window; 0: not tracked).
    created_ms: int = 0
    # Output families: with a router, each output record goes to the table of its family
    # (family index: its position in `families`); `track_expiry[i]` says whose tables record
    # their expiry through `expiry_of`. Without a router, every output is family 0.
    split: FamilySplit | None = None
    expiry_of: ExpiryExtractor | None = None
    track_expiry: list[bool] = dataclasses.field(default_factory=lambda: [False])


@dataclasses.dataclass
class FamilySplit:
    """How a job sends records to column families: `router(key)` names one of `families`
    (an unknown answer means the first, the default family)."""

    router: FamilyRouter
    families: list[str]

    def partition(self, keys: list[bytes], vals: list) -> list[tuple[int, list[bytes], list]]:
        index = {name: i for i, name in enumerate(self.families)}
        route = self.router
        kk: list[list[bytes]] = [[] for _ in self.families]
        vv: list[list] = [[] for _ in self.families]
        for k, v in zip(keys, vals):
            fi = index.get(route(k), 0)
            kk[fi].append(k)
            vv[fi].append(v)
        return [(fi, kk[fi], vv[fi]) for fi in range(len(self.families)) if kk[fi]]


class ExpiryTally:
    """When the records of one table stop mattering, summed up as TableMeta records it."""

    __slots__ = ("filter_records", "latest_ms", "never")

    def __init__(self) -> None:
        self.latest_ms = 0
        self.never = False
        self.filter_records = 0

    def add(self, expiry_of: ExpiryExtractor, keys: list[bytes], vals: list) -> None:
        for k, v in zip(keys, vals):
            if v is None:
                continue  # a tombstone: dead at once, needed only to shadow older tables
            try:
                e = expiry_of(k, v)
            except Exception:
                e = 0  # never drop unread what the extractor cannot read: reads report it
            if e > 0:
                if e > self.latest_ms:
                    self.latest_ms = e
            elif e == 0:
                self.never = True
            else:
                self.filter_records += 1
                if -e > self.latest_ms:
                    self.latest_ms = -e

    def apply(self, writer: SSTableWriter) -> None:
        writer.expiry_ms = 0 if self.never else max(self.latest_ms, 1)
        writer.filter_records = self.filter_records


@dataclasses.dataclass
class JobResult:
    outputs: list[TableMeta]
    # The family index of each output (all 0 for a job without a router).
    output_families: list[int] = dataclasses.field(default_factory=list)
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


def _run_batches(fs: PosixFileSystem, paths: list[str], stats: JobResult, ring: KeyRing | None = None):
    """(keys, values) lists of up to RUN_BATCH_BLOCKS consecutive blocks of one sorted run."""
    keys: list[bytes] = []
    vals: list[bytes | None] = []
    blocks = 0
    for path in paths:
        data = fs.read_all(path)
        stats.bytes_read += len(data)
        for bkeys, bvals in read_all_blocks(data, path, ring):
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


class _Output:
    """The table being written for one family."""

    __slots__ = ("file", "tally", "writer")

    def __init__(self, file: RateLimitedFile, writer: SSTableWriter, tally: ExpiryTally | None):
        self.file = file
        self.writer = writer
        self.tally = tally


def run_compaction(job: CompactionJob) -> JobResult:
    started = time.monotonic()
    stats = JobResult(outputs=[])
    deeper = [([r[0] for r in ranges], [r[1] for r in ranges]) for ranges in job.deeper_ranges]
    keep = job.compaction_filter
    s = job.settings
    numbers = iter(job.output_numbers)
    fs = job.fs
    open_outputs: dict[int, _Output] = {}

    def finish(fi: int) -> None:
        o = open_outputs.pop(fi)
        if o.tally is not None:
            o.tally.apply(o.writer)
        o.writer.created_ms = job.created_ms
        stats.outputs.append(o.writer.finish())
        stats.output_families.append(fi)
        stats.bytes_written += o.file.size
        o.file.close()

    try:
        for chunk in merge_runs([_run_batches(fs, run, stats, s.keys) for run in job.runs]):
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
            parts = [(0, keys, vals)] if job.split is None else job.split.partition(keys, vals)
            for fi, fkeys, fvals in parts:
                o = open_outputs.get(fi)
                if o is None:
                    number = next(numbers)
                    out = _open_output(fs, job.directory, number, job.rate_bytes_per_s)
                    writer = SSTableWriter(out, number, s.block_bytes, s.compression, s.bloom_bits_per_key, s.keys)
                    tracked = job.expiry_of is not None and fi < len(job.track_expiry) and job.track_expiry[fi]
                    o = open_outputs[fi] = _Output(out, writer, ExpiryTally() if tracked else None)
                o.writer.add_many(fkeys, fvals)
                if o.tally is not None:
                    o.tally.add(job.expiry_of, fkeys, fvals)
                stats.records_out += len(fkeys)
                if o.writer.file_bytes >= s.target_file_bytes:
                    finish(fi)
        for fi in sorted(open_outputs):
            finish(fi)
    except BaseException:
        for o in open_outputs.values():
            o.file.close()
        # Best effort: what is left (the disk may be gone) is an orphan the next open deletes.
        with contextlib.suppress(OSError):
            for meta in stats.outputs:
                fs.remove(os.path.join(job.directory, table_file_name(meta.number)))
            for o in open_outputs.values():
                fs.remove(o.file.path)
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
    # One table number per family (index: the family's position in split.families).
    numbers: list[int]
    settings: TableSettings
    fs: PosixFileSystem = dataclasses.field(default_factory=PosixFileSystem)
    split: FamilySplit | None = None
    expiry_of: ExpiryExtractor | None = None
    track_expiry: list[bool] = dataclasses.field(default_factory=lambda: [False])
    created_ms: int = 0


def write_table(directory: str, number: int, latest, settings: TableSettings, fs=None) -> TableMeta:
    """Write `latest` (a dict key -> value-or-None, or (key, value) pairs) as one table in key
    order, fsynced. Removes the file on failure."""
    if not isinstance(latest, dict):
        latest = dict(latest)
    keys = sorted(latest)  # sorting the keys alone is cheaper than sorting (key, value) pairs
    vals = list(map(latest.__getitem__, keys))
    return _write_sorted(directory, number, keys, vals, settings, fs or PosixFileSystem())


def _write_sorted(directory, number, keys, vals, settings: TableSettings, fs, tally=None, created_ms=0) -> TableMeta:
    path = os.path.join(directory, table_file_name(number))
    f = fs.create(path)
    try:
        writer = SSTableWriter(f, number, settings.block_bytes, settings.compression, settings.bloom_bits_per_key,
                               settings.keys)
        writer.add_many(keys, vals)
        if tally is not None:
            tally.apply(writer)
        writer.created_ms = created_ms
        meta = writer.finish()
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):  # best effort: an orphan the next open deletes
            fs.remove(path)
        raise
    f.close()
    return meta


def write_tables(
    directory: str,
    numbers: list[int],
    latest: dict,
    settings: TableSettings,
    fs: PosixFileSystem,
    split: FamilySplit | None = None,
    expiry_of: ExpiryExtractor | None = None,
    track_expiry: list[bool] | None = None,
    created_ms: int = 0,
) -> list[tuple[int, TableMeta]]:
    """`latest` (key -> value-or-None) as one table per family that has keys in it, each
    numbered `numbers[family index]`, fsynced: [(family index, meta)]. On failure, removes what
    it wrote."""
    keys = sorted(latest)
    vals = list(map(latest.__getitem__, keys))
    parts = [(0, keys, vals)] if split is None else split.partition(keys, vals)
    track = track_expiry or [False]
    written: list[tuple[int, TableMeta]] = []
    try:
        for fi, fkeys, fvals in parts:
            tally = None
            tracked = expiry_of is not None and fi < len(track) and track[fi]
            if tracked:
                tally = ExpiryTally()
                tally.add(expiry_of, fkeys, fvals)
            meta = _write_sorted(directory, numbers[fi], fkeys, fvals, settings, fs, tally, created_ms if tracked else 0)
            written.append((fi, meta))
    except BaseException:
        with contextlib.suppress(OSError):
            for _, meta in written:
                fs.remove(os.path.join(directory, table_file_name(meta.number)))
        raise
    return written


def run_flush(job: FlushJob) -> list[tuple[int, TableMeta]]:
    """Rebuild a frozen memtable from its log and write it as one table per family.

    Reading the log back costs a little I/O but means no memtable crosses the process
    boundary: the main process only waits, and the log is already in the page cache.
    """
    ops, _ = wal.read_log(job.fs.read_all(job.wal_path), job.wal_path, keys=job.settings.keys)
    return write_tables(
        job.directory, job.numbers, dict(ops), job.settings, job.fs,  # the last write wins
        job.split, job.expiry_of, job.track_expiry, job.created_ms,
    )
