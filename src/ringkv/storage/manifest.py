"""The manifest: which tables are live, at which level, and which logs still hold unflushed data.

Implements docs/formats/manifest.md. The whole state is rewritten on every change (it is a few
hundred bytes per table, and changes come once per flush or compaction): written to
`MANIFEST.tmp`, fsynced, renamed over `MANIFEST`, and the directory fsynced (before the renames
too, so the tables it names are in the directory first). A reader therefore sees the old set or
the new set, never a mix.

A mirror, `MANIFEST.bak`, is written the same way right after. Files are deleted only once both
copies stop naming them, so either copy always describes files that exist: when `MANIFEST` is
lost or corrupt, `Options(salvage=True)` recovers from the mirror (at worst one change behind,
whose output is then an orphan and whose input logs are replayed again).

    magic "ringkvMF" | format version u32 | payload length u32 | crc32c(payload) u32 | payload

The payload is msgpack: {"next_file": int, "log_number": int, "levels": [[TableMeta, ...], ...]}
and, from format version 2, "families" (each other column family's levels) and "routing" (the
router's description the tables were placed under). A store with one family is written as
version 1, which builds that predate families read; a store with several is version 2, which
they refuse rather than misread (they would take the other families' tables for orphans).
With encryption keys the payload (of either layout) is sealed by storage/sealing.py, since the
tables' smallest and largest keys are user keys: format version 3, whatever the families.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgspec
from crc32c import crc32c

from ringkv.errors import CorruptionError
from ringkv.storage import sealing
from ringkv.storage.fs import PosixFileSystem
from ringkv.storage.sstable import TableMeta

MANIFEST_NAME = "MANIFEST"
BACKUP_NAME = "MANIFEST.bak"
MANIFEST_MAGIC = b"ringkvMF"
MANIFEST_FORMAT_VERSION = 2  # column families; 1 for a store of one family
SEALED_MANIFEST_FORMAT_VERSION = 3  # the payload (version 1's or 2's layout) sealed
READABLE_VERSIONS = (1, 2, 3)
_HEADER = struct.Struct("<8sIII")
HEADER_BYTES = _HEADER.size  # 20


class ManifestState(msgspec.Struct):
    next_file: int = 1
    # Logs numbered below this are fully flushed into tables and may be deleted.
    log_number: int = 0
    # The default column family's levels (level 0 first).
    levels: list[list[TableMeta]] = msgspec.field(default_factory=list)
    # Version 2: every other column family's levels, by family name.
    families: dict[str, list[list[TableMeta]]] = msgspec.field(default_factory=dict)
    # Version 2: the family router's description when these tables were placed (None: no
    # router, every key in the default family).
    routing: Any = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(ManifestState).decode


class _StateV1(msgspec.Struct):
    next_file: int
    log_number: int
    levels: list[list[TableMeta]]


def encode(state: ManifestState, keys: sealing.KeyRing | None = None) -> bytes:
    if not state.families and state.routing is None:
        # One family: the version-1 layout, still readable by builds without families.
        payload = _encode(_StateV1(state.next_file, state.log_number, state.levels))
        version = 1
    else:
        payload = _encode(state)
        version = MANIFEST_FORMAT_VERSION
    if keys is not None:
        # Sealed, whatever the layout inside (decode reads both): builds without sealing
        # refuse version 3, as builds without families refuse version 2.
        payload, version = sealing.seal_manifest(payload, keys), SEALED_MANIFEST_FORMAT_VERSION
    return _HEADER.pack(MANIFEST_MAGIC, version, len(payload), crc32c(payload)) + payload


def decode(data: bytes, path: str, keys: sealing.KeyRing | None = None) -> ManifestState:
    if len(data) < HEADER_BYTES:
        raise CorruptionError("manifest is shorter than its header", path, 0)
    magic, version, length, crc = _HEADER.unpack_from(data)
    if magic != MANIFEST_MAGIC:
        raise CorruptionError("manifest has a bad magic number", path, 0)
    if version not in READABLE_VERSIONS:
        raise CorruptionError(
            f"manifest format version {version} is not supported (this build reads "
            f"{', '.join(map(str, READABLE_VERSIONS))})", path, 0
        )
    payload = data[HEADER_BYTES:]
    if len(payload) != length:
        raise CorruptionError(f"manifest payload is {len(payload)} bytes, header says {length}", path, HEADER_BYTES)
    if crc32c(payload) != crc:
        raise CorruptionError("manifest checksum mismatch", path, HEADER_BYTES)
    if version == SEALED_MANIFEST_FORMAT_VERSION:
        payload = sealing.open_manifest(payload, path, HEADER_BYTES, keys)
    try:
        return _decode(payload)
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"manifest does not decode ({exc})", path, HEADER_BYTES) from exc


def write(fs: PosixFileSystem, directory: str, data: bytes) -> None:
    """Atomically replace MANIFEST, then its mirror MANIFEST.bak, with `data` (encoded).

    REQUIRES: every table `data` names is fsynced. The directory is fsynced first too, so the
    tables' directory entries are durable before any manifest naming them can be: a file system
    that does not commit directory updates in order could otherwise keep the rename and lose
    the table (docs/storage-faults.md). Raises FsyncFailedError if any fsync fails; the caller
    must then write no other manifest (the engine turns read-only).
    """
    fs.sync_dir(directory)
    for name in (MANIFEST_NAME, BACKUP_NAME):
        tmp = os.path.join(directory, name + ".tmp")
        fs.write_file_synced(tmp, data)
        fs.rename(tmp, os.path.join(directory, name))
    fs.sync_dir(directory)


def read(fs: PosixFileSystem, directory: str, name: str = MANIFEST_NAME,
         keys: sealing.KeyRing | None = None) -> ManifestState | None:
    path = os.path.join(directory, name)
    if not fs.exists(path):
        return None
    return decode(fs.read_all(path), path, keys)
