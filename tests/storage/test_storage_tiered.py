"""Size-tiered compaction (docs/compaction.md, storage/tiered.py), as an operator sees it: runs
of similar size merge and much larger ones are left alone, an overwrite-heavy load is written
fewer times than under leveled compaction, a lookup never probes more than `max_runs` runs,
and a merge the disk cannot hold is refused before it starts, with an error naming the bytes
needed and free, a counter in stats(), and a retry once there is room."""

from __future__ import annotations

import random

import pytest

from ringkv.storage import Engine, Options, tiered
from ringkv.storage import engine as engine_module
from ringkv.storage.engine import CompactionSpaceError
from ringkv.storage.fs import PosixFileSystem
from ringkv.storage.sstable import TableMeta
from ringkv.storage.strategies import Leveled, Tiered
from ringkv.storage.version import Version
from ringkv.testing.wait import wait_until

KIB = 1024


class FakeTable:
    """What picking reads of a table: its number, bounds and size."""

    def __init__(self, number: int, file_bytes: int):
        self.number = number
        self.smallest, self.largest = b"a", b"z"
        self.meta = TableMeta(number, file_bytes, b"a", b"z", 1, 0, file_bytes)


def version_of(level0: list[int], runs: list[int]) -> Version:
    """Level-0 tables (sizes, newest first), then merged runs (sizes, newest first)."""
    n = iter(range(1, 1000))
    return Version([[FakeTable(next(n), b) for b in level0]] + [[FakeTable(next(n), b)] for b in runs])


def sizes(pick) -> list[int]:
    return [sum(t.meta.file_bytes for t in run) for run in pick.runs()]


def test_four_flushes_of_similar_size_merge_and_the_much_larger_run_below_is_left_alone():
    pick = tiered.pick(version_of([10, 11, 9, 10], [400]), Tiered())
    assert sizes(pick) == [10, 11, 9, 10]


def test_runs_of_similar_size_a_tier_down_merge_when_the_newest_are_too_few():
    # Three fresh flushes, then four runs of ~40: the tier of 40s merges.
    pick = tiered.pick(version_of([10, 10, 10], [40, 38, 41, 39]), Tiered())
    assert sizes(pick) == [10, 10, 10, 40, 38, 41, 39] or sizes(pick) == [40, 38, 41, 39]
    assert pick is not None and len(pick.runs()) >= 4


def test_a_merge_that_takes_level0_tables_takes_the_oldest_ones_too():
    """No level-0 table may sit below a merged run newer than it."""
    pick = tiered.pick(version_of([10, 10, 10, 10, 100, 100], []), Tiered(max_space_amplification_percent=100_000))
    assert sizes(pick) == [10, 10, 10, 10, 100, 100]


def test_fewer_runs_than_min_merge_runs_are_not_merged():
    assert tiered.pick(version_of([10, 10, 10], []), Tiered()) is None


def test_space_amplification_over_the_limit_merges_every_run():
    """Runs above the oldest hold 3x its bytes: overwritten versions waste that space."""
    pick = tiered.pick(version_of([10, 20], [40, 30]), Tiered(min_merge_runs=4))
    assert sizes(pick) == [10, 20, 40, 30]
    assert "space amplification" in pick.reason


def test_runs_of_very_different_sizes_merge_anyway_past_half_of_max_runs():
    """No four runs are alike, but a lookup would probe too many: the newest merge."""
    version = version_of([1], [4, 16, 64, 256, 1024, 4096, 16384, 65536])
    strategy = Tiered(max_runs=12, max_space_amplification_percent=100_000)
    pick = tiered.pick(version, strategy)
    assert pick is not None and "max_runs" in pick.reason
    assert sizes(pick) == [1, 4, 16, 64]  # back to max_runs // 2 = 6 runs once merged


def options(strategy, **overrides) -> Options:
    base = dict(
        background="thread",
        compression="none",
        memtable_bytes=64 * KIB,
        target_file_bytes=64 * KIB,
        level1_max_bytes=256 * KIB,
        compaction=strategy,
    )
    base.update(overrides)
    return Options(**base)


def overwrite_heavily(db: Engine, seed: int = 3, writes: int = 40_000, keys: int = 4_000) -> dict[bytes, bytes]:
    rng = random.Random(seed)
    model = {}
    for i in range(writes):
        key = b"key:%05d" % rng.randrange(keys)
        value = b"%08d" % i + bytes(92)
        db.put(key, value)
        model[key] = value
    db.flush()
    return model


def settled(db: Engine) -> bool:
    return db._pick() is None


def test_an_overwrite_heavy_load_is_rewritten_fewer_times_than_under_leveled_compaction(tmp_path):
    written = {}
    for name, strategy in (("leveled", Leveled()), ("tiered", Tiered())):
        with Engine.open(str(tmp_path / name), options(strategy)) as db:
            model = overwrite_heavily(db)
            wait_until(lambda db=db: settled(db), 30, "compactions to settle", interval_s=0.05)
            with db.scan() as it:
                assert dict(it) == model
            written[name] = db.stats()["compaction_bytes_written"]
    assert written["tiered"] * 1.4 < written["leveled"], written


def test_a_lookup_never_probes_more_than_max_runs_sorted_runs(tmp_path, seal):
    """Every state the engine ever installs is checked, not a sample: writers stall before a
    flush would pass the cap, whatever the merges are doing."""
    strategy = Tiered(min_merge_runs=3, max_runs=6, size_ratio_percent=20)
    most = []

    class Watched(Engine):  # the compiled Engine's type is immutable: watch from a subclass
        def _install(self, state):
            most.append(max(len(v.sorted_runs()) for v in state.versions))
            super()._install(state)

    with Watched.open(str(tmp_path), options(strategy, compaction_rate_bytes_per_s=1024 * KIB,
                                            encryption_keys=seal.keys)) as db:
        model = overwrite_heavily(db, writes=12_000, keys=12_000)
        for key, value in list(model.items())[::97]:
            assert db.get(key) == value
        assert db.stats()["compactions"] >= 1, "no tiered merge ran: the test proves nothing sealed"
        db.compact_range()  # every run merged into one
        with db.scan() as it:
            assert dict(it) == model
    seal.check(tmp_path)
    assert max(most) <= strategy.max_runs
    assert max(most) >= 4, "the cap was never approached: the test proves nothing"


class NearlyFullDisk(PosixFileSystem):
    """A disk with `free` bytes left, as statvfs would say."""

    def __init__(self, free: int):
        self.free = free

    def free_bytes(self, path: str) -> int:
        return self.free


def test_merge_refused_when_the_disk_cannot_hold_its_output_names_the_bytes_needed_and_free(tmp_path):
    fs = NearlyFullDisk(free=10_000)
    strategy = Tiered(min_merge_runs=8)  # nothing merges of its own accord here
    with Engine.open(str(tmp_path), options(strategy), fs=fs) as db:
        for flush in range(3):
            for i in range(200):
                db.put(b"key:%03d" % i, b"v%d" % flush * 100)
            db.flush()
        needed = sum(lv["bytes"] for lv in db.stats()["levels"])
        with pytest.raises(CompactionSpaceError) as err:
            db.compact_range()
        message = str(err.value)
        assert f"needs {needed:,} bytes free" in message and "10,000 bytes are free" in message
        assert (err.value.needed_bytes, err.value.free_bytes) == (needed, 10_000)
        stats = db.stats()
        assert stats["compaction_space_refusals"] == 1
        assert stats["compaction_space_error"] == message
        assert stats["background_error"] is None, "a refused merge does not turn the engine read-only"
        assert stats["families"]["default"]["sorted_runs"] == 3, "nothing changed"
        db.put(b"still", b"writable")
        fs.free = 1 << 40
        db.compact_range()
        assert db.stats()["families"]["default"]["sorted_runs"] == 1
        assert db.get(b"key:000") == b"v2" * 100


def test_background_merge_refused_for_space_is_counted_and_retried_once_there_is_room(tmp_path, monkeypatch, seal):
    monkeypatch.setattr(engine_module, "SPACE_RETRY_S", 0.05)
    fs = NearlyFullDisk(free=1_000)
    with Engine.open(str(tmp_path), options(Tiered(min_merge_runs=2), encryption_keys=seal.keys), fs=fs) as db:
        for flush in range(2):
            for i in range(200):
                db.put(b"key:%03d" % i, b"v%d" % flush * 100)
            db.flush()
        wait_until(lambda: db.stats()["compaction_space_refusals"] >= 1, 10, "a refusal")
        assert db.stats()["families"]["default"]["sorted_runs"] == 2
        fs.free = 1 << 40
        wait_until(lambda: db.stats()["families"]["default"]["sorted_runs"] == 1, 10, "the retried merge")
        assert db.stats()["background_error"] is None
        assert db.get(b"key:000") == b"v1" * 100
    seal.check(tmp_path)
