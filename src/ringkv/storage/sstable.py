"""SSTables: immutable sorted files of (key, value-or-tombstone). Implements docs/formats/sstable.md.

    [data block]* [filter block] [index block] [properties block] [footer: 52 bytes]

Every block on disk is `payload | compression u8 | crc32c u32` (the CRC covers payload and the
compression byte). A data block's uncompressed payload is the msgpack array
`[[key, ...], [value-or-nil, ...]]`: msgspec decodes it into two Python lists in one C call,
and a point lookup is then one `bisect` (C) over the keys. That layout is chosen for Python's
speed; prefix compression would save bytes but cost a Python loop per entry, and lz4 already
removes most of the redundancy between neighbouring keys.

A `Table` keeps its index and bloom filter in memory (about 4 bytes per key at the defaults,
docs/formats/sstable.md) and reads data blocks through the shared block cache. A checksum
failure raises CorruptionError naming the file and offset: wrong data is never returned.
"""

from __future__ import annotations

import struct
import sys
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

import lz4.block
import msgspec
import zstandard
from crc32c import crc32c

from ringkv.errors import CorruptionError
from ringkv.storage import bloom, sealing
from ringkv.storage.fs import PosixFileSystem, WritableFile

TABLE_MAGIC = b"ringkvST"
TABLE_FORMAT_VERSION = 1
SEALED_TABLE_FORMAT_VERSION = 2  # every block sealed; a seal header precedes the footer
_FOOTER = struct.Struct("<QIQIQII")  # filter, index, properties handles; format version
_FOOTER_TAIL = struct.Struct("<I8s")  # crc32c of the first 40 bytes; magic
FOOTER_BYTES = _FOOTER.size + _FOOTER_TAIL.size  # 52
BLOCK_TRAILER_BYTES = 5

COMPRESSION_NONE = 0
COMPRESSION_LZ4 = 1
COMPRESSION_ZSTD = 2
COMPRESSION_CODES = {"none": COMPRESSION_NONE, "lz4": COMPRESSION_LZ4, "zstd": COMPRESSION_ZSTD}

# Python-object overhead charged to the block cache per decoded entry (two bytes objects and
# two list slots), so its byte bound tracks real memory rather than the on-disk size.
CACHE_BYTES_PER_ENTRY = 90

_encode = msgspec.msgpack.Encoder().encode
_decode_block = msgspec.msgpack.Decoder(tuple[list[bytes], list[bytes | None]]).decode
_decode_index = msgspec.msgpack.Decoder(tuple[list[bytes], list[int], list[int]]).decode
_decode_props = msgspec.msgpack.Decoder(dict).decode
# zstandard's (de)compressor objects are not thread-safe: one of each per thread.
_zstd = threading.local()


def _zstd_compressor() -> zstandard.ZstdCompressor:
    c = getattr(_zstd, "c", None)
    if c is None:
        c = _zstd.c = zstandard.ZstdCompressor(level=3)
    return c


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_zstd, "d", None)
    if d is None:
        d = _zstd.d = zstandard.ZstdDecompressor()
    return d
_U8U32 = struct.Struct("<BI")


def _entry_bytes(klen: int, vlen: int) -> int:
    # What a block is filled by: key, value and 4 bytes of framing per entry (see add()).
    return klen + vlen + 4


def table_file_name(number: int) -> str:
    return f"{number:06d}.sst"


def _compress(raw: bytes, code: int) -> tuple[bytes, int]:
    if code == COMPRESSION_LZ4:
        out = lz4.block.compress(raw, store_size=True)
    elif code == COMPRESSION_ZSTD:
        out = _zstd_compressor().compress(raw)
    else:
        return raw, COMPRESSION_NONE
    # Keep the raw bytes unless compression saves at least 1/8: decompressing costs time.
    if len(out) > len(raw) - (len(raw) >> 3):
        return raw, COMPRESSION_NONE
    return out, code


def encode_block(raw: bytes, code: int) -> bytes:
    payload, used = _compress(raw, code)
    return payload + _U8U32.pack(used, crc32c(payload + bytes((used,))))


def decode_block_bytes(data: bytes, path: str, offset: int, opener: sealing.TableOpener | None = None) -> bytes:
    """Check the trailer and decompress. REQUIRES: `data` is a whole block with its trailer."""
    if opener is not None:
        data = opener.open(data, offset)
    if len(data) < BLOCK_TRAILER_BYTES:
        raise CorruptionError("SSTable block is truncated", path, offset)
    code, crc = _U8U32.unpack_from(data, len(data) - BLOCK_TRAILER_BYTES)
    # memoryview slices: no copy of the block for the checksum or the decompressor.
    view = memoryview(data)
    if crc32c(view[: -BLOCK_TRAILER_BYTES + 1]) != crc:  # payload and compression byte
        raise CorruptionError("SSTable block checksum mismatch", path, offset)
    payload = view[:-BLOCK_TRAILER_BYTES]
    try:
        if code == COMPRESSION_NONE:
            return bytes(payload)
        if code == COMPRESSION_LZ4:
            return lz4.block.decompress(payload)
        if code == COMPRESSION_ZSTD:
            return _zstd_decompressor().decompress(payload)
    except Exception as exc:  # a checksummed block that fails to decompress is still corrupt
        raise CorruptionError(f"SSTable block does not decompress ({exc})", path, offset) from exc
    raise CorruptionError(f"SSTable block has unknown compression {code}", path, offset)


class TableMeta(msgspec.Struct, array_like=True):
    """What the manifest records about a table; enough to place it without opening it.

    The last three fields were added with time-window compaction (docs/formats/sstable.md);
    a manifest written before them decodes with their defaults (unknown), and a reader that
    predates them ignores them.
    """

    number: int
    file_bytes: int
    smallest: bytes
    largest: bytes
    entries: int
    tombstones: int
    raw_bytes: int  # sum of key and value lengths
    # When the table's records reached the engine (ms since the epoch: a flush's time, the
    # latest of a merge's inputs); 0: unknown. Time-window compaction groups tables by it.
    created_ms: int = 0
    # 0: unknown, or some record never expires. Else every record is dead from this time on
    # (Options.expiry_of): the table may then be deleted unread, unless filter_records > 0.
    expiry_ms: int = 0
    # Records only the compaction filter may drop (dead from expiry_ms at the earliest).
    filter_records: int = 0


class SSTableWriter:
    """Builds one table. REQUIRES: keys added in strictly increasing order."""

    def __init__(
        self,
        file: WritableFile,
        number: int,
        block_bytes: int,
        compression: str,
        bloom_bits_per_key: int,
        keys: sealing.KeyRing | None = None,
    ):
        self._file = file
        self._sealer = sealing.TableSealer(keys, number) if keys is not None else None
        self._number = number
        self._block_bytes = block_bytes
        self._code = COMPRESSION_CODES[compression]
        self._bits_per_key = bloom_bits_per_key
        self._keys: list[bytes] = []
        self._vals: list[bytes | None] = []
        self._block_raw = 0
        self._all_keys: list[bytes] = []
        self._index_keys: list[bytes] = []
        self._index_offsets: list[int] = []
        self._index_sizes: list[int] = []
        self._offset = 0
        self.entries = 0
        self.tombstones = 0
        self.raw_bytes = 0
        self._smallest: bytes | None = None
        self._last: bytes | None = None
        # Set by the caller before finish() when known (TableMeta has their meaning).
        self.created_ms = 0
        self.expiry_ms = 0
        self.filter_records = 0

    @property
    def file_bytes(self) -> int:
        return self._offset + self._block_raw

    def add(self, key: bytes, value: bytes | None) -> None:
        self._keys.append(key)
        self._vals.append(value)
        self._all_keys.append(key)
        n = len(key) + (len(value) if value is not None else 0)
        self._block_raw += n + 4
        self.raw_bytes += n
        self.entries += 1
        if value is None:
            self.tombstones += 1
        if self._smallest is None:
            self._smallest = key
        self._last = key
        if self._block_raw >= self._block_bytes:
            self._finish_block()

    def add_many(self, keys: list[bytes], vals: list[bytes | None]) -> None:
        """Add sorted entries in bulk: the same blocks as calling add() for each, with the
        per-entry work done by C (map, accumulate, bisect) instead of a Python call per entry.
        REQUIRES: keys sorted, all after any key already added."""
        if not keys:
            return
        if self._keys:  # finish the partial block through the same path
            keys = self._keys + keys
            vals = self._vals + vals
            self.entries -= len(self._keys)
            self.raw_bytes -= self._block_raw - 4 * len(self._keys)
            self.tombstones -= self._vals.count(None)
            del self._all_keys[-len(self._keys):]
            self._keys = []
            self._vals = []
            self._block_raw = 0
        klens = list(map(len, keys))
        vlens = [len(v) if v is not None else 0 for v in vals]
        cum = list(accumulate(map(_entry_bytes, klens, vlens)))
        n = len(keys)
        start = 0
        base = 0
        limit = self._block_bytes
        while start < n:
            end = bisect_left(cum, base + limit, start)  # the entry that fills the block
            if end >= n:
                self._keys = keys[start:]
                self._vals = vals[start:]
                self._block_raw = cum[-1] - base
                break
            self._keys = keys[start : end + 1]
            self._vals = vals[start : end + 1]
            self._finish_block()
            base = cum[end]
            start = end + 1
        self._all_keys.extend(keys)
        self.entries += n
        self.tombstones += vals.count(None)
        self.raw_bytes += sum(klens) + sum(vlens)
        if self._smallest is None:
            self._smallest = keys[0]
        self._last = keys[-1]

    def _write(self, data: bytes, block: bool = True) -> tuple[int, int]:
        off = self._offset
        if block and self._sealer is not None:
            data = self._sealer.seal(data, off)
        self._file.write(data)
        self._offset += len(data)
        return off, len(data)

    def _finish_block(self) -> None:
        if not self._keys:
            return
        block = encode_block(_encode((self._keys, self._vals)), self._code)
        off, size = self._write(block)
        self._index_keys.append(self._keys[-1])
        self._index_offsets.append(off)
        self._index_sizes.append(size)
        self._keys = []
        self._vals = []
        self._block_raw = 0

    def finish(self) -> TableMeta:
        """Write filter, index, properties and footer; fsync. The caller closes the file."""
        self._finish_block()
        bits, k = bloom.build(self._all_keys, self._bits_per_key)
        f_off, f_size = self._write(encode_block(bits, COMPRESSION_NONE))
        index = _encode((self._index_keys, self._index_offsets, self._index_sizes))
        i_off, i_size = self._write(encode_block(index, self._code))
        props = {
            "entries": self.entries,
            "tombstones": self.tombstones,
            "raw_bytes": self.raw_bytes,
            "bloom_probes": k,
            "data_blocks": len(self._index_keys),
        }
        # Written only when known, so a table of a family that does not track them is the
        # same file as before they existed.
        for name in ("created_ms", "expiry_ms", "filter_records"):
            if getattr(self, name):
                props[name] = getattr(self, name)
        p_off, p_size = self._write(encode_block(_encode(props), COMPRESSION_NONE))
        version = TABLE_FORMAT_VERSION
        if self._sealer is not None:
            version = SEALED_TABLE_FORMAT_VERSION
            self._write(self._sealer.seal_header, block=False)
        head = _FOOTER.pack(f_off, f_size, i_off, i_size, p_off, p_size, version)
        self._write(head + _FOOTER_TAIL.pack(crc32c(head), TABLE_MAGIC), block=False)
        self._file.sync()
        return TableMeta(
            number=self._number,
            file_bytes=self._offset,
            smallest=self._smallest or b"",
            largest=self._last or b"",
            entries=self.entries,
            tombstones=self.tombstones,
            raw_bytes=self.raw_bytes,
            created_ms=self.created_ms,
            expiry_ms=self.expiry_ms,
            filter_records=self.filter_records,
        )


def footer_version(data: bytes, path: str, file_size: int) -> int:
    return _parse_footer(data, path, file_size)[-1]


def _opener(version: int, read, file_size: int, path: str, number: int, keys) -> sealing.TableOpener | None:
    """The opener of a sealed table's blocks (None for a plain one); `read(offset, length)`."""
    if version != SEALED_TABLE_FORMAT_VERSION:
        return None
    at = file_size - FOOTER_BYTES - sealing.SEAL_HEADER_BYTES
    if at < 0:
        raise CorruptionError("sealed SSTable is shorter than its seal header and footer", path, 0)
    return sealing.TableOpener(read(at, sealing.SEAL_HEADER_BYTES), 0, path, number, keys)


def _parse_footer(data: bytes, path: str, file_size: int) -> tuple[int, int, int, int, int, int, int]:
    if len(data) != FOOTER_BYTES:
        raise CorruptionError(f"SSTable is shorter than its {FOOTER_BYTES}-byte footer", path, 0)
    head = data[: _FOOTER.size]
    crc, magic = _FOOTER_TAIL.unpack_from(data, _FOOTER.size)
    where = file_size - FOOTER_BYTES
    if magic != TABLE_MAGIC:
        raise CorruptionError("SSTable footer has a bad magic number", path, where)
    if crc32c(head) != crc:
        raise CorruptionError("SSTable footer checksum mismatch", path, where)
    f_off, f_size, i_off, i_size, p_off, p_size, version = _FOOTER.unpack(head)
    if version not in (TABLE_FORMAT_VERSION, SEALED_TABLE_FORMAT_VERSION):
        raise CorruptionError(
            f"SSTable format version {version} is not supported (want {TABLE_FORMAT_VERSION})", path, where
        )
    if version == SEALED_TABLE_FORMAT_VERSION:
        where -= sealing.SEAL_HEADER_BYTES
    for off, size in ((f_off, f_size), (i_off, i_size), (p_off, p_size)):
        if off + size > where:
            raise CorruptionError("SSTable footer points past the end of the file", path, where)
    return f_off, f_size, i_off, i_size, p_off, p_size, version


class Table:
    """An open SSTable's resident part (index, bloom filter, bounds). Safe for concurrent readers.

    Data blocks are read through `block_cache` (keyed by (number, offset)) and the file through
    `table_cache`, which bounds how many files are open at once.
    """

    __slots__ = (
        "_block_cache",
        "_index_keys",
        "_index_offsets",
        "_index_sizes",
        "_opener",
        "_table_cache",
        "bloom",
        "largest",
        "meta",
        "number",
        "path",
        "smallest",
    )

    def __init__(self, path: str, meta: TableMeta, fs: PosixFileSystem, block_cache, table_cache,
                 keys: sealing.KeyRing | None = None):
        self.path = path
        self.meta = meta
        self.number = meta.number
        self.smallest = meta.smallest
        self.largest = meta.largest
        self._block_cache = block_cache
        self._table_cache = table_cache
        f = table_cache.get(self.number, path)
        size = f.size
        if size < FOOTER_BYTES:
            raise CorruptionError(f"SSTable is shorter than its {FOOTER_BYTES}-byte footer", path, 0)
        f_off, f_size, i_off, i_size, p_off, p_size, version = _parse_footer(
            f.read(size - FOOTER_BYTES, FOOTER_BYTES), path, size
        )
        self._opener = opener = _opener(version, f.read, size, path, self.number, keys)
        index_raw = decode_block_bytes(f.read(i_off, i_size), path, i_off, opener)
        try:
            keys, offsets, sizes = _decode_index(index_raw)
        except msgspec.DecodeError as exc:
            raise CorruptionError(f"SSTable index does not decode ({exc})", path, i_off) from exc
        if not (len(keys) == len(offsets) == len(sizes)):
            raise CorruptionError("SSTable index arrays differ in length", path, i_off)
        self._index_keys = keys
        self._index_offsets = array("Q", offsets)
        self._index_sizes = array("I", sizes)
        try:
            props = _decode_props(decode_block_bytes(f.read(p_off, p_size), path, p_off, opener))
            probes = int(props["bloom_probes"])
        except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
            raise CorruptionError(f"SSTable properties do not decode ({exc})", path, p_off) from exc
        # The probe count comes from the table itself, so tables stay readable when
        # bloom_bits_per_key changes.
        self.bloom = bloom.BloomFilter(decode_block_bytes(f.read(f_off, f_size), path, f_off, opener), probes)

    def resident_bytes(self) -> int:
        """Memory held outside the caches: index keys, handles and the bloom filter."""
        keys = self._index_keys
        return (
            self.bloom.memory_bytes()
            + sum(len(k) + 33 for k in keys)
            + 8 * len(keys)
            + 12 * len(keys)
        )

    def _block(self, i: int) -> list:
        """Block `i` as cached: [keys, values, its hash index or None]."""
        off = self._index_offsets[i]
        block = self._block_cache.get((self.number, off))
        if block is not None:
            return block
        return self._load(i, off)

    def _load(self, i: int, off: int) -> list:
        """Read, check and decode block `i` (at `off`), and cache it."""
        data = self._table_cache.get(self.number, self.path).read(off, self._index_sizes[i])
        raw = decode_block_bytes(data, self.path, off, self._opener)
        try:
            keys, vals = _decode_block(raw)
        except msgspec.DecodeError as exc:
            raise CorruptionError(f"SSTable data block does not decode ({exc})", self.path, off) from exc
        if len(keys) != len(vals):
            raise CorruptionError("SSTable data block keys and values differ in count", self.path, off)
        block = [keys, vals, None]
        self._block_cache.put((self.number, off), block, len(raw) + CACHE_BYTES_PER_ENTRY * len(keys))
        return block

    def get(self, key: bytes):
        """The stored value, None for a tombstone, or `MISSING` when the table lacks the key.

        A block found in the cache (read before) gets a hash index, a dict of its keys kept in
        its cache entry, whose charge grows by the dict's size: a point lookup in a block read
        often is then one hash probe instead of a binary search whose every step touches
        another key object in memory (about 0.9 us of a 2 us lookup at 200,000 keys;
        docs/benchmarks/engine.md). A block read once, by a scan or a single lookup, is
        searched and costs no index."""
        i = bisect_left(self._index_keys, key)
        if i == len(self._index_keys):
            return MISSING
        off = self._index_offsets[i]
        cache = self._block_cache
        block = cache.get((self.number, off))
        if block is None:
            keys, vals, _ = self._load(i, off)
            j = bisect_left(keys, key)
            if j < len(keys) and keys[j] == key:
                return vals[j]
            return MISSING
        index = block[2]
        if index is None:
            # Two threads racing here both build it and both charge it: over by one dict.
            index = block[2] = dict(zip(block[0], block[1]))
            cache.grow((self.number, off), sys.getsizeof(index))
        return index.get(key, MISSING)

    def blocks_from(self, start: bytes | None, end: bytes | None):
        """(keys, values) slices of consecutive blocks covering start <= key < end."""
        index_keys = self._index_keys
        i = 0 if start is None else bisect_left(index_keys, start)
        n = len(index_keys)
        lo = None if start is None else start
        while i < n:
            keys, vals, _ = self._block(i)
            a = bisect_left(keys, lo) if lo is not None else 0
            lo = None
            if end is not None and keys[-1] >= end:
                b = bisect_left(keys, end)
                if a < b:
                    yield keys[a:b], vals[a:b]
                return
            if a:
                yield keys[a:], vals[a:]
            else:
                yield keys, vals
            i += 1

    def items_from(self, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value-or-None) in order for start <= key < end."""
        for keys, vals in self.blocks_from(start, end):
            yield from zip(keys, vals)


MISSING = object()


def read_all_blocks(
    data: bytes, path: str, keys: sealing.KeyRing | None = None
) -> Iterator[tuple[list[bytes], list[bytes | None]]]:
    """Every data block of a whole table file held in memory, in order (compaction's reader)."""
    size = len(data)
    if size < FOOTER_BYTES:
        raise CorruptionError(f"SSTable is shorter than its {FOOTER_BYTES}-byte footer", path, 0)
    _, _, i_off, i_size, _, _, version = _parse_footer(data[size - FOOTER_BYTES :], path, size)
    opener = _opener(version, lambda o, n: data[o : o + n], size, path, sealing.file_number(path), keys)
    try:
        _, offsets, sizes = _decode_index(decode_block_bytes(data[i_off : i_off + i_size], path, i_off, opener))
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"SSTable index does not decode ({exc})", path, i_off) from exc
    for off, sz in zip(offsets, sizes):
        raw = decode_block_bytes(data[off : off + sz], path, off, opener)
        try:
            block = _decode_block(raw)
        except msgspec.DecodeError as exc:
            raise CorruptionError(f"SSTable data block does not decode ({exc})", path, off) from exc
        yield block

