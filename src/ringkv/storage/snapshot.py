"""A checkpoint of an open engine: a directory that opens as a store holding every write the
engine had taken (handed to the OS) when the checkpoint began.

Implements the engine side of docs/backup.md ("Node snapshots"). The checkpoint is made of:

- a hard link to every live table (tables are immutable once a manifest names them, so a link
  costs no copy and no space until compaction deletes the original);
- the bytes of `MANIFEST` as it is on disk (it names exactly those tables and the first log
  still needed), written as `MANIFEST` and `MANIFEST.bak`;
- a copy of every log at or after the manifest's `log_number`, cut at the length written when
  the checkpoint began: the frozen memtables' logs and the current one's tail. Records end at a
  boundary there (deferred records are written first), so recovery replays them whole.

Nothing is decoded: an encrypted store's tables, logs and manifest stay sealed as they were
(their associated data binds file numbers and offsets, which the copy keeps), and the
checkpoint opens with the same key file.

Locking: the manifest lock is held from the first look at the state to the last file linked or
copied, so no flush or compaction installs a new table set or deletes a table or log the
checkpoint needs meanwhile; the write lock only while the state is read and the log lengths
taken (microseconds): writers carry on while files are linked and copied. A write made after
that point is not in the checkpoint.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from dataclasses import dataclass

from ringkv.errors import ClosedError, RingkvError
from ringkv.storage import manifest
from ringkv.storage.sstable import table_file_name

COPY_CHUNK_BYTES = 1 << 20  # a log is copied in pieces of this size


class CheckpointError(RingkvError):
    """A checkpoint could not be made (the destination exists, the engine is read-only or
    closed, a file could not be linked or copied); the partial destination is removed."""


@dataclass(frozen=True)
class CheckpointReport:
    tables: int  # tables hard-linked (or copied, across file systems)
    table_bytes: int
    logs: int  # logs copied
    log_bytes: int
    linked: bool  # False when the destination is on another file system (tables copied)
    seconds: float

    def as_dict(self) -> dict:
        return {"tables": self.tables, "table_bytes": self.table_bytes, "logs": self.logs,
                "log_bytes": self.log_bytes, "linked": self.linked, "seconds": round(self.seconds, 4)}


def checkpoint(engine, dest: str) -> CheckpointReport:
    """Make a checkpoint of `engine` (an open `storage.Engine`) in `dest`, a directory that must
    not exist yet (its parent is created). CheckpointError, with `dest` removed, on failure."""
    dest = os.path.abspath(dest)
    if os.path.exists(dest):
        raise CheckpointError(f"checkpoint destination {dest} already exists")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    started = time.monotonic()
    try:
        with engine._manifest_lock:
            with engine._write_lock:
                if engine._closed:
                    raise ClosedError(f"engine at {engine.path} is closed")
                if engine._bg_error is not None:
                    raise CheckpointError(f"engine at {engine.path} is read-only after a failure "
                                          f"({engine._bg_error}): its manifest may not match its files")
                engine._wal.flush_deferred()
                state = engine._state
                log_number = engine._mstate.log_number
                tables = sorted(set().union(*(v.numbers() for v in state.versions)))
                logs: list[tuple[int, int]] = []  # (file number, bytes to copy)
                for mem in (*reversed(state.imms), state.mem):
                    if mem.wal_number >= log_number:
                        writer = mem.wal if mem.wal is not None else engine._wal
                        logs.append((mem.wal_number, writer._file.size))
            # Under the manifest lock only: the files named above stay where they are.
            manifest_bytes = _read(os.path.join(engine.path, manifest.MANIFEST_NAME))
            linked = True
            table_bytes = 0
            for number in tables:
                src = os.path.join(engine.path, table_file_name(number))
                dst = os.path.join(tmp, table_file_name(number))
                table_bytes += os.path.getsize(src)
                if linked:
                    try:
                        os.link(src, dst)
                        continue
                    except OSError as exc:
                        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                            raise
                        linked = False
                _copy(src, dst, None)
            log_bytes = 0
            for number, size in logs:
                name = f"{number:06d}.wal"
                _copy(os.path.join(engine.path, name), os.path.join(tmp, name), size)
                log_bytes += size
        for name in (manifest.MANIFEST_NAME, manifest.BACKUP_NAME):
            _write_synced(os.path.join(tmp, name), manifest_bytes)
        _fsync_dir(tmp)
        os.rename(tmp, dest)
        _fsync_dir(os.path.dirname(dest))
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, RingkvError):
            raise
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot make a checkpoint of {engine.path} in {dest}: {exc}") from exc
        raise
    return CheckpointReport(len(tables), table_bytes, len(logs), log_bytes, linked, time.monotonic() - started)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _copy(src: str, dst: str, size: int | None) -> None:
    """Copy `size` bytes of `src` (None: all of it) to a new `dst`, fsynced."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        left = size
        while left is None or left > 0:
            chunk = fin.read(COPY_CHUNK_BYTES if left is None else min(left, COPY_CHUNK_BYTES))
            if not chunk:
                break
            fout.write(chunk)
            if left is not None:
                left -= len(chunk)
        if left:
            raise CheckpointError(f"{src} is {size - left} bytes long, shorter than the {size} bytes the "
                                  f"engine had written to it")
        fout.flush()
        os.fsync(fout.fileno())


def _write_synced(path: str, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
