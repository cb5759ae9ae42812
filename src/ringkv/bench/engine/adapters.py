"""The systems the storage-engine benchmark measures, each a `StoreAdapter`: ringkv's engine and
its anchors RocksDB (rocksdict), LevelDB (plyvel), LMDB (py-lmdb) and sqlite3.

Nothing here is tuned for any system: every anchor keeps its library's defaults except where
a setting must be chosen (LMDB's map size and sync, sqlite's journal mode), and each
adapter's `settings()` states what was in effect, for the report. A library is imported only
when its store opens, so a system whose library is missing is skipped (`unavailable_reason`)
rather than breaking the import of this module.
"""

from __future__ import annotations

import importlib.metadata
from itertools import islice
from pathlib import Path
from typing import Any

from ringkv.bench.engine.store_adapter import StoreAdapter

SYSTEMS = ("ringkv", "rocksdb", "leveldb", "lmdb", "sqlite")
# Every ratio in the report is to this system, measured in the same repeat.
ANCHOR = "rocksdb"
LEVELDB_DEFAULT_WRITE_BUFFER_BYTES = 4 << 20  # leveldb/include/leveldb/options.h
MIB = 1 << 20


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
        self._options.encryption_keys = self.encryption_keys()
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

    def encryption_keys(self):
        return None


class SealedRingkvAdapter(RingkvAdapter):
    """ringkv's engine with encryption at rest: the same defaults plus a one-key ring (a fresh
    random key per run), so every WAL record and table block is sealed with AES-256-GCM. Not in
    the default systems: run beside "ringkv" to measure the cost (docs/benchmarks/engine.md)."""

    name = "ringkv-sealed"

    def encryption_keys(self):
        import os

        from ringkv.storage.sealing import KEY_BYTES, KeyRing

        return KeyRing({1: os.urandom(KEY_BYTES)}, "the benchmark's random key")

    def settings(self) -> str:
        return super().settings() + " Sealed: `encryption_keys` = one random AES-256 key."


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


class PureRingkvAdapter(RingkvAdapter):
    """ringkv's engine as Python source: the same defaults in a worker started with
    RINGKV_PURE=1, so the compiled hot path is set aside (ringkv/hotpath.py). Not in the default
    systems: run beside "ringkv" to measure what the compile gains (docs/compiled.md)."""

    name = "ringkv-pure"
    environment = {"RINGKV_PURE": "1"}

    def open(self, path: Path) -> None:
        from ringkv import hotpath

        super().open(path)
        if hotpath.module_state("ringkv.storage.engine") != "pure":
            raise RuntimeError("ringkv-pure: the engine runs compiled although RINGKV_PURE=1 is set")

    def settings(self) -> str:
        return super().settings() + " Pure Python: RINGKV_PURE=1."


ADAPTERS: dict[str, type[StoreAdapter]] = {
    cls.name: cls
    for cls in (RingkvAdapter, SealedRingkvAdapter, PureRingkvAdapter, RocksdbAdapter, LeveldbAdapter,
                LmdbAdapter, SqliteAdapter)
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return repr(value)


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"
