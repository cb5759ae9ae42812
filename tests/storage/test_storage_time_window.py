"""Time-window compaction (docs/compaction.md, storage/time_window.py), as an operator of a TTL
namespace sees it: a window whose every record has expired is deleted as a file, without one
byte of it being read; windows are merged once they end; late data lands in the window it
arrives in and still shadows what it replaced; deletes and the tombstone grace rule are kept.

Values here carry what the node's records carry, in a simpler form: a kind byte (b"v" a value,
b"t" a tombstone record), then 8 bytes of time (a value's expiry, 0 never; a tombstone's death).
The extractor and filter below read them as node/expiry_filter.py reads records: a value is
dead at its expiry; a tombstone may go only after GRACE_MS and once anti-entropy has run.
"""

from __future__ import annotations

import collections
import os

import pytest

from ringkv.errors import ConfigError
from ringkv.storage import Engine, Options, time_window
from ringkv.storage.fs import PosixFileSystem
from ringkv.storage.strategies import TimeWindow
from ringkv.testing.wait import wait_until

KIB = 1024
MINUTE_MS = 60_000
GRACE_MS = 10 * MINUTE_MS
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS  # the start of a window


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def now_ms(self) -> int:
        return self.ms


def value(expires_ms: int, payload: bytes = b"x" * 100) -> bytes:
    return b"v" + expires_ms.to_bytes(8, "big") + payload


def tombstone(dead_since_ms: int) -> bytes:
    return b"t" + dead_since_ms.to_bytes(8, "big")


def expiry_of(key: bytes, data: bytes) -> int:
    t = int.from_bytes(data[1:9], "big")
    return -(t + GRACE_MS) if data[:1] == b"t" else t


class RecordFilter:
    def __init__(self, clock: Clock):
        self.clock = clock
        self.anti_entropy_done = False

    def __call__(self, key: bytes, data: bytes) -> bool:
        t = int.from_bytes(data[1:9], "big")
        now = self.clock.now_ms()
        if data[:1] == b"t":
            return not (t + GRACE_MS <= now and self.anti_entropy_done)
        return not 0 < t <= now


class ReadCountingFile:
    def __init__(self, f, counts, name):
        self._f, self._counts, self._name = f, counts, name
        self.path, self.size = f.path, f.size

    def read(self, offset: int, length: int) -> bytes:
        self._counts[self._name] += 1
        return self._f.read(offset, length)

    def close(self) -> None:
        self._f.close()


class ReadCountingFileSystem(PosixFileSystem):
    """Counts every read of every table file: whole-file reads (a merge's input) and reads of
    an open table (footer, index, filter, blocks)."""

    def __init__(self) -> None:
        self.reads: collections.Counter[str] = collections.Counter()

    def read_all(self, path: str) -> bytes:
        self.reads[os.path.basename(path)] += 1
        return super().read_all(path)

    def open_read(self, path: str):
        name = os.path.basename(path)
        self.reads[name] += 1
        return ReadCountingFile(super().open_read(path), self.reads, name)


def options(clock: Clock, **overrides) -> Options:
    strategy = overrides.pop("strategy", TimeWindow(window_ms=MINUTE_MS, min_merge_tables=4))
    base = dict(
        background="thread",
        compression="none",
        memtable_bytes=64 * KIB,
        target_file_bytes=64 * KIB,
        compaction=strategy,
        expiry_of=expiry_of,
        compaction_filter=RecordFilter(clock),
        now_ms=clock.now_ms,
    )
    base.update(overrides)
    return Options(**base)


def tables_by_window(db: Engine) -> dict[int, list[int]]:
    out = collections.defaultdict(list)
    for run in db._state.versions[0].sorted_runs():
        for t in run:
            out[(t.meta.created_ms - T0) // MINUTE_MS].append(t.number)
    return dict(out)


def write_window(db: Engine, clock: Clock, prefix: bytes, expires_ms: int, count: int = 200) -> None:
    for i in range(count):
        db.put(b"%s:%04d" % (prefix, i), value(expires_ms))
    db.flush()


def test_expired_window_is_deleted_as_a_file_without_being_read(tmp_path, seal):
    clock = Clock()
    fs = ReadCountingFileSystem()
    with Engine.open(str(tmp_path), options(clock, encryption_keys=seal.keys), fs=fs) as db:
        write_window(db, clock, b"m0", expires_ms=T0 + 10 * MINUTE_MS)  # window 0, 10-minute TTL
        clock.ms += MINUTE_MS
        write_window(db, clock, b"m1", expires_ms=T0 + 11 * MINUTE_MS)  # window 1
        (old,) = tables_by_window(db)[0]
        old_name = f"{old:06d}.sst"
        assert os.path.exists(tmp_path / old_name)
        reads_before = fs.reads[old_name]

        clock.ms = T0 + 10 * MINUTE_MS  # every record of window 0 has expired
        wait_until(lambda: db.stats()["expired_tables_dropped"] == 1, 10, "the expired window to go")

        assert not os.path.exists(tmp_path / old_name)
        assert fs.reads[old_name] == reads_before, "the expired table was read before its deletion"
        stats = db.stats()
        assert stats["compaction_bytes_read"] == stats["compaction_bytes_written"] == 0, "moves only, no merge"
        assert stats["expired_bytes_dropped"] > 20_000
        assert db.get(b"m0:0000") is None
        assert db.get(b"m1:0000") == value(T0 + 11 * MINUTE_MS)
    with Engine.open(str(tmp_path), options(clock, encryption_keys=seal.keys)) as db:  # the manifest, reread
        assert db.get(b"m0:0000") is None
        assert db.get(b"m1:0199") == value(T0 + 11 * MINUTE_MS)
    seal.check(tmp_path)


def test_an_ended_window_is_merged_into_one_run_and_the_current_one_is_left_to_grow(tmp_path, seal):
    clock = Clock()
    with Engine.open(str(tmp_path), options(clock, encryption_keys=seal.keys)) as db:
        for part in range(3):
            write_window(db, clock, b"w0p%d" % part, expires_ms=0, count=50)
        assert len(tables_by_window(db)[0]) == 3
        assert db.stats()["compactions"] == 0, "the window has not ended, and holds fewer than 4 tables"
        clock.ms += MINUTE_MS
        wait_until(lambda: db.stats()["families"]["default"]["sorted_runs"] == 1, 10, "window 0 to be merged")
        assert db.stats()["levels"][0]["tables"] == 0
        assert db.get(b"w0p2:0049") == value(0)
    seal.check(tmp_path)


def test_the_current_window_merges_its_tables_once_it_holds_min_merge_tables(tmp_path):
    clock = Clock()
    with Engine.open(str(tmp_path), options(clock)) as db:
        for part in range(4):
            write_window(db, clock, b"p%d" % part, expires_ms=0, count=50)
        wait_until(lambda: db.stats()["levels"][0]["tables"] == 0, 10, "the current window's merge")
        assert db.stats()["families"]["default"]["sorted_runs"] == 1


def test_late_data_lands_in_the_window_it_arrives_in_and_shadows_the_version_it_replaces(tmp_path, seal):
    """A repair (or a hint) reaches this node late: it carries an old record whose TTL is
    nearly up. It is stored in the current window, above the older version it replaces, and
    when it expires the key is gone: the older version (which never expires) does not come
    back, though the window of the late write is fully expired before the older one."""
    clock = Clock()
    with Engine.open(str(tmp_path), options(clock, encryption_keys=seal.keys)) as db:
        db.put(b"sensor:1", value(0, b"first reading, kept forever"))
        write_window(db, clock, b"w0", expires_ms=0, count=50)  # window 0: never expires
        clock.ms += 3 * MINUTE_MS
        late = value(clock.ms + MINUTE_MS, b"late repair, 1 minute left")
        db.put(b"sensor:1", late)
        write_window(db, clock, b"w3", expires_ms=clock.ms + MINUTE_MS, count=50)  # window 3
        assert db.get(b"sensor:1") == late
        windows = tables_by_window(db)
        assert set(windows) == {0, 3}, f"the late write is in the window of its arrival: {windows}"

        clock.ms += 2 * MINUTE_MS  # window 3 has expired whole; window 0 never will
        wait_until(lambda: db._pick() is None, 10, "compaction to settle")
        assert db.get(b"sensor:1") is None, "an older version came back from under an expired one"
        assert db.get(b"w3:0000") is None and db.get(b"w0:0000") == value(0)
        stats = db.stats()
        assert stats["expired_tables_dropped"] == 0, "window 3 shadowed window 0: it could not go unread"
        assert stats["compactions"] >= 1, "it was merged into window 0, through the filter"
    seal.check(tmp_path)


def test_aggressive_ttl_rule_deletes_a_shadowing_window_and_the_old_version_comes_back(tmp_path):
    """Why "safe" is the default: "aggressive" is right only for keys written once."""
    clock = Clock()
    strategy = TimeWindow(window_ms=MINUTE_MS, ttl_rule="aggressive")
    with Engine.open(str(tmp_path), options(clock, strategy=strategy)) as db:
        db.put(b"sensor:1", value(0, b"first"))
        db.flush()
        clock.ms += 3 * MINUTE_MS
        db.put(b"sensor:1", value(clock.ms + MINUTE_MS, b"second"))
        db.flush()
        clock.ms += 2 * MINUTE_MS
        wait_until(lambda: db.stats()["expired_tables_dropped"] == 1, 10, "the aggressive deletion")
        assert db.get(b"sensor:1") == value(0, b"first")


def test_a_deleted_key_stays_deleted_when_its_tombstone_window_expires_first(tmp_path):
    """An engine tombstone (a delete) is dead at once, but it shadows the value in an older
    window that never expires: its table cannot go unread, and the key never reappears."""
    clock = Clock()
    with Engine.open(str(tmp_path), options(clock)) as db:
        write_window(db, clock, b"cart", expires_ms=0, count=20)
        clock.ms += MINUTE_MS
        db.delete(b"cart:0007")
        db.flush()
        for _ in range(3):
            clock.ms += MINUTE_MS
            wait_until(lambda: db._pick() is None, 10, "compaction to settle")
            assert db.get(b"cart:0007") is None
        with db.scan_prefix(b"cart:") as it:
            assert len(list(it)) == 19


def test_window_of_tombstones_is_kept_until_the_compaction_filter_would_drop_every_record(tmp_path):
    """Tombstone records (a versioned delete) may go only after the grace period *and* once
    anti-entropy has run: no time alone says so, so their window is never deleted unread; it
    is re-filtered once its grace has passed (not more than once per window), and goes when
    the filter drops every record."""
    clock = Clock()
    record_filter = RecordFilter(clock)
    with Engine.open(str(tmp_path), options(clock, compaction_filter=record_filter)) as db:
        for i in range(50):
            db.put(b"gone:%02d" % i, tombstone(T0))
        db.flush()
        clock.ms += MINUTE_MS
        write_window(db, clock, b"live", expires_ms=0, count=10)
        meta = next(t.meta for run in db._state.versions[0].sorted_runs() for t in run if t.smallest.startswith(b"gone"))
        assert (meta.filter_records, meta.expiry_ms) == (50, T0 + GRACE_MS)

        clock.ms = T0 + GRACE_MS + MINUTE_MS  # past the grace, but anti-entropy has not run
        wait_until(lambda: db._pick() is None, 10, "compaction to settle")
        stats = db.stats()
        assert stats["expired_tables_dropped"] == 0
        refiltered = stats["compactions"]
        assert refiltered >= 1 and db.get(b"gone:00") == tombstone(T0), "kept by the filter"
        for _ in range(3):  # the filter said keep: not asked again within the window
            assert db._pick() is None
        assert db.stats()["compactions"] == refiltered

        record_filter.anti_entropy_done = True
        clock.ms += MINUTE_MS
        wait_until(lambda: db.get(b"gone:00") is None, 10, "the tombstones to go")
        with db.scan_prefix(b"gone:") as it:
            assert list(it) == []
        assert db.get(b"live:0000") == value(0)


def test_a_window_holding_a_record_that_never_expires_is_never_deleted_unread():
    version = time_window.Version([[]])
    assert time_window.pick(version, TimeWindow(), T0, {}) is None


def test_time_window_without_an_expiry_extractor_is_refused_at_open(tmp_path):
    with pytest.raises(ConfigError, match="expiry_of"):
        Engine.open(str(tmp_path), Options(compaction=TimeWindow()))
