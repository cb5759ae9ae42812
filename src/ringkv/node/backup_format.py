"""The files of a cluster backup: partition files, the progress journal, the manifest, and
their verification. Implements docs/formats/backup.md.

A backup directory holds

    BACKUP.json          the manifest, written last: what the backup holds (see below)
    STARTED.json         written first: the cut and the layout, so a resumed backup keeps them
    PROGRESS.jsonl       one line per partition file finished (a resumed backup skips those)
    partitions/pNNNNN.rkb  one file per partition of the source ring

A partition file is a 16-byte header (magic `ringkvBK`, format version u32, partition u32),
records (`crc32c u32 · skey_len u32 · record_len u32 · skey · record`, the CRC over the eight
length bytes, the storage key and the record), and a 20-byte trailer (magic `ringkvBE`,
record count u64, CRC32C of the trailer's first 16 bytes). All integers little-endian. The
manifest names each file's size and SHA-256. Records are the store's own record encoding
(docs/formats/record.md): siblings, dotted version vectors, HLC timestamps, expiries.

Pure file code, no asyncio: the node writes backups and reads them to restore, the CLI
verifies them without a node.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from typing import Any

from crc32c import crc32c

from ringkv.errors import RingkvError

FORMAT_NAME = "ringkv-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "BACKUP.json"
STARTED_NAME = "STARTED.json"
PROGRESS_NAME = "PROGRESS.jsonl"
PARTITIONS_DIR = "partitions"

FILE_MAGIC = b"ringkvBK"
TRAILER_MAGIC = b"ringkvBE"
_HEADER = struct.Struct("<8sII")  # magic, version, partition
_RECORD_HEAD = struct.Struct("<III")  # crc32c, skey_len, record_len
_TRAILER = struct.Struct("<8sQI")  # magic, records, crc32c of the first 16 bytes
HEADER_BYTES = _HEADER.size  # 16
RECORD_HEAD_BYTES = _RECORD_HEAD.size  # 12
TRAILER_BYTES = _TRAILER.size  # 20
MAX_SKEY_BYTES = 1 << 17  # past any storage key (at most 65,536 bytes): corruption
MAX_RECORD_BYTES = 1 << 30  # a record length past this is corruption, not a record
READ_CHUNK_BYTES = 1 << 20  # files are hashed in pieces of this size


class BackupFormatError(RingkvError):
    """A backup directory or file is not what its manifest says: missing, truncated, a
    checksum mismatch, a file of another partition. The message names the file and, where it
    applies, the byte offset."""


def partition_file_name(partition: int) -> str:
    return f"{PARTITIONS_DIR}/p{partition:05d}.rkb"


class PartitionWriter:
    """Writes one partition file: `add` records in key order, then `finish` (fsync, rename
    from `.tmp`), which returns its manifest entry. REQUIRES: skeys strictly increasing."""

    def __init__(self, directory: str, partition: int):
        self.partition = partition
        self.name = partition_file_name(partition)
        self.path = os.path.join(directory, self.name)
        self._tmp = self.path + ".tmp"
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed by finish/abort
        self._sha = hashlib.sha256()
        self.records = 0
        self.bytes = 0
        self._write(_HEADER.pack(FILE_MAGIC, FORMAT_VERSION, partition))

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha.update(data)
        self.bytes += len(data)

    def add_many(self, records: list[tuple[bytes, bytes]]) -> None:
        parts = []
        for skey, record in records:
            if len(skey) > MAX_SKEY_BYTES:
                raise BackupFormatError(f"storage key of {len(skey)} bytes; a backup holds keys of at most "
                                        f"{MAX_SKEY_BYTES} bytes")
            lengths = struct.pack("<II", len(skey), len(record))
            crc = crc32c(record, crc32c(skey, crc32c(lengths)))
            parts.append(struct.pack("<I", crc) + lengths + skey + record)
        if parts:
            self._write(b"".join(parts))
            self.records += len(records)

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        head = TRAILER_MAGIC + struct.pack("<Q", self.records)
        self._write(head + struct.pack("<I", crc32c(head)))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)
        return {"partition": self.partition, "file": self.name, "records": self.records, "bytes": self.bytes,
                "sha256": self._sha.hexdigest(), **(extra or {})}

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):  # never written, or already gone
            os.remove(self._tmp)


def check_file(directory: str, entry: dict[str, Any]) -> None:
    """The file of a manifest entry exists with its size and SHA-256 (BackupFormatError)."""
    path = os.path.join(directory, entry["file"])
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise BackupFormatError(f"{entry['file']}: missing from the backup ({exc.strerror})") from None
    if size != entry["bytes"]:
        raise BackupFormatError(f"{entry['file']}: {size} bytes, the manifest says {entry['bytes']}")
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK_BYTES):
            sha.update(chunk)
    if sha.hexdigest() != entry["sha256"]:
        raise BackupFormatError(f"{entry['file']}: SHA-256 {sha.hexdigest()} does not match the manifest's "
                                f"{entry['sha256']}: the file was changed or damaged")


def read_partition(directory: str, entry: dict[str, Any], batch_records: int = 1000
                   ) -> Iterator[list[tuple[bytes, bytes]]]:
    """The records of a partition file, `batch_records` at a time, each checked against its
    CRC; the header's partition and the trailer's count against the entry. Does not check the
    SHA-256 (check_file does). BackupFormatError naming the file and offset."""
    name = entry["file"]
    path = os.path.join(directory, name)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < HEADER_BYTES + TRAILER_BYTES:
        raise BackupFormatError(f"{name}: {len(data)} bytes, too short for a partition file "
                                f"({HEADER_BYTES + TRAILER_BYTES} at least)")
    magic, version, partition = _HEADER.unpack_from(data)
    if magic != FILE_MAGIC:
        raise BackupFormatError(f"{name}: offset 0: not a ringkv backup partition file (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise BackupFormatError(f"{name}: offset 8: format version {version} is not supported "
                                f"(this build reads {FORMAT_VERSION})")
    if partition != entry["partition"]:
        raise BackupFormatError(f"{name}: offset 12: holds partition {partition}, the manifest says "
                                f"{entry['partition']}")
    end = len(data) - TRAILER_BYTES
    tmagic, count, tcrc = _TRAILER.unpack_from(data, end)
    if tmagic != TRAILER_MAGIC or crc32c(data[end:end + 16]) != tcrc:
        raise BackupFormatError(f"{name}: offset {end}: no valid trailer: the file is truncated or damaged")
    off = HEADER_BYTES
    seen = 0
    batch: list[tuple[bytes, bytes]] = []
    previous = b""
    while off < end:
        if off + RECORD_HEAD_BYTES > end:
            raise BackupFormatError(f"{name}: offset {off}: record header runs past the records' end ({end})")
        crc, klen, rlen = _RECORD_HEAD.unpack_from(data, off)
        body = off + RECORD_HEAD_BYTES
        if klen > MAX_SKEY_BYTES or rlen > MAX_RECORD_BYTES or body + klen + rlen > end:
            raise BackupFormatError(f"{name}: offset {off}: record of {klen} + {rlen} bytes runs past the "
                                    f"records' end ({end})")
        skey = data[body:body + klen]
        record = data[body + klen:body + klen + rlen]
        if crc32c(record, crc32c(skey, crc32c(data[off + 4:body]))) != crc:
            raise BackupFormatError(f"{name}: offset {off}: record {seen} fails its CRC32C")
        if skey <= previous:
            raise BackupFormatError(f"{name}: offset {off}: record {seen} is out of key order")
        previous = skey
        batch.append((skey, record))
        seen += 1
        if len(batch) >= batch_records:
            yield batch
            batch = []
        off = body + klen + rlen
    if seen != count or seen != entry["records"]:
        raise BackupFormatError(f"{name}: {seen} records, the trailer says {count} and the manifest "
                                f"{entry['records']}")
    if batch:
        yield batch


def write_json(directory: str, name: str, doc: dict[str, Any]) -> None:
    """Write `name` atomically (tmp, fsync, rename)."""
    path = os.path.join(directory, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_progress(directory: str, entry: dict[str, Any]) -> None:
    with open(os.path.join(directory, PROGRESS_NAME), "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_progress(directory: str) -> dict[int, dict[str, Any]]:
    """The partition files a backup finished, by partition. A torn last line (a crash while it
    was written) is ignored: that partition is simply done again."""
    done: dict[int, dict[str, Any]] = {}
    try:
        with open(os.path.join(directory, PROGRESS_NAME)) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return done
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            done[int(entry["partition"])] = entry
        except (ValueError, KeyError, TypeError):
            continue
    return done


def read_manifest(directory: str) -> dict[str, Any]:
    """The manifest of a complete backup (BackupFormatError when absent, unreadable, of another
    format or version, or of an unfinished backup)."""
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.exists(path):
        if os.path.exists(os.path.join(directory, STARTED_NAME)):
            done = len(read_progress(directory))
            raise BackupFormatError(f"{directory} holds an unfinished backup ({done} partition files done, "
                                    f"no {MANIFEST_NAME}): resume it with `ringkv backup --to {directory}`")
        raise BackupFormatError(f"{directory} is not a ringkv backup: no {MANIFEST_NAME}")
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise BackupFormatError(f"{MANIFEST_NAME}: cannot be read as JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise BackupFormatError(f"{MANIFEST_NAME}: not a ringkv backup manifest (format {doc.get('format')!r})"
                                if isinstance(doc, dict) else f"{MANIFEST_NAME}: not a JSON object")
    if doc.get("version") != FORMAT_VERSION:
        raise BackupFormatError(f"{MANIFEST_NAME}: format version {doc.get('version')!r} is not supported "
                                f"(this build reads {FORMAT_VERSION})")
    entries = doc.get("partition_files")
    partitions = doc.get("cluster", {}).get("partitions")
    if not isinstance(entries, list) or not isinstance(partitions, int):
        raise BackupFormatError(f"{MANIFEST_NAME}: no partition_files list or cluster.partitions")
    seen = sorted(e.get("partition") for e in entries)
    if seen != list(range(partitions)):
        missing = sorted(set(range(partitions)) - set(seen))
        raise BackupFormatError(f"{MANIFEST_NAME}: lists {len(entries)} partition files for {partitions} "
                                f"partitions (missing {missing[:10]}{'...' if len(missing) > 10 else ''})")
    return doc


def verify(directory: str, decode=None) -> dict[str, Any]:
    """Check a backup whole: the manifest, every file's size and SHA-256, every record's CRC,
    order and count (and, with `decode`, that every record decodes). The first problem raises
    BackupFormatError; else a summary."""
    doc = read_manifest(directory)
    records = size = 0
    for entry in doc["partition_files"]:
        check_file(directory, entry)
        for batch in read_partition(directory, entry, batch_records=10_000):
            if decode is not None:
                for skey, data in batch:
                    try:
                        decode(data)
                    except RingkvError as exc:
                        raise BackupFormatError(f"{entry['file']}: the record of key {skey.hex()} does not "
                                                f"decode: {exc}") from None
            records += len(batch)
        size += entry["bytes"]
    if records != doc.get("records"):
        raise BackupFormatError(f"{MANIFEST_NAME}: says {doc.get('records')} records, the files hold {records}")
    return {"directory": os.path.abspath(directory), "partition_files": len(doc["partition_files"]),
            "records": records, "bytes": size, "cut": doc.get("cut"), "ok": True}
