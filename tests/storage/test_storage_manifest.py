"""Manifest (docs/formats/manifest.md): the set of live tables survives a write and read whole,
is mirrored to MANIFEST.bak, and any damaged byte is a CorruptionError naming the file."""

from __future__ import annotations

import os

import pytest

from ringkv.errors import CorruptionError
from ringkv.storage import manifest
from ringkv.storage.fs import PosixFileSystem
from ringkv.storage.sstable import TableMeta

FS = PosixFileSystem()


def state():
    return manifest.ManifestState(
        next_file=42,
        log_number=40,
        levels=[
            [TableMeta(39, 4096, b"a", b"m", 10, 2, 3000), TableMeta(37, 100, b"", b"\xff" * 3, 1, 1, 0)],
            [TableMeta(12, 1 << 33, b"b", b"c", 1 << 20, 0, 1 << 34)],
            [],
        ],
    )


def test_state_round_trips_through_encode_and_decode():
    assert manifest.decode(manifest.encode(state()), "MANIFEST") == state()


def test_write_replaces_manifest_and_its_mirror_atomically(tmp_path):
    d = str(tmp_path)
    manifest.write(FS, d, manifest.encode(manifest.ManifestState(next_file=2)))
    manifest.write(FS, d, manifest.encode(state()))
    assert manifest.read(FS, d) == state()
    assert manifest.read(FS, d, manifest.BACKUP_NAME) == state()
    assert sorted(os.listdir(d)) == ["MANIFEST", "MANIFEST.bak"], "no .tmp file is left behind"


def test_missing_manifest_reads_as_none(tmp_path):
    assert manifest.read(FS, str(tmp_path)) is None


@pytest.mark.parametrize(
    ("offset", "problem", "reported_offset"),
    [(0, "magic", 0), (9, "version", 0), (13, "payload", 20), (17, "checksum", 20), (30, "checksum", 20)],
)
def test_flipped_bit_in_manifest_raises_corruption(offset, problem, reported_offset):
    data = bytearray(manifest.encode(state()))
    data[offset] ^= 0x10
    with pytest.raises(CorruptionError, match=problem) as err:
        manifest.decode(bytes(data), "/db/MANIFEST")
    assert (err.value.path, err.value.offset) == ("/db/MANIFEST", reported_offset)


@pytest.mark.parametrize("keep", [0, 10, 19, 20, 40])
def test_truncated_manifest_raises_corruption(keep):
    data = manifest.encode(state())
    with pytest.raises(CorruptionError) as err:
        manifest.decode(data[:keep], "/db/MANIFEST")
    assert err.value.path == "/db/MANIFEST"
