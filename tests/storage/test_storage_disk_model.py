"""The disk model the crash tests trust (FaultInjectingFileSystem, docs/storage-faults.md): what
a power cut keeps of each file and of each directory, a failing fsync, and the same disk seen
from a worker process. If these are wrong, every crash test proves less than it claims."""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from ringkv.storage.fs import FaultInjectingFileSystem, FsyncFailedError, PowerCutError


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_log(fs: FaultInjectingFileSystem, d: str) -> str:
    """A file with 1000 synced bytes, then 3000 unsynced ones; its directory entry durable."""
    path = os.path.join(d, "000001.wal")
    f = fs.create(path)
    f.write(b"s" * 1000)
    f.sync()
    f.write(bytes(range(1, 251)) * 12)
    fs.sync_dir(d)
    return path


def classify(data: bytes, unsynced: bytes) -> str:
    tail = data[1000:]
    kept = 0
    while kept < len(tail) and tail[kept] == unsynced[kept]:
        kept += 1
    rest = tail[kept:]
    if not tail:
        return "drop"
    if kept == len(unsynced):
        return "keep"
    if not rest:
        return "torn"
    return "zeros" if rest.count(0) == len(rest) else "garbage"


def test_unsynced_tail_after_a_power_cut_is_dropped_kept_torn_or_filled_with_garbage_or_zeros(tmp_path):
    seen = collections.Counter()
    for seed in range(40):
        d = str(tmp_path / str(seed))
        os.mkdir(d)
        fs = FaultInjectingFileSystem(seed)
        path = write_log(fs, d)
        fs.crash()
        data = read(path)
        assert data[:1000] == b"s" * 1000, f"seed={seed}: synced bytes changed"
        assert len(data) <= 4000, f"seed={seed}: the file grew past what was written"
        seen[classify(data, bytes(range(1, 251)) * 12)] += 1
    assert set(seen) == {"drop", "keep", "torn", "garbage", "zeros"}, seen


def test_power_cut_with_no_seed_keeps_exactly_the_synced_bytes(tmp_path):
    fs = FaultInjectingFileSystem()
    path = write_log(fs, str(tmp_path))
    fs.crash()
    assert read(path) == b"s" * 1000


def test_the_same_seed_cuts_the_same_way(tmp_path):
    outcomes = []
    for run in range(2):
        d = str(tmp_path / str(run))
        os.mkdir(d)
        fs = FaultInjectingFileSystem(seed=7)
        path = write_log(fs, d)
        fs.write_file_synced(os.path.join(d, "MANIFEST"), b"m")
        fs.crash()
        outcomes.append((read(path), sorted(os.listdir(d)), fs.cut_report()))
    assert outcomes[0][0] == outcomes[1][0] and outcomes[0][1] == outcomes[1][1]


def test_creation_rename_and_unlink_without_a_directory_fsync_are_undone(tmp_path):
    d = str(tmp_path)
    fs = FaultInjectingFileSystem()
    fs.write_file_synced(os.path.join(d, "MANIFEST"), b"old")
    fs.write_file_synced(os.path.join(d, "000002.wal"), b"log")
    fs.sync_dir(d)
    fs.write_file_synced(os.path.join(d, "000003.sst"), b"table")  # created
    fs.write_file_synced(os.path.join(d, "MANIFEST.tmp"), b"new")
    fs.rename(os.path.join(d, "MANIFEST.tmp"), os.path.join(d, "MANIFEST"))  # renamed over
    fs.remove(os.path.join(d, "000002.wal"))  # unlinked
    fs.crash()
    assert sorted(os.listdir(d)) == ["000002.wal", "MANIFEST"]
    assert read(os.path.join(d, "MANIFEST")) == b"old"
    assert read(os.path.join(d, "000002.wal")) == b"log", "an undone unlink brings back the durable bytes"


def test_directory_fsync_makes_creation_rename_and_unlink_durable(tmp_path):
    d = str(tmp_path)
    fs = FaultInjectingFileSystem(seed=1)
    fs.write_file_synced(os.path.join(d, "MANIFEST"), b"old")
    fs.write_file_synced(os.path.join(d, "000002.wal"), b"log")
    fs.sync_dir(d)
    fs.write_file_synced(os.path.join(d, "000003.sst"), b"table")
    fs.write_file_synced(os.path.join(d, "MANIFEST.tmp"), b"new")
    fs.rename(os.path.join(d, "MANIFEST.tmp"), os.path.join(d, "MANIFEST"))
    fs.remove(os.path.join(d, "000002.wal"))
    fs.sync_dir(d)
    fs.crash()
    assert sorted(os.listdir(d)) == ["000003.sst", "MANIFEST"]
    assert read(os.path.join(d, "MANIFEST")) == b"new"


@pytest.mark.parametrize("dir_order", ["ordered", "any"])
def test_directory_updates_not_made_durable_survive_in_order_or_in_any_subset(tmp_path, dir_order):
    names = [f"{i:06d}.sst" for i in range(6)]
    survivors = set()
    for seed in range(60):
        d = str(tmp_path / f"{dir_order}-{seed}")
        os.mkdir(d)
        fs = FaultInjectingFileSystem(seed, dir_order=dir_order)
        for name in names:
            fs.write_file_synced(os.path.join(d, name), b"x")
        fs.crash()
        kept = tuple(name in os.listdir(d) for name in names)
        survivors.add(kept)
        if dir_order == "ordered":
            assert list(kept) == sorted(kept, reverse=True), f"seed={seed}: not a prefix: {kept}"
    if dir_order == "any":
        assert any(list(k) != sorted(k, reverse=True) for k in survivors), "never out of order"
    assert len(survivors) >= 4


def test_fsync_fails_once_then_succeeds_but_the_bytes_it_dropped_stay_lost(tmp_path):
    d = str(tmp_path)
    fs = FaultInjectingFileSystem()
    fs.fail_fsync(".wal")
    path = os.path.join(d, "000001.wal")
    f = fs.create(path)
    fs.sync_dir(d)
    f.write(b"a" * 100)
    with pytest.raises(FsyncFailedError) as err:
        f.sync()
    assert err.value.path == path and "EIO" in str(err.value)
    f.write(b"b" * 100)
    f.sync()  # succeeds, as on Linux after the error was reported once
    fs.crash()
    assert read(path) == bytes(100) + b"b" * 100, "the dropped pages never reached the disk"


def test_directory_fsync_can_fail_once(tmp_path):
    d = str(tmp_path)
    fs = FaultInjectingFileSystem()
    fs.fail_fsync(directory=True, nth=2)
    fs.sync_dir(d)
    with pytest.raises(FsyncFailedError, match="fsync of"):
        fs.sync_dir(d)
    fs.sync_dir(d)


def test_every_operation_after_the_cut_fails(tmp_path):
    fs = FaultInjectingFileSystem()
    f = fs.create(str(tmp_path / "a"))
    fs.crash_after(1)
    f.write(b"x")  # operation 1: it completes, then the power goes
    assert fs.crashed
    for op in (lambda: f.write(b"y"), f.sync, lambda: fs.create(str(tmp_path / "b")), lambda: fs.sync_dir(str(tmp_path))):
        with pytest.raises(OSError):
            op()


CHILD = textwrap.dedent(
    r"""
    import os, pickle, sys
    from ringkv.storage.fs import FsyncFailedError
    disk = pickle.loads(bytes.fromhex(sys.argv[1]))
    d = sys.argv[2]
    done = []
    try:
        for name in ("a.sst", "b.sst", "c.sst"):
            f = disk.create(os.path.join(d, name))
            f.write(b"table " + name.encode())
            try:
                f.sync()
            except FsyncFailedError:
                done.append("fsync of %s failed" % name)
                continue
            done.append(name)
    except OSError as exc:
        done.append("then: %s" % exc.strerror)
    print("|".join(done))
    """
)


def test_a_worker_process_shares_the_disk_its_operation_numbers_and_its_power_cut(tmp_path):
    d = str(tmp_path)
    fs = FaultInjectingFileSystem()
    fs.write_file_synced(os.path.join(d, "MANIFEST"), b"m")
    fs.sync_dir(d)
    fs.fail_fsync("b.sst")
    fs.crash_after(8)  # the worker's third create... then its first write: the cut lands there
    child = subprocess.run(
        [sys.executable, "-c", CHILD, pickle.dumps(fs).hex(), d], capture_output=True, text=True, check=True
    )
    assert child.stdout.strip() == "a.sst|fsync of b.sst failed|then: simulated power cut: the disk is gone"
    assert fs.crashed and fs.operations == 4 + 8
    assert fs.trace()[4:] == [
        "create a.sst", "write a.sst 11 bytes", "sync a.sst 11 bytes",
        "create b.sst", "write b.sst 11 bytes", "sync_failed b.sst 11 bytes",
        "create c.sst", "write c.sst 11 bytes",
    ]
    with pytest.raises(PowerCutError):
        fs.create(os.path.join(d, "d.sst"))
    assert os.listdir(d) == ["MANIFEST"], "no worker file's directory entry was durable"
