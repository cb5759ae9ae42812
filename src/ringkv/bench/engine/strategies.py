"""Compaction strategies side by side (docs/compaction.md): the systems that run the main
workload with each of ringkv's strategies (and RocksDB's universal compaction beside its
default), and the TTL workload that shows what time-window compaction is for.

    run_ttl_sequence("time_window", TtlSpec(records=1_000_000, ...), root)

Strategy systems run the same phases on the same data as the main systems (measure.py), with
one difference: their settle does not compact the store fully. It flushes and waits until the
background compactions are done, so reads, write and space amplification are those the
strategy keeps a store at, not those of a store compacted into one run (which is the same
whatever the strategy).

The TTL workload ("1 hour of time-series writes with a 10-minute TTL, compressed in time"):
`records` writes of unique keys (`series:timestamp`), their timestamps spread over an hour
of a simulated clock that the engine, its expiry extractor and its compaction filter read, so
an hour passes in the time the writes take. Each value starts with its expiry (8 bytes, ms,
big-endian): written + 10 minutes. After the writes, the background compactions settle at the
end of the hour. What is compared: the compaction I/O each strategy spent (bytes read and
written by merges) to keep the store at its live data, the space left, and the reads.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from pathlib import Path
from typing import Any

from ringkv.bench.engine.adapters import MIB, RingkvAdapter, RocksdbAdapter, _jsonable
from ringkv.bench.engine.measure import (
    BenchmarkCorrectnessError,
    Stopwatch,
    dir_bytes,
    process_tree_writes,
)
from ringkv.bench.engine.workload import _value_pool

SETTLE_TIMEOUT_S = 600.0
TTL_HOUR_MS = 3_600_000
TTL_MS = 600_000
TTL_WINDOW_MS = 60_000  # a tenth of the TTL, as TWCS guides suggest (20-30 windows alive at most)
TTL_SERIES = 1000
TTL_START_MS = 1_800_000_000_000  # the simulated hour starts here (2027)
TTL_STRATEGIES = ("leveled", "tiered", "time_window")


def never_expires(key: bytes, value: bytes) -> int:
    """The expiry extractor of the main workload's values, which carry no TTL."""
    return 0


def _strategy(name: str, window_ms: int = TTL_WINDOW_MS):
    from ringkv.storage.strategies import Leveled, Tiered, TimeWindow

    return {"leveled": Leveled(), "tiered": Tiered(), "time_window": TimeWindow(window_ms=window_ms)}[name]


def wait_for_background(db, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Until no memtable waits for its flush and no compaction is due or running."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = db.stats()
        if not stats["immutable_memtables"] and not stats["compaction_due"]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"background compactions still running after {timeout_s:.0f} s")
        time.sleep(0.05)


class RingkvStrategyAdapter(RingkvAdapter):
    """ringkv with one compaction strategy for its default family; settles in the background."""

    strategy_name = "leveled"

    def open(self, path: Path) -> None:
        from ringkv.storage import Engine, Options

        self._options = Options(
            # Windows of the default width (an hour): this workload has no TTL.
            compaction=_strategy(self.strategy_name, window_ms=3_600_000),
            expiry_of=never_expires,
            **({} if self.memtable_override is None else {"memtable_bytes": self.memtable_override}),
        )
        self._db = Engine.open(str(path), self._options)
        self.put = self._db.put
        self.get = self._db.get

    def flush_and_settle(self) -> None:
        self._db.flush()
        wait_for_background(self._db)

    def settings(self) -> str:
        from ringkv.storage.strategies import describe

        return (
            f"`Options()` defaults but compaction={describe(self._options.compaction)}. Settle: "
            "flush, then wait for the background compactions (no full compaction)."
        )


class RingkvLeveledAdapter(RingkvStrategyAdapter):
    name = "ringkv-leveled"
    strategy_name = "leveled"


class RingkvTieredAdapter(RingkvStrategyAdapter):
    name = "ringkv-tiered"
    strategy_name = "tiered"


class RingkvTimeWindowAdapter(RingkvStrategyAdapter):
    name = "ringkv-time_window"
    strategy_name = "time_window"


class RocksdbUniversalAdapter(RocksdbAdapter):
    """RocksDB's universal compaction (its size-tiered family), defaults otherwise."""

    name = "rocksdb-universal"

    def open(self, path: Path) -> None:
        import rocksdict

        self._path = path
        options = rocksdict.Options(raw_mode=True)
        options.set_compaction_style(rocksdict.DBCompactionStyle.universal())
        if self.memtable_override is not None:
            options.set_write_buffer_size(self.memtable_override)
        self._db = rocksdict.Rdict(str(path), options)
        self.put = self._db.put
        self.get = self._db.get

    def flush_and_settle(self) -> None:
        self._db.flush(True)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            busy = sum(
                self._db.property_int_value(p) or 0
                for p in ("rocksdb.compaction-pending", "rocksdb.num-running-compactions", "rocksdb.num-running-flushes")
            )
            if not busy:
                return
            time.sleep(0.05)

    def settings(self) -> str:
        return (
            "rocksdict as **rocksdb**, but compaction_style=kCompactionStyleUniversal (default "
            "universal options: size_ratio=1, min_merge_width=2, max_size_amplification_percent=200). "
            "Settle: flush, then wait for the background compactions."
        )


STRATEGY_ADAPTERS = {
    cls.name: cls
    for cls in (RingkvLeveledAdapter, RingkvTieredAdapter, RingkvTimeWindowAdapter, RocksdbUniversalAdapter)
}
STRATEGY_SYSTEMS = tuple(STRATEGY_ADAPTERS)


# ------------------------------------------------------------------------------ the TTL workload


@dataclasses.dataclass(frozen=True)
class TtlSpec:
    records: int
    value_bytes: int
    memtable_bytes: int
    seed: int

    @property
    def record_bytes(self) -> int:
        return 18 + self.value_bytes  # "ssss:ttttttttttttt" and the value


class SimulatedClock:
    """The hour the TTL workload compresses: the engine, the extractor and the filter read it.
    Pickled into a compaction job, it carries the time the job started."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def now_ms(self) -> int:
        return self.ms


def expiry_in_value(key: bytes, value: bytes) -> int:
    return int.from_bytes(value[:8], "big")


class DropExpired:
    """The TTL workload's compaction filter: a record whose expiry has passed goes."""

    def __init__(self, clock: SimulatedClock) -> None:
        self.clock = clock

    def __call__(self, key: bytes, value: bytes) -> bool:
        return int.from_bytes(value[:8], "big") > self.clock.ms


def run_ttl_sequence(strategy_name: str, spec: TtlSpec, root: Path) -> dict[str, Any]:
    """Write the simulated hour with `strategy_name`, settle, read; figures as JSON-able dict.
    Raises BenchmarkCorrectnessError if a live record reads back wrong or missing."""
    from ringkv.storage import Engine, Options

    rng = random.Random(spec.seed)
    payloads = _value_pool(rng, spec.value_bytes - 8)
    clock = SimulatedClock(TTL_START_MS)
    options = Options(
        memtable_bytes=spec.memtable_bytes,
        compaction=_strategy(strategy_name),
        expiry_of=expiry_in_value,
        compaction_filter=DropExpired(clock),
        now_ms=clock.now_ms,
    )
    path = root / f"ttl-{strategy_name}"
    step_ms = TTL_HOUR_MS / spec.records
    keys: list[bytes] = []
    io_start = process_tree_writes()
    db = Engine.open(str(path), options)
    try:
        put = db.put
        with Stopwatch() as watch:
            for i in range(spec.records):
                now = TTL_START_MS + int(i * step_ms)
                clock.ms = now
                key = b"%04d:%013d" % (i % TTL_SERIES, now)
                put(key, (now + TTL_MS).to_bytes(8, "big") + payloads[i % len(payloads)])
                keys.append(key)
        clock.ms = TTL_START_MS + TTL_HOUR_MS
        started = time.perf_counter()
        db.flush()
        wait_for_background(db)
        time.sleep(1.5)  # a poll of the compaction thread at the hour's end (expiry comes with time)
        wait_for_background(db)
        settle_seconds = time.perf_counter() - started
        stats = _jsonable(db.stats())
        allocated, _ = dir_bytes(path)
        io_settle = process_tree_writes()
        live = [k for k in keys if int(k[5:]) + TTL_MS > clock.ms]
        sample = rng.sample(live, min(len(live), 100_000))
        with Stopwatch() as reads:
            found = sum(1 for k in sample if db.get(k) is not None)
        wrong = [k for k in sample[:2000] if expiry_in_value(k, db.get(k) or bytes(8)) != int(k[5:]) + TTL_MS]
    finally:
        db.close()
        shutil.rmtree(path, ignore_errors=True)
    if found != len(sample) or wrong:
        raise BenchmarkCorrectnessError(
            f"ttl-{strategy_name}: {len(sample) - found} of {len(sample)} live records missing, "
            f"{len(wrong)} read back wrong"
        )
    user_bytes = spec.records * spec.record_bytes
    live_bytes = len(live) * spec.record_bytes
    written_proc = None if io_start is None or io_settle is None else io_settle["write_bytes"] - io_start["write_bytes"]
    return {
        "strategy": strategy_name,
        "settings": f"{options.compaction!r}",
        "records": spec.records,
        "live_records": len(live),
        "expired_records": spec.records - len(live),
        "user_bytes": user_bytes,
        "live_bytes": live_bytes,
        "write_seconds": watch.wall,
        "write_ops_per_s": spec.records / watch.wall if watch.wall else 0.0,
        "settle_seconds": settle_seconds,
        "read_ops_per_s": len(sample) / reads.wall if reads.wall else 0.0,
        "compaction_bytes_read": stats["compaction_bytes_read"],
        "compaction_bytes_written": stats["compaction_bytes_written"],
        "flush_bytes_written": stats["flush_bytes_written"],
        "wal_bytes_written": stats["wal_bytes_written"],
        "expired_tables_dropped": stats["expired_tables_dropped"],
        "expired_bytes_dropped": stats["expired_bytes_dropped"],
        "sorted_runs": stats["families"]["default"]["sorted_runs"],
        "allocated_bytes": allocated,
        "table_bytes": sum(lv["bytes"] for lv in stats["levels"]),
        "written_proc": written_proc,
        "memtable_mib": spec.memtable_bytes / MIB,
    }
