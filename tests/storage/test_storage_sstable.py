"""SSTables (docs/formats/sstable.md): every key written reads back, with empty values and
tombstones kept apart, under each compression; range reads return exactly the range; and any
damaged byte gives a CorruptionError naming the file and the bad block's offset, never data."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from itertools import pairwise

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.errors import CorruptionError
from ringkv.storage import sstable
from ringkv.storage.cache import BlockCache, TableCache
from ringkv.storage.compaction import TableSettings, write_table
from ringkv.storage.fs import PosixFileSystem

FS = PosixFileSystem()


def write(directory, items, compression="lz4", block_bytes=256, number=1):
    meta = write_table(str(directory), number, items, TableSettings(block_bytes, compression, 10, 1 << 20))
    return os.path.join(str(directory), sstable.table_file_name(number)), meta


def open_table(path, meta):
    return sstable.Table(path, meta, FS, BlockCache(1 << 20), TableCache(FS, 8))


class Layout(msgspec.Struct):
    footer: int  # offset of the footer
    filter: tuple[int, int]  # (offset, size) of each block
    index: tuple[int, int]
    properties: tuple[int, int]
    blocks: list[tuple[bytes, int, int]]  # (last key, offset, size) of each data block


def layout(path) -> Layout:
    """Where a table's blocks lie, read from its footer and index as the format document says."""
    with open(path, "rb") as f:
        data = f.read()
    footer = len(data) - sstable.FOOTER_BYTES
    f_off, f_size, i_off, i_size, p_off, p_size, _ = struct.unpack_from("<QIQIQII", data, footer)
    raw = sstable.decode_block_bytes(data[i_off : i_off + i_size], path, i_off)
    last_keys, offsets, sizes = msgspec.msgpack.decode(raw)
    return Layout(footer, (f_off, f_size), (i_off, i_size), (p_off, p_size), list(zip(last_keys, offsets, sizes)))


def flip_bit(path, offset, bit=0):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ (1 << bit)]))


def sample_items(n=400):
    """Keys in order; every 7th an empty value, every 11th a tombstone."""
    items = []
    for i in range(n):
        value = None if i % 11 == 0 else b"" if i % 7 == 0 else b"value %d " % i * (1 + i % 5)
        items.append((b"key:%05d" % i, value))
    return items


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_every_key_reads_back_under_each_compression(tmp_path, compression):
    items = sample_items()
    path, meta = write(tmp_path, items, compression)
    assert (meta.entries, meta.tombstones) == (400, sum(v is None for _, v in items))
    assert (meta.smallest, meta.largest) == (items[0][0], items[-1][0])
    table = open_table(path, meta)
    for key, value in items:
        assert table.get(key) == value  # None is a tombstone, b"" an empty value
    for absent in (b"a", b"key:00003x", b"key:99999", b"zzz"):
        assert table.get(absent) is sstable.MISSING
    assert list(table.items_from(None, None)) == items


def test_compression_shrinks_repetitive_blocks(tmp_path):
    items = [(b"key:%05d" % i, b"the same sentence again " * 8) for i in range(500)]
    sizes = {}
    for number, compression in enumerate(("none", "lz4", "zstd"), 1):
        sizes[compression] = write(tmp_path, items, compression, 4096, number)[1].file_bytes
    assert sizes["lz4"] < sizes["none"] / 3
    assert sizes["zstd"] < sizes["none"] / 3


def test_incompressible_blocks_are_stored_raw_and_still_read(tmp_path):
    items = [(b"key:%05d" % i, os.urandom(200)) for i in range(100)]
    path, meta = write(tmp_path, items, "zstd")
    assert list(open_table(path, meta).items_from(None, None)) == items


def test_table_with_no_entries_opens_and_holds_nothing(tmp_path):
    path, meta = write(tmp_path, [])
    table = open_table(path, meta)
    assert table.get(b"k") is sstable.MISSING
    assert list(table.items_from(None, None)) == []


ITEMS = sample_items(300)
bounds = st.one_of(st.none(), st.sampled_from([k for k, _ in ITEMS]), st.binary(max_size=10).map(lambda b: b"key:" + b))


@pytest.fixture(scope="module")
def small_block_table(tmp_path_factory):
    path, meta = write(tmp_path_factory.mktemp("range"), ITEMS, block_bytes=256)
    return open_table(path, meta)


@settings(max_examples=150)
@given(start=bounds, end=bounds)
def test_range_read_returns_exactly_start_inclusive_end_exclusive(small_block_table, start, end):
    want = [(k, v) for k, v in ITEMS if (start is None or k >= start) and (end is None or k < end)]
    assert list(small_block_table.items_from(start, end)) == want
    blocks = list(small_block_table.blocks_from(start, end))
    assert all(len(keys) == len(vals) and keys for keys, vals in blocks)
    assert [(k, v) for keys, vals in blocks for k, v in zip(keys, vals)] == want


def test_many_data_blocks_are_written_at_small_block_size(tmp_path):
    path, _ = write(tmp_path, ITEMS, block_bytes=256)
    assert len(layout(path).blocks) > 20


# ---------------------------------------------------------------------------------------- damage


@pytest.fixture
def damaged(tmp_path):
    """A table of many blocks, uncompressed so a flipped bit stays inside one block's payload."""
    items = [(b"key:%05d" % i, b"v%05d" % i * 10) for i in range(300)]
    path, meta = write(tmp_path, items, "none", block_bytes=512)
    return path, meta, items


def test_flipped_bit_in_data_block_raises_corruption(damaged):
    path, meta, items = damaged
    blocks = layout(path).blocks
    _, bad_offset, bad_size = blocks[3]
    flip_bit(path, bad_offset + bad_size // 2)
    table = open_table(path, meta)  # data blocks are only checked when read
    in_bad_block = [k for k, _ in items if blocks[2][0] < k <= blocks[3][0]]
    assert in_bad_block
    with pytest.raises(CorruptionError) as err:
        table.get(in_bad_block[0])
    assert (err.value.path, err.value.offset) == (path, bad_offset)
    assert path in str(err.value) and f"offset {bad_offset}" in str(err.value)
    # Every other block still answers, and a range over the bad block refuses to yield it.
    for key, value in items:
        if key not in in_bad_block:
            assert table.get(key) == value
    with pytest.raises(CorruptionError):
        list(table.items_from(None, None))


def test_flipped_bit_in_block_trailer_crc_raises_corruption(damaged):
    path, meta, items = damaged
    _, off, size = layout(path).blocks[0]
    flip_bit(path, off + size - 1)
    with pytest.raises(CorruptionError) as err:
        open_table(path, meta).get(items[0][0])
    assert err.value.offset == off


def test_flipped_bit_in_index_block_raises_corruption_at_open(damaged):
    path, meta, _ = damaged
    i_off, i_size = layout(path).index
    flip_bit(path, i_off + i_size // 2)
    with pytest.raises(CorruptionError) as err:
        open_table(path, meta)
    assert (err.value.path, err.value.offset) == (path, i_off)


@pytest.mark.parametrize("block", ["filter", "properties"])
def test_flipped_bit_in_filter_or_properties_block_raises_corruption_at_open(damaged, block):
    path, meta, _ = damaged
    off, size = getattr(layout(path), block)
    flip_bit(path, off + size // 2)
    with pytest.raises(CorruptionError) as err:
        open_table(path, meta)
    assert (err.value.path, err.value.offset) == (path, off)


def test_bad_footer_magic_raises_corruption(damaged):
    path, meta, _ = damaged
    footer = layout(path).footer
    flip_bit(path, os.path.getsize(path) - 3)
    with pytest.raises(CorruptionError, match="magic") as err:
        open_table(path, meta)
    assert (err.value.path, err.value.offset) == (path, footer)


@pytest.mark.parametrize("field_offset", [0, 12, 36, 40])
def test_bad_footer_checksum_raises_corruption(damaged, field_offset):
    path, meta, _ = damaged
    footer = layout(path).footer
    flip_bit(path, footer + field_offset, 5)
    with pytest.raises(CorruptionError, match="checksum") as err:
        open_table(path, meta)
    assert (err.value.path, err.value.offset) == (path, footer)


@pytest.mark.parametrize("keep", [0, 30, 1000, -1])
def test_truncated_table_raises_corruption_at_open(damaged, keep):
    path, meta, _ = damaged
    size = os.path.getsize(path)
    os.truncate(path, size - 1 if keep == -1 else keep)
    with pytest.raises(CorruptionError) as err:
        open_table(path, meta)
    assert err.value.path == path


# ------------------------------------------------------------------------------------ threads

# Run in a child process: the failure this pins down was a segmentation fault.
ZSTD_FROM_SEVERAL_THREADS = r"""
import random, sys, threading, time
from ringkv.storage import sstable

raws = [bytes(random.Random(i).choice(b"abcdefgh") for _ in range(2000)) for i in range(20)]
blocks = [sstable.encode_block(r, sstable.COMPRESSION_ZSTD) for r in raws]
problems = []
deadline = time.monotonic() + 2.0

def work(i):
    # The flush thread compresses while the compaction thread and readers decompress.
    while not problems and time.monotonic() < deadline:
        i += 1
        try:
            if i % 2:
                block = sstable.encode_block(raws[i % 20], sstable.COMPRESSION_ZSTD)
                ok = sstable.decode_block_bytes(block, "t.sst", 0) == raws[i % 20]
            else:
                ok = sstable.decode_block_bytes(blocks[i % 20], "t.sst", 0) == raws[i % 20]
            if not ok:
                problems.append("wrong data")
        except Exception as exc:
            problems.append(repr(exc))

threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(problems[:1])
sys.exit(1 if problems else 0)
"""


def test_zstd_blocks_can_be_written_and_read_from_several_threads_at_once():
    """zstandard's contexts are not thread-safe: sharing one between the flush thread, the
    compaction thread and readers gave ZstdErrors, false CorruptionErrors and segfaults."""
    child = subprocess.run(
        [sys.executable, "-c", ZSTD_FROM_SEVERAL_THREADS], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, f"exit {child.returncode}: {child.stdout.strip()} {child.stderr[-500:]}"


entries = st.dictionaries(
    st.binary(min_size=1, max_size=30), st.one_of(st.none(), st.binary(max_size=300)), max_size=120
).map(lambda d: sorted(d.items()))


@settings(max_examples=100)
@given(items=entries, block_bytes=st.sampled_from([256, 300, 1024]), cuts=st.lists(st.integers(0, 120)))
def test_bulk_add_writes_the_same_table_as_adding_one_entry_at_a_time(tmp_path_factory, items, block_bytes, cuts):
    d = tmp_path_factory.mktemp("bulk")

    def build(name, add):
        f = FS.create(str(d / name))
        writer = sstable.SSTableWriter(f, 1, block_bytes, "lz4", 10)
        add(writer)
        meta = writer.finish()
        f.close()
        with open(str(d / name), "rb") as g:
            return g.read(), meta

    def one_by_one(writer):
        for k, v in items:
            writer.add(k, v)

    def in_slices(writer):
        # Slices in bulk, every third one entry at a time: a bulk add continues a partial block.
        bounds = sorted({0, len(items), *(c for c in cuts if c < len(items))})
        for n, (a, b) in enumerate(pairwise(bounds)):
            if n % 3 == 2:
                for k, v in items[a:b]:
                    writer.add(k, v)
            else:
                writer.add_many([k for k, _ in items[a:b]], [v for _, v in items[a:b]])

    assert build("single.sst", one_by_one) == build("bulk.sst", in_slices)


# -- point lookups through a block's hash index (Table.get)

def _indexed(cache: BlockCache) -> int:
    """Cached blocks that have built their hash index."""
    return sum(1 for value, _ in list(cache._entries.values()) if value[2] is not None)


@settings(max_examples=60, deadline=None)
@given(
    items=st.dictionaries(st.binary(min_size=1, max_size=12), st.one_of(st.none(), st.binary(max_size=40)),
                          min_size=1, max_size=120),
    probes=st.lists(st.binary(min_size=1, max_size=12), max_size=40),
)
def test_point_lookups_answer_the_same_before_and_after_blocks_gain_a_hash_index(tmp_path_factory, items, probes):
    # Model: a present key answers its value (None: a tombstone), anything else MISSING, on
    # the first read of a block (binary search), the second (the index is built) and after.
    path, meta = write(tmp_path_factory.mktemp("index"), sorted(items.items()), block_bytes=128)
    table = open_table(path, meta)
    asked = list(items) + probes
    for _ in range(3):
        for key in asked:
            want, got = items.get(key, sstable.MISSING), table.get(key)
            if want is None or want is sstable.MISSING:
                assert got is want
            else:
                assert got == want
    # Every block some key was read from twice now has its index.
    assert _indexed(table._block_cache) == len(layout(path).blocks)


def test_a_block_read_once_has_no_index_and_building_one_counts_no_extra_read(tmp_path):
    path, meta = write(tmp_path, ITEMS, block_bytes=256)
    table = open_table(path, meta)
    cache = table._block_cache
    assert table.get(b"key:00001") == ITEMS[1][1]
    assert _indexed(cache) == 0 and (cache.hits, cache.misses) == (0, 1)  # decoded, searched
    assert table.get(b"key:00002") == ITEMS[2][1]  # cached: this read builds its index
    assert _indexed(cache) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert table.get(b"key:00003") == ITEMS[3][1]  # through the index
    assert (cache.hits, cache.misses) == (2, 1)
    # A scan reads blocks without building indexes.
    assert len(list(table.items_from(None, None))) == len(ITEMS)
    assert _indexed(cache) == 1


def test_a_block_index_is_charged_to_its_block_and_leaves_with_its_table(tmp_path):
    path, meta = write(tmp_path, ITEMS, block_bytes=256)
    table = open_table(path, meta)
    cache = table._block_cache
    table.get(b"key:00001")
    (key,) = list(cache._entries)
    decoded = cache.charge_of(key)
    assert cache.used_bytes == decoded
    table.get(b"key:00001")
    index = cache._entries[key][0][2]
    assert cache.charge_of(key) == decoded + sys.getsizeof(index) == cache.used_bytes
    cache.evict_table(meta.number)
    assert cache.used_bytes == 0 and not cache._entries
