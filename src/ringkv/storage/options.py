"""Options of the storage engine: one typed object, defaults with units in the names.

`Options.validate()` runs at `Engine.open` and raises `ConfigError` naming the bad field, so a
mistake stops the engine before it touches the disk.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from typing import Literal

from ringkv.errors import ConfigError

KIB = 1024
MIB = 1024 * KIB

# Hard limits of the formats themselves (docs/formats/wal.md, docs/formats/sstable.md).
MAX_KEY_BYTES = 64 * KIB
MAX_VALUE_BYTES_CEILING = 64 * MIB

SyncPolicy = Literal["always", "interval", "never"]
Compression = Literal["none", "lz4", "zstd"]
Background = Literal["process", "thread"]

# A compaction filter sees (key, value) of every live record compaction reads and returns True to
# keep it. It runs in the compaction worker process, so it must be picklable (a module-level
# function, or an instance of a module-level class).
CompactionFilter = Callable[[bytes, bytes], bool]


@dataclasses.dataclass
class Options:
    # Durability of the write-ahead log.
    sync: SyncPolicy = "interval"
    sync_interval_ms: int = 100

    # Write path.
    memtable_bytes: int = 16 * MIB
    max_immutable_memtables: int = 2
    max_value_bytes: int = 1 * MIB

    # SSTables.
    block_bytes: int = 4 * KIB
    compression: Compression = "lz4"
    bloom_bits_per_key: int = 10
    target_file_bytes: int = 8 * MIB

    # Leveled compaction (docs/compaction.md).
    level0_compaction_trigger_files: int = 4
    level0_stop_writes_files: int = 12
    level1_max_bytes: int = 64 * MIB
    level_size_multiplier: int = 10
    max_levels: int = 7
    compaction_rate_bytes_per_s: int = 64 * MIB
    compaction_filter: CompactionFilter | None = None
    # Where flushes and compaction merges run: a worker process keeps the caller's thread (and a
    # serving event loop) free of the GIL; "thread" runs them in-process (small embedded uses,
    # tests that hook the engine's threads). Either way every file operation goes through the
    # engine's file system, which a job carries into its worker (docs/storage-faults.md).
    background: Background = "process"

    # Caches.
    # Decoded blocks (Python lists) take ~1.7x their size on disk, and decoding is most of a
    # read's cost, so the cache is sized to hold a few hundred MiB of data decoded.
    block_cache_bytes: int = 256 * MIB
    table_cache_files: int = 512

    # Recovery: when True, a corrupt WAL record in the middle of a log is skipped along with the
    # rest of that log instead of stopping recovery; what was dropped is reported in stats().
    salvage: bool = False

    def validate(self) -> None:
        def positive(name: str, value: int, minimum: int = 1) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")

        if self.sync not in ("always", "interval", "never"):
            raise ConfigError("sync", f"must be 'always', 'interval' or 'never', got {self.sync!r}")
        if self.compression not in ("none", "lz4", "zstd"):
            raise ConfigError(
                "compression", f"must be 'none', 'lz4' or 'zstd', got {self.compression!r}"
            )
        if self.background not in ("process", "thread"):
            raise ConfigError(
                "background", f"must be 'process' or 'thread', got {self.background!r}"
            )
        positive("sync_interval_ms", self.sync_interval_ms)
        positive("memtable_bytes", self.memtable_bytes, 64 * KIB)
        positive("max_immutable_memtables", self.max_immutable_memtables)
        positive("max_value_bytes", self.max_value_bytes)
        if self.max_value_bytes > MAX_VALUE_BYTES_CEILING:
            raise ConfigError(
                "max_value_bytes", f"must be <= {MAX_VALUE_BYTES_CEILING} (64 MiB), got {self.max_value_bytes}"
            )
        positive("block_bytes", self.block_bytes, 256)
        positive("bloom_bits_per_key", self.bloom_bits_per_key)
        positive("target_file_bytes", self.target_file_bytes, 64 * KIB)
        positive("level0_compaction_trigger_files", self.level0_compaction_trigger_files)
        positive("level0_stop_writes_files", self.level0_stop_writes_files)
        if self.level0_stop_writes_files < self.level0_compaction_trigger_files:
            raise ConfigError(
                "level0_stop_writes_files",
                f"must be >= level0_compaction_trigger_files ({self.level0_compaction_trigger_files})",
            )
        positive("level1_max_bytes", self.level1_max_bytes, 64 * KIB)
        positive("level_size_multiplier", self.level_size_multiplier, 2)
        positive("max_levels", self.max_levels, 2)
        positive("compaction_rate_bytes_per_s", self.compaction_rate_bytes_per_s, 64 * KIB)
        positive("block_cache_bytes", self.block_cache_bytes, 0)
        positive("table_cache_files", self.table_cache_files, 4)
        if self.compaction_filter is not None:
            if not callable(self.compaction_filter):
                raise ConfigError("compaction_filter", "must be a callable (key, value) -> bool")
            if self.background == "process":
                try:
                    pickle.dumps(self.compaction_filter)
                except Exception as exc:
                    raise ConfigError(
                        "compaction_filter",
                        f"must be picklable to run in a worker process (a module-level function or "
                        f"class instance, not a lambda or closure): {exc}",
                    ) from None
