"""The engine against a dict: random puts, deletes, batches, reads, scans, flushes, compactions
and close-and-reopen, with memtables small enough (64 KiB) and blocks small enough (256 bytes)
that rotations, flushes and compactions really happen. Any difference from the dict fails with
the shortest sequence of operations hypothesis finds.

Most runs use `background="thread"` for speed; one configuration keeps the default worker
processes, so the code path a server runs is checked too. RINGKV_TEST_FULL=1 runs more examples.

Every compaction strategy runs the same machine (docs/compaction.md): tiered, time-window, and
an engine of three column families (leveled, tiered, time-window) whose routing changes on a
reopen (the tables are re-routed). Those runs also carry a compaction filter and an expiry
extractor: a value filled with EXPIRED_FILL has expired (the filter drops it, a time-window
table made only of such values is deleted unread), so such a key may read as missing, but
never as an older value: an expired record dropped must not uncover the version it replaced.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ringkv.storage import Engine, Options, WriteBatch
from ringkv.storage.strategies import Leveled, PrefixRouter, Tiered, TimeWindow

FULL = os.environ.get("RINGKV_TEST_FULL") == "1"

PREFIXES = [b"a:", b"b:", b"user:", b"\xff"]
KEYS = [p + b"%02d" % i for p in PREFIXES for i in range(25)] + [b"\xff\xff", b"user", b"a"]
keys = st.sampled_from(KEYS)
# Sizes from empty to 3 KiB; a value is a repeated byte so hypothesis need not generate it.
values = st.builds(lambda fill, n: bytes([fill]) * n, st.integers(0, 255), st.sampled_from([0, 1, 7, 100, 900, 3000]))
bounds = st.one_of(st.none(), keys)

# What the expiry extractor and the compaction filter of the expiring runs read in a value.
EXPIRED_FILL = 0xEE  # expired long ago: the filter drops it
NEVER_FILL = 0x00  # never expires: blocks the deletion of newer expired tables above it
FILTER_FILL = 0xDD  # only the filter may drop it, and it keeps it: re-filtered, never deleted unread
FAR_FUTURE_MS = 1 << 45
fills = st.sampled_from([EXPIRED_FILL, NEVER_FILL, FILTER_FILL, 1, 7, 200])
expiring_values = st.builds(lambda fill, n: bytes([fill]) * n, fills, st.sampled_from([0, 1, 100, 900, 3000]))


def expiry_of(key: bytes, value: bytes) -> int:
    fill = value[0] if value else NEVER_FILL
    if fill == EXPIRED_FILL:
        return 1
    if fill == NEVER_FILL:
        return 0
    if fill == FILTER_FILL:
        return -1
    return FAR_FUTURE_MS


def drop_expired(key: bytes, value: bytes) -> bool:
    return value[:1] != bytes([EXPIRED_FILL])


def expiring(value: bytes) -> bool:
    return value[:1] == bytes([EXPIRED_FILL])


class ModelClock:
    """The time-window families' clock: moved by the `advance_time` rule, not by the wall."""

    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def now_ms(self) -> int:
        return self.ms


def small(**overrides) -> Options:
    return Options(
        memtable_bytes=64 * 1024,
        block_bytes=256,
        target_file_bytes=64 * 1024,
        level1_max_bytes=64 * 1024,
        level0_compaction_trigger_files=2,
        level0_stop_writes_files=8,
        **overrides,
    )


class EngineMatchesDict(RuleBasedStateMachine):
    options = small(background="thread")

    def __init__(self) -> None:
        super().__init__()
        self.path = tempfile.mkdtemp(prefix="ringkv-model-")
        self.clock = ModelClock()
        self.options = self.options_now()
        self.db = Engine.open(self.path, self.options)
        self.model: dict[bytes, bytes] = {}

    def options_now(self) -> Options:
        return type(self).options

    def matches(self, got: list[tuple[bytes, bytes]], expected: list[tuple[bytes, bytes]]) -> None:
        """`got` is `expected`, except that keys whose value has expired may be missing."""
        if self.options.compaction_filter is None:
            assert got == expected
            return
        have = dict(got)
        assert [k for k, _ in got] == sorted(have), "scan out of key order"
        for k, v in expected:
            if k in have:
                assert have.pop(k) == v, f"{k!r} reads an older value"
            else:
                assert expiring(v), f"{k!r} is missing but its value has not expired"
        assert not have, f"keys that were deleted came back: {sorted(have)[:3]}"

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def expected(self, start=None, end=None):
        return [
            (k, v) for k, v in sorted(self.model.items()) if (start is None or k >= start) and (end is None or k < end)
        ]

    @rule(key=keys, value=values)
    def put(self, key, value):
        self.db.put(key, value)
        self.model[key] = value

    @rule(key=keys)
    def delete(self, key):
        self.db.delete(key)
        self.model.pop(key, None)

    @rule(ops=st.lists(st.tuples(keys, st.one_of(st.none(), values)), min_size=1, max_size=10))
    def write_batch(self, ops):
        batch = WriteBatch()
        for key, value in ops:
            if value is None:
                batch.delete(key)
                self.model.pop(key, None)
            else:
                batch.put(key, value)
                self.model[key] = value
        self.db.write_batch(batch)

    @rule(prefix=st.sampled_from(PREFIXES), fill=st.integers(0, 255), size=st.sampled_from([1000, 3000]))
    def bulk_put(self, prefix, fill, size):
        """About a memtable's worth of writes at once, so rotation and flushes follow."""
        value = bytes([fill]) * size
        for i in range(25):
            key = prefix + b"%02d" % i
            self.db.put(key, value)
            self.model[key] = value

    @rule(key=keys)
    def get(self, key):
        got = self.db.get(key)
        self.matches([] if got is None else [(key, got)], [(key, self.model[key])] if key in self.model else [])

    @rule(start=bounds, end=bounds)
    def scan(self, start, end):
        with self.db.scan(start, end) as it:
            self.matches(list(it), self.expected(start, end))

    @rule(prefix=st.sampled_from([*PREFIXES, b"", b"user:1", b"b"]))
    def scan_prefix(self, prefix):
        with self.db.scan_prefix(prefix) as it:
            self.matches(list(it), [(k, v) for k, v in self.expected() if k.startswith(prefix)])

    @rule()
    def flush(self):
        self.db.flush()
        assert self.db.stats()["immutable_memtables"] == 0

    @rule()
    def compact_everything(self):
        self.db.compact_range()
        assert self.db.stats()["levels"][0]["tables"] == 0

    @rule(start=bounds, end=bounds)
    def compact_range(self, start, end):
        self.db.compact_range(start, end)

    @rule()
    def close_and_reopen(self):
        self.db.close()
        self.db = Engine.open(self.path, self.options)
        assert self.db.stats()["recovery"] == [], "a clean close leaves nothing to salvage"

    @invariant()
    def no_background_error(self):
        assert self.db.stats()["background_error"] is None

    @invariant()
    def whole_store_matches(self):
        with self.db.scan() as it:
            self.matches(list(it), self.expected())


class ExpiringEngineMatchesDict(EngineMatchesDict):
    """The machine with expiring values, a clock for time windows and (with `reroute`) a
    change of routing at a reopen."""

    def options_now(self) -> Options:
        return dataclasses.replace(type(self).options, now_ms=self.clock.now_ms)

    @rule(key=keys, value=expiring_values)
    def put_expiring(self, key, value):
        self.db.put(key, value)
        self.model[key] = value

    @rule(prefix=st.sampled_from(PREFIXES), fill=fills, size=st.sampled_from([1000, 3000]))
    def bulk_put_expiring(self, prefix, fill, size):
        """A memtable's worth of one kind: a table made only of expired values follows."""
        self.bulk_put(prefix, fill, size)

    @rule(windows=st.sampled_from([1, 3]))
    def advance_time(self, windows):
        self.clock.ms += windows * WINDOW_MS


EXAMPLES = 100 if FULL else 25
STEPS = 80 if FULL else 50
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


WINDOW_MS = 60_000
EXPIRING = dict(compaction_filter=drop_expired, expiry_of=expiry_of)
TIERED = Tiered(min_merge_runs=2, max_merge_runs=4, max_runs=6)
TIME_WINDOW = TimeWindow(window_ms=WINDOW_MS, min_merge_tables=2)
ROUTERS = [
    PrefixRouter({b"a:": "tiered", b"user:": "windows"}),
    PrefixRouter({b"b:": "tiered", b"\xff": "windows", b"user:1": "tiered"}),
]


class ThreadBackgroundLz4(EngineMatchesDict):
    options = small(background="thread", sync="never")


class ThreadBackgroundZstdTinyCachesSyncAlways(EngineMatchesDict):
    options = small(
        background="thread", sync="always", compression="zstd", block_cache_bytes=4096, table_cache_files=4
    )


class WorkerProcessesUncompressed(EngineMatchesDict):
    options = small(compression="none", sync_interval_ms=5)  # background="process", the default


class TieredThreadBackground(EngineMatchesDict):
    options = small(background="thread", sync="never", compaction=TIERED)


class TieredWithFilter(ExpiringEngineMatchesDict):
    options = small(background="thread", sync="never", compaction=TIERED, **EXPIRING)


class TimeWindowWithFilter(ExpiringEngineMatchesDict):
    options = small(background="thread", sync="never", compaction=TIME_WINDOW, **EXPIRING)


class LeveledWithFilter(ExpiringEngineMatchesDict):
    options = small(background="thread", sync="never", **EXPIRING)


class ThreeFamiliesRoutedAnew(ExpiringEngineMatchesDict):
    """Leveled, tiered and time-window families in one engine; `reroute` reopens it with the
    other router, which sends other keys to other families."""

    routing = 0
    families = {"tiered": TIERED, "windows": TIME_WINDOW}

    def options_now(self) -> Options:
        return dataclasses.replace(
            super().options_now(), families=self.families, family_router=ROUTERS[self.routing]
        )

    @rule()
    def reroute(self):
        self.db.close()
        self.routing = 1 - self.routing
        self.options = self.options_now()
        self.db = Engine.open(self.path, self.options)
        assert set(self.db.stats()["families"]) == {"default", "tiered", "windows"}


class ThreeFamiliesThreadBackground(ThreeFamiliesRoutedAnew):
    options = small(background="thread", sync="never", **EXPIRING)


class ThreeFamiliesWorkerProcesses(ThreeFamiliesRoutedAnew):
    options = small(compression="none", sync_interval_ms=5, compaction=Leveled(), **EXPIRING)


test_engine_matches_dict_thread_lz4 = ThreadBackgroundLz4.TestCase
test_engine_matches_dict_thread_lz4.settings = SETTINGS
test_engine_matches_dict_thread_zstd_tiny_caches_sync_always = ThreadBackgroundZstdTinyCachesSyncAlways.TestCase
test_engine_matches_dict_thread_zstd_tiny_caches_sync_always.settings = SETTINGS
test_engine_matches_dict_worker_processes = WorkerProcessesUncompressed.TestCase
test_engine_matches_dict_worker_processes.settings = settings(SETTINGS, max_examples=max(4, EXAMPLES // 2))

# The strategies: fewer examples each (the machine is the same), more under RINGKV_TEST_FULL=1.
STRATEGY_SETTINGS = settings(SETTINGS, max_examples=max(12, EXAMPLES // 2))
test_tiered_engine_matches_dict = TieredThreadBackground.TestCase
test_tiered_engine_matches_dict.settings = STRATEGY_SETTINGS
test_tiered_engine_with_expiry_matches_dict = TieredWithFilter.TestCase
test_tiered_engine_with_expiry_matches_dict.settings = STRATEGY_SETTINGS
test_time_window_engine_with_expiry_matches_dict = TimeWindowWithFilter.TestCase
test_time_window_engine_with_expiry_matches_dict.settings = STRATEGY_SETTINGS
test_leveled_engine_with_expiry_matches_dict = LeveledWithFilter.TestCase
test_leveled_engine_with_expiry_matches_dict.settings = STRATEGY_SETTINGS
test_three_families_rerouted_match_dict = ThreeFamiliesThreadBackground.TestCase
test_three_families_rerouted_match_dict.settings = STRATEGY_SETTINGS
test_three_families_in_worker_processes_match_dict = ThreeFamiliesWorkerProcesses.TestCase
test_three_families_in_worker_processes_match_dict.settings = settings(SETTINGS, max_examples=max(4, EXAMPLES // 6))
