"""Write-ahead log (docs/formats/wal.md): what is appended reads back exactly, a log cut short by
a crash loses only its unfinished last record, and damage anywhere else is an error that names
the file and the offset of the bad record (or, under salvage, keeps what came before it)."""

from __future__ import annotations

import errno
import pickle
import random
import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.errors import CorruptionError
from ringkv.storage import wal
from ringkv.storage.fs import FsyncFailedError, PosixFileSystem, WritableFile

LOG = "000007.wal"

keys = st.binary(min_size=1, max_size=40)
values = st.binary(max_size=200)
operations = st.one_of(
    st.tuples(st.just("put"), keys, values),
    st.tuples(st.just("delete"), keys),
    st.tuples(
        st.just("batch"),
        st.lists(st.tuples(keys, st.one_of(st.none(), values)), min_size=1, max_size=6),
    ),
)


def encode(op) -> bytes:
    if op[0] == "put":
        return wal.encode_put(op[1], op[2])
    if op[0] == "delete":
        return wal.encode_delete(op[1])
    return wal.encode_batch(op[1])


def applied(op) -> list[tuple[bytes, bytes | None]]:
    if op[0] == "put":
        return [(op[1], op[2])]
    if op[0] == "delete":
        return [(op[1], None)]
    return list(op[1])


def log_of(records: list[bytes]) -> tuple[bytes, list[int]]:
    """A whole log file and the offset of each record in it."""
    offsets, pos = [], wal.FILE_HEADER_BYTES
    for r in records:
        offsets.append(pos)
        pos += len(r)
    return wal.file_header() + b"".join(records), offsets


def flip_bit(data: bytes, offset: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


THREE_PUTS = [wal.encode_put(b"k%d" % i, b"value-%d" % i * 3) for i in range(3)]


@settings(max_examples=100)
@given(st.lists(operations, max_size=25))
def test_puts_deletes_and_batches_read_back_in_order(ops):
    data, _ = log_of([encode(op) for op in ops])
    got, report = wal.read_log(data, LOG)
    assert got == [x for op in ops for x in applied(op)]
    assert report.records == len(ops)
    assert report.torn_at is None and report.salvaged_at is None
    assert report.valid_bytes == len(data)


def test_writer_appends_records_a_reader_replays_from_the_real_file(tmp_path):
    path = str(tmp_path / LOG)
    writer = wal.WalWriter(PosixFileSystem(), path, base_lsn=1000)
    lsns = [
        writer.append(wal.encode_put(b"a", b"1")),
        writer.append(wal.encode_delete(b"a")),
        writer.append(wal.encode_batch([(b"b", b"2"), (b"c", None), (b"d", b"")])),
    ]
    assert lsns == sorted(lsns) and lsns[0] > 1000, "LSNs grow with every record"
    writer.sync_to(lsns[-1])
    assert writer.synced_lsn >= lsns[-1]
    writer.close()
    with open(path, "rb") as f:
        ops, report = wal.read_log(f.read(), path)
    assert ops == [(b"a", b"1"), (b"a", None), (b"b", b"2"), (b"c", None), (b"d", b"")]
    assert report.records == 3


def test_empty_value_and_delete_stay_distinct():
    data, _ = log_of([wal.encode_put(b"k", b""), wal.encode_delete(b"j")])
    ops, _ = wal.read_log(data, LOG)
    assert ops == [(b"k", b""), (b"j", None)]


@pytest.mark.parametrize("cut", [1, 5, 12, 13, 14, 20])
def test_torn_wal_tail_is_dropped(cut):
    data, offsets = log_of(THREE_PUTS)
    ops, report = wal.read_log(data[:-cut], LOG)
    assert ops == [(b"k0", b"value-0" * 3), (b"k1", b"value-1" * 3)]
    assert report.torn_at == offsets[2]
    assert report.dropped_bytes == len(data) - cut - offsets[2]


def test_zero_filled_tail_is_a_torn_tail_not_corruption():
    data, _ = log_of(THREE_PUTS)
    ops, report = wal.read_log(data + bytes(4096), LOG)
    assert len(ops) == 3
    assert report.torn_at == len(data)


def test_flipped_bit_in_last_record_payload_is_a_torn_tail():
    data, offsets = log_of(THREE_PUTS)
    ops, report = wal.read_log(flip_bit(data, len(data) - 2), LOG)
    assert [k for k, _ in ops] == [b"k0", b"k1"]
    assert report.torn_at == offsets[2]


def test_log_shorter_than_its_header_is_an_empty_log():
    ops, report = wal.read_log(wal.file_header()[:7], LOG)
    assert ops == [] and report.torn_at == 0


@pytest.mark.parametrize("where", ["header", "length", "payload"])
def test_flipped_bit_in_middle_record_raises_corruption_naming_offset(where):
    data, offsets = log_of(THREE_PUTS)
    pos = {"header": offsets[1] + 10, "length": offsets[1] + 4, "payload": offsets[1] + 15}[where]
    with pytest.raises(CorruptionError) as err:
        wal.read_log(flip_bit(data, pos, 3), "/data/000007.wal")
    assert err.value.path == "/data/000007.wal"
    assert err.value.offset == offsets[1]
    assert "/data/000007.wal" in str(err.value) and f"offset {offsets[1]}" in str(err.value)
    assert "salvage" in str(err.value)


@pytest.mark.parametrize("kept", [0, 5, 13, 20])
@pytest.mark.parametrize("fill", ["garbage", "zeros"])
def test_torn_tail_filled_with_garbage_or_zeros_is_dropped_not_corruption(kept, fill):
    """A power cut keeps part of the unsynced last record, and the file may have grown past it
    with pages that never reached the disk: nothing good follows the bad bytes."""
    data, offsets = log_of(THREE_PUTS)
    rest = len(data) - offsets[2] - kept + 100
    tail = random.Random(kept).randbytes(rest) if fill == "garbage" else bytes(rest)
    ops, report = wal.read_log(data[: offsets[2] + kept] + tail, LOG)
    assert [k for k, _ in ops] == [b"k0", b"k1"]
    assert report.torn_at == offsets[2]


def test_bad_last_record_header_with_nothing_good_after_it_is_a_torn_tail():
    # A flipped bit there cannot be told from the garbage a power cut leaves, and a torn tail
    # holds nothing acknowledged: acknowledged records were fsynced, whole (docs/formats/wal.md).
    data, offsets = log_of(THREE_PUTS)
    ops, report = wal.read_log(flip_bit(data, offsets[2] + 1), LOG)
    assert [k for k, _ in ops] == [b"k0", b"k1"]
    assert report.torn_at == offsets[2]


def test_garbage_followed_by_a_good_record_is_corruption_not_a_torn_tail():
    # What a failed fsync leaves if writing goes on: a hole, then records synced later.
    data, offsets = log_of(THREE_PUTS)
    hole = random.Random(1).randbytes(offsets[2] - offsets[1])
    with pytest.raises(CorruptionError) as err:
        wal.read_log(data[: offsets[1]] + hole + data[offsets[2] :], LOG)
    assert err.value.offset == offsets[1]


def test_log_whose_header_is_garbage_and_holds_nothing_good_is_an_empty_log():
    garbage = random.Random(2).randbytes(300)
    ops, report = wal.read_log(garbage, LOG)
    assert ops == [] and report.torn_at == 0 and report.dropped_bytes == 300


def test_salvage_keeps_records_before_the_corrupt_one():
    data, offsets = log_of(THREE_PUTS)
    ops, report = wal.read_log(flip_bit(data, offsets[1] + 15), LOG, salvage=True)
    assert ops == [(b"k0", b"value-0" * 3)]
    assert report.salvaged_at == offsets[1]
    assert report.torn_at is None
    assert report.dropped_bytes == len(data) - offsets[1]


def test_oversized_record_length_is_corruption():
    head = struct.pack("<IIB", 0, wal.MAX_RECORD_PAYLOAD_BYTES + 1, wal.TYPE_PUT)
    bogus = head + struct.pack("<I", crc32c(head)) + b"x" * 32
    data, offsets = log_of([THREE_PUTS[0], bogus])
    with pytest.raises(CorruptionError) as err:
        wal.read_log(data, LOG)
    assert err.value.offset == offsets[1]
    assert "exceeds" in str(err.value)


@pytest.mark.parametrize("pos", [0, 8, 13])
def test_damaged_file_header_is_corruption_at_offset_zero(pos):
    data, _ = log_of(THREE_PUTS)
    with pytest.raises(CorruptionError) as err:
        wal.read_log(flip_bit(data, pos), LOG)
    assert err.value.offset == 0


def test_record_of_unknown_type_is_corruption():
    data, offsets = log_of([THREE_PUTS[0], wal.encode_record(9, b"???"), THREE_PUTS[1]])
    with pytest.raises(CorruptionError) as err:
        wal.read_log(data, LOG)
    assert err.value.offset == offsets[1]


def test_fsync_that_fails_once_is_never_retried_so_its_lost_writes_never_count_as_durable(tmp_path):
    """PostgreSQL's fsyncgate: after a failed fsync Linux may drop the dirty pages and clear the
    error, so a retry "succeeds" without writing them. The writer must not retry."""
    fsyncs = []

    class EioOnFirstSync(WritableFile):
        def _fsync(self) -> None:
            fsyncs.append(self.size)
            if len(fsyncs) == 1:
                raise OSError(errno.EIO, "simulated fsync failure")

    class FailingSyncDisk(PosixFileSystem):
        def create(self, path):
            f = super().create(path)
            return EioOnFirstSync(f.path, f.fileno())

    writer = wal.WalWriter(FailingSyncDisk(), str(tmp_path / LOG))
    lsn = writer.append(wal.encode_put(b"k", b"v"))
    for _ in range(2):  # a second waiter is refused rather than retrying the fsync
        with pytest.raises(FsyncFailedError, match=r"fsync of .*000007\.wal failed"):
            writer.sync_to(lsn)
    later = writer.append(wal.encode_put(b"k2", b"v2"))
    with pytest.raises(FsyncFailedError):
        writer.sync_to(later)
    assert len(fsyncs) == 1, "the failed fsync was retried"
    assert writer.synced_lsn < lsn
    writer.close(sync=False)


def test_fsync_failure_pickles_with_its_path_for_worker_processes():
    err = FsyncFailedError("/data/000009.sst", errno.EIO, "Input/output error")
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), back.path, back.errno, str(back)) == (FsyncFailedError, err.path, errno.EIO, str(err))
    assert "EIO" in str(back) and "/data/000009.sst" in str(back)
