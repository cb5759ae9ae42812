"""A failed fsync (docs/storage-faults.md): the write that waited on it fails, every later write
is refused with an error naming that fsync, reads keep working and show only what is durable,
and a reopen (after a power cut or not) recovers exactly the writes that were acknowledged.

Why the engine never retries: after a failed fsync Linux may drop the dirty pages and clear the
error, so a retried fsync "succeeds" without writing them (PostgreSQL, 2018). The disk model
(FaultInjectingFileSystem.fail_fsync) does the same: the bytes the failed fsync should have
written hold garbage after a power cut, even if a later fsync succeeded.
"""

from __future__ import annotations

import os
import random
import threading

import pytest

from ringkv.storage import Engine, FsyncFailedError, Options, ReadOnlyError, WriteBatch
from ringkv.storage.fs import FaultInjectingFileSystem, PosixFileSystem


@pytest.fixture(autouse=True)
def no_real_fsync(monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def options(**overrides) -> Options:
    base = dict(sync="always", block_bytes=1024, target_file_bytes=64 * 1024, level0_compaction_trigger_files=8)
    base.update(overrides)
    return Options(**base)


def contents(path) -> dict[bytes, bytes]:
    with Engine.open(path, options(), fs=PosixFileSystem()) as db, db.scan() as it:
        return dict(it)


def reopen_after(fs: FaultInjectingFileSystem, db: Engine, power_cut: bool) -> dict[bytes, bytes]:
    db.close()
    if power_cut:
        fs.crash()
    return contents(db.path)


def assert_refuses_writes_naming(db: Engine, failed: str) -> None:
    for write in (
        lambda: db.put(b"later", b"x"),
        lambda: db.delete(b"later"),
        lambda: db.write_batch(WriteBatch().put(b"later", b"x")),
        db.flush,
        db.compact_range,
    ):
        with pytest.raises(ReadOnlyError) as err:
            write()
        assert isinstance(err.value.reason, FsyncFailedError)
        assert "read-only" in str(err.value) and f"fsync of {db.path}" in str(err.value)
        assert failed in str(err.value)
    assert f"fsync of {db.path}" in db.stats()["background_error"]


@pytest.mark.parametrize("power_cut", [True, False], ids=["power-cut", "clean-reopen"])
def test_failed_log_fsync_fails_its_write_refuses_later_ones_and_loses_no_acknowledged_one(tmp_path, power_cut):
    path = str(tmp_path)
    fs = FaultInjectingFileSystem(seed=11)
    db = Engine.open(path, options(), fs=fs)
    acked = {b"k%02d" % i: b"v%02d" % i for i in range(20)}
    for key, value in acked.items():
        db.put(key, value)
    fs.fail_fsync(".wal")
    with pytest.raises(FsyncFailedError, match=r"fsync of .*\.wal failed \(EIO"):
        db.put(b"k05", b"overwritten, never acknowledged")
    assert_refuses_writes_naming(db, ".wal")
    # Reads go on, and show only what is durable: the failed overwrite is not visible.
    assert db.get(b"k05") == b"v05"
    with db.scan() as it:
        assert dict(it) == acked
    assert reopen_after(fs, db, power_cut) == acked


def test_fsync_retry_that_would_succeed_never_makes_the_lost_writes_durable(tmp_path):
    """The fsync fails once and would succeed afterwards: writes that rode on the failed one
    stay failed, however they wait (sync=True, wait_durable, a deferred put's flush)."""
    path = str(tmp_path)
    fs = FaultInjectingFileSystem(seed=12)
    db = Engine.open(path, options(sync="never"), fs=fs)
    db.put(b"durable", b"1", sync=True)
    lsns = [db.put(b"lost:%d" % i, b"x" * 100) for i in range(5)]
    deferred = db.put(b"lost:deferred", b"y", defer=True)
    fs.fail_fsync(".wal")
    with pytest.raises(FsyncFailedError):
        db.wait_durable(lsns[0])
    for lsn in (*lsns, deferred):
        with pytest.raises(FsyncFailedError):
            db.wait_durable(lsn)  # the disk would accept an fsync now: it must not be tried
    assert db.get(b"lost:0") is None and db.get(b"lost:deferred") is None
    assert db.get(b"durable") == b"1"
    assert reopen_after(fs, db, power_cut=True) == {b"durable": b"1"}


def test_failed_periodic_log_fsync_turns_the_engine_read_only(tmp_path):
    path = str(tmp_path)
    fs = FaultInjectingFileSystem(seed=13)
    db = Engine.open(path, options(sync="interval", sync_interval_ms=5), fs=fs)
    db.put(b"a", b"1", sync=True)
    fs.fail_fsync(".wal")
    db.put(b"b", b"2")  # acknowledged without an fsync, as sync="interval" allows
    deadline = threading.Event()
    for _ in range(400):
        if db.stats()["background_error"]:
            break
        deadline.wait(0.01)
    assert_refuses_writes_naming(db, ".wal")
    assert db.get(b"b") is None, "reads show what a reopen recovers, and b was never durable"
    assert reopen_after(fs, db, power_cut=True) == {b"a": b"1"}


@pytest.mark.parametrize("seed", range(6))
def test_concurrent_writers_sharing_a_failed_group_commit_all_fail_and_the_rest_survive(tmp_path, seed):
    """Group commit: the leader's fsync fails and every waiter on it must fail too (not retry);
    writes acknowledged before it survive a power cut, and nothing else appears."""
    rng = random.Random(seed)
    path = str(tmp_path)
    fs = FaultInjectingFileSystem(seed=seed)
    db = Engine.open(path, options(), fs=fs)
    fs.fail_fsync(".wal", nth=rng.randrange(1, 120))
    acked: dict[bytes, bytes] = {}
    failures: list[BaseException] = []

    def writer(t: int) -> None:
        for i in range(60):
            key, value = b"t%d:%02d" % (t, i), b"%d" % rng.randrange(10**6)
            try:
                db.put(key, value)
            except (FsyncFailedError, ReadOnlyError) as exc:
                failures.append(exc)
                return
            acked[key] = value

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures and any(isinstance(f, FsyncFailedError) for f in failures)
    with db.scan() as it:
        assert dict(it) == acked, f"reproduce with seed={seed}: reads show more than is durable"
    assert reopen_after(fs, db, power_cut=True) == acked, f"reproduce with seed={seed}"


# ---------------------------------------------------- fsyncs of tables, the manifest, the directory


def loaded(tmp_path, fs, **overrides) -> tuple[Engine, dict[bytes, bytes]]:
    db = Engine.open(str(tmp_path), options(**overrides), fs=fs)
    model = {}
    for i in range(300):
        key, value = b"key:%03d" % (i % 120), b"%d" % i * 40
        db.put(key, value)
        model[key] = value
        if i % 7 == 0:
            db.delete(key)
            del model[key]
    return db, model


@pytest.mark.parametrize(
    "failing", [".sst", "MANIFEST.tmp", "MANIFEST.bak.tmp", "directory"], ids=["table", "manifest", "mirror", "directory"]
)
@pytest.mark.parametrize("background", ["process", "thread"])
def test_failed_fsync_in_a_flush_turns_the_engine_read_only_and_loses_nothing(tmp_path, failing, background):
    fs = FaultInjectingFileSystem(seed=21)
    db, model = loaded(tmp_path, fs, background=background)
    if failing == "directory":
        fs.fail_fsync(directory=True)  # the log rotation's
    else:
        fs.fail_fsync(failing)
    with pytest.raises((FsyncFailedError, ReadOnlyError)):
        db.flush()
    assert_refuses_writes_naming(db, "directory" if failing == "directory" else failing)
    with db.scan() as it:
        assert dict(it) == model, "the memtable being flushed still answers reads"
    assert reopen_after(fs, db, power_cut=True) == model


@pytest.mark.parametrize("failing", [".sst", "MANIFEST.tmp"], ids=["output table", "manifest"])
@pytest.mark.parametrize("background", ["process", "thread"])
def test_failed_fsync_in_a_compaction_turns_the_engine_read_only_and_loses_nothing(tmp_path, failing, background):
    fs = FaultInjectingFileSystem(seed=22)
    db, model = loaded(tmp_path, fs, background=background)
    db.flush()
    for i in range(0, 120, 3):
        db.put(b"key:%03d" % i, b"second table")
        model[b"key:%03d" % i] = b"second table"
    db.flush()
    fs.fail_fsync(failing)
    with pytest.raises(FsyncFailedError, match=f"fsync of .*{failing}"):
        db.compact_range()
    assert_refuses_writes_naming(db, failing)
    with db.scan() as it:
        assert dict(it) == model, "the input tables still answer reads"
    assert reopen_after(fs, db, power_cut=True) == model


class GatedCompactionDisk(FaultInjectingFileSystem):
    """Holds the compaction thread's first output table until `gate` is set."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def create(self, path):
        if path.endswith(".sst") and threading.current_thread().name == "ringkv-compaction":
            self.waiting.set()
            self.gate.wait(30)
        return super().create(path)


def test_compaction_finishing_after_a_failed_flush_does_not_skip_the_unflushed_log(tmp_path):
    """Bug: a flush set the manifest's log_number before its manifest write failed, and a
    compaction that finished afterwards wrote that log_number out: recovery then skipped (and
    deleted) the log of the memtable that was never flushed."""
    fs = GatedCompactionDisk(seed=23)
    db = Engine.open(str(tmp_path), options(background="thread", level0_compaction_trigger_files=2), fs=fs)
    model = {}
    for table in range(2):
        for i in range(50):
            db.put(b"key:%03d" % i, b"table %d" % table)
            model[b"key:%03d" % i] = b"table %d" % table
        db.flush()
    assert fs.waiting.wait(30), "the compaction of the two level-0 tables did not start"
    db.put(b"unflushed", b"only in its log")
    model[b"unflushed"] = b"only in its log"
    fs.fail_fsync("MANIFEST.tmp")
    with pytest.raises(ReadOnlyError):
        db.flush()
    fs.gate.set()  # the compaction finishes and would install its tables
    db.close()
    assert contents(str(tmp_path)) == model
