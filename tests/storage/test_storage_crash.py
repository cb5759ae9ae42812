"""Crash consistency: after a power cut, every write that was acknowledged under sync="always"
is there, nothing that was not acknowledged appears half-done (a batch is all or nothing), and
without fsync the store comes back as it was at some earlier moment, never a mix of moments.

A power cut is simulated by FaultInjectingFileSystem (docs/storage-faults.md): seeded by the
test's seed, it tears unsynced tails, fills them with garbage or zeros, and undoes directory
updates not made durable, in the engine's process and in its worker processes alike (the
engine runs with its default background mode). Real fsyncs are skipped in this module
(`no_real_fsync`): what survives is decided by the disk model alone, and skipping them makes
hundreds of crash points affordable. A process kill (SIGKILL), which keeps what the OS already
has, is tested with a real child process and real fsyncs. Crash points enumerated operation by
operation inside flushes and compactions are in test_storage_crash_points.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ringkv.storage import Engine, Options, WriteBatch, wal
from ringkv.storage.fs import FaultInjectingFileSystem
from ringkv.testing.wait import wait_until

FULL = os.environ.get("RINGKV_TEST_FULL") == "1"
SEEDS = 60 if FULL else 20


@pytest.fixture(autouse=True)
def no_real_fsync(monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def crash_options(**overrides) -> Options:
    base = dict(
        sync="always",  # and the default background mode: flushes and compactions in workers
        block_bytes=1024,
        target_file_bytes=64 * 1024,
        level1_max_bytes=64 * 1024,
        level0_compaction_trigger_files=2,
    )
    base.update(overrides)
    return Options(**base)


GROUPS = 4  # each batch writes one counter to the five keys of a group: all equal, or it tore


class Workload:
    """Random puts, deletes, counter batches, flushes and compactions, and the model of every
    acknowledged one. An operation that raised (the crash hit it) is kept as `in_flight`."""

    def __init__(self, db: Engine, rng: random.Random, flushes: bool = True):
        self.db = db
        self.rng = rng
        self.flushes = flushes
        self.model: dict[bytes, bytes] = {}
        self.history: list[dict[bytes, bytes]] = [{}]  # the model after each operation
        self.durable_index = 0  # history index that a completed flush made durable
        self.in_flight = None
        self.counter = 0

    def next_op(self):
        roll = self.rng.random()
        if roll < 0.55:
            key = b"key:%03d" % self.rng.randrange(150)
            return [(key, bytes([self.rng.randrange(256)]) * self.rng.randrange(2000))]
        if roll < 0.7:
            return [(b"key:%03d" % self.rng.randrange(150), None)]
        if roll < 0.93 or not self.flushes:
            self.counter += 1
            group = self.rng.randrange(GROUPS)
            return [(b"group:%d:%d" % (group, j), b"%08d" % self.counter) for j in range(5)]
        return "flush" if roll < 0.98 else "compact"

    def run(self, max_ops: int) -> None:
        for _ in range(max_ops):
            op = self.next_op()
            try:
                self.apply(op)
            except Exception:
                self.in_flight = op
                return
            if isinstance(op, list):
                for key, value in op:
                    if value is None:
                        self.model.pop(key, None)
                    else:
                        self.model[key] = value
            else:
                self.durable_index = len(self.history)
            self.history.append(dict(self.model))

    def apply(self, op) -> None:
        if op == "flush":
            self.db.flush()
        elif op == "compact":
            self.db.compact_range()
        elif len(op) == 1:
            key, value = op[0]
            self.db.delete(key) if value is None else self.db.put(key, value)
        else:
            batch = WriteBatch()
            for key, value in op:
                batch.put(key, value)
            self.db.write_batch(batch)

    def acceptable(self) -> list[dict[bytes, bytes]]:
        """The states a recovered store may be in: the model, or the model with the operation
        the crash interrupted applied whole."""
        states = [self.model]
        if isinstance(self.in_flight, list):
            with_it = dict(self.model)
            for key, value in self.in_flight:
                if value is None:
                    with_it.pop(key, None)
                else:
                    with_it[key] = value
            states.append(with_it)
        return states


def contents(path) -> dict[bytes, bytes]:
    with Engine.open(path, crash_options()) as db, db.scan() as it:
        state = dict(it)
        assert db.stats()["background_error"] is None
    return state


def assert_batches_whole(state: dict[bytes, bytes], groups: int = GROUPS) -> None:
    for group in range(groups):
        values = {state.get(b"group:%d:%d" % (group, j)) for j in range(5)}
        assert len(values) == 1, f"batch of group {group} survived in part: {values}"


def replay(seed: int, fs: FaultInjectingFileSystem) -> str:
    """What a failing test prints first: how to replay it and what the power cut did."""
    cut = "; ".join(fs.cut_report()[:12])
    return f"reproduce with seed={seed} (the power cut: {cut}): "


def describe(state, expected) -> str:
    lost = [k for k in expected if state.get(k) != expected[k]]
    extra = [k for k in state if k not in expected]
    return f"{len(lost)} acknowledged writes lost (e.g. {lost[:3]}), {len(extra)} unexpected keys"


@pytest.mark.parametrize("seed", range(SEEDS))
def test_every_acknowledged_write_survives_a_power_cut_between_operations(tmp_path, seed):
    rng = random.Random(seed)
    path = str(tmp_path)
    fs = FaultInjectingFileSystem(seed)
    db = Engine.open(path, crash_options(), fs=fs)
    work = Workload(db, rng)
    work.run(rng.randrange(0, 400))  # background compactions may be running at the cut
    fs.crash()
    db.close()
    state = contents(path)
    assert state == work.model, replay(seed, fs) + describe(state, work.model)
    assert_batches_whole(state)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_every_acknowledged_write_survives_a_power_cut_from_another_thread(tmp_path, seed):
    """The cut lands anywhere: inside a put's fsync, a flush, a compaction, a manifest rename."""
    rng = random.Random(1000 + seed)
    path = str(tmp_path)
    fs = FaultInjectingFileSystem(1000 + seed)
    db = Engine.open(path, crash_options(), fs=fs)
    work = Workload(db, rng)
    cut = threading.Timer(rng.uniform(0.0, 0.05), fs.crash)
    cut.start()
    work.run(20_000)  # until the cut makes an operation fail
    cut.join()
    db.close()
    state = contents(path)
    assert state in work.acceptable(), replay(1000 + seed, fs) + describe(state, work.model)
    assert_batches_whole(state)


@pytest.mark.parametrize("seed", range(5))
def test_power_cut_during_recovery_loses_nothing(tmp_path, seed):
    rng = random.Random(2000 + seed)
    path = str(tmp_path)
    fs = FaultInjectingFileSystem(2000 + seed)
    db = Engine.open(path, crash_options(), fs=fs)
    work = Workload(db, rng)
    work.run(300)
    fs.crash()
    db.close()
    # Recovery replays the logs into a table and rewrites the manifest; cut the power again
    # right after it, before anything else is synced.
    second = FaultInjectingFileSystem(3000 + seed)
    recovered = Engine.open(path, crash_options(), fs=second)
    second.crash()
    recovered.close()
    assert contents(path) == work.model, replay(2000 + seed, fs)


@pytest.mark.parametrize("seed", range(10))
def test_power_cut_without_fsync_recovers_the_store_as_of_one_earlier_moment(tmp_path, seed):
    """sync="never" may lose recent writes, but what survives is exactly the store after some
    operation (no later write without the earlier ones, no half batch), and never older than
    the last completed flush."""
    rng = random.Random(3000 + seed)
    path = str(tmp_path)
    fs = FaultInjectingFileSystem(3000 + seed)
    db = Engine.open(path, crash_options(sync="never"), fs=fs)
    work = Workload(db, rng)
    work.run(rng.randrange(50, 400))
    fs.crash()
    db.close()
    state = contents(path)
    moments = [i for i, past in enumerate(work.history) if past == state]
    assert moments, replay(3000 + seed, fs) + "the recovered store matches no moment of the history"
    assert max(moments) >= work.durable_index, replay(3000 + seed, fs) + "writes made durable by a flush were lost"
    assert_batches_whole(state)


def test_writes_made_durable_by_wait_durable_or_sync_true_survive_a_power_cut(tmp_path):
    """Under sync="never" a caller can still make chosen writes durable: put(sync=True), or
    put(defer=True) / write_batch(sync=False) followed by wait_durable(lsn). An fsync covers
    the whole log before it; what came after it, or was still queued, is lost whole."""
    path = str(tmp_path)
    fs = FaultInjectingFileSystem()
    db = Engine.open(path, crash_options(sync="never"), fs=fs)
    db.put(b"before", b"0")
    lsn = db.put(b"deferred", b"1", defer=True)
    lsn = max(lsn, db.write_batch(WriteBatch().put(b"batch:1", b"2").put(b"batch:2", b"2"), sync=False))
    db.wait_durable(lsn)
    db.put(b"synced", b"3", sync=True)
    db.put(b"after", b"4")
    db.put(b"queued", b"5", defer=True)
    fs.crash()
    db.close()
    assert contents(path) == {
        b"before": b"0", b"deferred": b"1", b"batch:1": b"2", b"batch:2": b"2", b"synced": b"3"
    }


# ------------------------------------------------ bugs found by these tests, since fixed: rotation


class SlowTableDisk(FaultInjectingFileSystem):
    """A disk where installing a flushed table (the manifest's renames) hangs until `gate` is
    set, once `armed`: the flush of a frozen memtable stays in progress while writers go on
    appending to the new log. It hangs in the engine's process, so workers need not know."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.armed = False

    def rename(self, src, dst):
        if self.armed:
            self.gate.wait(30)
        return super().rename(src, dst)


def test_writes_acknowledged_after_a_memtable_rotation_survive_a_power_cut(tmp_path):
    path = str(tmp_path)
    fs = SlowTableDisk()
    db = Engine.open(path, crash_options(memtable_bytes=64 * 1024), fs=fs)
    fs.armed = True
    acknowledged = {}

    def put():
        key = b"key:%05d" % len(acknowledged)
        db.put(key, b"v" * 500)
        acknowledged[key] = b"v" * 500

    while not db.stats()["immutable_memtables"]:
        put()
    for _ in range(10):  # the memtable rotated and its flush hangs: these go to the new log
        put()
    fs.crash()
    fs.gate.set()
    db.close()
    state = contents(path)
    assert state == acknowledged, describe(state, acknowledged)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_every_acknowledged_write_survives_power_cuts_amid_automatic_flushes(tmp_path, seed):
    """Small memtables rotate on their own, so the cut often falls between a rotation and the
    end of its flush."""
    rng = random.Random(4000 + seed)
    path = str(tmp_path)
    fs = FaultInjectingFileSystem(4000 + seed)
    db = Engine.open(path, crash_options(memtable_bytes=64 * 1024), fs=fs)
    work = Workload(db, rng, flushes=False)
    work.run(rng.randrange(50, 400))
    fs.crash()
    db.close()
    state = contents(path)
    assert state == work.model, replay(4000 + seed, fs) + describe(state, work.model)
    assert_batches_whole(state)


# ------------------------------------------------------------------------------- process kill

CHILD = textwrap.dedent(
    r"""
    import sys
    from ringkv.storage import Engine, Options, WriteBatch

    def value(i):
        return (b"%08d|" % i) * (i * 37 % 300)

    path, first = sys.argv[1], int(sys.argv[2])
    db = Engine.open(path, Options(  # flushes and compactions in worker processes, the default
        sync="always", memtable_bytes=64 * 1024, block_bytes=1024,
        target_file_bytes=64 * 1024, level1_max_bytes=64 * 1024,
        level0_compaction_trigger_files=2,
    ))
    out = sys.stdout
    i = first
    while True:
        if i % 5 == 0:
            batch = WriteBatch()
            for j in range(5):
                batch.put(b"group:%d:%d" % (i % 3, j), b"%08d" % i)
            db.write_batch(batch)
        elif i % 11 == 0:
            db.delete(b"key:%08d" % (i - 7))
        else:
            db.put(b"key:%08d" % i, value(i))
        out.write("%d\n" % i)
        out.flush()  # the parent learns of write i only once it is acknowledged
        i += 1
    """
)


def child_value(i: int) -> bytes:
    return (b"%08d|" % i) * (i * 37 % 300)


def child_op(i: int) -> list[tuple[bytes, bytes | None]]:
    """What the child's write number `i` does, as (key, value-or-None) pairs."""
    if i % 5 == 0:
        return [(b"group:%d:%d" % (i % 3, j), b"%08d" % i) for j in range(5)]
    if i % 11 == 0:
        return [(b"key:%08d" % (i - 7), None)]
    return [(b"key:%08d" % i, child_value(i))]


def test_acknowledged_writes_survive_sigkill_at_random_points(tmp_path):
    path = str(tmp_path / "db")
    rng = random.Random(7)
    model: dict[bytes, bytes] = {}
    first = 1
    for _ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, path, str(first)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        acked: list[int] = []
        kill_after = rng.randrange(30, 500)
        deadline = time.monotonic() + 20
        try:
            while len(acked) < kill_after and time.monotonic() < deadline:
                line = child.stdout.readline()
                if not line:
                    break
                acked.append(int(line))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        acked += [int(line) for line in child.stdout.read().splitlines()]
        child.stdout.close()
        assert len(acked) >= 30, "the child died or never started writing"
        assert acked == list(range(first, first + len(acked)))
        for i in acked:
            for key, value in child_op(i):
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = value
        state = contents(path)
        # The write the kill interrupted may have landed, whole; everything else must match.
        in_flight = dict(model)
        for key, value in child_op(acked[-1] + 1):
            if value is None:
                in_flight.pop(key, None)
            else:
                in_flight[key] = value
        assert state in (model, in_flight), describe(state, model)
        assert_batches_whole(state, groups=3)
        model = state
        first = acked[-1] + 2  # skip the in-flight number: it may or may not have landed


SLOW_COMPACTION_CHILD = textwrap.dedent(
    r"""
    import os, sys
    os.environ["RINGKV_TEST_TAG"] = sys.argv[2]  # inherited by the worker processes
    from ringkv.storage import Engine, Options
    db = Engine.open(sys.argv[1], Options(compression="none", compaction_rate_bytes_per_s=64 * 1024))
    for i in range(400):
        db.put(b"k%04d" % i, b"x" * 1000)
    print("compacting", flush=True)
    db.compact_range()  # about 6 s of rate-limited writing in a worker process
    """
)


def processes_tagged(tag: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if b"RINGKV_TEST_TAG=" + tag.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def test_killed_engine_leaves_no_worker_writing_into_its_directory(tmp_path):
    path = str(tmp_path)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"

    def tables():
        return {n: os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.endswith(".sst")}

    def output_begun() -> bool:
        """The flushed table and, beside it, the compaction's output with its first bytes."""
        sizes = tables()
        return len(sizes) >= 2 and min(sizes.values()) > 0

    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_COMPACTION_CHILD, path, tag], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "compacting"
        # The worker is then mid-write (for about 6 s) when the engine dies.
        wait_until(output_begun, 30, "the compaction worker to start writing its output table",
                   interval_s=0.02, ignore=(FileNotFoundError,))  # a table removed mid-listing
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()

    try:
        at_death = tables()
        time.sleep(1.0)  # a quiet second: a worker still writing would add about 64 KB in it
        assert tables() == at_death, "tables changed after their engine was killed"
    finally:
        for pid in processes_tagged(tag):  # the orphaned workers this test started
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------ bugs found by these tests, since fixed: fault injector


def test_power_cut_during_a_rename_leaves_the_old_or_the_new_file_whole(tmp_path, monkeypatch):
    fs = FaultInjectingFileSystem()
    d = str(tmp_path)
    old, new = b"old manifest", b"a longer new manifest"
    fs.write_file_synced(os.path.join(d, "MANIFEST"), old)
    fs.sync_dir(d)
    fs.write_file_synced(os.path.join(d, "MANIFEST.tmp"), new)
    real_replace = os.replace

    def replace_then_lose_power(src, dst):
        real_replace(src, dst)
        fs.crash()  # another thread cuts the power right after the OS rename

    monkeypatch.setattr(os, "replace", replace_then_lose_power)
    fs.rename(os.path.join(d, "MANIFEST.tmp"), os.path.join(d, "MANIFEST"))
    with open(os.path.join(d, "MANIFEST"), "rb") as f:
        assert f.read() in (old, new)


def test_power_cut_never_keeps_a_rename_but_drops_a_file_created_before_it(tmp_path):
    fs = FaultInjectingFileSystem()
    d = str(tmp_path)
    fs.write_file_synced(os.path.join(d, "MANIFEST"), b"names nothing")
    fs.sync_dir(d)
    fs.write_file_synced(os.path.join(d, "000005.sst"), b"table")
    fs.write_file_synced(os.path.join(d, "MANIFEST.tmp"), b"names 000005.sst")
    fs.rename(os.path.join(d, "MANIFEST.tmp"), os.path.join(d, "MANIFEST"))
    fs.crash()
    with open(os.path.join(d, "MANIFEST"), "rb") as f:
        manifest = f.read()
    assert manifest == b"names nothing" or os.path.exists(os.path.join(d, "000005.sst"))


# ------------------------------------------ bugs found by these tests, since fixed: cut-short logs


def test_failed_append_after_a_power_cut_does_not_grow_the_log(tmp_path):
    fs = FaultInjectingFileSystem()
    path = str(tmp_path / "000001.wal")
    writer = wal.WalWriter(fs, path)  # its 16-byte header is written, not synced
    fs.crash()  # the header is gone (and the file too: its directory entry was never synced)
    with pytest.raises(OSError):
        writer.append(wal.encode_put(b"k", b"v"))
    assert not os.path.exists(path) or os.path.getsize(path) == 0


def test_log_created_just_before_a_crash_with_a_zero_filled_header_is_empty(tmp_path):
    path = str(tmp_path)
    with Engine.open(path, crash_options()) as db:
        db.put(b"k", b"v")
    with open(os.path.join(path, "000099.wal"), "wb") as f:
        f.write(bytes(16))
    assert contents(path) == {b"k": b"v"}


# ---------------------------------------- bugs found by the disk model's torn and garbage tails


def logged_store(path) -> tuple[str, list[int]]:
    """A closed store whose writes a0..a5 sit only in its log; the log and its record offsets."""
    with Engine.open(path, crash_options(sync="never")) as db:
        for i in range(6):
            db.put(b"a%d" % i, b"x" * 100)
    (log,) = [os.path.join(path, n) for n in os.listdir(path) if n.endswith(".wal")]
    offsets = [wal.FILE_HEADER_BYTES + i * len(wal.encode_put(b"a0", b"x" * 100)) for i in range(6)]
    return log, offsets


@pytest.mark.parametrize("torn_at", ["record 3", "header"])
def test_log_written_after_a_log_torn_by_a_power_cut_is_not_replayed(tmp_path, torn_at):
    """Under sync="never" the disk may write back a newer log and not the tail of the older
    one; replaying the newer log after the torn one recovered b0 without a3: a moment that
    never was. Nothing in the newer log was acknowledged as durable (a log is fsynced only
    after the one before it)."""
    path = str(tmp_path)
    log, offsets = logged_store(path)
    os.truncate(log, offsets[3] + 7 if torn_at == "record 3" else 0)
    newer = os.path.join(path, f"{int(os.path.basename(log)[:6]) + 1:06d}.wal")
    with open(newer, "wb") as f:
        f.write(wal.file_header() + wal.encode_put(b"b0", b"later"))
    expected = {b"a%d" % i: b"x" * 100 for i in range(3 if torn_at == "record 3" else 0)}
    with Engine.open(path, crash_options()) as db, db.scan() as it:
        assert dict(it) == expected
        assert db.stats()["recovery"][-1]["dropped_after_torn_log"] == log


@pytest.mark.parametrize("fill", ["garbage", "zeros"])
def test_store_opens_after_a_power_cut_left_garbage_after_its_last_log_record(tmp_path, fill):
    """The disk grew the log's file but never wrote its last pages: the open refused the
    store with a CorruptionError (found by the disk model's garbage tails)."""
    path = str(tmp_path)
    log, offsets = logged_store(path)
    size = os.path.getsize(log)
    junk = random.Random(5).randbytes(4096) if fill == "garbage" else bytes(4096)
    with open(log, "r+b") as f:
        f.seek(offsets[4] + 3)
        f.write(junk[: size - offsets[4] - 3] + junk[:1000])
    with Engine.open(path, crash_options()) as db, db.scan() as it:
        assert dict(it) == {b"a%d" % i: b"x" * 100 for i in range(4)}


def test_recovery_never_reuses_the_number_of_a_file_left_on_disk(tmp_path):
    """Numbers handed out after the last manifest write (a rotated log, a crashed flush's
    table) were handed out again by the next open, whose new files truncated those files."""
    path = str(tmp_path)
    logged_store(path)
    with open(os.path.join(path, "000050.wal"), "wb") as f:  # a log rotated in just before a cut
        f.write(wal.file_header())
    with open(os.path.join(path, "000060.sst"), "wb") as f:  # a crashed flush's table
        f.write(b"orphan")
    with Engine.open(path, crash_options()) as db:
        numbers = sorted(int(n[:6]) for n in os.listdir(path) if n[:6].isdigit())
        assert numbers and min(numbers) > 60, numbers
        assert db.get(b"a0") == b"x" * 100
