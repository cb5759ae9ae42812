"""Column families (docs/compaction.md): several LSM trees under one log, each with its own
compaction strategy, as an embedding application sees them: one table per family per flush,
reads and scans across all of them, a store re-routed once when the routing changes, a
manifest old builds still read while it has one family, and a strategy changed on a running
engine."""

from __future__ import annotations

import os
import struct

import msgspec
import pytest
from crc32c import crc32c

from ringkv.errors import ConfigError, CorruptionError
from ringkv.storage import Engine, Options, manifest
from ringkv.storage.fs import PosixFileSystem
from ringkv.storage.sstable import TableMeta
from ringkv.storage.strategies import Leveled, PrefixRouter, Tiered, TimeWindow, strategy_from

KIB = 1024
ROUTER = PrefixRouter({b"session:": "sessions", b"metric:": "metrics"})


def never_expires(key: bytes, value: bytes) -> int:
    return 0


def options(**overrides) -> Options:
    base = dict(
        background="thread",
        compression="none",
        memtable_bytes=64 * KIB,
        families={"sessions": Tiered(), "metrics": TimeWindow(window_ms=60_000)},
        family_router=ROUTER,
        expiry_of=never_expires,
    )
    base.update(overrides)
    return Options(**base)


def fill(db: Engine, n: int = 100) -> dict[bytes, bytes]:
    data = {}
    for i in range(n):
        for prefix in (b"session:", b"metric:", b"user:"):
            key = prefix + b"%03d" % i
            data[key] = key * 3
            db.put(key, data[key])
    return data


def manifest_version(path) -> int:
    with open(os.path.join(path, "MANIFEST"), "rb") as f:
        return struct.unpack_from("<8sI", f.read(12))[1]


def test_a_flush_writes_one_table_per_family_and_each_family_keeps_its_own(tmp_path, seal):
    with Engine.open(str(tmp_path), options(encryption_keys=seal.keys)) as db:
        data = fill(db)
        db.flush()
        families = db.stats()["families"]
        assert {name: f["tables"] for name, f in families.items()} == {"default": 1, "sessions": 1, "metrics": 1}
        assert {name: f["compaction"] for name, f in families.items()} == {
            "default": "leveled", "sessions": "tiered", "metrics": "time_window"}
        state = manifest.read(PosixFileSystem(), str(tmp_path), keys=seal.keys)
        assert [m.smallest for m in state.levels[0]] == [b"user:000"]
        assert [m.smallest for m in state.families["sessions"][0]] == [b"session:000"]
        assert [m.smallest for m in state.families["metrics"][0]] == [b"metric:000"]
        for key, value in data.items():
            assert db.get(key) == value
        with db.scan() as it:
            assert dict(it) == data
        with db.scan(b"metric:050", b"session:010") as it:
            assert [k for k, _ in it] == sorted(k for k in data if b"metric:050" <= k < b"session:010")
    assert manifest_version(str(tmp_path)) == seal.manifest_version(2)
    seal.check(tmp_path)


def test_a_store_of_one_family_keeps_the_manifest_format_older_builds_read(tmp_path):
    with Engine.open(str(tmp_path), Options(background="thread")) as db:
        db.put(b"k", b"v")
        db.flush()
    assert manifest_version(str(tmp_path)) == 1


def test_an_older_build_refuses_a_manifest_of_several_families_rather_than_misread_it(tmp_path, monkeypatch, seal):
    """It would take the other families' tables for orphans and delete them. A sealed
    manifest is version 3 whatever its families: refused by builds without sealing."""
    with Engine.open(str(tmp_path), options(encryption_keys=seal.keys)) as db:
        fill(db, 10)
    monkeypatch.setattr(manifest, "READABLE_VERSIONS", (1,))
    with pytest.raises(CorruptionError, match=f"format version {seal.manifest_version(2)} is not supported"):
        Engine.open(str(tmp_path), Options(background="thread", encryption_keys=seal.keys))


def test_a_store_without_families_opened_with_them_is_rerouted_once(tmp_path, seal):
    path = str(tmp_path)
    with Engine.open(path, Options(background="thread", compression="none", encryption_keys=seal.keys)) as db:
        data = fill(db)
        db.compact_range()
    with Engine.open(path, options(encryption_keys=seal.keys)) as db:
        families = db.stats()["families"]
        assert {name: f["tables"] for name, f in families.items()} == {"default": 1, "sessions": 1, "metrics": 1}
        assert db.stats()["compaction_bytes_written"] > 0, "every table was merged into its family"
        with db.scan() as it:
            assert dict(it) == data
    with Engine.open(path, options(encryption_keys=seal.keys)) as db:
        assert db.stats()["compaction_bytes_written"] == 0, "the routing is the same: nothing to move"
        assert all(db.get(k) == v for k, v in data.items())
    seal.check(path)


def test_a_family_left_out_of_the_options_is_merged_back_into_the_default_family(tmp_path, seal):
    path = str(tmp_path)
    with Engine.open(path, options(encryption_keys=seal.keys)) as db:
        data = fill(db)
    fewer = options(families={"sessions": Tiered()}, family_router=PrefixRouter({b"session:": "sessions"}),
                    encryption_keys=seal.keys)
    with Engine.open(path, fewer) as db:
        assert set(db.stats()["families"]) == {"default", "sessions"}
        assert all(db.get(k) == v for k, v in data.items())
        with db.scan_prefix(b"metric:") as it:
            assert len(list(it)) == 100
    with Engine.open(path, Options(background="thread", encryption_keys=seal.keys)) as db:
        assert set(db.stats()["families"]) == {"default"}
        with db.scan() as it:
            assert dict(it) == data
    assert manifest_version(path) == seal.manifest_version(1)
    seal.check(path)


def test_a_manifest_written_before_time_windows_reads_tables_as_of_unknown_time():
    """Format version 1 as builds before families wrote it: seven fields a table."""
    payload = msgspec.msgpack.encode({"next_file": 8, "log_number": 6, "levels": [[[7, 100, b"a", b"b", 1, 0, 2]]]})
    data = manifest._HEADER.pack(manifest.MANIFEST_MAGIC, 1, len(payload), crc32c(payload)) + payload
    state = manifest.decode(data, "MANIFEST")
    assert state.levels == [[TableMeta(7, 100, b"a", b"b", 1, 0, 2, created_ms=0, expiry_ms=0, filter_records=0)]]
    assert state.families == {} and state.routing is None


def test_strategy_changed_on_a_running_engine_governs_the_merges_that_follow(tmp_path):
    with Engine.open(str(tmp_path), options(level0_compaction_trigger_files=8)) as db:
        for round_ in range(3):
            for i in range(100):
                db.put(b"session:%03d" % i, b"v%d" % round_)
            db.flush()
        assert db.stats()["families"]["sessions"]["sorted_runs"] == 3
        db.set_strategy("sessions", Tiered(min_merge_runs=2))
        assert db.families["sessions"]["min_merge_runs"] == 2
        db.flush()  # wakes the compaction thread
        from ringkv.testing.wait import wait_until

        wait_until(lambda: db.stats()["families"]["sessions"]["sorted_runs"] == 1, 10, "the tiered merge")
        db.set_strategy("sessions", Leveled())
        assert db.stats()["families"]["sessions"]["compaction"] == "leveled"
        assert db.get(b"session:042") == b"v2"


def test_a_family_switched_through_every_strategy_keeps_every_version_and_its_shape(tmp_path, seal):
    """Tiered leaves many merged levels, leveled wants seven sized ones, time-window groups by
    window: each switch takes the tree the previous strategy left, writes on, and every key
    reads its newest value, through compact_range and a reopen (which takes the configured
    strategy again)."""
    from ringkv.testing.wait import wait_until

    model: dict[bytes, bytes] = {}
    with Engine.open(str(tmp_path), options(families={"sessions": Tiered(min_merge_runs=4, max_runs=12)},
                                            encryption_keys=seal.keys)) as db:
        plan = [None, Leveled(), TimeWindow(window_ms=60_000), Tiered(min_merge_runs=2), Leveled()]
        for step, strategy in enumerate(plan):
            if strategy is not None:
                db.set_strategy("sessions", strategy)
            for flush in range(6):
                for i in range(0, 300, 1 + (flush + step) % 3):
                    key = b"session:%03d" % i
                    model[key] = b"s%d.%d." % (step, flush) + key
                    db.put(key, model[key])
                db.flush()
            wait_until(lambda: not db.stats()["compaction_due"], 30, "the family's merges to settle")
            family = db.stats()["families"]["sessions"]
            assert family["compaction"] == (strategy or Tiered()).name
            assert all(db.get(k) == v for k, v in model.items()), f"after switching to {family['compaction']}"
            assert dict(db.scan_prefix(b"session:")) == model
        db.compact_range()
        assert db.stats()["families"]["sessions"]["sorted_runs"] <= 1
        assert all(db.get(k) == v for k, v in model.items())
    with Engine.open(str(tmp_path), options(encryption_keys=seal.keys)) as db:
        assert db.families["sessions"]["compaction"] == "tiered", "a restart takes the configured strategy"
        assert dict(db.scan_prefix(b"session:")) == model
    seal.check(tmp_path)


def test_set_strategy_names_what_is_wrong(tmp_path):
    with Engine.open(str(tmp_path), options(expiry_of=None, families={"sessions": Tiered()})) as db:
        with pytest.raises(ConfigError, match="no column family 'carts'"):
            db.set_strategy("carts", Tiered())
        with pytest.raises(ConfigError, match="expiry_of"):
            db.set_strategy("sessions", TimeWindow())
        with pytest.raises(ConfigError, match="min_merge_runs"):
            db.set_strategy("sessions", Tiered(min_merge_runs=1))


def test_families_without_a_router_are_refused_at_open(tmp_path):
    with pytest.raises(ConfigError, match="family_router"):
        Engine.open(str(tmp_path), Options(families={"sessions": Tiered()}))


def test_a_router_that_cannot_reach_a_worker_process_is_refused_at_open(tmp_path):
    class Local(PrefixRouter):
        pass

    with pytest.raises(ConfigError, match="picklable"):
        Engine.open(str(tmp_path), Options(families={"s": Tiered()}, family_router=Local({b"s": "s"})))


def test_strategy_from_names_a_bad_setting():
    assert strategy_from("tiered", {"size_ratio_percent": 50}) == Tiered(size_ratio_percent=50)
    with pytest.raises(ConfigError, match="time_window has no setting 'size_ratio_percent'"):
        strategy_from("time_window", {"size_ratio_percent": 50})
    with pytest.raises(ConfigError, match="must be one of leveled, tiered, time_window"):
        strategy_from("universal")
