"""Compaction rules (docs/compaction.md), as a user sees their effects: overwritten versions and
tombstones stop taking space, a deleted key never comes back (the tombstone shadows older
versions until it reaches the bottom), the compaction filter applies in both background modes
without resurrecting what it drops, and the I/O rate limit holds. The rules every strategy keeps
run against each of them (`strategy`): leveled, tiered and time-window."""

from __future__ import annotations

import os
import sys
import time

import pytest

from ringkv.storage import Engine, Options, manifest, worker
from ringkv.storage.compaction import RateLimitedFile
from ringkv.storage.fs import PosixFileSystem
from ringkv.storage.strategies import Leveled, Tiered, TimeWindow
from ringkv.testing.wait import wait_until

MODES = ["thread", "process"]
STRATEGIES = {"leveled": Leveled(), "tiered": Tiered(min_merge_runs=8), "time_window": TimeWindow(min_merge_tables=8)}


def never_expires(key: bytes, value: bytes) -> int:
    """The expiry extractor time-window compaction needs; these records carry no TTL."""
    return 0


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request) -> dict:
    """Options that select one strategy (and what it needs)."""
    return {"compaction": STRATEGIES[request.param], "expiry_of": never_expires}


def drop_tmp(key: bytes, value: bytes) -> bool:
    """A compaction filter: records under b"tmp:" expire at the first compaction."""
    return not key.startswith(b"tmp:")


def options(background="thread", **overrides) -> Options:
    base = dict(
        background=background,
        compression="none",
        memtable_bytes=64 * 1024,
        target_file_bytes=64 * 1024,
        level1_max_bytes=64 * 1024,
        level0_compaction_trigger_files=1,  # every flush is compacted into level 1 at once
    )
    base.update(overrides)
    return Options(**base)


def tables(path) -> list[list]:
    """The manifest's tables per level: what a compaction left behind."""
    return manifest.read(PosixFileSystem(), path).levels


def totals(path) -> tuple[int, int]:
    metas = [m for level in tables(path) for m in level]
    return sum(m.entries for m in metas), sum(m.tombstones for m in metas)


def levels_holding(path, key) -> list[int]:
    return [li for li, level in enumerate(tables(path)) for m in level if m.smallest <= key <= m.largest]


def wait_for_compactions(db: Engine, timeout_s: float = 30.0) -> None:
    """Return once no level is over its size target, so background compaction has settled."""
    o = db.options
    levels: list[dict] = []

    def settled() -> bool:
        levels[:] = db.stats()["levels"]
        return not (levels[0]["tables"] >= o.level0_compaction_trigger_files or any(
            lv["bytes"] > o.level1_max_bytes * o.level_size_multiplier ** (lv["level"] - 1) for lv in levels[1:-1]
        ))

    wait_until(settled, timeout_s, lambda: f"compaction to settle: {levels}", interval_s=0.02)


def bury(db: Engine, path: str, key: bytes) -> None:
    """Write `key` with filler after it, and compact until its table sits in level 2 or deeper."""
    db.put(key, b"old version")
    for i in range(300):
        db.put(b"user:%05d" % i, b"f" * 1000)
    db.compact_range()
    wait_for_compactions(db)
    assert min(levels_holding(path, key)) >= 2, tables(path)


def filler_intact(db: Engine) -> bool:
    return all(db.get(b"user:%05d" % i) == b"f" * 1000 for i in range(300))


@pytest.mark.parametrize("background", MODES)
def test_overwritten_versions_are_dropped_by_compact_range(tmp_path, background, strategy):
    path = str(tmp_path)
    with Engine.open(path, options(background, level0_compaction_trigger_files=8, **strategy)) as db:
        for version in range(5):
            for i in range(200):
                db.put(b"key:%03d" % i, b"version %d " % version * 20)
            db.flush()
        assert totals(path)[0] == 1000, "five versions of each key before compacting"
        db.compact_range()
        assert totals(path) == (200, 0), "one entry per key after compact_range"
        assert db.stats()["levels"][0]["tables"] == 0
        assert all(db.get(b"key:%03d" % i) == b"version 4 " * 20 for i in range(200))


def test_deleted_key_stays_deleted_when_an_older_table_holds_it(tmp_path, strategy):
    path = str(tmp_path)
    with Engine.open(path, options(level0_compaction_trigger_files=8, **strategy)) as db:
        db.put(b"cart:42", b"three items")
        db.put(b"cart:43", b"one item")
        db.compact_range()  # the value now sits in level 1
        db.delete(b"cart:42")
        db.flush()  # the tombstone sits in level 0, above the value
        assert db.get(b"cart:42") is None
        with db.scan() as it:
            assert list(it) == [(b"cart:43", b"one item")]
    with Engine.open(path, options(**strategy)) as db:
        assert db.get(b"cart:42") is None
        db.compact_range()
        assert db.get(b"cart:42") is None
        assert totals(path) == (1, 0)


@pytest.mark.parametrize("background", MODES)
def test_tombstone_shadows_an_older_version_in_a_deeper_level_until_the_bottom(tmp_path, background):
    path = str(tmp_path)
    with Engine.open(path, options(background)) as db:
        bury(db, path, b"doomed")
        db.delete(b"doomed")
        db.flush()
        wait_for_compactions(db)  # the tombstone is compacted from level 0 into level 1
        assert db.stats()["levels"][0]["tables"] == 0
        assert db.get(b"doomed") is None
        with db.scan_prefix(b"doomed") as it:
            assert list(it) == []
    with Engine.open(path, options(background)) as db:
        assert db.get(b"doomed") is None
        db.compact_range()  # now it meets the old version at the bottom: both go
        assert db.get(b"doomed") is None
        assert totals(path) == (300, 0)
        assert filler_intact(db)


def test_tombstones_are_gone_after_a_full_compact_range(tmp_path, strategy):
    path = str(tmp_path)
    with Engine.open(path, options(level0_compaction_trigger_files=8, **strategy)) as db:
        for i in range(300):
            db.put(b"key:%03d" % i, b"v" * 100)
        db.flush()
        for i in range(0, 300, 3):
            db.delete(b"key:%03d" % i)
        db.delete(b"never-written")
        db.flush()
        assert totals(path)[1] == 101
        db.compact_range()
        assert totals(path) == (200, 0)
        with db.scan() as it:
            assert [k for k, _ in it] == [b"key:%03d" % i for i in range(300) if i % 3]


@pytest.mark.parametrize("background", MODES)
def test_compaction_filter_drops_matching_records(tmp_path, background, strategy):
    path = str(tmp_path)
    with Engine.open(path, options(background, compaction_filter=drop_tmp, **strategy)) as db:
        for i in range(100):
            db.put(b"tmp:session:%03d" % i, b"expiring")
            db.put(b"user:%03d" % i, b"kept")
        assert db.get(b"tmp:session:000") == b"expiring", "the filter runs only in compaction"
        db.compact_range()
        assert db.stats()["background_error"] is None
        with db.scan() as it:
            assert [k for k, _ in it] == [b"user:%03d" % i for i in range(100)]
        assert totals(path) == (100, 0)


@pytest.mark.parametrize("background", MODES)
def test_record_dropped_by_the_filter_does_not_resurrect_an_older_version(tmp_path, background):
    path = str(tmp_path)
    with Engine.open(path, options("thread")) as db:  # no filter yet: the old version is kept
        bury(db, path, b"tmp:session")
    with Engine.open(path, options(background, compaction_filter=drop_tmp)) as db:
        db.put(b"tmp:session", b"new version")
        db.put(b"tmp:fresh", b"never compacted before")
        db.flush()
        wait_for_compactions(db)  # level 0 into level 1; the old version is still in level 2
        assert min(levels_holding(path, b"tmp:session")) <= 1
        assert db.stats()["background_error"] is None
        assert db.get(b"tmp:fresh") is None, "the filter ran"
        assert db.get(b"tmp:session") is None, "the old version in level 2 came back"
        assert filler_intact(db)
    with Engine.open(path, options(background, compaction_filter=drop_tmp)) as db:
        assert db.get(b"tmp:session") is None


def test_rate_limited_file_writes_no_faster_than_its_rate(tmp_path):
    rate = 64 * 1024
    f = RateLimitedFile(PosixFileSystem().create(str(tmp_path / "out.sst")), rate)
    started = time.monotonic()
    for _ in range(24):
        f.write(b"x" * 4096)
    elapsed = time.monotonic() - started
    f.close()
    assert elapsed >= 0.95 * (24 * 4096 - 4096) / rate, f"96 KiB in {elapsed:.2f} s"
    assert elapsed < 5.0


def test_compaction_respects_compaction_rate_bytes_per_s(tmp_path):
    rate = 64 * 1024
    path = str(tmp_path)
    with Engine.open(path, options(compaction_rate_bytes_per_s=rate, level0_compaction_trigger_files=8)) as db:
        for i in range(100):
            db.put(b"key:%03d" % i, os.urandom(1000))
        db.flush()
        started = time.monotonic()
        db.compact_range()
        elapsed = time.monotonic() - started
        written = db.stats()["compaction_bytes_written"]
    assert written > 100_000
    assert elapsed >= 0.9 * written / rate - 0.1, f"{written} bytes in {elapsed:.2f} s"


# ---------------------------------------------------------- bugs found by these tests, since fixed


def test_compact_range_over_part_of_level0_keeps_the_newest_value(tmp_path):
    """Level-0 tables overlap: compacting only those meeting the range would leave older ones
    above the newer values moved down."""
    with Engine.open(str(tmp_path), options(level0_compaction_trigger_files=8)) as db:
        db.put(b"m", b"old")
        db.flush()
        db.put(b"a", b"1")
        db.put(b"m", b"new")
        db.flush()
        db.compact_range(b"a", b"b")
        assert db.get(b"m") == b"new"


def test_compaction_after_switching_compression_off_completes(tmp_path):
    """Outputs can outgrow the inputs (lz4 before, no compression now): the job must not run out
    of output file numbers."""
    path = str(tmp_path)
    with Engine.open(path, options(compression="lz4", level0_compaction_trigger_files=8)) as db:
        for i in range(700):
            db.put(b"key:%04d" % i, bytes(1000))  # compresses about 100 to 1
        db.compact_range()
    with Engine.open(path, options(compression="none", level0_compaction_trigger_files=8)) as db:
        db.put(b"key:0000", b"changed")
        db.compact_range()
        assert db.get(b"key:0000") == b"changed" and db.get(b"key:0699") == bytes(1000)


def test_compaction_filter_from_a_module_on_sys_path_works_in_worker_processes(tmp_path, monkeypatch):
    """A worker imports what its parent can: the filter of a module found through sys.path
    (a script's folder, this test folder) unpickles there."""
    assert os.path.dirname(os.path.abspath(__file__)) in sys.path  # how pytest imported us
    pool: list = []
    monkeypatch.setattr(worker, "_idle", pool)  # fresh workers, started the way the engine does
    try:
        with Engine.open(str(tmp_path), options("process", compaction_filter=drop_tmp)) as db:
            db.put(b"tmp:x", b"1")
            db.put(b"user:x", b"2")
            db.compact_range()
            assert db.get(b"tmp:x") is None
    finally:
        for w in pool:
            w.close()
