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
from ringkv.storage.sealing import KeyRing
from ringkv.storage.strategies import (
    DEFAULT_FAMILY,
    MAX_FAMILIES,
    Leveled,
    Strategy,
    Tiered,
    TimeWindow,
)

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

# What a time-window family needs to know about a value and cannot see in opaque bytes: when
# the record stops mattering (milliseconds since the epoch). Picklable, like the filter (it runs
# in flush and compaction workers), and called only for values (not for tombstones):
#   t > 0: the record is dead from t on, and the compaction filter will drop it from then on;
#   0:     it never expires on its own;
#   -t:    from t on the compaction filter *may* drop it, but only the filter can say (a delete
#          kept for a grace period and until anti-entropy has run, node/expiry_filter.py).
# REQUIRES: consistent with the compaction filter: a record whose time has come (t > 0) is one
# the filter rejects. A table whose records are all dead by the first rule is deleted unread.
ExpiryExtractor = Callable[[bytes, bytes], int]

# Routes a key to its column family: a picklable callable key -> family name (a name in
# `Options.families`, or "default"; any other answer means "default"), with an attribute
# `description`: a msgpack-able value that differs whenever the routing does (storage/strategies.py).
FamilyRouter = Callable[[bytes], str]


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

    # Column families and their compaction strategies (docs/compaction.md). `compaction` is the
    # default family's; `families` names the others, `family_router` sends each key to one.
    compaction: Strategy = dataclasses.field(default_factory=Leveled)
    families: dict[str, Strategy] = dataclasses.field(default_factory=dict)
    family_router: FamilyRouter | None = None
    # Needed by time-window families: when a value's record expires (see ExpiryExtractor).
    expiry_of: ExpiryExtractor | None = None
    # The clock expiry is judged by, in ms since the epoch (None: the system clock). The node
    # passes its own, the one its compaction filter reads.
    now_ms: Callable[[], int] | None = None
    # Free disk space a merge must find before it starts, as a percentage of its input bytes
    # (the most its output can take); below it the merge is refused and retried later.
    compaction_headroom_percent: int = 100

    # Caches.
    # Decoded blocks (Python lists) take ~1.7x their size on disk, and decoding is most of a
    # read's cost, so the cache is sized to hold a few hundred MiB of data decoded.
    block_cache_bytes: int = 256 * MIB
    table_cache_files: int = 512

    # Recovery: when True, a corrupt WAL record in the middle of a log is skipped along with the
    # rest of that log instead of stopping recovery; what was dropped is reported in stats().
    salvage: bool = False

    # Encryption at rest (docs/security.md): with a key ring, every new WAL record and SSTable
    # block is sealed with AES-256-GCM under its current key; files sealed with any key it
    # holds stay readable, and so do unsealed files. None: nothing new is sealed, and opening a
    # store with sealed files fails naming the key id it needs.
    encryption_keys: KeyRing | None = None

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
        positive("compaction_headroom_percent", self.compaction_headroom_percent, 0)
        self._check_job_callable("compaction_filter", self.compaction_filter, "(key, value) -> bool")
        self._check_job_callable("expiry_of", self.expiry_of, "(key, value) -> int")
        self._check_job_callable("family_router", self.family_router, "(key) -> family name")
        if self.now_ms is not None and not callable(self.now_ms):
            raise ConfigError("now_ms", "must be a callable () -> milliseconds since the epoch")
        if self.encryption_keys is not None and not isinstance(self.encryption_keys, KeyRing):
            raise ConfigError("encryption_keys", f"must be a storage.sealing.KeyRing or None, got "
                                                 f"{type(self.encryption_keys).__name__}")
        self._validate_families()

    def strategies(self) -> dict[str, Strategy]:
        """Every family's strategy, the default family's first."""
        return {DEFAULT_FAMILY: self.compaction, **self.families}

    def _check_job_callable(self, name: str, value, shape: str) -> None:
        if value is None:
            return
        if not callable(value):
            raise ConfigError(name, f"must be a callable {shape}")
        if self.background == "process":
            try:
                pickle.dumps(value)
            except Exception as exc:
                raise ConfigError(
                    name,
                    f"must be picklable to run in a worker process (a module-level function or "
                    f"class instance, not a lambda or closure): {exc}",
                ) from None

    def _validate_families(self) -> None:
        if not isinstance(self.compaction, (Leveled, Tiered, TimeWindow)):
            raise ConfigError("compaction", f"must be Leveled(), Tiered(...) or TimeWindow(...), got {self.compaction!r}")
        self.compaction.validate("compaction")
        if not isinstance(self.families, dict):
            raise ConfigError("families", f"must be a dict of family name -> strategy, got {self.families!r}")
        if len(self.families) >= MAX_FAMILIES:
            raise ConfigError("families", f"at most {MAX_FAMILIES - 1} families besides the default one")
        for name, strategy in self.families.items():
            if not isinstance(name, str) or not name or len(name) > 64 or name == DEFAULT_FAMILY:
                raise ConfigError("families", f"family name {name!r} must be 1..64 characters and not {DEFAULT_FAMILY!r}")
            if not isinstance(strategy, (Leveled, Tiered, TimeWindow)):
                raise ConfigError(f"families.{name}", f"must be Leveled(), Tiered(...) or TimeWindow(...), got {strategy!r}")
            strategy.validate(f"families.{name}")
        if self.families and self.family_router is None:
            raise ConfigError("family_router", "is needed to send keys to the families named in `families`")
        if self.family_router is not None and not hasattr(self.family_router, "description"):
            raise ConfigError("family_router", "must have a `description` (a msgpack-able value naming its routing)")
        if self.expiry_of is None:
            for name, strategy in self.strategies().items():
                if isinstance(strategy, TimeWindow):
                    where = "compaction" if name == DEFAULT_FAMILY else f"families.{name}"
                    raise ConfigError(where, "time_window needs Options.expiry_of, to know when a table's records expire")
