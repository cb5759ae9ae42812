"""Engine checkpoints (storage/snapshot.py): a checkpoint taken while writes go on opens as a
store holding every write acknowledged before it began, shares the tables by hard links, stays
whole while the live store compacts, and stays sealed when the store is encrypted."""

from __future__ import annotations

import os
import threading

import pytest

from ringkv.errors import ConfigError
from ringkv.storage import Engine, Options
from ringkv.storage.sealing import KeyRing
from ringkv.storage.snapshot import CheckpointError

SMALL = dict(memtable_bytes=64 * 1024)  # many tables and frozen logs from a few thousand writes


def _all(path, **options) -> dict[bytes, bytes]:
    with Engine.open(path, Options(**options)) as db, db.scan() as it:
        return dict(it)


def test_checkpoint_holds_tables_frozen_logs_and_the_log_tail_but_not_later_writes(tmp_path):
    with Engine.open(str(tmp_path / "db"), Options(**SMALL)) as db:
        for i in range(8000):
            db.put(b"k%05d" % i, b"v%d" % i)
        db.delete(b"k00007")
        report = db.checkpoint(str(tmp_path / "snap"))
        # The tables are shared, not copied: each of the checkpoint's is the live store's file.
        tables = [f for f in os.listdir(tmp_path / "snap") if f.endswith(".sst")]
        assert len(tables) == report["tables"]
        for name in tables:
            assert os.path.samefile(tmp_path / "snap" / name, tmp_path / "db" / name), name
        db.put(b"after", b"x")
        db.put(b"k00001", b"changed")
        db.compact_range()  # replaces every table the checkpoint links to
    assert report["tables"] > 0 and report["logs"] >= 1 and report["linked"]
    snap = _all(str(tmp_path / "snap"))
    expected = {b"k%05d" % i: b"v%d" % i for i in range(8000) if i != 7}
    assert snap == expected
    # The live store went on; the checkpoint is a store of its own that takes writes.
    assert _all(str(tmp_path / "db"))[b"k00001"] == b"changed"
    with Engine.open(str(tmp_path / "snap")) as copy:
        copy.put(b"new", b"1")
    assert _all(str(tmp_path / "db")).get(b"new") is None


def test_checkpoint_taken_during_writes_has_every_write_acknowledged_before_it(tmp_path):
    acked: list[int] = []
    stop = threading.Event()
    with Engine.open(str(tmp_path / "db"), Options(**SMALL)) as db:
        def writer() -> None:
            i = 0
            while not stop.is_set():
                db.put(b"w%07d" % i, b"x" * 50, defer=(i % 3 == 0))
                if i % 3 == 0:
                    db.flush_deferred()  # a deferred write is acknowledged once flushed
                acked.append(i)
                i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        while len(acked) < 3000:
            threading.Event().wait(0.001)
        before = len(acked)  # every write up to here returned before the checkpoint began
        db.checkpoint(str(tmp_path / "snap"))
        stop.set()
        thread.join()
    snap = _all(str(tmp_path / "snap"))
    missing = [i for i in range(before) if snap.get(b"w%07d" % i) != b"x" * 50]
    assert not missing, f"{len(missing)} acknowledged writes missing from the checkpoint, first {missing[:5]}"
    # Whatever else it holds is a prefix of the writes: no write is there without those before it.
    held = sorted(int(k[1:]) for k in snap)
    assert held == list(range(len(held)))


def test_encrypted_store_checkpoint_stays_sealed_and_needs_the_key(tmp_path):
    keys = KeyRing({1: bytes(range(32))})
    secret = b"plaintext-that-must-not-leak"
    with Engine.open(str(tmp_path / "db"), Options(encryption_keys=keys, **SMALL)) as db:
        for i in range(3000):
            db.put(b"k%05d" % i, secret)
        db.checkpoint(str(tmp_path / "snap"))
    for name in os.listdir(tmp_path / "snap"):
        assert secret not in (tmp_path / "snap" / name).read_bytes(), name
    assert len(_all(str(tmp_path / "snap"), encryption_keys=keys)) == 3000
    with pytest.raises(ConfigError):
        _all(str(tmp_path / "snap"))


def test_checkpoint_refuses_an_existing_destination(tmp_path):
    (tmp_path / "snap").mkdir()
    with Engine.open(str(tmp_path / "db")) as db:
        db.put(b"k", b"v")
        with pytest.raises(CheckpointError, match="already exists"):
            db.checkpoint(str(tmp_path / "snap"))
