"""Storage-engine benchmark: ringkv's LSM engine beside RocksDB, LevelDB, LMDB and sqlite3.

What it measures, per system, in the order db_bench made standard: `fillseq` (keys in order,
fresh store), `fillrandom` (the same keys shuffled, a second fresh store), `overwrite` (random
keys of that set, new values), then an untimed settle (flush and full compaction, so reads see a
settled store, not a memtable), `readrandom` (existing keys in random order), `readmissing`
(absent keys that sort between existing ones, which is what bloom filters are for) and `scan-N`
(seek to a random existing key, read N entries in order). It also reports write amplification
(bytes the process tree dirtied in the page cache, from /proc, per user byte written), space
amplification (allocated bytes of the store's directory after settle, per live user byte) and
peak RSS.

Why it is built this way:
- Absolute ops/s on a small shared machine mean little, so every system runs in the same
  invocation, and each phase is quoted as a ratio to RocksDB (rocksdict, default options), the
  anchor of the targets. Repeats (default 3) rotate the order of the systems, and medians are
  quoted with their min-max spread.
- Each system runs in its own child process (`--worker`), so peak RSS is that system's own and
  no system's caches warm another's. Children generate the same keys and values from the seed
  before any clock starts.
- What is timed is checked: a read of an existing key that returns nothing, a read of a missing
  key that returns something, a short scan or a wrong value fails the run. A fast wrong answer
  is not a result.
- Nothing here is tuned for any system: every anchor keeps its library's defaults except where a
  setting must be chosen (LMDB's map size and sync, sqlite's journal mode), and the report
  states every setting.

Linux only: write amplification and memory come from /proc.

Run: `python -m ringkv.bench.engine --keys 100000 --repeats 1` (see --help).
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import cycle, islice
from pathlib import Path
from typing import Any, ClassVar

import click
from rich.console import Console
from rich.table import Table

SYSTEMS = ("ringkv", "rocksdb", "leveldb", "lmdb", "sqlite")
ANCHOR = "rocksdb"
PHASES = ("fillseq", "fillrandom", "overwrite", "readrandom", "readmissing", "scan")
# The targets for ringkv, as ratios of its ops/s to RocksDB's in the same run.
TARGETS = (("fillrandom", 1.0), ("readrandom", 0.5), ("readmissing", 0.5), ("scan", 0.5))
TARGET_SCAN_COUNT = 100

KEY_BYTES = 16
# Existing keys are even numbers and missing keys odd ones, both printed as 16 decimal digits: a
# missing key looks like an existing one and sorts between two of them, so no engine can reject
# it by range alone. 2 * KEY_ID_SPACE stays below 10**16, so every key has exactly 16 digits.
KEY_ID_SPACE = 4 * 10**15
# db_bench draws values from a 1 MiB pool; so do we, so values repeat only 1 MiB apart.
VALUE_POOL_BYTES = 1 << 20
# Printable bytes, as db_bench's RandomGenerator uses, so a value compresses about as its does.
_PRINTABLE = range(32, 127)
# Keys whose final value is checked after the read phases (outside the clock).
SAMPLED_KEYS = 256
# Scans whose keys are compared with the expected key range after the scan phase.
CHECKED_SCANS = 32

# A timed loop shorter than this is flagged in the report: timer, cache warm-up and a
# neighbour's burst of work weigh too much in it.
SHORT_PHASE_SECONDS = 1.0
LEVELDB_DEFAULT_WRITE_BUFFER_BYTES = 4 << 20  # leveldb/include/leveldb/options.h
MIB = 1 << 20


class BenchmarkCorrectnessError(AssertionError):
    """A system under test returned a wrong answer while being timed; its figures are void."""


# ---------------------------------------------------------------------------------------------
# Workload: the same keys and values in every process, generated before any clock starts.


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    keys: int
    value_bytes: int
    reads: int
    scans: int
    scan_count: int
    seed: int

    @property
    def live_user_bytes(self) -> int:
        return self.keys * (KEY_BYTES + self.value_bytes)


class Workload:
    """Keys, operation orders and values of one run, all derived from `spec.seed`.

    The timed loops consume these exactly as follows, which `expected_values` relies on:
    fillseq writes `sorted_keys[i]` with `values[i % len(values)]`; fillrandom writes
    `fill_order[i]` with `values[i % len(values)]`; overwrite writes `overwrite_keys[j]` with
    `values[(overwrite_value_offset + j) % len(values)]`.
    """

    def __init__(self, spec: WorkloadSpec):
        self.spec = spec
        rng = random.Random(spec.seed)
        ids = sorted(rng.sample(range(KEY_ID_SPACE), spec.keys))
        # Zero-padded decimal: byte order is numeric order and every key is KEY_BYTES long.
        self.sorted_keys = [b"%016d" % (2 * i) for i in ids]
        self.fill_order = self.sorted_keys.copy()
        rng.shuffle(self.fill_order)
        self.overwrite_keys = rng.choices(self.sorted_keys, k=spec.keys)
        self.read_keys = _permutation_stream(rng, self.sorted_keys, spec.reads)
        self.missing_keys = [b"%016d" % (2 * i + 1) for i in rng.choices(ids, k=spec.reads)]
        self.scan_start_indexes = [rng.randrange(spec.keys) for _ in range(spec.scans)]
        self.scan_starts = [self.sorted_keys[i] for i in self.scan_start_indexes]
        self.scan_expected_entries = sum(
            min(spec.scan_count, spec.keys - i) for i in self.scan_start_indexes
        )
        self.values = _value_pool(rng, spec.value_bytes)
        self.overwrite_value_offset = len(self.values) // 2
        self.sampled_keys = rng.sample(self.sorted_keys, min(SAMPLED_KEYS, spec.keys))

    def fill_values(self) -> Iterator[bytes]:
        return cycle(self.values)

    def overwrite_values(self) -> Iterator[bytes]:
        return islice(cycle(self.values), self.overwrite_value_offset, None)

    def expected_values(self) -> dict[bytes, bytes]:
        """The value each sampled key must hold after fillrandom and overwrite."""
        sample = set(self.sampled_keys)
        pool = self.values
        expected: dict[bytes, bytes] = {}
        for i, key in enumerate(self.fill_order):
            if key in sample:
                expected[key] = pool[i % len(pool)]
        for j, key in enumerate(self.overwrite_keys):
            if key in sample:
                expected[key] = pool[(self.overwrite_value_offset + j) % len(pool)]
        return expected

    def fillseq_expected_values(self) -> dict[bytes, bytes]:
        pool = self.values
        index = {key: i for i, key in enumerate(self.sorted_keys)}
        return {key: pool[index[key] % len(pool)] for key in self.sampled_keys}


def _permutation_stream(rng: random.Random, keys: list[bytes], count: int) -> list[bytes]:
    """`count` keys in random order, each read once before any is read twice."""
    out: list[bytes] = []
    while len(out) < count:
        batch = keys.copy()
        rng.shuffle(batch)
        out.extend(batch[: count - len(out)])
    return out


def _value_pool(rng: random.Random, value_bytes: int) -> list[bytes]:
    """Distinct values about half compressible: a random printable run, repeated (as db_bench)."""
    count = max(1, VALUE_POOL_BYTES // value_bytes)
    run_bytes = max(1, value_bytes // 2)
    repeats = value_bytes // run_bytes + 1
    pool = []
    for _ in range(count):
        run = bytes(rng.choices(_PRINTABLE, k=run_bytes))
        pool.append((run * repeats)[:value_bytes])
    return pool


# ---------------------------------------------------------------------------------------------
# Adapters: one per system, the same small interface.


class StoreAdapter(ABC):
    """One system under test.

    `put` and `get` are instance attributes bound in `open()`, straight to the library's own
    methods where its API allows: a Python wrapper adds about the same cost to every call of
    every system and blurs the differences being measured. Systems whose API needs a statement
    or a transaction per call (sqlite, LMDB writes) get the thinnest wrapper that does it.

    REQUIRES: `open` before any other call; `close` before `open` again.
    """

    name: ClassVar[str]
    # What must import for the system to run; checked in the parent before spawning.
    requires: ClassVar[str]

    put: Callable[[bytes, bytes], object]
    get: Callable[[bytes], bytes | None]

    def __init__(self, memtable_bytes: int | None = None, live_user_bytes: int = 0):
        # None keeps the library's default; the report says which was used.
        self.memtable_override = memtable_bytes
        self.live_user_bytes = live_user_bytes

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            importlib.import_module(cls.requires)
        except ImportError as exc:
            return f"{cls.requires} does not import: {exc}"
        return None

    @abstractmethod
    def library_version(self) -> str: ...

    @abstractmethod
    def settings(self) -> str:
        """The settings in effect, in a sentence or two for the report. REQUIRES: open."""

    @abstractmethod
    def open(self, path: Path) -> None: ...

    @abstractmethod
    def scan(self, start: bytes, count: int) -> list[tuple[bytes, bytes]]:
        """Seek to the first key >= start and return up to `count` entries in key order."""

    @abstractmethod
    def flush_and_settle(self) -> None:
        """Make the store's state the one reads should measure (flushed, compacted)."""

    @abstractmethod
    def close(self) -> None: ...

    def memtable_bytes(self) -> int | None:
        """Write-buffer size in effect, or None for systems without one."""
        return None

    def engine_stats(self) -> dict[str, Any]:
        """The system's own view of itself (amplification etc.), JSON-serialisable."""
        return {}


class RingkvAdapter(StoreAdapter):
    name = "ringkv"
    requires = "ringkv.storage"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        # ringkv.storage can import as an empty namespace package while the engine is being
        # written; only the names the adapter uses make it runnable.
        try:
            from ringkv.storage import Engine, Options  # noqa: F401
        except ImportError as exc:
            return f"ringkv.storage does not provide Engine and Options yet: {exc}"
        return None

    def library_version(self) -> str:
        import ringkv

        return f"ringkv {ringkv.__version__}"

    def open(self, path: Path) -> None:
        from ringkv.storage import Engine, Options

        # Engine defaults throughout (sync="interval": fsync every 100 ms), as the issue asks.
        self._options = (
            Options()
            if self.memtable_override is None
            else Options(memtable_bytes=self.memtable_override)
        )
        self._db = Engine.open(str(path), self._options)
        self.put = self._db.put
        self.get = self._db.get

    def scan(self, start: bytes, count: int) -> list[tuple[bytes, bytes]]:
        with self._db.scan(start=start) as it:
            return list(islice(it, count))

    def flush_and_settle(self) -> None:
        self._db.flush()
        self._db.compact_range()

    def close(self) -> None:
        self._db.close()

    def memtable_bytes(self) -> int | None:
        return int(self._options.memtable_bytes)

    def settings(self) -> str:
        o = self._options
        shown = (
            "sync",
            "sync_interval_ms",
            "memtable_bytes",
            "compression",
            "block_bytes",
            "bloom_bits_per_key",
            "block_cache_bytes",
            "background",
        )
        fields = ", ".join(f"{name}={getattr(o, name)!r}" for name in shown if hasattr(o, name))
        defaults = "defaults" if self.memtable_override is None else "defaults but memtable_bytes"
        return f"`Options()` {defaults}: {fields}. One `put` per write."

    def engine_stats(self) -> dict[str, Any]:
        return _jsonable(dict(self._db.stats()))


class RocksdbAdapter(StoreAdapter):
    name = "rocksdb"
    requires = "rocksdict"

    def library_version(self) -> str:
        version = f"rocksdict {_dist_version('rocksdict')}"
        rocksdb = self._options_file_value("rocksdb_version")
        return f"{version} (RocksDB {rocksdb})" if rocksdb else version

    def open(self, path: Path) -> None:
        import rocksdict

        self._path = path
        # raw_mode stores the bytes as given; rocksdict's default mode would prefix a type tag.
        options = rocksdict.Options(raw_mode=True)
        if self.memtable_override is not None:
            options.set_write_buffer_size(self.memtable_override)
        # Default WriteOptions: WAL on, sync=false (no fsync per write).
        self._db = rocksdict.Rdict(str(path), options)
        self.put = self._db.put
        self.get = self._db.get

    def scan(self, start: bytes, count: int) -> list[tuple[bytes, bytes]]:
        # items(from_key=) seeks and steps in Rust; the Python-level iter()/next() loop was
        # about 1.5x slower per entry, which would measure the binding rather than RocksDB.
        return list(islice(self._db.items(from_key=start), count))

    def flush_and_settle(self) -> None:
        self._db.flush(True)
        self._db.compact_range(None, None)

    def close(self) -> None:
        self._db.close()

    def memtable_bytes(self) -> int | None:
        value = self._options_file_value("write_buffer_size")
        return int(value) if value else None

    def settings(self) -> str:
        compression = self._options_file_value("compression") or "?"
        filter_policy = self._options_file_value("filter_policy") or "?"
        block_size = self._options_file_value("block_size") or "?"
        memtable = self.memtable_bytes()
        memtable_text = f"{memtable / MIB:g} MiB" if memtable else "?"
        changed = "" if self.memtable_override is None else " except write_buffer_size"
        return (
            f"rocksdict `Options(raw_mode=True)`, RocksDB defaults{changed}: WAL on, default "
            f"WriteOptions (sync=false: no fsync per write), write_buffer_size={memtable_text}, "
            f"compression={compression}, block_size={block_size}, filter_policy={filter_policy} "
            "(no bloom filter by default), 2 background jobs. One `put` per write."
        )

    def engine_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        for prop in (
            "rocksdb.total-sst-files-size",
            "rocksdb.live-sst-files-size",
            "rocksdb.estimate-num-keys",
        ):
            try:
                stats[prop] = self._db.property_int_value(prop)
            except Exception:  # a property missing from this RocksDB build is not an error
                continue
        return stats

    def _options_file_value(self, name: str) -> str | None:
        """A setting as RocksDB itself wrote it to its latest OPTIONS file."""
        path = getattr(self, "_path", None)
        if path is None or not path.exists():
            return None
        files = sorted(path.glob("OPTIONS-*"), key=lambda p: int(p.name.split("-")[1]))
        if not files:
            return None
        prefix = f"{name}="
        for line in files[-1].read_text().splitlines():
            line = line.strip()
            if line.startswith(prefix):
                return line[len(prefix) :]
        return None


class LeveldbAdapter(StoreAdapter):
    name = "leveldb"
    requires = "plyvel"

    def library_version(self) -> str:
        import plyvel

        return f"plyvel {plyvel.__version__} (LevelDB {plyvel.__leveldb_version__})"

    def open(self, path: Path) -> None:
        import plyvel

        kwargs: dict[str, Any] = {"create_if_missing": True}
        if self.memtable_override is not None:
            kwargs["write_buffer_size"] = self.memtable_override
        self._db = plyvel.DB(str(path), **kwargs)
        # plyvel's default put does not sync, so this is LevelDB's WAL without fsync.
        self.put = self._db.put
        self.get = self._db.get

    def scan(self, start: bytes, count: int) -> list[tuple[bytes, bytes]]:
        with self._db.iterator(start=start) as it:
            return list(islice(it, count))

    def flush_and_settle(self) -> None:
        # LevelDB's CompactRange flushes the memtable before compacting.
        self._db.compact_range()

    def close(self) -> None:
        self._db.close()

    def memtable_bytes(self) -> int | None:
        if self.memtable_override is not None:
            return self.memtable_override
        return LEVELDB_DEFAULT_WRITE_BUFFER_BYTES

    def settings(self) -> str:
        memtable = self.memtable_bytes() or 0
        return (
            "plyvel defaults: create_if_missing=True, log (WAL) on, sync=False (no fsync per "
            f"write), write_buffer_size={memtable / MIB:g} MiB, Snappy compression, 8 MiB block "
            "cache, no bloom filter. One `put` per write."
        )


class LmdbAdapter(StoreAdapter):
    name = "lmdb"
    requires = "lmdb"

    def library_version(self) -> str:
        import lmdb

        return f"py-lmdb {lmdb.__version__} (LMDB {'.'.join(map(str, lmdb.version()))})"

    def open(self, path: Path) -> None:
        import lmdb

        path.mkdir(parents=True, exist_ok=True)
        # The map only reserves address space; the file grows with the data. 8x the live data
        # leaves room for B+tree slack and the pages copy-on-write frees during overwrite.
        self._map_size = max(1 << 30, 8 * self.live_user_bytes)
        # LMDB has no WAL; sync=False (no fsync at commit) is the closest to "WAL, no fsync".
        self._env = lmdb.open(str(path), map_size=self._map_size, sync=False)
        self._read_txn: Any = None
        self.put = self._put
        self.get = self._get

    def _put(self, key: bytes, value: bytes) -> None:
        if self._read_txn is not None:
            self._end_reads()
        # One write transaction per put, like one WAL record per put in the LSMs.
        txn = self._env.begin(write=True)
        txn.put(key, value)
        txn.commit()

    def _get(self, key: bytes) -> bytes | None:
        self._begin_reads()
        return self.get(key)

    def _begin_reads(self) -> None:
        # Reads share one read-only transaction (an MVCC snapshot) until the next write; this
        # is how LMDB is meant to be read, and with no concurrent writer it returns exactly what
        # a transaction per read would.
        if self._read_txn is None:
            self._read_txn = self._env.begin()
            self.get = self._read_txn.get

    def _end_reads(self) -> None:
        self._read_txn.abort()
        self._read_txn = None
        self.get = self._get

    def scan(self, start: bytes, count: int) -> list[tuple[bytes, bytes]]:
        self._begin_reads()
        with self._read_txn.cursor() as cursor:
            if not cursor.set_range(start):
                return []
            return list(islice(cursor.iternext(), count))

    def flush_and_settle(self) -> None:
        # Nothing to settle in a B+tree; open the read snapshot here, outside the clock.
        self._begin_reads()

    def close(self) -> None:
        if self._read_txn is not None:
            self._end_reads()
        self._env.close()

    def settings(self) -> str:
        return (
            f"`lmdb.open(map_size={self._map_size / MIB:g} MiB, sync=False)`, other defaults "
            "(metasync, readahead, no writemap). LMDB has no WAL: sync=False (no fsync at "
            "commit) is the closest to the anchor's WAL without fsync. One write transaction "
            "per put; reads share one read-only transaction per read phase."
        )


class SqliteAdapter(StoreAdapter):
    name = "sqlite"
    requires = "sqlite3"

    _PUT = "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"
    _GET = "SELECT v FROM kv WHERE k = ?"
    _SCAN = "SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?"

    def library_version(self) -> str:
        import sqlite3

        return f"sqlite3 {sqlite3.sqlite_version}"

    def open(self, path: Path) -> None:
        import sqlite3

        path.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, one transaction per statement.
        self._conn = sqlite3.connect(path / "kv.sqlite", isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID"
        )
        self.put = self._put
        self.get = self._get

    def _put(self, key: bytes, value: bytes) -> None:
        self._conn.execute(self._PUT, (key, value))

    def _get(self, key: bytes) -> bytes | None:
        row = self._conn.execute(self._GET, (key,)).fetchone()
        return None if row is None else row[0]

    def scan(self, start: bytes, count: int) -> list[tuple[bytes, bytes]]:
        return self._conn.execute(self._SCAN, (start, count)).fetchall()

    def flush_and_settle(self) -> None:
        # Nothing: a B-tree has no memtable or compaction, and the WAL's automatic checkpoints
        # are part of the write cost sqlite users pay.
        pass

    def close(self) -> None:
        self._conn.close()

    def settings(self) -> str:
        page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        cache_size = self._conn.execute("PRAGMA cache_size").fetchone()[0]
        return (
            "journal_mode=WAL, synchronous=NORMAL (WAL appended, fsync only at checkpoints), "
            "table `kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID`, one autocommit "
            f"INSERT OR REPLACE per put, page_size={page_size}, cache_size={cache_size}."
        )


ADAPTERS: dict[str, type[StoreAdapter]] = {
    cls.name: cls
    for cls in (RingkvAdapter, RocksdbAdapter, LeveldbAdapter, LmdbAdapter, SqliteAdapter)
}


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


def _status_kib(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants_peak_rss_kib() -> int:
    """Largest VmHWM among live descendants, or of reaped children (RUSAGE_CHILDREN)."""
    live = [_status_kib(pid, "VmHWM") for pid in _descendant_pids(os.getpid())]
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return repr(value)


# ---------------------------------------------------------------------------------------------
# The phase sequence of one system, run inside its worker process.


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


def _worker_main(spec_path: Path) -> None:
    """Entry point of a child: run one system once and write its figures as JSON."""
    job = json.loads(spec_path.read_text())
    spec = WorkloadSpec(**job["workload"])
    workload = Workload(spec)
    # The workload lives for the whole run: take it out of the cyclic GC's view so full
    # collections during timed loops do not walk a million list slots (same for every system).
    gc.collect()
    gc.freeze()
    baseline_rss_kib = _status_kib("self", "VmRSS")
    adapter = ADAPTERS[job["system"]](job["memtable_bytes"], spec.live_user_bytes)
    result = run_sequence(adapter, workload, Path(job["root"]))
    result["baseline_rss_kib"] = baseline_rss_kib
    result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(job["result_path"]).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# The parent: spawn workers, gather, aggregate, report.


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    spec: WorkloadSpec
    repeats: int
    systems: tuple[str, ...]
    dir: Path | None
    out: Path | None
    memtable_bytes: int | None
    command: str


@dataclasses.dataclass
class BenchRun:
    config: BenchConfig
    # results[system][repeat]; every system ran once per repeat, so index r pairs runs that
    # were minutes apart on the same machine.
    results: dict[str, list[dict[str, Any]]]
    skipped: dict[str, str]
    started: datetime.datetime
    finished: datetime.datetime
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    fs_type: str

    @property
    def systems(self) -> list[str]:
        return [s for s in self.config.systems if s in self.results]

    def ops(self, system: str, phase: str) -> list[float]:
        return [r["phases"][phase]["ops_per_s"] for r in self.results[system]]

    def ratios(self, system: str, phase: str) -> list[float] | None:
        """Per-repeat ratios to the anchor measured in the same repeat."""
        if ANCHOR not in self.results:
            return None
        return [
            mine["phases"][phase]["ops_per_s"] / anchor["phases"][phase]["ops_per_s"]
            for mine, anchor in zip(self.results[system], self.results[ANCHOR])
        ]


def _src_root() -> Path:
    """The directory that holds the `ringkv` package, for the children's PYTHONPATH."""
    import ringkv

    return Path(ringkv.__file__).resolve().parent.parent


def _run_worker(system: str, config: BenchConfig, repeat: int, root: Path) -> dict[str, Any]:
    run_dir = root / f"{system}-r{repeat + 1}"
    run_dir.mkdir(parents=True)
    job_path = root / f"{system}-r{repeat + 1}.job.json"
    result_path = root / f"{system}-r{repeat + 1}.result.json"
    job_path.write_text(
        json.dumps(
            {
                "system": system,
                "workload": dataclasses.asdict(config.spec),
                "memtable_bytes": config.memtable_bytes,
                "root": str(run_dir),
                "result_path": str(result_path),
            }
        )
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_src_root()), env.get("PYTHONPATH", "")) if p
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ringkv.bench.engine", "--worker", str(job_path)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
            raise click.ClickException(
                f"{system} (repeat {repeat + 1}) failed with exit status {proc.returncode}:\n{tail}"
            )
        return json.loads(result_path.read_text())
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        job_path.unlink(missing_ok=True)
        result_path.unlink(missing_ok=True)


def _fs_type(path: Path) -> str:
    best, fstype, device = "", "?", "?"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "?"
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3:
            mount_point = fields[1]
            inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) > len(best):
                best, fstype, device = mount_point, fields[2], fields[0]
    return f"{fstype} ({device} on {best})"


def run_benchmark(config: BenchConfig, console: Console) -> BenchRun:
    skipped: dict[str, str] = {}
    systems = []
    for system in config.systems:
        reason = ADAPTERS[system].unavailable_reason()
        if reason is None:
            systems.append(system)
        else:
            skipped[system] = reason
            console.print(f"[yellow]skipping {system}: {reason}[/yellow]")
    if not systems:
        raise click.ClickException("no system to measure: none of them imports")

    if config.dir is None:
        root = Path(tempfile.mkdtemp(prefix="ringkv-bench-"))
    else:
        config.dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="ringkv-bench-", dir=config.dir))
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    try:
        for repeat in range(config.repeats):
            # Rotate the order so no system always runs first (cold machine) or last.
            shift = repeat % len(systems)
            for system in systems[shift:] + systems[:shift]:
                t0 = time.perf_counter()
                console.print(f"repeat {repeat + 1}/{config.repeats}: {system} ...", end=" ")
                results[system].append(_run_worker(system, config, repeat, root))
                console.print(f"done in {time.perf_counter() - t0:.1f} s")
        fs_type = _fs_type(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return BenchRun(
        config,
        results,
        skipped,
        started,
        datetime.datetime.now(datetime.UTC),
        load_before,
        os.getloadavg(),
        fs_type,
    )


# ---------------------------------------------------------------------------------------------
# Rendering.


def _ringkv_engine_sa(run: BenchRun) -> str:
    values = [r["engine_stats"].get("space_amplification") for r in run.results["ringkv"]]
    median = _median_or_none(values)
    return "n/a" if median is None else f"{median:.2f}"


def _short_phases(run: BenchRun) -> str:
    """Phases whose timed loop ran under SHORT_PHASE_SECONDS in some repeat, with systems."""
    by_phase: dict[str, list[str]] = {}
    for system in run.systems:
        for phase in PHASES:
            if any(
                r["phases"][phase]["seconds"] < SHORT_PHASE_SECONDS for r in run.results[system]
            ):
                by_phase.setdefault(phase, []).append(system)
    if len(by_phase) == len(PHASES) and all(len(v) == len(run.systems) for v in by_phase.values()):
        return "all of them"
    return "; ".join(
        f"{phase_label(phase, run.config.spec.scan_count)} ({', '.join(systems)})"
        for phase, systems in by_phase.items()
    )


def phase_label(phase: str, scan_count: int) -> str:
    return f"scan-{scan_count}" if phase == "scan" else phase


def _ops_text(value: float) -> str:
    return f"{value:,.0f}"


def _ratio_text(ratios: list[float] | None) -> str:
    return "n/a" if not ratios else f"{statistics.median(ratios):.2f}x"


def _mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / MIB:,.1f}"


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _amp_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def target_verdicts(run: BenchRun) -> list[tuple[str, float, float | None, str]]:
    """(phase, needed ratio, measured median ratio or None, verdict) of each target."""
    out = []
    for phase, needed in TARGETS:
        ratios = run.ratios("ringkv", phase) if "ringkv" in run.results else None
        if not ratios:
            out.append((phase, needed, None, "NOT MEASURED"))
            continue
        ratio = statistics.median(ratios)
        out.append((phase, needed, ratio, "PASS" if ratio >= needed else "SHORT"))
    return out


def _machine_lines() -> list[str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = _meminfo_kib("MemTotal")
    return [
        f"CPU: {model}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable)",
        f"Memory: {mem_kib / 1024 / 1024:.1f} GiB" if mem_kib else "Memory: ?",
        f"OS: {platform.system()} {platform.release()}",
        f"Python: {platform.python_implementation()} {platform.python_version()}",
    ]


def _meminfo_kib(field: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _git_revision() -> str:
    try:
        src = _src_root()
        rev = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"git {rev}" + (" with uncommitted changes" if dirty else "")


def render_console(run: BenchRun, console: Console) -> None:
    spec = run.config.spec
    table = Table(title=f"ops/s, median of {run.config.repeats} (ratio to RocksDB)")
    table.add_column("phase")
    for system in run.systems:
        table.add_column(system, justify="right")
    for phase in PHASES:
        row = [phase_label(phase, spec.scan_count)]
        for system in run.systems:
            row.append(
                f"{_ops_text(statistics.median(run.ops(system, phase)))} "
                f"({_ratio_text(run.ratios(system, phase))})"
            )
        table.add_row(*row)
    console.print(table)

    amp = Table(title="amplification and memory (medians; peak RSS: highest)")
    for column in (
        "system",
        "settle s",
        "write amp (/proc)",
        "write amp (engine)",
        "space amp",
        "on disk MiB",
        "peak RSS MiB",
        "workers peak MiB",
    ):
        amp.add_column(column, justify="right" if column != "system" else "left")
    for system in run.systems:
        amp.add_row(*_amp_row(run, system))
    console.print(amp)

    targets = Table(title="targets (ringkv / RocksDB)")
    for column in ("phase", "needed", "measured", "verdict"):
        targets.add_column(column)
    for phase, needed, ratio, verdict in target_verdicts(run):
        style = {"PASS": "green", "SHORT": "red"}.get(verdict, "yellow")
        targets.add_row(
            phase_label(phase, TARGET_SCAN_COUNT),
            f">= {needed:.1f}",
            "n/a" if ratio is None else f"{ratio:.2f}",
            f"[{style}]{verdict}[/{style}]",
        )
    console.print(targets)


def _amp_row(run: BenchRun, system: str) -> list[str]:
    rs = run.results[system]
    engine_wa = _median_or_none([r["engine_stats"].get("write_amplification") for r in rs])
    children = max(r["children_peak_rss_kib"] for r in rs)
    return [
        system,
        f"{statistics.median(r['settle_seconds'] for r in rs):.2f}",
        _amp_text(_median_or_none([r["disk"]["write_amplification"] for r in rs])),
        _amp_text(engine_wa),
        _amp_text(statistics.median(r["disk"]["space_amplification"] for r in rs)),
        _mib(statistics.median(r["disk"]["allocated_bytes"] for r in rs)),
        _mib(max(r["peak_rss_kib"] for r in rs) * 1024),
        _mib(children * 1024) if children else "-",
    ]


def render_markdown(run: BenchRun) -> str:
    cfg = run.config
    spec = cfg.spec
    systems = run.systems
    scan = phase_label("scan", spec.scan_count)
    lines: list[str] = []
    add = lines.append

    add("# Storage-engine benchmark")
    add("")
    add(
        f"Generated by `{cfg.command}` on {run.started:%Y-%m-%d %H:%M} UTC "
        f"({(run.finished - run.started).total_seconds() / 60:.1f} minutes). "
        "Each system ran in its own process, once per repeat, in an order rotated between "
        f"repeats; figures are medians of {cfg.repeats} repeat(s). Ratios are to RocksDB "
        "(rocksdict) measured in the same repeat, then the median of those ratios is taken. "
        "This is a benchmark, not a test: on a small shared machine expect tens of percent "
        "of noise between runs (short loops more), and read the spread table before a "
        "single number."
    )
    add("")

    add("## Machine")
    add("")
    for line in _machine_lines():
        add(f"- {line}")
    add(f"- Data directory filesystem: {run.fs_type}")
    add(
        f"- Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in run.load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in run.load_after)}"
    )
    cores = os.cpu_count() or 1
    if run.load_before[0] > 0.5 * cores:
        add(
            f"- **The machine was busy**: 1-minute load {run.load_before[0]:.2f} on {cores} cores "
            "before the run began. Other work competed for the cores, so expect more noise than "
            "usual; the wall/CPU table below shows where loops waited."
        )
    versions = {s: run.results[s][0]["library_version"] for s in systems}
    if "ringkv" in versions:
        versions["ringkv"] += f" ({_git_revision()})"
    add(f"- Libraries: {'; '.join(versions.values())}")
    add("")

    add("## Workload")
    add("")
    add(
        f"- {spec.keys:,} keys of {KEY_BYTES} bytes (16 decimal digits; seed {spec.seed}), "
        f"values of {spec.value_bytes} bytes, about half compressible (a random printable run "
        "repeated, as db_bench), drawn from a 1 MiB pool."
    )
    add(f"- Live data after load: {_mib(spec.live_user_bytes)} MiB of keys and values.")
    add("- `fillseq`: every key in key order into a fresh store (then discarded).")
    add("- `fillrandom`: the same keys in random order into a second fresh store.")
    add(f"- `overwrite`: {spec.keys:,} puts of random keys of that set (with repeats), new values.")
    add(
        "- settle (untimed, its time reported): flush and full compaction, so that reads "
        "measure a settled store; no read is served from a memtable."
    )
    add(f"- `readrandom`: {spec.reads:,} gets of existing keys in random order.")
    add(
        f"- `readmissing`: {spec.reads:,} gets of absent keys (odd numbers between the even "
        "existing ones)."
    )
    add(
        f"- `{scan}`: {spec.scans:,} scans, each a seek to a random existing key and "
        f"{spec.scan_count} entries in key order; ops/s counts scans, not entries."
    )
    add(
        "- Every answer is checked: the run fails if an existing key reads as missing, a "
        "missing key reads as present, the scans return the wrong number of entries, or "
        f"sampled values ({SAMPLED_KEYS} keys) and scans ({CHECKED_SCANS}) read back wrong."
    )
    add("")

    add("## Settings of each system")
    add("")
    for system in systems:
        add(f"- **{system}**: {run.results[system][0]['settings']}")
    if "ringkv" in systems:
        add(
            "- ringkv's default sync policy fsyncs its WAL every 100 ms; the RocksDB anchor "
            "never fsyncs (no per-write sync, no periodic sync), so ringkv does strictly more "
            "durability work here."
        )
    for system, reason in run.skipped.items():
        add(f"- **{system}**: not measured ({reason})")
    add("")

    add(f"## Operations per second (median of {cfg.repeats}; ratio to RocksDB)")
    add("")
    add("| phase | " + " | ".join(systems) + " |")
    add("|---|" + "---:|" * len(systems))
    for phase in PHASES:
        cells = []
        for system in systems:
            cells.append(
                f"{_ops_text(statistics.median(run.ops(system, phase)))} "
                f"({_ratio_text(run.ratios(system, phase))})"
            )
        add(f"| {phase_label(phase, spec.scan_count)} | " + " | ".join(cells) + " |")
    add("")

    add("## Spread across repeats (min - max ops/s)")
    add("")
    add("| phase | " + " | ".join(systems) + " |")
    add("|---|" + "---:|" * len(systems))
    for phase in PHASES:
        cells = []
        for system in systems:
            ops = run.ops(system, phase)
            cells.append(f"{_ops_text(min(ops))} - {_ops_text(max(ops))}")
        add(f"| {phase_label(phase, spec.scan_count)} | " + " | ".join(cells) + " |")
    add("")
    short = _short_phases(run)
    if short:
        add(
            f"Timed loops shorter than {SHORT_PHASE_SECONDS:g} s, whose figures are mostly "
            f"noise (use more keys or reads): {short}."
        )
        add("")

    add("## Wall time / CPU time of the timed loops (median)")
    add("")
    add(
        "CPU time is the worker process's (all its threads, not its child processes). Near 1: "
        "the loop had a core to itself. Above 1: it waited, on the disk or for a core another "
        "process held; on a busy machine this is where the noise comes from. Below 1: the "
        "worker's background threads (RocksDB's and LevelDB's flushes and compactions) used "
        "a second core; ringkv's run in child processes and do not show here."
    )
    add("")
    add("| phase | " + " | ".join(systems) + " |")
    add("|---|" + "---:|" * len(systems))
    for phase in PHASES:
        cells = []
        for system in systems:
            waits = [
                r["phases"][phase]["seconds"] / r["phases"][phase]["cpu_seconds"]
                for r in run.results[system]
                if r["phases"][phase]["cpu_seconds"] > 0
            ]
            cells.append(f"{statistics.median(waits):.2f}" if waits else "n/a")
        add(f"| {phase_label(phase, spec.scan_count)} | " + " | ".join(cells) + " |")
    add("")

    add("## Targets (ringkv / RocksDB, same run)")
    add("")
    add("| target | needed | measured | verdict |")
    add("|---|---:|---:|---|")
    for phase, needed, ratio, verdict in target_verdicts(run):
        label = phase_label(phase, TARGET_SCAN_COUNT)
        if phase == "scan" and spec.scan_count != TARGET_SCAN_COUNT:
            label += f" (measured as {scan})"
        add(
            f"| {label} | >= {needed:.1f} | {'n/a' if ratio is None else f'{ratio:.2f}'} "
            f"| {verdict} |"
        )
    add("")

    add("## Amplification and memory")
    add("")
    add(
        "| system | settle (s) | write amp (/proc) | write amp (engine) | space amp | on disk "
        "(MiB) | peak RSS (MiB) | workers peak RSS (MiB) | memtable (MiB) | data / memtable |"
    )
    add("|---|" + "---:|" * 9)
    for system in systems:
        row = _amp_row(run, system)
        memtable = run.results[system][0]["memtable_bytes"]
        row.append(_mib(memtable) if memtable else "-")
        row.append(f"{spec.live_user_bytes / memtable:.2f}" if memtable else "-")
        add("| " + " | ".join(row) + " |")
    add("")
    baseline = statistics.median(r["baseline_rss_kib"] for rs in run.results.values() for r in rs)
    add(
        "- **write amp (/proc)**: bytes the system's process tree dirtied in the page cache "
        "(`write_bytes` of `/proc/<pid>/io`, summed over the worker process, its threads, and "
        "every descendant process, live or reaped) from opening the second store to the end "
        "of the settle, divided by the user bytes written there (fillrandom + overwrite, key "
        "+ value). The kernel charges whole 4 KiB pages when they first become dirty, so a log "
        "appended between writebacks counts once per page, and a page written back (by an "
        "fsync or by the kernel's flusher) and then appended to again counts again. The "
        "same rule makes the figure low for stores that update pages in place (LMDB, "
        "sqlite's main file): with no fsync, a page changed many times between two "
        "writebacks counts once; sqlite's high figure is its WAL, which appends a whole "
        "page per committed put."
    )
    if "ringkv" in systems:
        add(
            '- **write amp (engine)**: ringkv\'s own `stats()["write_amplification"]`, read '
            "at the end of the same window: bytes the engine wrote as it counts them (WAL "
            "records, flushed and compacted SSTables) per user byte. It can differ from the "
            "/proc figure because it counts bytes handed to write() rather than pages "
            "dirtied (a WAL page re-dirtied after each 100 ms fsync counts again in /proc; "
            "the manifest and file headers count only there). ringkv's flushes and "
            "compactions run in worker processes; the /proc figure includes them through "
            "the process tree. ringkv's own `space_amplification` (its definition: table "
            f"bytes / last-level bytes) was {_ringkv_engine_sa(run)}."
        )
    add(
        "- **space amp**: allocated bytes (`st_blocks`) of the store's directory after the "
        "settle, divided by the live user bytes (keys + values), so compression can bring it "
        "below 1."
    )
    add(
        f"- **peak RSS**: `ru_maxrss` of each system's worker process, highest over repeats. It "
        f"includes the harness's pre-generated keys (about {_mib(baseline * 1024)} MiB of RSS "
        "before the store opened, the same for every system). **workers peak RSS**: the "
        "largest peak of the worker's own child processes (ringkv's compaction workers)."
    )
    if any((run.results[s][0]["memtable_bytes"] or 0) * 4 > spec.live_user_bytes for s in systems):
        add(
            "- The issue asks for a data set at least 4x the memtable. Where the last column "
            "is below 4, this run's data set is smaller than that for that system's default "
            "write buffer; reads still go to SSTables, since the store was flushed and "
            "compacted before them, but use more keys (or `--memtable-bytes`) for the "
            "figures the issue asks for."
        )
    add("")

    add("## Correctness checks")
    add("")
    add("| system | readrandom found | readmissing found | scan entries (got / expected) |")
    add("|---|---:|---:|---:|")
    for system in systems:
        r = run.results[system][-1]
        checks = r["checks"]
        add(
            f"| {system} | {checks['readrandom_found']:,} of {spec.reads:,} | "
            f"{checks['readmissing_found']:,} of {spec.reads:,} | {checks['scan_entries']:,} / {checks['scan_expected_entries']:,} |"
        )
    add("")
    add(
        "All repeats passed every check; a wrong answer stops the run instead of reaching this "
        "page."
    )
    add("")
    return "\n".join(lines)


def _default_out() -> Path:
    """docs/benchmarks/engine.md of the checkout this module sits in, else of the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "docs").is_dir():
            return parent / "docs" / "benchmarks" / "engine.md"
    return Path("docs") / "benchmarks" / "engine.md"


def _parse_systems(value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in names if s not in ADAPTERS]
    if unknown or not names:
        raise click.BadParameter(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--keys",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="Keys to load (16 bytes each).",
)
@click.option("--value-bytes", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Runs of every system; medians are reported.",
)
@click.option(
    "--systems",
    default=",".join(SYSTEMS),
    show_default=True,
    help="Comma-separated systems to run.",
)
@click.option(
    "--dir",
    "dir_",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the stores are created (default: a temporary directory).",
)
@click.option(
    "--out",
    default=None,
    help="Markdown report path (default docs/benchmarks/engine.md; '-' writes none).",
)
@click.option(
    "--scan-count",
    type=click.IntRange(min=1),
    default=TARGET_SCAN_COUNT,
    show_default=True,
    help="Entries read by each scan.",
)
@click.option(
    "--reads",
    type=click.IntRange(min=1),
    default=None,
    help="Gets in readrandom and in readmissing (default: --keys).",
)
@click.option(
    "--scans",
    type=click.IntRange(min=1),
    default=None,
    help="Scans in the scan phase (default: reads / scan-count, so the scan phase "
    "reads as many entries as readrandom reads keys).",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--memtable-bytes",
    type=click.IntRange(min=64 * 1024),
    default=None,
    help="Write-buffer size for ringkv, RocksDB and LevelDB alike "
    "(default: each system's own default).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every repeat's raw figures (engine stats included) as JSON here.",
)
@click.option(
    "--worker",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    hidden=True,
)
def cli(
    keys: int,
    value_bytes: int,
    repeats: int,
    systems: str,
    dir_: Path | None,
    out: str | None,
    scan_count: int,
    reads: int | None,
    scans: int | None,
    seed: int,
    memtable_bytes: int | None,
    json_out: Path | None,
    worker: Path | None,
) -> None:
    """Measure ringkv's storage engine beside RocksDB, LevelDB, LMDB and sqlite3."""
    if worker is not None:
        _worker_main(worker)
        return
    reads = keys if reads is None else reads
    spec = WorkloadSpec(
        keys=keys,
        value_bytes=value_bytes,
        reads=reads,
        scans=scans if scans is not None else max(1, reads // scan_count),
        scan_count=scan_count,
        seed=seed,
    )
    out_path = None if out == "-" else (_default_out() if out is None else Path(out))
    chosen = _parse_systems(systems)
    # Every workload setting spelled out, so the report's command reproduces the run.
    command = (
        f"python -m ringkv.bench.engine --keys {keys} --value-bytes {value_bytes} "
        f"--repeats {repeats} --systems {','.join(chosen)} --reads {reads} "
        f"--scans {spec.scans} --scan-count {scan_count} --seed {seed}"
    )
    if memtable_bytes is not None:
        command += f" --memtable-bytes {memtable_bytes}"
    config = BenchConfig(spec, repeats, chosen, dir_, out_path, memtable_bytes, command)
    console = Console()
    if not console.is_terminal:
        # Piped or logged output would otherwise wrap the tables at 80 columns.
        console = Console(width=140)
    run = run_benchmark(config, console)
    render_console(run, console)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(render_markdown(run))
        console.print(f"wrote {out_path}")
    if json_out is not None:
        raw = {
            "command": command,
            "started": run.started.isoformat(),
            "skipped": run.skipped,
            "results": run.results,
        }
        json_out.write_text(json.dumps(raw, indent=1))
        console.print(f"wrote {json_out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status instead of exiting (for tests)."""
    try:
        cli.main(
            args=None if argv is None else list(argv),
            prog_name="python -m ringkv.bench.engine",
            standalone_mode=False,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
