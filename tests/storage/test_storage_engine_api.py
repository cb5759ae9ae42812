"""The engine's public API as an application uses it: put/get/delete, atomic batches, range and
prefix scans, flush and compaction, stats, the input limits, and what happens after close or
when a second engine tries to open the same directory."""

from __future__ import annotations

import pytest

from ringkv.errors import ClosedError, LimitError, RingkvError
from ringkv.storage import Engine, Options, WriteBatch

THREAD = dict(background="thread")


@pytest.fixture
def db(tmp_path):
    engine = Engine.open(str(tmp_path / "db"), Options(**THREAD))
    yield engine
    engine.close()


def scan(db, start=None, end=None):
    with db.scan(start, end) as it:
        return list(it)


def prefix(db, p):
    with db.scan_prefix(p) as it:
        return list(it)


def test_put_get_delete_and_overwrite(db):
    assert db.get(b"user:1") is None
    db.put(b"user:1", b"ada")
    db.put(b"user:1", b"grace")
    assert db.get(b"user:1") == b"grace"
    db.delete(b"user:1")
    assert db.get(b"user:1") is None
    db.delete(b"never-written")
    assert db.get(b"never-written") is None


def test_empty_value_is_stored_and_is_not_a_delete(db):
    db.put(b"flag", b"")
    assert db.get(b"flag") == b""
    db.flush()
    assert db.get(b"flag") == b""
    assert scan(db) == [(b"flag", b"")]


def test_write_batch_applies_every_op_in_order(db):
    db.put(b"gone", b"x")
    batch = WriteBatch().put(b"a", b"1").put(b"b", b"2").delete(b"gone").put(b"c", b"3").delete(b"c")
    lsn = db.write_batch(batch)
    assert [db.get(k) for k in (b"a", b"b", b"c", b"gone")] == [b"1", b"2", None, None]
    assert db.write_batch(WriteBatch().put(b"d", b"4")) > lsn, "LSNs grow"
    assert len(batch) == 5


def test_batch_with_one_bad_op_applies_nothing(db):
    batch = WriteBatch().put(b"a", b"1").put(b"", b"empty key")
    with pytest.raises(ValueError):
        db.write_batch(batch)
    assert db.get(b"a") is None


def test_scan_is_start_inclusive_end_exclusive_across_memtable_and_tables(db):
    for i in range(0, 30, 3):
        db.put(b"k%02d" % i, b"table")
    db.flush()
    for i in range(0, 30, 2):
        db.put(b"k%02d" % i, b"mem")
    db.delete(b"k06")
    model = {b"k%02d" % i: b"table" for i in range(0, 30, 3)}
    model.update({b"k%02d" % i: b"mem" for i in range(0, 30, 2)})
    del model[b"k06"]
    assert scan(db) == sorted(model.items())
    assert scan(db, b"k04", b"k12") == [(k, v) for k, v in sorted(model.items()) if b"k04" <= k < b"k12"]
    assert scan(db, b"k05") == [(k, v) for k, v in sorted(model.items()) if k >= b"k05"]
    assert scan(db, None, b"k03") == [(b"k00", b"mem"), (b"k02", b"mem")]
    assert scan(db, b"k20", b"k10") == []


def test_scan_prefix_returns_exactly_the_keys_with_that_prefix(db):
    keys = [b"user:", b"user:1", b"user:2", b"user;", b"users", b"use", b"\xff", b"\xff\xff", b"\xff\x00"]
    for k in keys:
        db.put(k, k)
    db.flush()
    db.put(b"user:3", b"user:3")
    assert [k for k, _ in prefix(db, b"user:")] == [b"user:", b"user:1", b"user:2", b"user:3"]
    assert [k for k, _ in prefix(db, b"\xff")] == [b"\xff", b"\xff\x00", b"\xff\xff"]
    assert [k for k, _ in prefix(db, b"")] == sorted([*keys, b"user:3"])
    assert prefix(db, b"nobody") == []


def test_flush_moves_the_memtable_to_a_table_and_keeps_every_key(db):
    for i in range(100):
        db.put(b"k%03d" % i, b"v%d" % i)
    db.flush()
    stats = db.stats()
    assert stats["levels"][0]["tables"] == 1
    assert stats["memtable_bytes"] == 0 and stats["immutable_memtables"] == 0
    assert stats["flushes"] == 1
    assert all(db.get(b"k%03d" % i) == b"v%d" % i for i in range(100))


def test_compact_range_leaves_level_zero_empty_and_data_intact(db):
    for round_ in range(3):
        for i in range(100):
            db.put(b"k%03d" % i, b"round %d" % round_)
        db.flush()
    db.compact_range()
    stats = db.stats()
    assert stats["levels"][0]["tables"] == 0 and stats["tables"] >= 1
    assert stats["compactions"] >= 1
    assert scan(db) == [(b"k%03d" % i, b"round 2") for i in range(100)]


def test_stats_report_levels_caches_amplification_and_recovery(db):
    db.put(b"k", b"v" * 100)
    db.flush()
    db.get(b"k")
    stats = db.stats()
    for field in (
        "levels", "tables", "bytes_on_disk", "memtable_bytes", "immutable_memtables",
        "user_bytes_written", "wal_bytes_written", "flush_bytes_written",
        "compaction_bytes_written", "compaction_bytes_read", "write_amplification",
        "space_amplification", "flushes", "compactions", "write_stalls", "write_stall_seconds",
        "block_cache", "table_cache", "resident_bytes", "resident_bytes_per_key", "recovery",
        "background_error",
    ):
        assert field in stats, field
    assert stats["user_bytes_written"] == 101
    assert stats["write_amplification"] >= 1.0
    assert stats["recovery"] == [] and stats["background_error"] is None


def test_data_survives_close_and_reopen(tmp_path):
    path = str(tmp_path)
    with Engine.open(path, Options(**THREAD)) as db:
        db.put(b"in-table", b"1")
        db.flush()
        db.put(b"in-log", b"2")
        db.delete(b"in-table")
        db.put(b"in-table", b"3")
    with Engine.open(path, Options(**THREAD)) as db:
        assert scan(db) == [(b"in-log", b"2"), (b"in-table", b"3")]
        assert db.stats()["recovery"] == []


def test_default_worker_process_mode_flushes_and_compacts(tmp_path):
    with Engine.open(str(tmp_path), Options(memtable_bytes=64 * 1024)) as db:
        for i in range(400):
            db.put(b"k%04d" % i, b"x" * 400)  # several memtables' worth
        db.delete(b"k0007")
        db.compact_range()
        stats = db.stats()
        assert stats["flushes"] >= 2 and stats["compactions"] >= 1
        assert stats["background_error"] is None
        assert db.get(b"k0007") is None and db.get(b"k0399") == b"x" * 400
        assert len(scan(db)) == 399


# ---------------------------------------------------------------------------------------- limits


def test_key_over_64_kib_raises_value_error_naming_the_limit(db):
    db.put(b"k" * 65536, b"largest allowed key")
    assert db.get(b"k" * 65536) == b"largest allowed key"
    for write in (
        lambda: db.put(b"k" * 65537, b"v"),
        lambda: db.delete(b"k" * 65537),
        lambda: db.write_batch(WriteBatch().put(b"k" * 65537, b"v")),
    ):
        with pytest.raises(ValueError, match="max_key_bytes=65536") as err:
            write()
        assert isinstance(err.value, LimitError)


def test_empty_key_raises_value_error(db):
    for write in (lambda: db.put(b"", b"v"), lambda: db.delete(b""), lambda: db.write_batch(WriteBatch().delete(b""))):
        with pytest.raises(LimitError, match="empty"):
            write()


def test_value_over_max_value_bytes_raises_value_error_naming_the_limit(tmp_path):
    with Engine.open(str(tmp_path), Options(max_value_bytes=1000, **THREAD)) as db:
        db.put(b"k", b"v" * 1000)
        for write in (lambda: db.put(b"k", b"v" * 1001), lambda: db.write_batch(WriteBatch().put(b"k", b"v" * 1001))):
            with pytest.raises(LimitError, match="max_value_bytes=1000"):
                write()
        assert db.get(b"k") == b"v" * 1000


def test_str_instead_of_bytes_raises_type_error(db):
    for write in (
        lambda: db.put("key", b"v"),
        lambda: db.put(b"key", "value"),
        lambda: db.put(b"key", bytearray(b"v")),
        lambda: db.delete("key"),
        lambda: db.write_batch(WriteBatch().put(b"k", "v")),
    ):
        with pytest.raises(TypeError, match="must be bytes"):
            write()
    assert scan(db) == []


def test_get_with_str_key_raises_type_error(db):
    db.put(b"key", b"v")
    with pytest.raises(TypeError):
        db.get("key")


# ----------------------------------------------------------------------------- close and locking


def test_use_after_close_raises_closed_error(tmp_path):
    db = Engine.open(str(tmp_path), Options(**THREAD))
    db.put(b"k", b"v")
    db.close()
    db.close()  # closing twice is harmless
    for use in (
        lambda: db.put(b"k", b"v"),
        lambda: db.delete(b"k"),
        lambda: db.write_batch(WriteBatch().put(b"k", b"v")),
        lambda: db.get(b"absent"),
        lambda: db.scan(),
        lambda: db.scan_prefix(b"k"),
        lambda: db.flush(),
        lambda: db.compact_range(),
    ):
        with pytest.raises(ClosedError):
            use()


def test_get_of_a_stored_key_after_close_raises_closed_error(tmp_path):
    db = Engine.open(str(tmp_path), Options(**THREAD))
    db.put(b"k", b"v")
    db.close()
    with pytest.raises(ClosedError):
        db.get(b"k")


def test_empty_write_batch_after_close_raises_closed_error(tmp_path):
    db = Engine.open(str(tmp_path), Options(**THREAD))
    db.close()
    with pytest.raises(ClosedError):
        db.write_batch(WriteBatch())


def test_second_open_of_the_same_directory_is_refused(tmp_path):
    path = str(tmp_path)
    first = Engine.open(path, Options(**THREAD))
    first.put(b"k", b"v")
    with pytest.raises(RingkvError, match="already open"):
        Engine.open(path, Options(**THREAD))
    assert first.get(b"k") == b"v", "the refused open disturbed nothing"
    first.close()
    with Engine.open(path, Options(**THREAD)) as second:
        assert second.get(b"k") == b"v"


# ------------------------------------------------------------------ deferred and unsynced writes


def test_deferred_put_is_readable_at_once_and_reaches_the_log_on_flush_deferred(tmp_path):
    path = str(tmp_path)
    with Engine.open(path, Options(**THREAD)) as db:
        log_bytes = db.stats()["wal_bytes_written"]
        lsn = db.put(b"k1", b"v1", defer=True)
        db.put(b"k2", b"v2", defer=True)
        assert db.get(b"k1") == b"v1" and db.has_deferred
        assert db.stats()["wal_bytes_written"] == log_bytes, "queued, not yet written"
        assert db.flush_deferred() >= lsn
        assert not db.has_deferred
        assert db.stats()["wal_bytes_written"] > log_bytes
        db.wait_durable(lsn)
    with Engine.open(path, Options(**THREAD)) as db:
        assert (db.get(b"k1"), db.get(b"k2")) == (b"v1", b"v2")


def test_deferred_records_keep_their_order_with_ordinary_writes(tmp_path):
    path = str(tmp_path)
    with Engine.open(path, Options(**THREAD)) as db:
        db.put(b"k", b"deferred", defer=True)
        db.delete(b"k")  # an ordinary write flushes the queue ahead of itself
        db.put(b"j", b"deferred", defer=True)
        db.write_batch(WriteBatch().put(b"j", b"batch"))
        db.put(b"i", b"deferred at close", defer=True)
    with Engine.open(path, Options(**THREAD)) as db:
        assert scan(db) == [(b"i", b"deferred at close"), (b"j", b"batch")]


def test_deferred_records_survive_a_memtable_rotation(tmp_path):
    path = str(tmp_path)
    with Engine.open(path, Options(memtable_bytes=64 * 1024, **THREAD)) as db:
        for i in range(200):
            db.put(b"key:%03d" % i, b"v" * 1000, defer=True)  # three memtables' worth
        stats = db.stats()
        assert stats["flushes"] + stats["immutable_memtables"] >= 2, "the memtable rotated"
        db.flush_deferred()
    with Engine.open(path, Options(**THREAD)) as db:
        assert len(scan(db)) == 200


def test_put_and_batch_return_growing_lsns_that_wait_durable_accepts(db):
    lsns = [db.put(b"a", b"1", sync=False), db.delete(b"a", sync=False)]
    lsns.append(db.write_batch(WriteBatch().put(b"b", b"2"), sync=False))
    assert lsns == sorted(lsns) and len(set(lsns)) == 3
    db.wait_durable(lsns[-1])
