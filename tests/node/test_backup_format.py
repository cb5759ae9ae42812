"""The files of a cluster backup (node/backup_format.py, docs/formats/backup.md): a damaged
backup is always reported, naming the file and where, and never read as data."""

from __future__ import annotations

import json
import os

import pytest

from ringkv.node import backup_format as fmt
from ringkv.node.backup_format import BackupFormatError

PARTITIONS = 4


def _make_backup(directory: str) -> dict:
    os.makedirs(directory, exist_ok=True)
    entries = []
    for p in range(PARTITIONS):
        writer = fmt.PartitionWriter(directory, p)
        writer.add_many([(p.to_bytes(8, "big") + b"\x00" + b"key%03d" % i, b"record-%d-%d" % (p, i))
                         for i in range(50)])
        entry = writer.finish({"sources": ["n1"]})
        fmt.append_progress(directory, entry)
        entries.append(entry)
    doc = {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION, "cluster": {"partitions": PARTITIONS},
           "cut": {"hlc": 1, "wall_ms": 2}, "records": 50 * PARTITIONS, "partition_files": entries}
    fmt.write_json(directory, fmt.MANIFEST_NAME, doc)
    return doc


def test_a_whole_backup_verifies_and_reads_back_in_order(tmp_path):
    d = str(tmp_path)
    doc = _make_backup(d)
    summary = fmt.verify(d)
    assert (summary["records"], summary["partition_files"], summary["ok"]) == (200, PARTITIONS, True)
    records = [r for batch in fmt.read_partition(d, doc["partition_files"][2], batch_records=7) for r in batch]
    assert [v for _, v in records] == [b"record-2-%d" % i for i in range(50)]


def test_a_flipped_byte_is_a_checksum_mismatch_naming_the_file(tmp_path):
    d = str(tmp_path)
    doc = _make_backup(d)
    entry = doc["partition_files"][1]
    path = tmp_path / entry["file"]
    data = bytearray(path.read_bytes())
    data[-fmt.TRAILER_BYTES - 1] ^= 0x01  # inside the last record's value
    path.write_bytes(bytes(data))
    with pytest.raises(BackupFormatError, match=r"partitions/p00001\.rkb: SHA-256 .* does not match"):
        fmt.verify(d)
    # Read past the SHA-256 (as a restore does per record): the record's CRC catches it too.
    with pytest.raises(BackupFormatError, match=r"partitions/p00001\.rkb: offset \d+: record \d+ fails its CRC32C"):
        list(fmt.read_partition(d, entry))


def test_a_truncated_file_is_reported_with_its_size(tmp_path):
    d = str(tmp_path)
    doc = _make_backup(d)
    path = os.path.join(d, doc["partition_files"][3]["file"])
    os.truncate(path, os.path.getsize(path) - 30)
    with pytest.raises(BackupFormatError, match=r"p00003\.rkb: \d+ bytes, the manifest says \d+"):
        fmt.verify(d)
    with pytest.raises(BackupFormatError, match="no valid trailer"):
        list(fmt.read_partition(d, doc["partition_files"][3]))


def test_a_missing_file_or_partition_is_named(tmp_path):
    d = str(tmp_path)
    doc = _make_backup(d)
    os.remove(os.path.join(d, doc["partition_files"][0]["file"]))
    with pytest.raises(BackupFormatError, match=r"p00000\.rkb: missing from the backup"):
        fmt.verify(d)
    doc["partition_files"] = doc["partition_files"][1:]
    fmt.write_json(d, fmt.MANIFEST_NAME, doc)
    with pytest.raises(BackupFormatError, match=r"lists 3 partition files for 4 partitions \(missing \[0\]\)"):
        fmt.verify(d)


def test_an_unfinished_backup_says_how_to_resume_it(tmp_path):
    d = str(tmp_path)
    _make_backup(d)
    os.remove(os.path.join(d, fmt.MANIFEST_NAME))
    fmt.write_json(d, fmt.STARTED_NAME, {"format": fmt.FORMAT_NAME})
    with pytest.raises(BackupFormatError, match=r"unfinished backup \(4 partition files done.*ringkv backup --to"):
        fmt.verify(d)


def test_a_torn_last_journal_line_only_redoes_that_partition(tmp_path):
    d = str(tmp_path)
    _make_backup(d)
    with open(os.path.join(d, fmt.PROGRESS_NAME), "a") as f:
        f.write(json.dumps({"partition": 9, "file": "x"})[:15])  # cut off by a crash
    assert sorted(fmt.read_progress(d)) == list(range(PARTITIONS))


def test_a_manifest_of_another_version_is_refused(tmp_path):
    d = str(tmp_path)
    doc = _make_backup(d)
    doc["version"] = 99
    fmt.write_json(d, fmt.MANIFEST_NAME, doc)
    with pytest.raises(BackupFormatError, match="format version 99 is not supported"):
        fmt.verify(d)
