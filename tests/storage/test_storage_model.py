"""The engine against a dict: random puts, deletes, batches, reads, scans, flushes, compactions
and close-and-reopen, with memtables small enough (64 KiB) and blocks small enough (256 bytes)
that rotations, flushes and compactions really happen. Any difference from the dict fails with
the shortest sequence of operations hypothesis finds.

Most runs use `background="thread"` for speed; one configuration keeps the default worker
processes, so the code path a server runs is checked too. RINGKV_TEST_FULL=1 runs more examples.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ringkv.storage import Engine, Options, WriteBatch

FULL = os.environ.get("RINGKV_TEST_FULL") == "1"

PREFIXES = [b"a:", b"b:", b"user:", b"\xff"]
KEYS = [p + b"%02d" % i for p in PREFIXES for i in range(25)] + [b"\xff\xff", b"user", b"a"]
keys = st.sampled_from(KEYS)
# Sizes from empty to 3 KiB; a value is a repeated byte so hypothesis need not generate it.
values = st.builds(lambda fill, n: bytes([fill]) * n, st.integers(0, 255), st.sampled_from([0, 1, 7, 100, 900, 3000]))
bounds = st.one_of(st.none(), keys)


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
        self.db = Engine.open(self.path, self.options)
        self.model: dict[bytes, bytes] = {}

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
        assert self.db.get(key) == self.model.get(key)

    @rule(start=bounds, end=bounds)
    def scan(self, start, end):
        with self.db.scan(start, end) as it:
            assert list(it) == self.expected(start, end)

    @rule(prefix=st.sampled_from([*PREFIXES, b"", b"user:1", b"b"]))
    def scan_prefix(self, prefix):
        with self.db.scan_prefix(prefix) as it:
            assert list(it) == [(k, v) for k, v in self.expected() if k.startswith(prefix)]

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
            assert list(it) == self.expected()


EXAMPLES = 100 if FULL else 25
STEPS = 80 if FULL else 50
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class ThreadBackgroundLz4(EngineMatchesDict):
    options = small(background="thread", sync="never")


class ThreadBackgroundZstdTinyCachesSyncAlways(EngineMatchesDict):
    options = small(
        background="thread", sync="always", compression="zstd", block_cache_bytes=4096, table_cache_files=4
    )


class WorkerProcessesUncompressed(EngineMatchesDict):
    options = small(compression="none", sync_interval_ms=5)  # background="process", the default


test_engine_matches_dict_thread_lz4 = ThreadBackgroundLz4.TestCase
test_engine_matches_dict_thread_lz4.settings = SETTINGS
test_engine_matches_dict_thread_zstd_tiny_caches_sync_always = ThreadBackgroundZstdTinyCachesSyncAlways.TestCase
test_engine_matches_dict_thread_zstd_tiny_caches_sync_always.settings = SETTINGS
test_engine_matches_dict_worker_processes = WorkerProcessesUncompressed.TestCase
test_engine_matches_dict_worker_processes.settings = settings(SETTINGS, max_examples=max(4, EXAMPLES // 2))
