"""Power cuts at every operation of a flush, a compaction and a recovery, not only at random.

The disk model (FaultInjectingFileSystem, docs/storage-faults.md) numbers every mutating file
operation, in the engine's process and in its worker processes alike: flushes and compactions
run in workers, the default background mode. A scenario is run once to learn its operations;
then, for every k, it is run again from scratch with the power cut right after operation k
(each cut with its own seed for torn tails, garbage and undone directory updates), the
directory is reopened with the real file system, and what it holds is checked against a dict
model:

- every acknowledged write is there, and the store is exactly as it was after some operation
  no earlier than the last acknowledged one (writes made with sync=False may be lost, but
  only from the end, whole; an overwritten value never comes back);
- the open raises no CorruptionError: everything durable is intact;
- the reopened store takes writes again (liveness).

A failure prints the scenario, the seed and the operation the cut followed; the default run
covers one seed per scenario, RINGKV_TEST_FULL=1 a sweep over seeds, both background modes and
a file system that reorders directory updates.

Every compaction strategy is enumerated (docs/compaction.md): the compaction scenario under
tiered and time-window compaction too; a flush that writes the tables of three column families
at once; the deletion of an expired time-window table (a manifest edit, no merge); and the
re-routing of every table when an engine opens with another family routing.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time

import pytest

from ringkv.errors import RingkvError
from ringkv.storage import Engine, Options, WriteBatch
from ringkv.storage.fs import FaultInjectingFileSystem, PosixFileSystem
from ringkv.storage.strategies import Leveled, PrefixRouter, Tiered, TimeWindow


@pytest.fixture(autouse=True)
def no_real_fsync(monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)


MEMTABLE_BYTES = 64 * 1024


EXPIRING = b"\xee\xee"  # a value starting so expires at EXPIRY_MS (random values do, once in 65,536)
EXPIRY_MS = 4_000_000_000_000  # in 2096: the wall clock of a reopen never reaches it


def expiry_of(key: bytes, value: bytes) -> int:
    return EXPIRY_MS if value.startswith(EXPIRING) else 0


class ScenarioClock:
    """The time the time-window families see: the wall's, unless a scenario sets it."""

    ms: int | None = None

    @classmethod
    def now_ms(cls) -> int:
        return cls.ms if cls.ms is not None else int(time.time() * 1000)


@pytest.fixture(autouse=True)
def wall_clock():
    ScenarioClock.ms = None
    yield
    ScenarioClock.ms = None


# Strategies as the scenarios run them: none compacts of its own accord, only what we enumerate.
STRATEGIES = {
    "leveled": Leveled(),
    "tiered": Tiered(min_merge_runs=8, max_runs=32),
    "time_window": TimeWindow(window_ms=3_600_000, min_merge_tables=8),
}
# "families": the default family leveled, two others, keys sent by their first letters.
FAMILY_ROUTER = PrefixRouter({b"key:00": "tiered", b"key:01": "windows"})


def scenario_options(background: str = "process", strategy: str = "leveled") -> Options:
    extra: dict = {"expiry_of": expiry_of, "now_ms": ScenarioClock.now_ms}
    if strategy == "families":
        extra.update(families={"tiered": STRATEGIES["tiered"], "windows": STRATEGIES["time_window"]},
                     family_router=FAMILY_ROUTER)
    else:
        extra["compaction"] = STRATEGIES[strategy]
    return Options(
        sync="always",
        background=background,
        compression="none",  # sizes, and so operation counts, do not depend on the values
        level0_compaction_trigger_files=8,  # no compaction of its own accord: only what we enumerate
        target_file_bytes=64 * 1024,
        memtable_bytes=MEMTABLE_BYTES,
        **extra,
    )


class HeldFlushDisk(FaultInjectingFileSystem):
    """Holds the flush thread before its first operation, or before it hands its job (and so
    this disk) to a worker, until `release` is set: writes made after a memtable rotation then
    come first, and the order of operations repeats run after run."""

    def __init__(self, seed: int, dir_order: str) -> None:
        super().__init__(seed, dir_order=dir_order)
        self.release = threading.Event()

    def _hold(self) -> None:
        if threading.current_thread().name == "ringkv-flush":
            self.release.wait(30)

    def _operation(self):
        self._hold()
        return super()._operation()

    def __getstate__(self) -> dict:
        self._hold()
        return super().__getstate__()


class Model:
    """The writes a scenario made, as the store should be after each of them."""

    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}
        self.history: list[dict[bytes, bytes]] = [{}]
        self.acknowledged = 0  # history index of the last write acknowledged as durable
        self.in_flight: list[tuple[bytes, bytes | None]] | None = None  # the write a cut failed

    def write(self, db: Engine, rng: random.Random, durable: bool, keys: int = 60) -> None:
        sync = None if durable else False  # sync=False: acknowledged to the OS only
        roll = rng.random()
        if roll < 0.65:
            ops = [(b"key:%03d" % rng.randrange(keys), rng.randbytes(rng.randrange(100, 400)))]
        elif roll < 0.8:
            ops = [(b"key:%03d" % rng.randrange(keys), None)]
        else:
            ops = [(b"key:%03d" % rng.randrange(keys), rng.randbytes(50)) for _ in range(4)]
        self.in_flight = ops
        if len(ops) == 4:
            db.write_batch(WriteBatch().put(*ops[0]).put(*ops[1]).put(*ops[2]).put(*ops[3]), sync=sync)
        elif ops[0][1] is None:
            db.delete(ops[0][0], sync=sync)
        else:
            db.put(*ops[0], sync=sync)
        self.in_flight = None
        self.state = applied(self.state, ops)
        self.history.append(self.state)
        if durable:
            self.acknowledged = len(self.history) - 1

    def acceptable(self) -> list[dict[bytes, bytes]]:
        """The store after any write since the last acknowledged one, or with the write the
        power cut interrupted applied whole."""
        states = self.history[self.acknowledged :]
        if self.in_flight is not None:
            states = [*states, applied(self.state, self.in_flight)]
        return states

    def writes(self, db: Engine, rng: random.Random, n: int, durable: bool = True, keys: int = 60) -> None:
        for _ in range(n):
            self.write(db, rng, durable, keys)


def applied(state: dict[bytes, bytes], ops) -> dict[bytes, bytes]:
    state = dict(state)
    for key, value in ops:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return state


# ------------------------------------------------------------------------------ scenarios
# Each prepares a store through `fs` (not enumerated), then runs the enumerated step.


def flush_scenario(db: Engine, rng: random.Random, model: Model, fs: HeldFlushDisk):
    fs.release.set()
    model.writes(db, rng, 80)
    db.flush()  # a table already on disk, and a manifest naming it
    model.writes(db, rng, 80)
    model.writes(db, rng, 20, durable=False)  # in the log, not yet fsynced when the flush starts
    return db.flush


def compaction_scenario(db: Engine, rng: random.Random, model: Model, fs: HeldFlushDisk):
    fs.release.set()
    for _ in range(3):  # three overlapping level-0 tables: overwrites and tombstones to merge
        model.writes(db, rng, 200, keys=400)
        db.flush()
    return db.compact_range


def expired_table_scenario(db: Engine, rng: random.Random, model: Model, fs: HeldFlushDisk):
    """A time-window table whose every record has expired, below live ones: the step deletes
    it unread (a manifest edit and an unlink), and nothing else changes."""
    fs.release.set()
    ScenarioClock.ms = EXPIRY_MS - 60_000
    expired = {b"old:%03d" % i: EXPIRING + rng.randbytes(200) for i in range(60)}
    for key, value in expired.items():
        db.put(key, value)  # acknowledged: sync="always"
    model.state = {**model.state, **expired}
    model.history.append(model.state)
    model.acknowledged = len(model.history) - 1
    db.flush()
    model.writes(db, rng, 80)  # live records, in a newer table
    db.flush()
    model.state = {k: v for k, v in model.state.items() if k not in expired}
    model.history.append(model.state)  # the expired keys are gone or not: both are right

    def step():
        ScenarioClock.ms = EXPIRY_MS + 1
        db.compact_range(b"old:", b"old;")  # the expired table is deleted unread
        assert db.stats()["expired_tables_dropped"] == 1

    return step


def rotation_scenario(db: Engine, rng: random.Random, model: Model, fs: HeldFlushDisk):
    """A write fills the memtable and rotates the log; more writes are acknowledged in the new
    log while the flush of the old one waits; then the flush runs."""
    while db.stats()["memtable_bytes"] < MEMTABLE_BYTES:
        model.write(db, rng, durable=True, keys=1000)

    def step():
        model.writes(db, rng, 12, keys=1000)  # the first one rotates the log
        fs.release.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the flush is over, its log deleted
            stats = db.stats()
            logs = [n for n in os.listdir(db.path) if n.endswith(".wal")]
            if fs.crashed or stats["background_error"] or (not stats["immutable_memtables"] and len(logs) == 1):
                return
            time.sleep(0.002)
        raise AssertionError("the flush did not finish")

    return step


SCENARIOS = {"flush": flush_scenario, "compaction": compaction_scenario, "rotation": rotation_scenario,
             "expired_table": expired_table_scenario}


class Run:
    """One run of a scenario, with the power cut after operation `cut_after` of its step."""

    def __init__(self, root: str, name: str, seed: int, cut_after: int | None, background: str, dir_order: str,
                 strategy: str = "leveled"):
        self.path = os.path.join(root, f"{name}-{cut_after}", "db")  # one name: one trace
        disk_seed = seed * 100_003 + (cut_after or 0)
        self.where = (f"{name} scenario, strategy={strategy}, seed={seed}, background={background}, "
                      f"dir_order={dir_order}, cut after operation {cut_after}")
        self.strategy = strategy
        self.fs = HeldFlushDisk(disk_seed, dir_order)
        self.model = Model()
        db = Engine.open(self.path, scenario_options(background, strategy), fs=self.fs)
        step = SCENARIOS[name](db, random.Random(seed), self.model, self.fs)
        self.start = self.fs.operations
        if cut_after is not None:
            self.fs.crash_after(cut_after)
        self.error = None
        try:
            step()
        except (OSError, RingkvError) as exc:  # the power went off under it
            self.error = exc
        self.operations = self.fs.operations - self.start
        self.trace = self.fs.trace()[self.start :]
        self.fs.crash()  # no-op if the cut came; else a cut right after the step
        self.fs.release.set()
        db.close()

    def check(self, labels: list[str]) -> None:
        if self.trace[: len(labels)] != labels[: len(self.trace)]:
            raise AssertionError(f"{self.where}: the step did not repeat its operations: {self.trace} vs {labels}")
        cut = self.trace[-1] if self.trace else "(none)"
        check_store(self.path, self.model, f"{self.where} ({cut})", self.fs, self.strategy)
        shutil.rmtree(os.path.dirname(self.path))


def check_store(path: str, model: Model, where: str, fs: FaultInjectingFileSystem, strategy: str = "leveled") -> None:
    """Reopen with the real file system: no CorruptionError, a state the model allows, and
    writes taken again."""
    about = f"{where}; the cut: {'; '.join(fs.cut_report())}"
    with Engine.open(path, scenario_options(strategy=strategy), fs=PosixFileSystem()) as db:
        with db.scan() as it:
            state = dict(it)
        assert state in model.acceptable(), (
            f"{about}: the store is at no moment since the last acknowledged write "
            + describe(state, model.history[model.acknowledged])
        )
        db.put(b"liveness", b"ok")
        db.flush()
        assert db.get(b"liveness") == b"ok", about


def describe(state, expected) -> str:
    lost = sorted(k for k in expected if state.get(k) != expected[k])
    extra = sorted(k for k in state if k not in expected)
    return f"({len(lost)} acknowledged values missing or wrong, e.g. {lost[:3]}; {len(extra)} keys that should not be there)"


def enumerate_cuts(root: str, name: str, seed: int, background: str = "process", dir_order: str = "ordered",
                   strategy: str = "leveled") -> int:
    """Run `name` with a power cut after each of its operations in turn; returns how many."""
    learn = Run(root, name, seed, None, background, dir_order, strategy)
    assert learn.error is None, f"{learn.where}: the step failed without a power cut: {learn.error}"
    learn.check(learn.trace)
    assert learn.operations > 5, f"{learn.where}: only {learn.operations} operations"
    for k in range(1, learn.operations + 1):
        Run(root, name, seed, k, background, dir_order, strategy).check(learn.trace)
    return learn.operations


# ---------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("dir_order", ["ordered", "any"])
def test_power_cut_after_any_operation_of_a_flush_in_a_worker_loses_no_acknowledged_write(tmp_path, dir_order):
    """With dir_order="any" the file system may keep a later directory update and drop an
    earlier one: the log's deletion without the manifest rename that made it safe, unless the
    manifest's directory fsync came between them."""
    assert enumerate_cuts(str(tmp_path), "flush", seed=1, dir_order=dir_order) >= 20


def test_power_cut_after_any_operation_of_a_compaction_in_a_worker_loses_no_acknowledged_write(tmp_path):
    assert enumerate_cuts(str(tmp_path), "compaction", seed=2) >= 25


@pytest.mark.parametrize("strategy", ["tiered", "time_window"])
def test_power_cut_after_any_operation_of_a_merge_of_each_strategy_loses_no_acknowledged_write(tmp_path, strategy):
    """compact_range merges the three level-0 tables into one run (tiered: every run; time-window:
    the window's runs), through a worker, and installs it."""
    assert enumerate_cuts(str(tmp_path), "compaction", seed=5, strategy=strategy) >= 25


def test_power_cut_after_any_operation_of_a_flush_into_three_families_loses_no_acknowledged_write(tmp_path):
    """One flush writes a table per column family; one manifest installs them all, or none."""
    assert enumerate_cuts(str(tmp_path), "flush", seed=6, strategy="families") >= 25


def test_power_cut_after_any_operation_of_an_expired_table_deletion_loses_no_acknowledged_write(tmp_path):
    """The expired table goes by a manifest edit and an unlink; a cut between them leaves an
    orphan the next open deletes, never a manifest naming a missing file."""
    assert enumerate_cuts(str(tmp_path), "expired_table", seed=7, strategy="time_window") >= 8


def test_power_cut_after_any_operation_of_a_reroute_at_open_loses_no_acknowledged_write(tmp_path):
    """A store of one family is opened with three (a namespace got a compaction of its own):
    every table is merged into the new families at open. A cut anywhere in it leaves the old
    manifest (and the next open re-routes again) or the new one, never a mix."""
    root = str(tmp_path)
    first = Run(root, "compaction", 8, None, "process", "ordered")  # leveled, one family, tables on disk
    first.fs.release.set()

    def reroute(cut_after: int | None) -> tuple[str, FaultInjectingFileSystem]:
        path = os.path.join(root, f"reroute-{cut_after}", "db")
        shutil.copytree(first.path, path)
        fs = FaultInjectingFileSystem(8000 + (cut_after or 0))
        if cut_after is not None:
            fs.crash_after(cut_after)
        try:
            Engine.open(path, scenario_options(strategy="families"), fs=fs).close()
        except (OSError, RingkvError):
            pass  # the power went off under it
        fs.crash()
        return path, fs

    _, learn = reroute(None)
    assert learn.operations >= 10
    for k in range(1, learn.operations + 1):
        path, fs = reroute(k)
        check_store(path, first.model, f"reroute at open (seed=8), cut after operation {k}", fs, "families")


def test_power_cut_after_any_operation_of_a_log_rotation_and_its_flush_loses_no_acknowledged_write(tmp_path):
    """Writes acknowledged in the new log before the flush of the old one is installed are
    durable only if the new log's directory entry is: the rotation fsyncs the directory."""
    assert enumerate_cuts(str(tmp_path), "rotation", seed=4) >= 40


def test_power_cut_after_any_operation_of_a_recovery_loses_no_acknowledged_write(tmp_path):
    """The store left by a cut in the middle of a flush (while its table was being written) is
    reopened, and the power is cut again after each operation of that recovery: replaying the
    logs into a table, a new manifest and log, deleting what was replayed."""
    root = str(tmp_path)
    first = Run(root, "flush", 3, 12, "process", "ordered")

    def recover(cut_after: int | None) -> tuple[str, FaultInjectingFileSystem]:
        path = os.path.join(root, f"recovery-{cut_after}", "db")
        shutil.copytree(first.path, path)
        fs = FaultInjectingFileSystem(3000 + (cut_after or 0))
        if cut_after is not None:
            fs.crash_after(cut_after)
        try:
            Engine.open(path, scenario_options(), fs=fs).close()
        except (OSError, RingkvError):
            pass  # the power went off under it
        fs.crash()
        return path, fs

    _, learn = recover(None)
    assert learn.operations >= 10
    for k in range(1, learn.operations + 1):
        path, fs = recover(k)
        check_store(path, first.model, f"recovery after a cut in a flush (seed=3), cut after recovery operation {k}", fs)


@pytest.mark.slow
@pytest.mark.parametrize("dir_order", ["ordered", "any"])
@pytest.mark.parametrize("background", ["process", "thread"])
@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - {"expired_table"}))
@pytest.mark.parametrize("seed", range(10, 14))
def test_power_cut_sweep_over_seeds_modes_and_directory_orders(tmp_path, name, seed, background, dir_order):
    enumerate_cuts(str(tmp_path), name, seed, background, dir_order)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["tiered", "time_window", "families"])
@pytest.mark.parametrize("name", ["flush", "compaction", "rotation"])
@pytest.mark.parametrize("seed", range(20, 22))
def test_power_cut_sweep_over_strategies(tmp_path, name, seed, strategy):
    enumerate_cuts(str(tmp_path), name, seed, "process", "any", strategy)
