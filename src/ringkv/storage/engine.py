"""The storage engine: an embeddable, crash-safe LSM key-value store.

    db = Engine.open("/var/lib/ringkv/data", Options(sync="always"))
    db.put(b"k", b"v"); db.get(b"k"); db.delete(b"k")
    with db.scan(b"a", b"b") as it: ...

Write path: encode the WAL record, append it to the log (the OS has it: a process crash loses
nothing), insert into the memtable, and under `sync="always"` wait for a shared fsync (group
commit) before returning. A full memtable is frozen and flushed to a level-0 table by the flush
thread, which waits on a worker process; the compaction thread does the same for merges. Both
install their results through the manifest (docs/formats/manifest.md).

Concurrency contract: every public method is thread-safe. Writers are serialized by one lock;
`get` and scans take no lock: they read one immutable `_State` (memtable, frozen memtables,
version) taken at their start. Scans see a snapshot: writes made after `scan()` returned are
invisible to it.

Recovery (`open`): read the manifest, open its tables, re-route them if the family routing
changed (see below), replay every log at or after its `log_number` (a torn tail is dropped, and
so are the logs after a log that lost records to it; corruption elsewhere raises
CorruptionError naming file and offset unless `Options(salvage=True)`), write what was replayed
as one table per family, and delete files the manifest does not know (a crashed flush or
compaction leaves such orphans).

Column families (docs/compaction.md): one log and one memtable for every family; a flush
writes one table per family that has keys in the memtable, and each family's tables form an
LSM tree of their own (a `Version`), compacted by that family's strategy. A read goes to the
family the router names; a scan merges every family's runs. A family only ever holds keys the
router sends to it: when an engine opens with a routing other than the one its manifest
records, every table is merged once into the families of the new routing (`_reroute`).

Failures it cannot take back (docs/storage-faults.md): a failed fsync of the log, a table, the
manifest or the directory, and a failed flush or compaction, turn the engine read-only for good:
writes raise ReadOnlyError naming the failure (`stats()["background_error"]` says it too), no
manifest is written any more, and reads keep working. After a failed fsync of the log, reads
show only what that log made durable, which is exactly what a reopen recovers.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import logging
import os
import threading
import time
import weakref
from operator import itemgetter

from crc32c import crc32c

from ringkv.errors import (
    ClosedError,
    ConfigError,
    CorruptionError,
    LimitError,
    RingkvError,
    StorageFullError,
)
from ringkv.storage import compaction as jobs
from ringkv.storage import manifest, sampling, sealing, snapshot, tiered, time_window, wal
from ringkv.storage.cache import BlockCache, TableCache
from ringkv.storage.fs import FsyncFailedError, PosixFileSystem
from ringkv.storage.memtable import ENTRY_OVERHEAD_BYTES, MemTable
from ringkv.storage.options import MAX_KEY_BYTES, Options
from ringkv.storage.sstable import (
    MISSING,
    Table,
    TableMeta,
    table_file_name,
)
from ringkv.storage.strategies import (
    DEFAULT_FAMILY,
    Leveled,
    Strategy,
    Tiered,
    TimeWindow,
    describe,
)
from ringkv.storage.version import CompactionPick, RunsPick, Version, pick_compaction, pick_range
from ringkv.storage.worker import run_in_worker

log = logging.getLogger("ringkv.storage")

WRITE_STALL_TIMEOUT_S = 60.0
# How often the compaction thread looks again without being woken: expiry comes with time, not
# with writes, and a merge refused for want of disk space is retried.
COMPACTION_POLL_S = 1.0
SPACE_RETRY_S = 10.0
_PUT_PREFIX = wal._PUT_PREFIX.pack
_RECORD_HEADER = wal._RECORD_HEADER.pack
_U32 = wal._U32.pack


class WriteStallError(RingkvError):
    """A write waited too long for flushes or compactions to make room."""


class CompactionSpaceError(StorageFullError):
    """A merge was refused before it started: the disk lacks room for its output.

    The engine stays writable; a background merge is retried later (`SPACE_RETRY_S`), and
    `stats()["compaction_space_refusals"]` counts the refusals."""

    def __init__(self, path: str, family: str, what: str, needed_bytes: int, free_bytes: int):
        super().__init__(
            f"not enough disk space for compaction in {path} (family {family!r}, {what}): it needs "
            f"{needed_bytes:,} bytes free for its output, {free_bytes:,} bytes are free; free some "
            f"space (a merge of fewer runs needs less)"
        )
        self.family = family
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes


class ReadOnlyError(RingkvError):
    """The engine refuses writes after a failure it cannot take back; `reason` is that failure
    (a FsyncFailedError, or whatever made a flush or compaction fail). Reads keep working;
    reopening the engine recovers what is durable and takes writes again."""

    def __init__(self, path: str, reason: BaseException):
        super().__init__(
            f"engine at {path} is read-only after a failure: {reason}; reads still work, reopen "
            f"the engine to take writes again"
        )
        self.reason = reason


def wal_file_name(number: int) -> str:
    return f"{number:06d}.wal"


class WriteBatch:
    """Puts and deletes applied atomically: after a crash all of them survive or none does."""

    __slots__ = ("_limits", "ops")

    def __init__(self) -> None:
        self.ops: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> WriteBatch:
        self.ops.append((key, value))
        return self

    def delete(self, key: bytes) -> WriteBatch:
        self.ops.append((key, None))
        return self

    def __len__(self) -> int:
        return len(self.ops)


class _State:
    """What a reader needs, swapped as a whole so a reader never sees half a change."""

    __slots__ = ("imms", "mem", "versions")

    def __init__(self, mem: MemTable, imms: tuple[MemTable, ...], versions: tuple[Version, ...]):
        self.mem = mem
        self.imms = imms  # newest first
        self.versions = versions  # one per column family, the default family first


class ScanIterator:
    """(key, value) pairs in key order over a snapshot. Close it (or exhaust it) when done.

    Iterating it with `for` runs the merge generator directly: no Python-level `__next__` per
    item on the hot path.
    """

    def __init__(self, engine: Engine, state: _State, snaps, start, end):
        self._state = state  # pins the version: its tables are not deleted while we read
        self._snaps = snaps
        self._engine = weakref.ref(engine)
        sources = [s.items_from(start, end) for s in snaps if len(s.mem)]
        runs = []  # block generators of each L0 table and each deeper level, of every family
        # A key lives in one family only, so the families' runs need no order among them.
        for version in state.versions:
            for t in version.levels[0]:
                if (end is None or t.smallest < end) and (start is None or t.largest >= start):
                    runs.append(t.blocks_from(start, end))
            for li in range(1, len(version.levels)):
                tables = version.level_tables_from(li, start)
                if tables and (end is None or tables[0].smallest < end):
                    runs.append(_level_blocks(tables, start, end))
        if not sources and len(runs) == 1:
            self._it = self._run_blocks(runs[0])
        else:
            sources.extend(_items(r) for r in runs)
            self._it = self._run(sources)

    def _run_blocks(self, blocks):
        # The common case of a settled store: one sorted run. Items come out of `zip` in C;
        # the only Python work per item is resuming this generator.
        try:
            for keys, vals in blocks:
                if None in vals:
                    yield from [(k, v) for k, v in zip(keys, vals) if v is not None]
                else:
                    yield from zip(keys, vals)
        finally:
            self.close()

    def _run(self, sources):
        try:
            if sources:
                yield from _merge(sources)
        finally:
            self.close()

    def __iter__(self):
        return self._it

    def __next__(self):
        return next(self._it)

    def close(self) -> None:
        if self._snaps is None:
            return
        engine = self._engine()
        if engine is not None:
            # Writers iterate a memtable's snapshot set under the write lock; removing from it
            # concurrently would break their iteration.
            with engine._write_lock:
                for s in self._snaps:
                    s.release()
        self._snaps = None
        self._state = None
        if engine is not None:
            engine._delete_obsolete_files()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._it.close()
        self.close()


def _level_blocks(tables: list[Table], start, end):
    for t in tables:
        if end is not None and t.smallest >= end:
            return
        yield from t.blocks_from(start, end)


def _items(blocks):
    for keys, vals in blocks:
        yield from zip(keys, vals)


def _merge(sources):
    """Merge sorted sources given newest first; newest value per key wins; tombstones hidden."""
    last = None
    # heapq.merge is stable: for equal keys it yields from earlier (newer) sources first.
    for k, v in heapq.merge(*sources, key=itemgetter(0)):
        if k == last:
            continue
        last = k
        if v is not None:
            yield k, v


class Engine:
    def __init__(self, path: str, options: Options, fs: PosixFileSystem):
        self.path = path
        self.options = options
        self._fs = fs
        self._write_lock = threading.Lock()
        self._cond = threading.Condition(self._write_lock)  # memtable room, background wakeups
        self._manifest_lock = threading.Lock()  # serializes manifest rewrites
        self._compaction_lock = threading.Lock()  # one compaction at a time
        self._closed = False
        self._bg_error: BaseException | None = None
        self._block_cache = BlockCache(options.block_cache_bytes)
        self._table_cache = TableCache(fs, options.table_cache_files)
        self._settings = jobs.TableSettings(
            options.block_bytes, options.compression, options.bloom_bits_per_key, options.target_file_bytes,
            options.encryption_keys,
        )
        self._live_versions: weakref.WeakSet[Version] = weakref.WeakSet()
        self._obsolete: set[int] = set()
        self._pointers: dict[int, bytes] = {}
        self._sync_always = options.sync == "always"
        self._max_key = MAX_KEY_BYTES
        self._max_value = options.max_value_bytes
        self._memtable_bytes = options.memtable_bytes
        self._lock_fd = -1
        self._flushing = False
        self._threads: list[threading.Thread] = []
        self.recovery: list[dict] = []
        # Counters for stats().
        self._user_bytes = 0
        self._flush_bytes = 0
        self._compaction_bytes_written = 0
        self._compaction_bytes_read = 0
        self._flushes = 0
        self._compactions = 0
        self._stalls = 0
        self._stall_seconds = 0.0
        self._space_refusals = 0
        self._space_error: str | None = None
        self._expired_tables_dropped = 0
        self._expired_bytes_dropped = 0
        # Column families: names and strategies by family index (the default family is 0).
        strategies = options.strategies()
        self._families: list[str] = list(strategies)
        self._family_index = {name: i for i, name in enumerate(self._families)}
        self._strategies: list[Strategy] = list(strategies.values())
        self._router = options.family_router if len(self._families) > 1 else None
        self._split = jobs.FamilySplit(self._router, self._families) if self._router is not None else None
        self._pointers_of: list[dict[int, bytes]] = [{} for _ in self._families]
        self._pointers = self._pointers_of[0]
        self._space_retry_at: dict[int, float] = {}  # family index -> monotonic time
        self._refiltered: dict[int, int] = {}  # table number -> ms when the filter last saw it
        self._now_ms = options.now_ms or _wall_ms
        self._last_created_ms = 0

    # ------------------------------------------------------------------ open and recovery

    @classmethod
    def open(cls, path: str, options: Options | None = None, fs: PosixFileSystem | None = None) -> Engine:
        options = options or Options()
        options.validate()
        fs = fs or PosixFileSystem()
        path = os.path.abspath(path)
        fs.makedirs(path)
        engine = cls(path, options, fs)
        engine._lock_directory()
        try:
            engine._recover()
        except BaseException:
            engine._unlock_directory()
            raise
        engine._start_threads()
        return engine

    def _lock_directory(self) -> None:
        fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RingkvError(f"{self.path} is already open by another engine (LOCK is held)") from None
        self._lock_fd = fd

    def _unlock_directory(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _table_path(self, number: int) -> str:
        return os.path.join(self.path, table_file_name(number))

    def _open_table(self, meta: TableMeta) -> Table:
        path = self._table_path(meta.number)
        if not self._fs.exists(path):
            raise CorruptionError(f"table {table_file_name(meta.number)} named by the manifest is missing", path)
        return Table(path, meta, self._fs, self._block_cache, self._table_cache, self.options.encryption_keys)

    def _recover(self) -> None:
        fs = self._fs
        names = fs.listdir(self.path)
        state = self._read_manifest(names)
        # Numbers handed out after the last manifest write (a rotated log, a crashed flush's
        # table) are on disk but not in next_file: never hand them out again, so a new file
        # never truncates an old one whose bytes recovery may still need.
        on_disk = [int(stem) for stem, _, ext in (n.partition(".") for n in names) if ext in ("sst", "wal") and stem.isdigit()]
        state.next_file = max([state.next_file] + [n + 1 for n in on_disk])
        self._mstate = state
        stored: dict[str, Version] = {}
        for name, family_levels in {DEFAULT_FAMILY: state.levels, **state.families}.items():
            levels = [[self._open_table(m) for m in level] for level in family_levels] or [[]]
            for li in range(1, len(levels)):
                levels[li].sort(key=lambda t: t.smallest)
            stored[name] = Version(levels)
        if state.routing != self._routing() or set(stored) - set(self._families):
            versions = self._reroute(stored, state.routing)
        else:
            versions = [stored.get(name, Version([[]])) for name in self._families]
        versions = [self._shaped(fi, v) for fi, v in enumerate(versions)]
        # Windows follow write order across restarts too, whatever the clock did meanwhile.
        self._last_created_ms = max((t.meta.created_ms for v in versions for lv in v.levels for t in lv), default=0)

        # Replay logs not yet flushed, oldest first, into one memtable.
        wal_numbers = sorted(int(n[:-4]) for n in names if n.endswith(".wal") and n[:-4].isdigit())
        replay = MemTable(0)
        torn_log = None
        for number in wal_numbers:
            if number < state.log_number:
                continue
            p = os.path.join(self.path, wal_file_name(number))
            if torn_log is not None:
                # An older log lost records at a power cut, so every record here was written
                # after bytes that are gone: replaying it would recover a state that never
                # existed. Nothing here was acknowledged under sync="always" either: a log is
                # fsynced whole before any write in the next one is acknowledged.
                dropped = fs.size(p)
                self.recovery.append(
                    {"log": p, "records": 0, "torn_tail_at": None, "salvaged_at": None,
                     "dropped_bytes": dropped, "dropped_after_torn_log": torn_log}
                )
                log.warning("recovery dropped %s (%d bytes): it follows %s, whose tail was torn", p, dropped, torn_log)
                continue
            ops, report = wal.read_log(fs.read_all(p), p, salvage=self.options.salvage, keys=self.options.encryption_keys)
            if report.torn_at is not None:
                # Even a log torn at offset 0 lost records: a log is rotated out only once it
                # holds one, and a newer log exists only after such a rotation.
                torn_log = p
            for key, value in ops:
                replay.put(key, value)
            if report.torn_at is not None or report.salvaged_at is not None:
                self.recovery.append(
                    {
                        "log": p,
                        "records": report.records,
                        "torn_tail_at": report.torn_at,
                        "salvaged_at": report.salvaged_at,
                        "dropped_bytes": report.dropped_bytes,
                    }
                )
                log.warning(
                    "recovery of %s kept %d records and dropped %d bytes at offset %s (%s)",
                    p, report.records, report.dropped_bytes,
                    report.torn_at if report.torn_at is not None else report.salvaged_at,
                    "torn tail" if report.torn_at is not None else "salvage",
                )
        wal_number = self._next_number()
        if len(replay):
            for fi, meta in self._write_memtable(replay.data, [self._next_number() for _ in self._families]):
                self._flush_bytes += meta.file_bytes
                versions[fi] = versions[fi].with_changes(set(), {0: [self._open_table(meta)]})
        state.log_number = wal_number
        self._set_levels(state, versions)
        state.routing = self._routing()
        manifest.write(fs, self.path, manifest.encode(state, self.options.encryption_keys))
        self._wal = wal.WalWriter(fs, os.path.join(self.path, wal_file_name(wal_number)), keys=self.options.encryption_keys)
        fs.sync_dir(self.path)
        self._install(_State(MemTable(wal_number), (), tuple(versions)))

        # Whatever the manifest does not name is an orphan of a crash (or was just replayed,
        # or re-routed into other tables).
        live = set().union(*(v.numbers() for v in versions))
        for name in names:
            stem, _, ext = name.partition(".")
            if (
                (ext == "sst" and stem.isdigit() and int(stem) not in live)
                or (ext == "wal" and stem.isdigit() and int(stem) < wal_number)
                or name in (manifest.MANIFEST_NAME + ".tmp", manifest.BACKUP_NAME + ".tmp")
            ):
                fs.remove(os.path.join(self.path, name))

    # ------------------------------------------------------------------ column families

    def _routing(self):
        """What the manifest records of the routing: None for a single family."""
        if self._router is None:
            return None
        return {"router": self._router.description, "families": sorted(self._families)}

    def _shaped(self, fi: int, version: Version) -> Version:
        """`version` in the shape its family's strategy keeps (leveled: `max_levels` levels)."""
        if isinstance(self._strategies[fi], Leveled):
            return version.padded(self.options.max_levels)
        return version

    def _tracks_expiry(self) -> list[bool]:
        return [isinstance(s, TimeWindow) for s in self._strategies]

    def _created_ms(self) -> int:
        """The time a table written now belongs to: never earlier than the last one's, so time
        windows follow write order even if the clock steps back."""
        self._last_created_ms = max(self._last_created_ms, self._now_ms())
        return self._last_created_ms

    def _set_levels(self, state: manifest.ManifestState, versions) -> None:
        state.levels, state.families = self._levels_of(versions)

    def _levels_of(self, versions) -> tuple[list[list[TableMeta]], dict[str, list[list[TableMeta]]]]:
        """(the default family's levels, every other family's), as the manifest records them."""
        metas = [[[t.meta for t in level] for level in v.levels] for v in versions]
        return metas[0], dict(zip(self._families[1:], metas[1:]))

    def _write_memtable(self, data: dict, numbers: list[int]) -> list[tuple[int, TableMeta]]:
        """Write a memtable's data in this thread: one table per family with keys in it."""
        return jobs.write_tables(
            self.path, numbers, data, self._settings, self._fs, self._split,
            self.options.expiry_of, self._tracks_expiry(), self._created_ms(),
        )

    def _reroute(self, stored: dict[str, Version], old_routing) -> list[Version]:
        """Every table merged once and written into the families of the current routing.

        Run at open when the routing the manifest records is not this engine's (a family was
        added or removed, or the router changed): a key must be in the family the router names,
        or reads would miss it. The merge is a full compaction (newest version of each key,
        the compaction filter, no tombstone kept: nothing older remains anywhere); each
        family's output is one sorted run at its deepest level. Atomic: nothing changes on disk
        until the manifest naming the outputs is written (by `_recover`)."""
        runs = [run for v in stored.values() for run in v.sorted_runs()]
        empty = [Version([[]]) for _ in self._families]
        if not runs:
            return empty
        log.warning(
            "re-routing every table of %s into its column families (the routing was %r, it is %r)",
            self.path, old_routing, self._routing(),
        )
        tables = [t for run in runs for t in run]
        raw = sum(t.meta.raw_bytes + 16 * t.meta.entries for t in tables)
        count = len(self._families) * (4 + len(tables) + 2 * raw // self.options.target_file_bytes)
        job = jobs.CompactionJob(
            directory=self.path,
            runs=[[t.path for t in run] for run in runs],
            output_numbers=[self._next_number() for _ in range(count)],
            settings=self._settings,
            deeper_ranges=[],
            compaction_filter=self.options.compaction_filter,
            fs=self._fs,
            split=self._split,
            expiry_of=self.options.expiry_of,
            track_expiry=self._tracks_expiry(),
        )
        result = self._run_job("compact", job)
        self._compaction_bytes_read += result.bytes_read
        self._compaction_bytes_written += result.bytes_written
        out: list[list[Table]] = [[] for _ in self._families]
        for fi, meta in zip(result.output_families, result.outputs):
            out[fi].append(self._open_table(meta))
        versions = []
        for fi, tables_of in enumerate(out):
            if not tables_of:
                versions.append(empty[fi])
            elif isinstance(self._strategies[fi], Leveled):
                levels = [[] for _ in range(self.options.max_levels)]
                levels[-1] = sorted(tables_of, key=lambda t: t.smallest)
                versions.append(Version(levels))
            else:
                versions.append(Version([[], sorted(tables_of, key=lambda t: t.smallest)]))
        return versions

    @property
    def families(self) -> dict[str, dict]:
        """Each column family's strategy and settings, the default family first."""
        return {name: describe(s) for name, s in zip(self._families, self._strategies)}

    def set_strategy(self, family: str, strategy: Strategy) -> None:
        """Compact `family` by `strategy` from now on: the merges picked from now on, and the
        tables they and later flushes write, follow it; tables already written stay as they
        are until a merge of the new strategy takes them. Not stored: the next `open` takes
        the strategy its Options give (a node's configuration)."""
        fi = self._family_index.get(family)
        if fi is None:
            raise ConfigError("family", f"no column family {family!r}; this engine has {', '.join(self._families)}")
        if not isinstance(strategy, (Leveled, Tiered, TimeWindow)):
            raise ConfigError("strategy", f"must be Leveled(), Tiered(...) or TimeWindow(...), got {strategy!r}")
        strategy.validate(f"families.{family}")
        if isinstance(strategy, TimeWindow) and self.options.expiry_of is None:
            raise ConfigError(f"families.{family}", "time_window needs Options.expiry_of, to know when a table's records expire")
        with self._write_lock:
            if self._closed:
                raise ClosedError(f"engine at {self.path} is closed")
            self._strategies[fi] = strategy
            state = self._state
            versions = list(state.versions)
            versions[fi] = self._shaped(fi, versions[fi])
            self._install(_State(state.mem, state.imms, tuple(versions)))
            self._space_retry_at.pop(fi, None)
            self._cond.notify_all()
        log.info("column family %r of %s now uses %s compaction", family, self.path, strategy.name)

    def _read_manifest(self, names: list[str]) -> manifest.ManifestState:
        fs = self._fs
        main_path = os.path.join(self.path, manifest.MANIFEST_NAME)
        try:
            state = manifest.read(fs, self.path, keys=self.options.encryption_keys)
            problem = None
        except CorruptionError as exc:
            state, problem = None, exc
        if state is not None:
            return state
        has_data = any(n.endswith((".sst", ".wal")) for n in names)
        if problem is None and not has_data:
            return manifest.ManifestState(next_file=1, log_number=0, levels=[])  # a new store
        if not self.options.salvage:
            if problem is not None:
                raise CorruptionError(
                    f"{problem}; open with Options(salvage=True) to recover from MANIFEST.bak",
                    problem.path,
                    problem.offset,
                )
            raise CorruptionError(
                "MANIFEST is missing but data files are present; open with Options(salvage=True) "
                "to recover from MANIFEST.bak",
                main_path,
            )
        backup = manifest.read(fs, self.path, manifest.BACKUP_NAME, self.options.encryption_keys)  # raises if corrupt too
        if backup is None:
            raise CorruptionError("MANIFEST and its mirror MANIFEST.bak are both missing", main_path)
        self.recovery.append({"manifest": main_path, "recovered_from": manifest.BACKUP_NAME, "problem": str(problem or "missing")})
        log.warning("recovered the table set from %s (%s)", manifest.BACKUP_NAME, problem or "MANIFEST missing")
        return backup

    def _next_number(self) -> int:
        n = self._mstate.next_file
        self._mstate.next_file = n + 1
        return n

    def _install(self, state: _State) -> None:
        for v in state.versions:
            self._live_versions.add(v)
        self._state = state

    # ------------------------------------------------------------------ writes

    def _check(self, key: bytes, value: bytes | None) -> None:
        if self._closed:
            raise ClosedError(f"engine at {self.path} is closed")
        if self._bg_error is not None:
            raise ReadOnlyError(self.path, self._bg_error)
        if type(key) is not bytes:
            raise TypeError(f"key must be bytes, got {type(key).__name__}")
        if len(key) > self._max_key:
            raise LimitError(f"key is {len(key)} bytes; the limit is max_key_bytes={self._max_key}")
        if not key:
            raise LimitError("key is empty; keys must be 1 to 65536 bytes")
        if value is not None:
            if type(value) is not bytes:
                raise TypeError(f"value must be bytes, got {type(value).__name__}")
            if len(value) > self._max_value:
                raise LimitError(f"value is {len(value)} bytes; the limit is max_value_bytes={self._max_value}")

    def put(self, key: bytes, value: bytes, sync: bool | None = None, defer: bool = False) -> int:
        """Store `value` under `key`; returns the write's LSN.

        `sync=None` follows the engine's policy; `sync=False` skips the fsync wait of the
        `always` policy (the caller waits later with `wait_durable(lsn)`, e.g. off its event
        loop); `sync=True` waits for the fsync whatever the policy.

        `defer=True` queues the log record instead of writing it (see WalWriter.append): the
        value is visible at once, but the caller must call `flush_deferred()` before it
        acknowledges the write to anyone. Implies `sync=False`.
        """
        # The engine's hottest method: _check, wal.encode_put and MemTable.put are inlined
        # (each call costs ~0.15 us in CPython, a tenth of the whole put).
        if (
            type(key) is not bytes
            or type(value) is not bytes
            or not 0 < len(key) <= self._max_key
            or len(value) > self._max_value
            or self._closed
            or self._bg_error is not None
        ):
            self._check(key, value)
        payload = _PUT_PREFIX(len(key)) + key + value
        head = _RECORD_HEADER(crc32c(payload), len(payload), wal.TYPE_PUT)
        record = head + _U32(crc32c(head)) + payload
        with self._write_lock:
            if self._bg_error is not None:  # turned read-only since the check above
                raise ReadOnlyError(self.path, self._bg_error)
            mem = self._state.mem
            if mem.approx_bytes >= self._memtable_bytes:
                mem = self._make_room()
            lsn = self._wal.append(record, defer)
            data = mem.data
            if mem._snapshots.data:  # the WeakSet's own set: truth-testing the WeakSet runs Python code
                mem._save_undo(key)
            old = data.get(key, MISSING)
            data[key] = value
            if old is MISSING:
                mem._pending.append(key)
                mem.approx_bytes += len(payload) + ENTRY_OVERHEAD_BYTES
            else:
                mem.approx_bytes += len(value) - (len(old) if old else 0)
            mem.user_bytes += len(payload) - 4
        if (self._sync_always if sync is None else sync) and not defer:
            self._sync_log(lsn)
        return lsn

    @property
    def has_deferred(self) -> bool:
        return self._wal.has_deferred

    def flush_deferred(self) -> int:
        """Write every deferred log record to the OS in one call; returns the log's LSN.

        If the write fails the engine turns read-only: the memtable already holds those values
        and the log does not, so accepting more writes would let them be read and then lost.
        """
        with self._write_lock:
            try:
                return self._wal.flush_deferred()
            except OSError as exc:
                self._read_only_locked(exc)
                raise

    def delete(self, key: bytes, sync: bool | None = None) -> int:
        """Delete `key` (a tombstone until compaction drops it); returns the LSN. See put()."""
        self._check(key, None)
        record = wal.encode_delete(key)
        with self._write_lock:
            if self._bg_error is not None:  # turned read-only since the check above
                raise ReadOnlyError(self.path, self._bg_error)
            mem = self._state.mem
            if mem.approx_bytes >= self.options.memtable_bytes:
                mem = self._make_room()
            lsn = self._wal.append(record)
            mem.put(key, None)
            mem.user_bytes += len(key)
        if self._sync_always if sync is None else sync:
            self._sync_log(lsn)
        return lsn

    def write_batch(self, batch: WriteBatch, sync: bool | None = None, defer: bool = False) -> int:
        """Apply every op of `batch` atomically (one log record); returns the batch's LSN.

        `sync=False` skips the fsync wait of the `always` policy: the caller then waits with
        `wait_durable(lsn)` (or `when_durable`), which is how an event loop avoids blocking.
        `defer=True` queues the log record as put(defer=True) does (the caller must call
        `flush_deferred()` before it acknowledges the batch); implies `sync=False`.
        """
        if self._closed:
            raise ClosedError(f"engine at {self.path} is closed")
        for key, value in batch.ops:
            self._check(key, value)
        if not batch.ops:
            return self._wal.written_lsn
        record = wal.encode_batch(batch.ops)
        with self._write_lock:
            if self._bg_error is not None:  # turned read-only since the check above
                raise ReadOnlyError(self.path, self._bg_error)
            mem = self._state.mem
            if mem.approx_bytes >= self.options.memtable_bytes:
                mem = self._make_room()
            lsn = self._wal.append(record, defer)
            for key, value in batch.ops:
                mem.put(key, value)
            mem.user_bytes += sum(len(k) + (len(v) if v else 0) for k, v in batch.ops)
        if (self._sync_always if sync is None else sync) and not defer:
            self._sync_log(lsn)
        return lsn

    def wait_durable(self, lsn: int) -> None:
        """Block until the log is fsynced up to `lsn` (group commit with other waiters)."""
        if lsn > self._wal.written_lsn:
            self.flush_deferred()
        self._sync_log(lsn)

    def _sync_log(self, lsn: int) -> None:
        """Wait for the fsync covering `lsn`; a failed fsync turns the engine read-only."""
        try:
            self._wal.sync_to(lsn)
        except FsyncFailedError as exc:
            self._enter_read_only(exc)
            raise

    def _make_room(self) -> MemTable:
        """Freeze the full memtable and start a new one. REQUIRES: write lock held."""
        started = None
        while True:
            if self._bg_error is not None:
                raise ReadOnlyError(self.path, self._bg_error)
            if self._closed:
                raise ClosedError(f"engine at {self.path} is closed")
            state = self._state
            if state.mem.approx_bytes < self._memtable_bytes:
                return state.mem  # another writer rotated while this one waited
            too_many_imms = len(state.imms) >= self.options.max_immutable_memtables
            too_many_l0 = self._compaction_behind(state)
            if not (too_many_imms or too_many_l0):
                break
            if started is None:
                started = time.monotonic()
                self._stalls += 1
            waited = time.monotonic() - started
            if waited > WRITE_STALL_TIMEOUT_S:
                raise WriteStallError(
                    f"write stalled {waited:.0f} s waiting for "
                    + ("memtable flushes" if too_many_imms else f"compaction ({too_many_l0})")
                    + (f"; {self._space_error}" if self._space_error else "")
                )
            self._cond.notify_all()
            self._cond.wait(0.1)
        if started is not None:
            self._stall_seconds += time.monotonic() - started
        self._rotate()
        return self._state.mem

    def _compaction_behind(self, state: _State) -> str | None:
        """Why a new frozen memtable must wait for compaction, or None: a family's level 0 is
        full, or (tiered) its flushed runs would pass the read-amplification cap."""
        for fi, version in enumerate(state.versions):
            strategy = self._strategies[fi]
            if isinstance(strategy, Tiered):
                if tiered.stalls(version, strategy, len(state.imms)):
                    return f"family {self._families[fi]!r} is at max_runs={strategy.max_runs} sorted runs"
            elif len(version.levels[0]) >= self.options.level0_stop_writes_files:
                return f"family {self._families[fi]!r} has {len(version.levels[0])} level-0 tables"
        return None

    def _rotate(self) -> None:
        """REQUIRES: write lock held and room for one more frozen memtable."""
        state = self._state
        number = self._next_number()
        old_wal = self._wal
        old_wal.flush_deferred()
        path = os.path.join(self.path, wal_file_name(number))
        new_wal = wal.WalWriter(self._fs, path, old_wal.written_lsn, previous=old_wal, keys=self.options.encryption_keys)
        # The new log's directory entry must be durable before any write in it is acknowledged
        # under sync="always"; the next manifest write may be a whole flush away.
        try:
            self._fs.sync_dir(self.path)
        except FsyncFailedError as exc:
            new_wal.abandon(exc)  # never written to: the old log and memtable stay current
            self._read_only_locked(exc)
            raise
        self._wal = new_wal
        # The frozen log is fsynced and closed by the flush thread, before its table is built:
        # an fsync of a 16 MiB log here would stall every writer behind the write lock.
        state.mem.wal = old_wal
        self._user_bytes += state.mem.user_bytes
        self._install(_State(MemTable(number), (state.mem, *state.imms), state.versions))
        self._cond.notify_all()

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes) -> bytes | None:
        """The value stored under `key`, or None."""
        if type(key) is not bytes or self._closed:
            if self._closed:
                raise ClosedError(f"engine at {self.path} is closed")
            raise TypeError(f"key must be bytes, got {type(key).__name__}")
        state = self._state
        v = state.mem.data.get(key, MISSING)
        if v is MISSING:
            for m in state.imms:
                v = m.data.get(key, MISSING)
                if v is not MISSING:
                    return v
            versions = state.versions
            if len(versions) == 1:
                v = versions[0].get(key)
            else:
                v = versions[self._family_index.get(self._router(key), 0)].get(key)
            if v is MISSING:
                return None
        return v

    def scan(self, start: bytes | None = None, end: bytes | None = None) -> ScanIterator:
        """Iterate (key, value) for start <= key < end in key order, over a snapshot."""
        if self._closed:
            raise ClosedError(f"engine at {self.path} is closed")
        with self._write_lock:
            state = self._state
            snaps = [state.mem.snapshot()] + [m.snapshot() for m in state.imms]
        return ScanIterator(self, state, snaps, start, end)

    def scan_prefix(self, prefix: bytes) -> ScanIterator:
        return self.scan(prefix, _prefix_end(prefix))

    def sample(self, start: bytes, end: bytes, rng) -> bytes | None:
        """A key stored in [start, end), drawn at random without reading the range
        (storage/sampling.py says how, and how far from uniform); None when the draw found
        none. The key may hold a tombstone: read it to judge it."""
        if self._closed:
            raise ClosedError(f"engine at {self.path} is closed")
        with self._write_lock:
            state = self._state
            memtables = [m.sorted_keys() for m in (state.mem, *state.imms)]
        return sampling.draw(memtables, state.versions, start, end, rng)

    # ------------------------------------------------------------------ background work

    def _start_threads(self) -> None:
        for name, target in (("flush", self._flush_loop), ("compaction", self._compaction_loop)):
            t = threading.Thread(target=target, name=f"ringkv-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.options.sync == "interval":
            t = threading.Thread(target=self._sync_loop, name="ringkv-wal-sync", daemon=True)
            t.start()
            self._threads.append(t)

    def _sync_loop(self) -> None:
        interval = self.options.sync_interval_ms / 1000
        while not self._closed:
            time.sleep(interval)
            w = self._wal
            if w.written_lsn > w.synced_lsn and not w.closed and w.failed is None:
                try:
                    w.sync_to(w.written_lsn)
                except FsyncFailedError as exc:
                    self._enter_read_only(exc)
                    return
                except (OSError, ValueError):
                    if not self._closed:
                        log.exception("periodic WAL sync failed")

    def _run_job(self, name: str, job):
        if self.options.background == "process":
            return run_in_worker(name, job)
        return {"flush": jobs.run_flush, "compact": jobs.run_compaction}[name](job)

    def _fail(self, exc: BaseException) -> None:
        log.error("background work failed: %s", exc)
        self._enter_read_only(exc)

    def _enter_read_only(self, exc: BaseException) -> None:
        with self._write_lock:
            self._read_only_locked(exc)

    def _read_only_locked(self, exc: BaseException) -> None:
        """Refuse writes from now on, keeping the first failure as the reason. After a failed
        fsync of a log, also give up every log not yet durable and show readers only what is.
        REQUIRES: write lock held."""
        if self._bg_error is None:
            self._bg_error = exc
            log.error("the engine at %s is now read-only: %s", self.path, exc)
        if isinstance(exc, FsyncFailedError) and exc.path.endswith(".wal"):
            self._show_only_durable(exc)
        self._cond.notify_all()

    def _show_only_durable(self, cause: FsyncFailedError) -> None:
        """Rebuild every memtable whose log is not durable to its end from the part that is.

        Those logs are cut back to their durable bytes and never fsynced again (WalWriter.abandon):
        what was written after the last good fsync may be lost, so no reader may see it either,
        or it could read a value that the next open does not have. REQUIRES: write lock held.
        """
        state = self._state
        mems = []
        changed = False
        for mem in (state.mem, *state.imms):
            writer = self._wal if mem is state.mem else mem.wal
            if writer is None or writer.closed or (writer.synced_lsn >= writer.written_lsn and not writer.has_deferred):
                mems.append(mem)
                continue
            durable = writer.durable_bytes
            writer.abandon(cause)
            try:
                ops, _ = wal.read_log(self._fs.read_all(writer.path)[:durable], writer.path,
                                      keys=self.options.encryption_keys)
            except (OSError, CorruptionError) as exc:
                # Never expected: these bytes were written by us and fsynced.
                log.error("cannot reread %s to drop its lost writes from reads: %s", writer.path, exc)
                mems.append(mem)
                continue
            rebuilt = MemTable(mem.wal_number)
            for key, value in ops:
                rebuilt.put(key, value)
            rebuilt.wal = mem.wal
            mems.append(rebuilt)
            changed = True
        if changed:
            self._install(_State(mems[0], tuple(mems[1:]), state.versions))

    def _flush_loop(self) -> None:
        while True:
            with self._write_lock:
                while not self._closed and not self._state.imms and self._bg_error is None:
                    self._cond.wait()
                if not self._state.imms or self._bg_error is not None:
                    return  # closed and nothing left to flush, or read-only: no manifest to install it
                mem = self._state.imms[-1]  # oldest
                numbers = [self._next_number() for _ in self._families]
                self._flushing = True
            try:
                self._flush_one(mem, numbers)
            except BaseException as exc:
                self._fail(exc)
                return
            finally:
                with self._write_lock:
                    self._flushing = False
                    self._cond.notify_all()

    def _flush_one(self, mem: MemTable, numbers: list[int]) -> None:
        if mem.wal is not None:
            mem.wal.close(sync=True)
        if self.options.background == "process":
            wal_path = os.path.join(self.path, wal_file_name(mem.wal_number))
            job = jobs.FlushJob(
                self.path, wal_path, numbers, self._settings, self._fs, self._split,
                self.options.expiry_of, self._tracks_expiry(), self._created_ms(),
            )
            written = self._run_job("flush", job)
        else:
            written = self._write_memtable(mem.data, numbers)
        tables = [(fi, self._open_table(meta)) for fi, meta in written]
        with self._manifest_lock:
            with self._write_lock:
                imms = tuple(m for m in self._state.imms if m is not mem)
                versions = list(self._state.versions)
                for fi, table in tables:
                    versions[fi] = versions[fi].with_changes(set(), {0: [table]})
                # Logs older than the oldest memtable still in memory are no longer needed.
                oldest = imms[-1].wal_number if imms else self._state.mem.wal_number
                levels, families = self._levels_of(versions)
                encoded = self._encode_manifest(oldest, levels, families)
            self._write_manifest(encoded)
            with self._write_lock:
                self._mstate.log_number = oldest
                self._mstate.levels, self._mstate.families = levels, families
                # Holding the manifest lock, no compaction changed the versions meanwhile;
                # only the memtables may have rotated.
                # No local keeps the old state: it would pin the old version's files.
                self._install(
                    _State(self._state.mem, tuple(m for m in self._state.imms if m is not mem), tuple(versions))
                )
                self._flush_bytes += sum(meta.file_bytes for _, meta in written)
                self._flushes += 1
                self._cond.notify_all()
        self._fs.remove(os.path.join(self.path, wal_file_name(mem.wal_number)))

    def _encode_manifest(
        self, log_number: int, levels: list[list[TableMeta]], families: dict[str, list[list[TableMeta]]]
    ) -> bytes:
        """The manifest with a change, leaving `_mstate` as it is until the change is durable:
        after a failed write, no later manifest may carry it (a log_number advanced by a flush
        whose table never got installed would let recovery skip that flush's log).
        REQUIRES: write lock held, and no background error (read-only engines write none)."""
        if self._bg_error is not None:
            raise ReadOnlyError(self.path, self._bg_error)
        return manifest.encode(
            manifest.ManifestState(
                next_file=self._mstate.next_file, log_number=log_number, levels=levels,
                families=families, routing=self._mstate.routing,
            ),
            self.options.encryption_keys,
        )

    def _write_manifest(self, encoded: bytes) -> None:
        """A failed write may leave a renamed manifest whose rename is not durable: write no
        other one after it, whoever asked (a flush, a compaction, compact_range)."""
        try:
            manifest.write(self._fs, self.path, encoded)
        except BaseException as exc:
            self._enter_read_only(exc)
            raise

    def _compaction_loop(self) -> None:
        while True:
            with self._write_lock:
                picked = None
                while not self._closed:
                    now = time.monotonic()
                    for fi in [fi for fi, at in self._space_retry_at.items() if at <= now]:
                        del self._space_retry_at[fi]  # retried below
                    picked = self._pick()
                    if picked is not None:
                        break
                    self._cond.wait(self._poll_s())
                if self._closed or self._bg_error is not None:
                    return
            try:
                with self._compaction_lock:
                    # Re-pick under the compaction lock: a manual compaction may have run.
                    picked = self._pick()
                    if picked is not None and self._bg_error is None:
                        self._compact(*picked)
            except CompactionSpaceError as exc:
                self._note_space_refusal(exc)
                with self._write_lock:
                    self._space_retry_at[self._family_index[exc.family]] = time.monotonic() + SPACE_RETRY_S
            except BaseException as exc:
                self._fail(exc)
                return

    def _poll_s(self) -> float | None:
        """How long the compaction thread may sleep without a wake-up: forever, unless a family
        expires data with time or a merge waits for disk space."""
        if self._space_retry_at or any(isinstance(s, TimeWindow) for s in self._strategies):
            return COMPACTION_POLL_S
        return None

    def _pick(self) -> tuple[int, CompactionPick | RunsPick] | None:
        """(family index, the most urgent compaction of any family), or None when none is due.
        Reads only: stats() asks it too."""
        best = None
        now = time.monotonic()
        for fi, version in enumerate(self._state.versions):
            if self._space_retry_at.get(fi, 0.0) > now:
                continue  # a merge of this family was refused for want of space: not yet
            pick = self._pick_for(fi, version)
            if pick is not None and (best is None or pick.score > best[1].score):
                best = (fi, pick)
        return best

    def _pick_for(self, fi: int, version: Version) -> CompactionPick | RunsPick | None:
        strategy = self._strategies[fi]
        if isinstance(strategy, Tiered):
            return tiered.pick(version, strategy)
        if isinstance(strategy, TimeWindow):
            return time_window.pick(version, strategy, self._now_ms(), self._refiltered)
        return pick_compaction(version.padded(self.options.max_levels), self.options, self._pointers_of[fi])

    def _note_space_refusal(self, exc: CompactionSpaceError) -> None:
        log.error("%s", exc)
        with self._write_lock:
            self._space_refusals += 1
            self._space_error = str(exc)

    def _check_headroom(self, fi: int, pick, tables: list[Table]) -> None:
        """Refuse a merge before it starts when the disk cannot hold its output: the inputs'
        bytes (what the output takes at most, as a rule), scaled by compaction_headroom_percent.
        A merge that ran out of space midway would turn the engine read-only."""
        needed = sum(t.meta.file_bytes for t in tables) * self.options.compaction_headroom_percent // 100
        if not needed:
            return
        free = self._fs.free_bytes(self.path)
        if free < needed:
            raise CompactionSpaceError(self.path, self._families[fi], pick.describe(), needed, free)

    def _compact(self, fi: int, pick: CompactionPick | RunsPick) -> None:
        """Run one compaction of family `fi` and install it. REQUIRES: _compaction_lock held."""
        tables = pick.tables()
        if isinstance(pick, CompactionPick) and pick.level > 0:
            self._pointers_of[fi][pick.level] = pick.inputs[0][-1].largest
        removed = {t.number for t in tables}
        strategy = self._strategies[fi]
        windowed = isinstance(strategy, TimeWindow)
        if pick.drop or pick.trivial_move:
            # A manifest edit only: an expired table deleted unread, or a table moved whole.
            outputs = [] if pick.drop else tables
        else:
            self._check_headroom(fi, pick, tables)
            # Output tables are cut at target_file_bytes of *file* size; whatever the inputs'
            # compression, the outputs cannot hold more than the inputs' raw bytes plus block
            # overhead, so twice the raw size bounds the count with room to spare.
            raw = sum(t.meta.raw_bytes + 16 * t.meta.entries for t in tables)
            with self._write_lock:
                count = 4 + len(tables) + 2 * raw // self.options.target_file_bytes
                numbers = [self._next_number() for _ in range(count)]
            job = jobs.CompactionJob(
                directory=self.path,
                runs=[[t.path for t in run] for run in pick.runs()],
                output_numbers=numbers,
                settings=self._settings,
                deeper_ranges=pick.deeper_ranges(self._state.versions[fi]),
                compaction_filter=self.options.compaction_filter,
                rate_bytes_per_s=self.options.compaction_rate_bytes_per_s,
                fs=self._fs,
                created_ms=pick.created_ms if windowed else 0,
                expiry_of=self.options.expiry_of if windowed else None,
                track_expiry=[windowed],
            )
            try:
                result = self._run_job("compact", job)
            except FsyncFailedError as exc:
                self._enter_read_only(exc)
                raise
            outputs = [self._open_table(m) for m in result.outputs]
            self._compaction_bytes_read += result.bytes_read
            self._compaction_bytes_written += result.bytes_written
            if windowed:
                # The filter has just seen these records: not again before a window has passed.
                seen = self._now_ms()
                for t in outputs:
                    if t.meta.filter_records:
                        self._refiltered[t.number] = seen
        with self._manifest_lock:
            with self._write_lock:
                versions = list(self._state.versions)
                versions[fi] = pick.apply(versions[fi], outputs)
                levels, families = self._levels_of(versions)
                encoded = self._encode_manifest(self._mstate.log_number, levels, families)
            self._write_manifest(encoded)
            with self._write_lock:
                self._mstate.levels, self._mstate.families = levels, families
                # No local keeps the old state: it would pin the replaced tables.
                self._install(_State(self._state.mem, self._state.imms, tuple(versions)))
                if not pick.trivial_move:
                    self._obsolete |= removed
                    for n in removed:
                        self._refiltered.pop(n, None)
                if pick.drop:
                    self._expired_tables_dropped += len(tables)
                    self._expired_bytes_dropped += sum(t.meta.file_bytes for t in tables)
                else:
                    self._compactions += 1
                self._cond.notify_all()
        self._delete_obsolete_files()

    def _delete_obsolete_files(self) -> None:
        with self._write_lock:
            if not self._obsolete:
                return
            # The WeakSet holds exactly the versions something still references: the current
            # state and the states pinned by open scans.
            pinned = set()
            for v in list(self._live_versions):
                pinned |= v.numbers()
            doomed = self._obsolete - pinned
            self._obsolete -= doomed
        for number in doomed:
            self._table_cache.evict(number)
            self._block_cache.evict_table(number)
            self._fs.remove(self._table_path(number))

    # ------------------------------------------------------------------ maintenance

    def flush(self) -> None:
        """Write the memtable to a table and wait until every frozen memtable is on disk."""
        with self._write_lock:
            if self._closed:
                raise ClosedError(f"engine at {self.path} is closed")
            if self._bg_error is not None:
                raise ReadOnlyError(self.path, self._bg_error)
            if len(self._state.mem):
                self._make_room_for_flush()
            while (self._state.imms or self._flushing) and self._bg_error is None:
                self._cond.notify_all()
                self._cond.wait(0.1)
            if self._bg_error is not None:
                raise ReadOnlyError(self.path, self._bg_error)

    def checkpoint(self, dest: str) -> dict:
        """A directory `dest` (new) that opens as a store holding every write taken so far:
        hard links to the live tables, the manifest, a copy of the logs' unflushed tail
        (storage/snapshot.py). Returns what it linked and copied."""
        return snapshot.checkpoint(self, dest).as_dict()

    def _make_room_for_flush(self) -> None:
        """Wait as a write would (`_make_room`): for a frozen memtable's place, and for
        compaction when a family is full (a tiered family's read-amplification cap holds for
        explicit flushes too)."""
        started = time.monotonic()
        while self._bg_error is None:
            state = self._state
            behind = self._compaction_behind(state)
            if len(state.imms) < self.options.max_immutable_memtables and not behind:
                break
            if behind and time.monotonic() - started > WRITE_STALL_TIMEOUT_S:
                raise WriteStallError(f"flush stalled {WRITE_STALL_TIMEOUT_S:.0f} s waiting for compaction ({behind})")
            self._cond.notify_all()
            self._cond.wait(0.1)
        if self._bg_error is not None:
            raise ReadOnlyError(self.path, self._bg_error)
        self._rotate()

    def compact_range(self, start: bytes | None = None, end: bytes | None = None) -> None:
        """Flush, then run every record meeting [start, end] through a merge (the compaction
        filter, the tombstone rule), in each family by its strategy: leveled merges the tables
        meeting the range down level by level; tiered merges every run into one (if any table
        meets the range); time-window deletes the expired tables, then merges each window's
        runs into one. Raises CompactionSpaceError, before changing anything of the family
        concerned, when the disk cannot hold a merge's output."""
        self.flush()
        with self._compaction_lock:
            for fi in range(len(self._families)):
                if self._bg_error is not None:
                    raise ReadOnlyError(self.path, self._bg_error)
                try:
                    self._compact_family_range(fi, start, end)
                except CompactionSpaceError as exc:
                    self._note_space_refusal(exc)
                    raise
        self._delete_obsolete_files()
        with self._write_lock:
            self._cond.notify_all()

    def _compact_family_range(self, fi: int, start: bytes | None, end: bytes | None) -> None:
        strategy = self._strategies[fi]

        def meets(t: Table) -> bool:
            return (start is None or t.largest >= start) and (end is None or t.smallest <= end)

        # No local may keep a version across _compact: it would pin the files a merge replaces.
        if isinstance(strategy, Leveled):
            last_nonempty = max((li for li, lv in enumerate(self._state.versions[fi].levels) if lv), default=0)
            for level in range(0, max(last_nonempty, 1)):
                pick = pick_range(self._state.versions[fi], level, start, end)
                if pick is not None:
                    self._compact(fi, pick)
            return
        if isinstance(strategy, TimeWindow):
            drop, _ = time_window.expired(self._state.versions[fi].sorted_runs(), strategy, self._now_ms())
            if drop:
                self._compact(fi, RunsPick([[t] for t in drop], time_window.DROP_SCORE, "compact_range", drop=True))
            for group in time_window.window_groups(self._state.versions[fi], strategy.window_ms):
                if any(meets(t) for run in group for t in run):
                    created = max(t.meta.created_ms for run in group for t in run)
                    self._compact(fi, RunsPick(group, 1.0, "compact_range", created_ms=created))
            return
        runs = self._state.versions[fi].sorted_runs()
        worth = len(runs) > 1 or self._state.versions[fi].levels[0] or self.options.compaction_filter is not None or any(
            t.meta.tombstones for run in runs for t in run
        )
        if worth and any(meets(t) for run in runs for t in run):
            self._compact(fi, RunsPick(runs, 1.0, "compact_range"))

    def reseal(self) -> int:
        """Rewrite every table not sealed with the current key (Options.encryption_keys; with
        none, every sealed table) so that older keys can be retired (docs/security.md,
        "Rotation"); returns how many tables were rewritten. A full compact_range first, then,
        in every column family, what it left untouched is rewritten where it lies: a leveled
        family's tables one by one at their level (a table overlaps nothing else in its
        level), a tiered or time-window family's sorted runs one by one (a run keeps its place
        and its time window; a level-0 table goes with the older level-0 tables, the shape
        such families keep). Concurrent writes go on; their new files use the current key."""
        keys = self.options.encryption_keys
        want = keys.current_id if keys is not None else None

        def stale(t: Table) -> bool:
            return sealing.file_key_id(t.path) != want

        self.compact_range()
        rewritten = 0
        with self._compaction_lock:
            for fi in range(len(self._families)):
                if isinstance(self._strategies[fi], Leveled):
                    for level in range(1, len(self._state.versions[fi].levels)):
                        for table in list(self._state.versions[fi].levels[level]):
                            if self._bg_error is not None:
                                raise ReadOnlyError(self.path, self._bg_error)
                            if not stale(table):
                                continue
                            pick = CompactionPick(level, [table], [], False)
                            pick.output_level = level  # in place: it overlaps nothing else in its level
                            self._compact(fi, pick)
                            rewritten += 1
                    continue
                # Oldest run first: a rewritten run keeps its place, so the indexes of the runs
                # still to look at (the newer ones) do not change.
                ri = len(self._state.versions[fi].sorted_runs()) - 1
                while ri >= 0:
                    if self._bg_error is not None:
                        raise ReadOnlyError(self.path, self._bg_error)
                    version = self._state.versions[fi]
                    runs = version.sorted_runs()
                    if not any(stale(t) for t in runs[ri]):
                        ri -= 1
                        continue
                    l0 = len(version.levels[0])
                    group = runs[ri:l0] if ri < l0 else [runs[ri]]
                    created = max(t.meta.created_ms for run in group for t in run)
                    self._compact(fi, RunsPick(group, 1.0, "reseal", created_ms=created))
                    rewritten += sum(len(run) for run in group)
                    ri -= 1
        self._delete_obsolete_files()
        return rewritten

    def stats(self) -> dict:
        state = self._state
        levels: list[dict] = []  # every family's level li summed up
        families = {}
        total_file = 0
        resident = 0
        entries = 0
        last = 0
        for fi, version in enumerate(state.versions):
            own = []
            for li, level in enumerate(version.levels):
                b = sum(t.meta.file_bytes for t in level)
                total_file += b
                resident += sum(t.resident_bytes() for t in level)
                entries += sum(t.meta.entries for t in level)
                own.append({"level": li, "tables": len(level), "bytes": b})
                if li == len(levels):
                    levels.append({"level": li, "tables": 0, "bytes": 0})
                levels[li]["tables"] += len(level)
                levels[li]["bytes"] += b
            last += next((lv["bytes"] for lv in reversed(own) if lv["bytes"]), 0)
            families[self._families[fi]] = {
                **describe(self._strategies[fi]),
                "levels": own,
                "tables": sum(lv["tables"] for lv in own),
                "bytes": sum(lv["bytes"] for lv in own),
                # What a point lookup in this family may probe, at most: its sorted runs.
                "sorted_runs": len(version.sorted_runs()),
            }
        wal_bytes = self._wal.written_lsn
        user = self._user_bytes + state.mem.user_bytes
        written = wal_bytes + self._flush_bytes + self._compaction_bytes_written
        bc, tc = self._block_cache, self._table_cache
        return {
            "levels": levels,
            "tables": sum(lv["tables"] for lv in levels),
            "bytes_on_disk": total_file + (self._wal.bytes_written),
            "memtable_bytes": state.mem.approx_bytes,
            "immutable_memtables": len(state.imms),
            "user_bytes_written": user,
            "wal_bytes_written": wal_bytes,
            "flush_bytes_written": self._flush_bytes,
            "compaction_bytes_written": self._compaction_bytes_written,
            "compaction_bytes_read": self._compaction_bytes_read,
            "write_amplification": (written / user) if user else 0.0,
            "space_amplification": (total_file / last) if last else 1.0,
            "flushes": self._flushes,
            "compactions": self._compactions,
            "write_stalls": self._stalls,
            "write_stall_seconds": round(self._stall_seconds, 3),
            "families": families,
            "expired_tables_dropped": self._expired_tables_dropped,
            "expired_bytes_dropped": self._expired_bytes_dropped,
            "compaction_space_refusals": self._space_refusals,
            "compaction_space_error": self._space_error,
            # Whether a compaction is due now (or running): what a caller waiting for
            # background work to settle polls, with immutable_memtables.
            "compaction_due": self._compaction_lock.locked() or self._pick() is not None,
            "block_cache": {
                "capacity_bytes": bc.capacity_bytes,
                "used_bytes": bc.used_bytes,
                "hits": bc.hits,
                "misses": bc.misses,
                "hit_rate": bc.hits / (bc.hits + bc.misses) if bc.hits + bc.misses else 0.0,
            },
            "table_cache": {
                "capacity_files": tc.capacity_files,
                "open_files": len(tc),
                "hits": tc.hits,
                "misses": tc.misses,
                "hit_rate": tc.hits / (tc.hits + tc.misses) if tc.hits + tc.misses else 0.0,
            },
            "resident_bytes": resident,
            "resident_bytes_per_key": (resident / entries) if entries else 0.0,
            "recovery": list(self.recovery),
            "background_error": str(self._bg_error) if self._bg_error else None,
        }

    def close(self) -> None:
        """Finish in-flight background work, sync the log and release the directory."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        self._delete_obsolete_files()
        with contextlib.suppress(OSError):
            # After a failed fsync of the log this is a no-op: it was abandoned, not to be
            # fsynced again (see _show_only_durable).
            self._wal.close(sync=True)
        self._table_cache.close()
        self._unlock_directory()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no bound)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)
