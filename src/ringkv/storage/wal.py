"""Write-ahead log: framed, checksummed records appended before the memtable is touched.

Implements docs/formats/wal.md. A log file is a 16-byte header followed by records:

    payload_crc u32 | payload_len u32 | type u8 | header_crc u32 | payload

both CRCs are CRC32C, little-endian; the header CRC covers the nine bytes before it, so a flipped
length can never be mistaken for a torn tail. `WalWriter` appends and implements the sync
policies (group commit for `always`); `read_log` replays a file and tells a torn tail (the crash
cut the last write short, or left garbage or zeros after it: dropped) from corruption in the
middle (bad bytes followed by a good record: an error naming the offset).

After a failed fsync the writer is done for (docs/storage-faults.md): every later `sync_to` past
what was already durable raises FsyncFailedError, even if the disk would now accept an fsync,
because the kernel may have dropped the bytes the failed one should have written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import struct
import threading

from crc32c import crc32c

from ringkv.errors import CorruptionError, StorageFullError
from ringkv.storage import sealing
from ringkv.storage.fs import FsyncFailedError, PosixFileSystem, WritableFile

WAL_MAGIC = b"ringkvWL"
WAL_VERSION = 1
SEALED_WAL_VERSION = 2  # a seal header follows the file header; every record is TYPE_SEALED
_FILE_HEADER = struct.Struct("<8sII")  # magic, version, crc32c of the first 12 bytes
FILE_HEADER_BYTES = _FILE_HEADER.size  # 16

_RECORD_HEADER = struct.Struct("<IIB")  # payload crc, payload length, type
_U32 = struct.Struct("<I")
_FULL_HEADER = struct.Struct("<IIBI")  # payload crc, payload length, type, header crc
RECORD_HEADER_BYTES = _RECORD_HEADER.size + 4  # 13, with the header crc
MAX_RECORD_PAYLOAD_BYTES = 256 * 1024 * 1024

TYPE_PUT = 1  # payload: key_len u32 | key | value
TYPE_DELETE = 2  # payload: key
TYPE_BATCH = 3  # payload: count u32, then per op: type u8 | key_len u32 | value_len u32 | key | value
TYPE_SEALED = 4  # payload: sequence u32 | AES-GCM(type u8 | payload) | tag (storage/sealing.py)

_PUT_PREFIX = struct.Struct("<I")
_BATCH_OP = struct.Struct("<BII")


def file_header(version: int = WAL_VERSION) -> bytes:
    head = _FILE_HEADER.pack(WAL_MAGIC, version, 0)[:12]
    return head + _U32.pack(crc32c(head))


def encode_record(rtype: int, payload: bytes) -> bytes:
    head = _RECORD_HEADER.pack(crc32c(payload), len(payload), rtype)
    return head + _U32.pack(crc32c(head)) + payload


def encode_put(key: bytes, value: bytes) -> bytes:
    payload = _PUT_PREFIX.pack(len(key)) + key + value
    head = _RECORD_HEADER.pack(crc32c(payload), len(payload), TYPE_PUT)
    return head + _U32.pack(crc32c(head)) + payload


def encode_delete(key: bytes) -> bytes:
    return encode_record(TYPE_DELETE, key)


def encode_batch(ops: list[tuple[bytes, bytes | None]]) -> bytes:
    parts = [_U32.pack(len(ops))]
    for key, value in ops:
        if value is None:
            parts.append(_BATCH_OP.pack(TYPE_DELETE, len(key), 0))
            parts.append(key)
        else:
            parts.append(_BATCH_OP.pack(TYPE_PUT, len(key), len(value)))
            parts.append(key)
            parts.append(value)
    return encode_record(TYPE_BATCH, b"".join(parts))


def decode_payload(rtype: int, payload: bytes, path: str, offset: int) -> list[tuple[bytes, bytes | None]]:
    """The (key, value-or-None) operations of one record, in the order they were applied."""
    try:
        if rtype == TYPE_PUT:
            (klen,) = _PUT_PREFIX.unpack_from(payload)
            if 4 + klen > len(payload):
                raise ValueError("key length past the record")
            return [(payload[4 : 4 + klen], payload[4 + klen :])]
        if rtype == TYPE_DELETE:
            return [(payload, None)]
        if rtype == TYPE_BATCH:
            (count,) = _U32.unpack_from(payload)
            pos = 4
            ops: list[tuple[bytes, bytes | None]] = []
            for _ in range(count):
                op, klen, vlen = _BATCH_OP.unpack_from(payload, pos)
                pos += _BATCH_OP.size
                key = payload[pos : pos + klen]
                pos += klen
                if op == TYPE_PUT:
                    ops.append((key, payload[pos : pos + vlen]))
                    pos += vlen
                elif op == TYPE_DELETE:
                    ops.append((key, None))
                else:
                    raise ValueError(f"unknown batch op {op}")
            if pos != len(payload):
                raise ValueError("batch length does not match its operations")
            return ops
    except (struct.error, ValueError) as exc:
        raise CorruptionError(f"WAL record does not decode ({exc})", path, offset) from exc
    raise CorruptionError(f"WAL record has unknown type {rtype}", path, offset)


_RECORD_TYPE_BYTE = re.compile(rb"[\x01-\x04]")


def _good_record_after(data: bytes, start: int) -> bool:
    """Whether a whole record with both checksums right starts anywhere after `start`.

    Bad bytes with nothing good after them are what a power cut leaves (a torn write, then
    garbage or zeros where the file grew but its pages never reached the disk); bad bytes
    followed by a good record are damage to data that was once whole. Only offsets whose type
    byte is a known type are checked, found by a C-level regex search, so a garbage tail costs
    about one header CRC per 85 bytes.
    """
    size = len(data)
    view = memoryview(data)
    for m in _RECORD_TYPE_BYTE.finditer(data, start + 9):
        p = m.start() - 8
        if p + RECORD_HEADER_BYTES > size:
            return False
        pcrc, plen, _, hcrc = _FULL_HEADER.unpack_from(data, p)
        end = p + RECORD_HEADER_BYTES + plen
        if end > size or crc32c(view[p : p + 9]) != hcrc:
            continue
        if crc32c(view[p + RECORD_HEADER_BYTES : end]) == pcrc:
            return True
    return False


class LogReport:
    """What replaying one log found: how far it is valid and what was dropped."""

    __slots__ = ("dropped_bytes", "path", "records", "salvaged_at", "torn_at", "valid_bytes")

    def __init__(self, path: str):
        self.path = path
        self.records = 0
        self.valid_bytes = 0
        self.torn_at: int | None = None  # offset of a dropped torn tail
        self.salvaged_at: int | None = None  # offset of corruption skipped under salvage
        self.dropped_bytes = 0


def read_log(
    data: bytes, path: str, salvage: bool = False, keys: sealing.KeyRing | None = None
) -> tuple[list[tuple[bytes, bytes | None]], LogReport]:
    """Every operation of a log, in order. REQUIRES: `data` is the whole file.

    A torn tail is dropped silently (reported in the LogReport); corruption followed by more
    data raises CorruptionError naming the offset unless `salvage`, which keeps what came before
    and drops the rest of the file. A sealed log needs the key ring holding its key
    (ConfigError naming encryption_key_file otherwise); a sealed record that fails
    authentication is corruption, whatever its CRCs say.
    """
    report = LogReport(path)
    ops: list[tuple[bytes, bytes | None]] = []
    size = len(data)
    if size < FILE_HEADER_BYTES:
        # A crash right after creating the file: nothing was ever acknowledged from it.
        report.torn_at = 0
        report.dropped_bytes = size
        return ops, report
    if data.count(0) == size:
        # Created just before a crash: its size reached the disk, its bytes did not.
        report.torn_at = 0
        report.dropped_bytes = size
        return ops, report
    magic, version, _ = _FILE_HEADER.unpack_from(data)
    (hcrc,) = _U32.unpack_from(data, 12)
    if magic != WAL_MAGIC or crc32c(data[:12]) != hcrc:
        if not _good_record_after(data, 0):
            # Created just before a crash: its size reached the disk, its bytes did not.
            report.torn_at = 0
            report.dropped_bytes = size
            return ops, report
        raise CorruptionError("WAL file header is not a ringkv WAL header", path, 0)
    off = FILE_HEADER_BYTES
    opener = None
    if version == SEALED_WAL_VERSION:
        if not sealing.seal_header_intact(data, off):
            if not _good_record_after(data, off):
                # Created just before a crash: the header's write was torn.
                report.torn_at = 0
                report.dropped_bytes = size
                return ops, report
            raise CorruptionError("sealed WAL's seal header checksum mismatch", path, off)
        opener = sealing.WalOpener(data, off, path, keys)
        off += sealing.SEAL_HEADER_BYTES
    elif version != WAL_VERSION:
        raise CorruptionError(f"WAL format version {version} is not supported (want {WAL_VERSION})", path, 0)

    # Fast path for the common record, a valid PUT: one unpack, two CRCs over memoryview slices
    # (no copies), two slices for key and value. Everything else goes through the full checks.
    view = memoryview(data)
    unpack_header = _FULL_HEADER.unpack_from
    unpack_u32 = _U32.unpack_from
    append = ops.append
    records = 0
    fast_type = TYPE_PUT if opener is None else -1  # a sealed log takes the checked path
    while off < size:
        if size - off >= RECORD_HEADER_BYTES:
            pcrc, plen, rtype, hcrc = unpack_header(data, off)
            end = off + RECORD_HEADER_BYTES + plen
            if (
                rtype == fast_type
                and end <= size
                and crc32c(view[off : off + 9]) == hcrc
                and crc32c(view[off + RECORD_HEADER_BYTES : end]) == pcrc
            ):
                ks = off + RECORD_HEADER_BYTES + 4
                ke = ks + unpack_u32(data, ks - 4)[0]
                if ke <= end:
                    append((data[ks:ke], data[ke:end]))
                    records += 1
                    off = end
                    continue
        problem = None
        torn = False
        if size - off < RECORD_HEADER_BYTES:
            torn = True
        else:
            pcrc, plen, rtype = _RECORD_HEADER.unpack_from(data, off)
            (hcrc,) = _U32.unpack_from(data, off + 9)
            if crc32c(data[off : off + 9]) != hcrc:
                if data.count(0, off) == size - off or not _good_record_after(data, off):
                    torn = True  # zeros or garbage to the end: pages that never reached the disk
                else:
                    problem = "record header checksum mismatch"
            elif plen > MAX_RECORD_PAYLOAD_BYTES:
                problem = f"record length {plen} exceeds {MAX_RECORD_PAYLOAD_BYTES}"
            else:
                end = off + RECORD_HEADER_BYTES + plen
                if end > size:
                    torn = True  # the header made it to disk but not all of the payload
                else:
                    payload = data[off + RECORD_HEADER_BYTES : end]
                    if crc32c(payload) != pcrc:
                        if end == size or not _good_record_after(data, off):
                            torn = True
                        else:
                            problem = "record payload checksum mismatch"
                    else:
                        if opener is not None or rtype == TYPE_SEALED:
                            try:
                                rtype, payload = _unseal(opener, rtype, payload, path, off)
                            except CorruptionError:
                                if not salvage:
                                    raise
                                report.salvaged_at = off
                                report.dropped_bytes = size - off
                                break
                        ops.extend(decode_payload(rtype, payload, path, off))
                        records += 1
                        off = end
                        continue
        if torn:
            report.torn_at = off
            report.dropped_bytes = size - off
            break
        if salvage:
            report.salvaged_at = off
            report.dropped_bytes = size - off
            break
        raise CorruptionError(
            f"WAL {problem}; recovery stopped (open with Options(salvage=True) to keep the "
            f"records before it and drop the rest of this log)",
            path,
            off,
        )
    report.records = records
    report.valid_bytes = off
    return ops, report


def _unseal(opener: sealing.WalOpener | None, rtype: int, payload: bytes, path: str, off: int) -> tuple[int, bytes]:
    # Every record of a sealed log is sealed: a plain one there (CRCs right or not) was put
    # there by someone without the key.
    if opener is None:
        raise CorruptionError("WAL holds a sealed record but its header says it is not sealed", path, off)
    if rtype != TYPE_SEALED:
        raise CorruptionError(f"sealed WAL holds an unsealed record of type {rtype}", path, off)
    return opener.open(payload, off)


class WalWriter:
    """Appends records to one log file and makes them durable according to the sync policy.

    Appends are serialized by the engine's write lock. `sync_to(lsn)` may be called by many
    threads at once: one becomes the leader and fsyncs for all who wait (group commit).
    LSNs are cumulative byte counts across every log the writer has had, so they stay
    monotonic across rotations.
    """

    def __init__(self, fs: PosixFileSystem, path: str, base_lsn: int = 0, previous: WalWriter | None = None,
                 keys: sealing.KeyRing | None = None):
        # LSNs up to base_lsn live in `previous`, the log of the memtable frozen when this one
        # started. It is fsynced by the flush thread, not by the rotation (which holds the
        # write lock); until then a waiter on an older LSN is sent to it.
        self._previous = previous
        self._start_lsn = base_lsn
        self._fs = fs
        # With keys, every record is sealed under a key of this log's own (storage/sealing.py).
        self._sealer = sealing.WalSealer(keys, path) if keys is not None else None
        header = file_header() if keys is None else file_header(SEALED_WAL_VERSION) + self._sealer.seal_header
        self._file: WritableFile = fs.create(path)
        self._file.write(header)
        self.path = path
        self._base = base_lsn - len(header)
        self.written_lsn = base_lsn
        self.synced_lsn = base_lsn
        self._cond = threading.Condition(threading.Lock())
        self._syncing = False
        self.bytes_written = len(header)
        # A plain POSIX file is written with os.write directly: one Python call less per record
        # on the engine's hottest path. Test file systems keep their hooks.
        self._fd = self._file.fileno() if type(self._file) is WritableFile else -1
        self._deferred: list[bytes] = []
        self._deferred_bytes = 0
        # The first failed fsync; from then on nothing past synced_lsn is ever durable.
        self.failed: FsyncFailedError | None = None
        self.closed = False

    def append(self, record: bytes, defer: bool = False) -> int:
        """Hand the record to the OS; returns its LSN (end position). REQUIRES: write lock held.

        With `defer`, the record is only queued: `flush_deferred` writes every queued record in
        one system call (a server coalesces the writes of one event-loop iteration this way and
        answers its clients after the flush). A non-deferred append writes the queue first, so
        records reach the log in the order they were appended.

        A failed write (ENOSPC, EIO) cuts the log back to where it was, so replay never meets
        half a record followed by good ones, and raises (StorageFullError for a full disk).
        """
        if self._sealer is not None:
            # Sealed where its offset is known: the associated data binds it to that offset.
            view = memoryview(record)
            record = encode_record(TYPE_SEALED, self._sealer.seal(
                record[8], view[RECORD_HEADER_BYTES:], self._file.size + self._deferred_bytes))
        if defer:
            self._deferred.append(record)
            self._deferred_bytes += len(record)
            return self._base + self._file.size + self._deferred_bytes
        if self._deferred:
            self._deferred.append(record)
            record = self._take_deferred()
        return self._write(record)

    @property
    def has_deferred(self) -> bool:
        return bool(self._deferred)

    def flush_deferred(self) -> int:
        """Write every deferred record; returns the LSN written. REQUIRES: write lock held."""
        if self._deferred:
            self._write(self._take_deferred())
        return self.written_lsn

    def _take_deferred(self) -> bytes:
        data = b"".join(self._deferred)
        self._deferred.clear()
        self._deferred_bytes = 0
        return data

    def _write(self, record: bytes) -> int:
        n = len(record)
        f = self._file
        before = f.size
        try:
            if self._fd >= 0:
                written = os.write(self._fd, record)
                if written != n:  # a short write: finish through the retrying writer
                    f.size = before + written
                    f.write(record[written:])
                else:
                    f.size = before + n
            else:
                f.write(record)
        except OSError as exc:
            try:
                f.cut_back(before)
            except OSError:
                pass
            if exc.errno == errno.ENOSPC:
                raise StorageFullError(f"no space left on device appending to {self.path}") from exc
            raise
        self.bytes_written += n
        self.written_lsn = lsn = self._base + f.size
        return lsn

    def sync_to(self, lsn: int) -> None:
        """Return once everything up to `lsn` is fsynced, sharing fsyncs among waiters."""
        prev = self._previous
        if prev is not None:
            # Durability is a prefix: this log must never be durable past a tail of the
            # previous one that is not.
            prev.sync_to(min(lsn, self._start_lsn))
        if lsn <= self._start_lsn:
            return
        with self._cond:
            while self.synced_lsn < lsn:
                if self.failed is not None:
                    # Never retry: the retry could succeed without the dropped pages.
                    raise self._failure()
                if self._syncing:
                    self._cond.wait()
                    continue
                # Leader: everything appended so far rides on this one fsync.
                self._syncing = True
                target = self.written_lsn
                self._cond.release()
                failure = None
                try:
                    self._file.sync()
                except OSError as exc:  # FsyncFailedError from any WritableFile that keeps the contract
                    failure = exc if isinstance(exc, FsyncFailedError) else FsyncFailedError(
                        self.path, exc.errno, exc.strerror or str(exc)
                    )
                finally:
                    self._cond.acquire()
                    if failure is not None:
                        self.failed = failure
                    elif self.failed is None:
                        self.synced_lsn = max(self.synced_lsn, target)
                    self._syncing = False
                    self._cond.notify_all()

    def _failure(self) -> FsyncFailedError:
        f = self.failed
        return FsyncFailedError(f.path, f.errno, f.strerror)

    def sync_all(self) -> None:
        self.sync_to(self.written_lsn)

    @property
    def durable_bytes(self) -> int:
        """How many bytes of this log file an fsync has made durable."""
        return max(self.synced_lsn - self._base, 0)

    def close(self, sync: bool = True) -> None:
        if self.closed:
            return
        self.flush_deferred()
        if sync:
            self.sync_all()
            self._previous = None  # synced logs are closed oldest first: nothing left to wait on
        self._file.close()
        self.closed = True

    def abandon(self, cause: FsyncFailedError) -> None:
        """Give the log up after a failed fsync (of this log or of one before it): drop queued
        records, cut the file back to its durable bytes and close it without an fsync; later
        waits past those bytes raise `cause`.

        Cutting back keeps records written after the lost ones from reaching the disk behind a
        hole (recovery would call that corruption); an fsync now could only claim as durable
        what may not be. REQUIRES: the engine's write lock (no append runs meanwhile).
        """
        with self._cond:
            if self.failed is None:
                self.failed = cause
        self._deferred.clear()
        self._deferred_bytes = 0
        if self.closed:
            return
        with contextlib.suppress(OSError):
            self._file.cut_back(self.durable_bytes)
        self.written_lsn = min(self.written_lsn, self.synced_lsn)
        self._file.close()
        self.closed = True
