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

Modules, one concern each (every public name is importable from this package too):

- `workload`: the keys, orders and values of a run, derived from its seed (pure).
- `store_adapter`: `StoreAdapter`, the interface a system under test implements.
- `adapters`: the five systems as adapters, and their settings as the report states them.
- `measure`: one system's phases, timed and checked (`run_sequence`), and the /proc probes.
- `harness`: the parent: a worker process per system and repeat, gathered in a `BenchRun`.
- `machine`: the machine, filesystem and git revision the report names.
- `report`: the console tables, the markdown report and the target verdicts.
- `command`: the command line (`python -m ringkv.bench.engine`, `main(argv)` for tests).
"""

from ringkv.bench.engine.adapters import (
    ADAPTERS,
    ANCHOR,
    LEVELDB_DEFAULT_WRITE_BUFFER_BYTES,
    MIB,
    SYSTEMS,
    LeveldbAdapter,
    LmdbAdapter,
    RingkvAdapter,
    RocksdbAdapter,
    SqliteAdapter,
)
from ringkv.bench.engine.command import cli, main
from ringkv.bench.engine.harness import BenchConfig, BenchRun, run_benchmark, worker_main
from ringkv.bench.engine.measure import (
    CHECKED_SCANS,
    PHASES,
    BenchmarkCorrectnessError,
    Stopwatch,
    descendants_peak_rss_kib,
    dir_bytes,
    process_tree_writes,
    run_sequence,
)
from ringkv.bench.engine.report import (
    SHORT_PHASE_SECONDS,
    TARGET_SCAN_COUNT,
    TARGETS,
    phase_label,
    render_console,
    render_markdown,
    target_verdicts,
)
from ringkv.bench.engine.store_adapter import StoreAdapter
from ringkv.bench.engine.workload import (
    KEY_BYTES,
    KEY_ID_SPACE,
    SAMPLED_KEYS,
    VALUE_POOL_BYTES,
    Workload,
    WorkloadSpec,
)

__all__ = [
    "ADAPTERS",
    "ANCHOR",
    "CHECKED_SCANS",
    "KEY_BYTES",
    "KEY_ID_SPACE",
    "LEVELDB_DEFAULT_WRITE_BUFFER_BYTES",
    "MIB",
    "PHASES",
    "SAMPLED_KEYS",
    "SHORT_PHASE_SECONDS",
    "SYSTEMS",
    "TARGETS",
    "TARGET_SCAN_COUNT",
    "VALUE_POOL_BYTES",
    "BenchConfig",
    "BenchRun",
    "BenchmarkCorrectnessError",
    "LeveldbAdapter",
    "LmdbAdapter",
    "RingkvAdapter",
    "RocksdbAdapter",
    "SqliteAdapter",
    "Stopwatch",
    "StoreAdapter",
    "Workload",
    "WorkloadSpec",
    "cli",
    "descendants_peak_rss_kib",
    "dir_bytes",
    "main",
    "phase_label",
    "process_tree_writes",
    "render_console",
    "render_markdown",
    "run_benchmark",
    "run_sequence",
    "target_verdicts",
    "worker_main",
]
