"""Damaged files, as an operator meets them when opening a store: every case is a clear
CorruptionError naming the file and offset, or the documented salvage; never wrong data.
A refused open changes nothing on disk, so the evidence stays for whoever investigates.

Every table and manifest case runs under each compaction strategy, and with column families
(the tables then belong to a family other than the default one, and the manifest is format
version 2)."""

from __future__ import annotations

import os
import struct

import msgspec
import pytest

from ringkv.errors import CorruptionError
from ringkv.storage import Engine, Options, sstable, wal
from ringkv.storage.strategies import Leveled, PrefixRouter, Tiered, TimeWindow

THREAD: dict = dict(background="thread")  # the options of every open here, set per strategy


def never_expires(key: bytes, value: bytes) -> int:
    return 0


MODES = {
    "leveled": dict(compaction=Leveled()),
    "tiered": dict(compaction=Tiered()),
    "time_window": dict(compaction=TimeWindow(), expiry_of=never_expires),
    # every "key:..." in a tiered family, other keys in leveled and time-window ones
    "families": dict(
        families={"low": Tiered(), "mid": TimeWindow()},
        family_router=PrefixRouter({b"key:": "low", b"other:": "mid"}),
        expiry_of=never_expires,
    ),
}


@pytest.fixture(params=sorted(MODES))
def strategy(request):
    """Every open of the test under one strategy (the table and manifest cases ask for it;
    the log's are the same whatever the strategy)."""
    THREAD.clear()
    THREAD.update(background="thread", **MODES[request.param])
    yield request.param
    THREAD.clear()
    THREAD.update(background="thread")


def files(path, ext):
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(ext))


def flip_bit(path, offset, bit=0):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ (1 << bit)]))


def snapshot_of(path):
    out = {}
    for name in sorted(os.listdir(path)):
        if name != "LOCK":
            with open(os.path.join(path, name), "rb") as f:
                out[name] = f.read()
    return out


def open_refused(path, **options) -> CorruptionError:
    before = snapshot_of(path)
    with pytest.raises(CorruptionError) as err:
        Engine.open(path, Options(**THREAD, **options))
    assert snapshot_of(path) == before, "a refused open must leave the files as they were"
    return err.value


def read_all(path, **options):
    with Engine.open(path, Options(**THREAD, **options)) as db, db.scan() as it:
        return dict(it), db.stats()["recovery"]


# ---------------------------------------------------------------------------------------- WAL

KEYS = [b"key:%03d" % i for i in range(20)]


def value_of(key: bytes) -> bytes:
    return key * 5


@pytest.fixture
def logged(tmp_path):
    """A store whose 20 writes are only in its log (closed without a flush), and the log's
    record offsets, computed from the format."""
    path = str(tmp_path)
    with Engine.open(path, Options(sync="always", **THREAD)) as db:
        for key in KEYS:
            db.put(key, value_of(key))
    (log,) = files(path, ".wal")
    offsets, pos = [], wal.FILE_HEADER_BYTES
    for key in KEYS:
        offsets.append(pos)
        pos += len(wal.encode_put(key, value_of(key)))
    assert pos == os.path.getsize(log)
    return path, log, offsets


@pytest.mark.parametrize("cut", [1, 9, 20])
def test_torn_wal_tail_is_dropped_and_reported_in_stats(logged, cut):
    path, log, offsets = logged
    os.truncate(log, os.path.getsize(log) - cut)
    torn_bytes = os.path.getsize(log) - offsets[-1]
    state, recovery = read_all(path)
    assert state == {k: value_of(k) for k in KEYS[:-1]}
    assert recovery == [
        {
            "log": log,
            "records": 19,
            "torn_tail_at": offsets[-1],
            "salvaged_at": None,
            "dropped_bytes": torn_bytes,
        }
    ]
    state, recovery = read_all(path)
    assert len(state) == 19 and recovery == [], "recovered once, clean from then on"


def test_zero_filled_wal_tail_is_dropped(logged):
    path, log, _ = logged
    end = os.path.getsize(log)
    with open(log, "ab") as f:
        f.write(bytes(8192))  # a preallocated or half-persisted page
    state, recovery = read_all(path)
    assert state == {k: value_of(k) for k in KEYS}
    assert (recovery[0]["torn_tail_at"], recovery[0]["dropped_bytes"]) == (end, 8192)


@pytest.mark.parametrize("record", [0, 7, 18])
def test_flipped_bit_in_middle_wal_record_raises_corruption_naming_file_and_offset(logged, record):
    path, log, offsets = logged
    flip_bit(log, offsets[record] + 20)
    err = open_refused(path)
    assert (err.path, err.offset) == (log, offsets[record])
    assert log in str(err) and f"offset {offsets[record]}" in str(err)
    assert "salvage=True" in str(err)


def test_salvage_keeps_the_wal_records_before_the_corrupt_one(logged):
    path, log, offsets = logged
    flip_bit(log, offsets[7] + 20)
    state, recovery = read_all(path, salvage=True)
    assert state == {k: value_of(k) for k in KEYS[:7]}, "the records before it, and nothing else"
    assert recovery[0]["log"] == log and recovery[0]["salvaged_at"] == offsets[7]
    assert recovery[0]["records"] == 7
    assert read_all(path)[0] == state, "the salvaged store opens normally afterwards"


def test_damaged_wal_file_header_raises_corruption_at_offset_zero(logged):
    path, log, _ = logged
    flip_bit(log, 3)
    err = open_refused(path, salvage=True)
    assert (err.path, err.offset) == (log, 0)


# ------------------------------------------------------------------------------------- SSTables


@pytest.fixture
def tabled(tmp_path, strategy):
    """A store whose 300 keys sit in one uncompressed table of many small blocks."""
    path = str(tmp_path)
    with Engine.open(path, Options(compression="none", block_bytes=512, **THREAD)) as db:
        for i in range(300):
            db.put(b"key:%03d" % i, b"value %03d " % i * 8)
        db.flush()
    (table,) = files(path, ".sst")
    with open(table, "rb") as f:
        data = f.read()
    footer = len(data) - sstable.FOOTER_BYTES
    f_off, f_size, i_off, i_size, p_off, p_size, _ = struct.unpack_from("<QIQIQII", data, footer)
    index = sstable.decode_block_bytes(data[i_off : i_off + i_size], table, i_off)
    last_keys, offsets, sizes = msgspec.msgpack.decode(index)
    layout = {"footer": footer, "index": (i_off, i_size), "filter": (f_off, f_size), "properties": (p_off, p_size)}
    return path, table, layout, list(zip(last_keys, offsets, sizes))


def value(i):
    return b"value %03d " % i * 8


def test_flipped_bit_in_data_block_raises_corruption_and_other_blocks_still_read(tabled):
    path, table, _, blocks = tabled
    (lo, _, _), (hi, bad_offset, bad_size) = blocks[4], blocks[5]  # the bad block holds (lo, hi]
    flip_bit(table, bad_offset + bad_size // 2)
    with Engine.open(path, Options(**THREAD)) as db:
        for i in range(300):
            key = b"key:%03d" % i
            if lo < key <= hi:
                with pytest.raises(CorruptionError) as err:
                    db.get(key)
                assert (err.value.path, err.value.offset) == (table, bad_offset)
            else:
                assert db.get(key) == value(i)
        with pytest.raises(CorruptionError), db.scan() as it:
            list(it)
        with db.scan(None, lo) as it:
            assert len(list(it)) == int(lo[4:]), "ranges that avoid the block still scan"
        with pytest.raises(CorruptionError):
            db.compact_range()  # compaction refuses to carry the damage forward
        assert db.get(b"key:000") == value(0)


@pytest.mark.parametrize("block", ["index", "filter", "properties"])
def test_flipped_bit_in_index_filter_or_properties_block_raises_corruption_at_open(tabled, block):
    path, table, layout, _ = tabled
    off, size = layout[block]
    flip_bit(table, off + size // 2)
    err = open_refused(path)
    assert (err.path, err.offset) == (table, off)


def test_bad_footer_magic_raises_corruption_at_open(tabled):
    path, table, layout, _ = tabled
    flip_bit(table, os.path.getsize(table) - 1)
    err = open_refused(path)
    assert (err.path, err.offset) == (table, layout["footer"])
    assert "magic" in str(err)


def test_bad_footer_checksum_raises_corruption_at_open(tabled):
    path, table, layout, _ = tabled
    flip_bit(table, layout["footer"] + 13)  # inside the index handle
    err = open_refused(path)
    assert (err.path, err.offset) == (table, layout["footer"])
    assert "checksum" in str(err)


@pytest.mark.parametrize("keep", [0, 40, 5000])
def test_truncated_table_raises_corruption_at_open(tabled, keep):
    path, table, _, _ = tabled
    os.truncate(table, keep)
    err = open_refused(path)
    assert err.path == table


def test_table_named_by_the_manifest_missing_raises_corruption(tabled):
    path, table, _, _ = tabled
    os.remove(table)
    err = open_refused(path)
    assert err.path == table
    assert os.path.basename(table) in str(err) and "missing" in str(err)


# ------------------------------------------------------------------------------------- manifest


@pytest.fixture
def manifested(tmp_path, strategy):
    """A store with tables on two levels and a log, and its expected contents."""
    path = str(tmp_path)
    with Engine.open(path, Options(**THREAD)) as db:
        for i in range(200):
            db.put(b"key:%03d" % i, b"compacted")
        db.compact_range()
        for i in range(0, 200, 2):
            db.put(b"key:%03d" % i, b"flushed")
        db.flush()
        db.put(b"key:000", b"in the log")
        db.delete(b"key:001")
        with db.scan() as it:
            expected = dict(it)
    return path, os.path.join(path, "MANIFEST"), expected


@pytest.mark.parametrize("damage", ["flip magic", "flip payload", "truncate", "empty"])
def test_damaged_manifest_raises_corruption_mentioning_salvage(manifested, damage):
    path, main, _ = manifested
    if damage == "flip magic":
        flip_bit(main, 2)
    elif damage == "flip payload":
        flip_bit(main, os.path.getsize(main) - 5)
    else:
        os.truncate(main, 30 if damage == "truncate" else 0)
    err = open_refused(path)
    assert err.path == main
    assert "salvage=True" in str(err)


def test_salvage_recovers_a_damaged_manifest_from_its_mirror(manifested):
    path, main, expected = manifested
    flip_bit(main, os.path.getsize(main) - 5)
    state, recovery = read_all(path, salvage=True)
    assert state == expected
    assert recovery and recovery[0]["recovered_from"] == "MANIFEST.bak"
    assert read_all(path)[0] == expected, "a good manifest was written back"


def test_missing_manifest_with_data_files_raises_corruption_mentioning_salvage(manifested):
    path, main, expected = manifested
    os.remove(main)
    err = open_refused(path)
    assert err.path == main and "missing" in str(err) and "salvage=True" in str(err)
    assert read_all(path, salvage=True)[0] == expected


def test_salvage_refuses_when_the_mirror_is_damaged_too(manifested):
    path, main, _ = manifested
    flip_bit(main, os.path.getsize(main) - 5)
    backup = os.path.join(path, "MANIFEST.bak")
    flip_bit(backup, os.path.getsize(backup) - 5)
    err = open_refused(path, salvage=True)
    assert err.path == backup


def test_salvage_refuses_when_manifest_and_mirror_are_both_missing(manifested):
    path, main, _ = manifested
    os.remove(main)
    os.remove(os.path.join(path, "MANIFEST.bak"))
    err = open_refused(path, salvage=True)
    assert "MANIFEST" in str(err) and "missing" in str(err)
