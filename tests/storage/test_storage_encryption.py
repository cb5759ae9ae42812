"""Encryption at rest, as an operator meets it: a store sealed with a key file reads back after
a restart and holds no plaintext; opened without its key, or with the wrong one, it refuses to
open with an error naming encryption_key_file and the key id; a changed, moved or injected
record or block is corruption, never served; a crash mid-log recovers as it does unsealed;
rotation seals new files with the new key and `reseal` rewrites the old ones; and the engine
still matches a dict with sealing on. Formats: docs/formats/wal.md and sstable.md, "Encrypted".
"""

from __future__ import annotations

import base64
import os
import struct

import msgspec
import pytest
from crc32c import crc32c
from hypothesis import settings
from tests.storage import test_storage_crash_points as crash_points
from tests.storage.test_storage_model import SETTINGS, EngineMatchesDict, small

from ringkv.errors import ConfigError, CorruptionError
from ringkv.node.config import NodeConfig
from ringkv.storage import Engine, Options, WriteBatch, sealing, sstable, wal
from ringkv.storage.sealing import (
    KeyRing,
    key_ids_in_use,
    load_key_file,
    parse_key_file,
    write_key_file,
)
from ringkv.storage.strategies import PrefixRouter, Tiered, TimeWindow

THREAD = dict(background="thread")
KEY1 = bytes(range(32))
KEY2 = bytes(range(100, 132))
RING1 = KeyRing({1: KEY1})
RING12 = KeyRing({1: KEY1, 2: KEY2})
SECRET = b"plaintext-that-must-never-reach-the-disk"


def files(path, ext):
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(ext))


def value_of(i: int) -> bytes:
    return SECRET + b"%05d" % i


def fill(path, keys=RING1, n=2000, flush=True, **options):
    options = {**THREAD, **options}
    with Engine.open(path, Options(encryption_keys=keys, memtable_bytes=64 * 1024, **options)) as db:
        for i in range(n):
            db.put(b"key:%05d" % i, value_of(i))
        db.delete(b"key:00007")
        if flush:
            db.flush()
            db.compact_range()


def read_all(path, keys=RING1, **options):
    options = {**THREAD, **options}
    with Engine.open(path, Options(encryption_keys=keys, **options)) as db, db.scan() as it:
        return dict(it)


def expected(n=2000):
    return {b"key:%05d" % i: value_of(i) for i in range(n) if i != 7}


def assert_no_plaintext(path):
    for root, _, names in os.walk(path):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            assert SECRET not in data, f"{name} holds a value in plaintext"
            assert b"key:0" not in data, f"{name} holds a key in plaintext"


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def snapshot_of(path):
    return {n: read_bytes(os.path.join(path, n)) for n in sorted(os.listdir(path)) if n != "LOCK"}


# ------------------------------------------------------------------ round trip and keys


@pytest.mark.parametrize("background", ["thread", "process"])
def test_sealed_store_reads_back_after_reopen_and_holds_no_plaintext(tmp_path, background):
    path = str(tmp_path)
    with Engine.open(path, Options(encryption_keys=RING1, memtable_bytes=64 * 1024, background=background)) as db:
        for i in range(2000):
            db.put(b"key:%05d" % i, value_of(i))
        db.delete(b"key:00007")
        db.flush()
        db.compact_range()
        batch = WriteBatch()
        batch.put(b"batch:1", SECRET + b"batch")
        batch.delete(b"key:00008")
        db.write_batch(batch)  # only in the log at close
    assert files(path, ".sst") and files(path, ".wal")
    assert_no_plaintext(path)
    got = read_all(path, background=background)
    want = expected()
    want[b"batch:1"] = SECRET + b"batch"
    del want[b"key:00008"]
    assert got == want
    assert set(key_ids_in_use(path).values()) == {1}


def test_unsealed_store_opened_without_keys_writes_unsealed_files_as_before(tmp_path):
    path = str(tmp_path)
    fill(path, keys=None)
    assert set(key_ids_in_use(path).values()) == {None}
    assert read_all(path, keys=None) == expected()


def test_sealed_store_opened_without_a_key_is_refused_naming_the_setting_and_key_id(tmp_path):
    path = str(tmp_path)
    fill(path)
    before = snapshot_of(path)
    with pytest.raises(ConfigError) as err:
        Engine.open(path, Options(**THREAD))
    assert err.value.field == "encryption_key_file"
    assert "key id 1" in str(err.value) and "no encryption key is configured" in str(err.value)
    assert snapshot_of(path) == before, "a refused open changes nothing"


def test_sealed_log_read_without_a_key_is_refused_naming_the_setting_and_key_id(tmp_path):
    path = str(tmp_path)
    fill(path, n=20, flush=False)  # everything is in the log
    (log,) = files(path, ".wal")
    with pytest.raises(ConfigError, match=r"encryption_key_file: .*\.wal is sealed \(AES-256-GCM, key id 1\)"):
        wal.read_log(read_bytes(log), log)
    ops, _ = wal.read_log(read_bytes(log), log, keys=RING1)
    assert len(ops) == 21


def test_changed_sealed_manifest_is_corruption(tmp_path):
    path = str(tmp_path)
    fill(path)
    for name in ("MANIFEST", "MANIFEST.bak"):
        data = bytearray(read_bytes(os.path.join(path, name)))
        data[-5] ^= 0x01
        struct.pack_into("<I", data, 16, crc32c(bytes(data[20:])))  # the checksum made right again
        rewrite(os.path.join(path, name), data)
    with pytest.raises(CorruptionError, match="sealed manifest fails authentication"):
        Engine.open(path, Options(encryption_keys=RING1, **THREAD))
    with pytest.raises(CorruptionError, match="sealed manifest fails authentication"):
        Engine.open(path, Options(encryption_keys=RING1, salvage=True, **THREAD))


def test_wrong_key_under_the_same_id_is_refused_as_a_wrong_key_not_as_corruption(tmp_path):
    path = str(tmp_path)
    fill(path)
    with pytest.raises(ConfigError, match=r"key id 1 of .* is not the key .* was sealed with"):
        Engine.open(path, Options(encryption_keys=KeyRing({1: KEY2}), **THREAD))


def test_key_ring_missing_the_files_key_id_is_refused_listing_the_ids_it_holds(tmp_path):
    path = str(tmp_path)
    fill(path)
    with pytest.raises(ConfigError, match=r"sealed with key id 1, which .* does not hold \(it holds key ids 2\)"):
        Engine.open(path, Options(encryption_keys=KeyRing({2: KEY2}), **THREAD))


# ------------------------------------------------------------------ WAL tampering


def sealed_log(tmp_path, n=10):
    """A store whose n puts (equal sizes) are only in its sealed log, and the records' offsets."""
    path = str(tmp_path)
    with Engine.open(path, Options(encryption_keys=RING1, sync="always", **THREAD)) as db:
        for i in range(n):
            db.put(b"key:%05d" % i, value_of(i))
    (log,) = files(path, ".wal")
    record = len(wal.encode_put(b"key:00000", value_of(0))) + sealing.WAL_RECORD_OVERHEAD_BYTES
    start = wal.FILE_HEADER_BYTES + sealing.SEAL_HEADER_BYTES
    offsets = [start + i * record for i in range(n)]
    assert offsets[-1] + record == os.path.getsize(log)
    return path, log, offsets, record


def refix_crcs(data: bytearray, off: int) -> None:
    """Recompute a record's two CRCs, as someone changing it on purpose would."""
    plen = struct.unpack_from("<I", data, off + 4)[0]
    payload = bytes(data[off + 13 : off + 13 + plen])
    struct.pack_into("<I", data, off, crc32c(payload))
    struct.pack_into("<I", data, off + 9, crc32c(bytes(data[off : off + 9])))


def rewrite(path, data) -> None:
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("index", range(10))
def test_changed_wal_record_with_right_checksums_is_corruption_naming_its_offset(tmp_path, index):
    path, log, offsets, _ = sealed_log(tmp_path)
    data = bytearray(read_bytes(log))
    data[offsets[index] + 13 + 20] ^= 0x01  # inside the ciphertext
    refix_crcs(data, offsets[index])
    rewrite(log, data)
    with pytest.raises(CorruptionError, match="fails authentication") as err:
        Engine.open(path, Options(encryption_keys=RING1, **THREAD))
    assert err.value.path == log and err.value.offset == offsets[index]


def test_changed_wal_record_under_salvage_keeps_the_records_before_it(tmp_path):
    path, log, offsets, _ = sealed_log(tmp_path)
    data = bytearray(read_bytes(log))
    data[offsets[6] + 13 + 30] ^= 0x80
    refix_crcs(data, offsets[6])
    rewrite(log, data)
    assert read_all(path, salvage=True) == {b"key:%05d" % i: value_of(i) for i in range(6)}


def test_flipped_bit_in_a_sealed_wal_record_is_corruption_by_its_checksum(tmp_path):
    path, log, offsets, _ = sealed_log(tmp_path)
    data = bytearray(read_bytes(log))
    data[offsets[3] + 40] ^= 0x04
    rewrite(log, data)
    with pytest.raises(CorruptionError, match="checksum mismatch"):
        Engine.open(path, Options(encryption_keys=RING1, **THREAD))


def test_swapped_wal_records_are_refused_though_each_is_intact(tmp_path):
    path, log, offsets, record = sealed_log(tmp_path)
    data = bytearray(read_bytes(log))
    a, b = offsets[2], offsets[5]
    data[a : a + record], data[b : b + record] = data[b : b + record], data[a : a + record]
    rewrite(log, data)
    with pytest.raises(CorruptionError, match="fails authentication") as err:
        Engine.open(path, Options(encryption_keys=RING1, **THREAD))
    assert err.value.offset == a


def test_plain_record_injected_into_a_sealed_log_is_refused(tmp_path):
    path, log, _, _ = sealed_log(tmp_path)
    with open(log, "ab") as f:
        f.write(wal.encode_put(b"key:99999", b"injected"))
    with pytest.raises(CorruptionError, match="sealed WAL holds an unsealed record of type 1"):
        Engine.open(path, Options(encryption_keys=RING1, **THREAD))


def test_torn_tail_of_a_sealed_log_is_dropped_as_in_a_plain_one(tmp_path):
    path, log, offsets, _ = sealed_log(tmp_path)
    os.truncate(log, offsets[8] + 20)
    got = read_all(path)
    assert got == {b"key:%05d" % i: value_of(i) for i in range(8)}


def test_sealed_log_whose_seal_header_was_torn_is_an_empty_log(tmp_path):
    path, log, _, _ = sealed_log(tmp_path)
    os.truncate(log, wal.FILE_HEADER_BYTES + 10)
    assert read_all(path) == {}


def test_changed_seal_header_of_a_log_with_records_is_corruption(tmp_path):
    path, log, _, _ = sealed_log(tmp_path)
    data = bytearray(read_bytes(log))
    data[wal.FILE_HEADER_BYTES + 8] ^= 0x01  # the salt
    rewrite(log, data)
    with pytest.raises(CorruptionError, match="seal header checksum mismatch"):
        Engine.open(path, Options(encryption_keys=RING1, **THREAD))


# ------------------------------------------------------------------ SSTable tampering


@pytest.fixture
def sealed_table(tmp_path):
    """A store of one sealed table and the handles of every block in it."""
    path = str(tmp_path)
    with Engine.open(path, Options(encryption_keys=RING1, block_bytes=1024, **THREAD)) as db:
        for i in range(500):
            db.put(b"key:%05d" % i, value_of(i))
        db.flush()
    (table,) = files(path, ".sst")
    data = read_bytes(table)
    f_off, f_size, i_off, i_size, p_off, p_size, version = sstable._parse_footer(
        data[-sstable.FOOTER_BYTES :], table, len(data))
    assert version == sstable.SEALED_TABLE_FORMAT_VERSION
    opener = sealing.TableOpener(data, len(data) - sstable.FOOTER_BYTES - sealing.SEAL_HEADER_BYTES, table,
                                 sealing.file_number(table), RING1)
    last_keys, offsets, sizes = msgspec.msgpack.decode(
        sstable.decode_block_bytes(data[i_off : i_off + i_size], table, i_off, opener))
    assert len(offsets) > 10
    blocks = {"index": (i_off, i_size), "filter": (f_off, f_size), "properties": (p_off, p_size)}
    return path, table, blocks, list(zip(offsets, sizes, last_keys))


def flip(path, offset, mask=0x01):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ mask]))


@pytest.mark.parametrize("where", ["first byte", "middle", "tag"])
@pytest.mark.parametrize("block", [0, 5, "last"])
def test_flipped_byte_in_a_sealed_data_block_is_corruption_and_never_served(sealed_table, block, where):
    path, table, _, data_blocks = sealed_table
    off, size, last_key = data_blocks[-1 if block == "last" else block]
    flip(table, off + {"first byte": 0, "middle": size // 2, "tag": size - 1}[where])
    with Engine.open(path, Options(encryption_keys=RING1, **THREAD)) as db:
        with pytest.raises(CorruptionError, match="sealed SSTable block fails authentication") as err, \
                db.scan() as it:
            list(it)
        assert err.value.offset == off and err.value.path == table
        with pytest.raises(CorruptionError):
            db.get(last_key)
        other = data_blocks[1 if block == 0 else 0][2]
        assert db.get(other) == value_of(int(other[4:])), "the other blocks still read"


@pytest.mark.parametrize("block", ["index", "filter", "properties"])
def test_flipped_byte_in_a_sealed_index_filter_or_properties_block_is_corruption_at_open(sealed_table, block):
    path, table, blocks, _ = sealed_table
    off, size = blocks[block]
    flip(table, off + size // 2)
    with pytest.raises(CorruptionError, match="fails authentication") as err:
        Engine.open(path, Options(encryption_keys=RING1, **THREAD))
    assert err.value.offset == off


def test_changed_seal_header_of_a_table_is_corruption_at_open(sealed_table):
    path, table, _, _ = sealed_table
    size = os.path.getsize(table)
    flip(table, size - sstable.FOOTER_BYTES - sealing.SEAL_HEADER_BYTES + 5)  # the key id
    with pytest.raises(CorruptionError, match="seal header checksum mismatch"):
        Engine.open(path, Options(encryption_keys=RING1, **THREAD))


def test_table_copied_over_another_number_fails_authentication(tmp_path):
    """Blocks are bound to their table's number: a table put in place of another is refused."""
    path = str(tmp_path)
    fill(path, n=3000, flush=False)
    with Engine.open(path, Options(encryption_keys=RING1, **THREAD)) as db:
        db.put(b"key:99999", b"x")
        db.flush()
    tables = files(path, ".sst")
    assert len(tables) >= 2
    with open(tables[0], "rb") as f:
        data = f.read()
    with open(tables[1], "wb") as f:
        f.write(data)
    with pytest.raises(CorruptionError, match="fails authentication"):
        read_all(path)


# ------------------------------------------------------------------ crash and model


@pytest.fixture
def sealed_scenarios(monkeypatch):
    """The crash-point scenarios of test_storage_crash_points with every file sealed."""
    plain = crash_points.scenario_options

    def sealed(background="process", strategy="leveled"):
        options = plain(background, strategy)
        options.encryption_keys = RING1
        return options

    monkeypatch.setattr(crash_points, "scenario_options", sealed)
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def test_power_cut_after_any_operation_of_a_sealed_log_rotation_and_flush_loses_no_acknowledged_write(
        tmp_path, sealed_scenarios):
    assert crash_points.enumerate_cuts(str(tmp_path), "rotation", seed=4) >= 40
    assert set(key_ids_in_use(str(tmp_path)).values()) <= {1}


@pytest.mark.parametrize("name, seed, strategy, least", [
    ("flush", 6, "families", 25),  # one table per family
    ("compaction", 5, "tiered", 25),
    ("compaction", 5, "time_window", 25),
    ("expired_table", 7, "time_window", 8),  # a whole table deleted unread
])
def test_power_cut_after_any_operation_of_each_strategy_sealed_loses_no_acknowledged_write(
        tmp_path, sealed_scenarios, name, seed, strategy, least):
    assert crash_points.enumerate_cuts(str(tmp_path), name, seed=seed, strategy=strategy) >= least
    assert ids_of_nonempty_files(str(tmp_path)) <= {1}


def test_power_cut_after_any_operation_of_a_sealed_reroute_at_open_loses_no_acknowledged_write(
        tmp_path, sealed_scenarios):
    crash_points.test_power_cut_after_any_operation_of_a_reroute_at_open_loses_no_acknowledged_write(tmp_path)
    assert ids_of_nonempty_files(str(tmp_path)) <= {1}


def ids_of_nonempty_files(path) -> set[int | None]:
    """The key ids of the logs and tables under `path`, but for empty ones: a log created
    just before a power cut may keep none of its bytes, not even its header."""
    return {key_id for p, key_id in key_ids_in_use(path).items() if os.path.getsize(p)}


class SealedThreadBackground(EngineMatchesDict):
    options = small(background="thread", sync="never", encryption_keys=RING1)


class SealedWorkerProcessesZstd(EngineMatchesDict):
    options = small(compression="zstd", sync_interval_ms=5, encryption_keys=RING1)


test_sealed_engine_matches_dict_thread = SealedThreadBackground.TestCase
test_sealed_engine_matches_dict_thread.settings = SETTINGS
test_sealed_engine_matches_dict_worker_processes = SealedWorkerProcessesZstd.TestCase
test_sealed_engine_matches_dict_worker_processes.settings = settings(SETTINGS, max_examples=4)


# ------------------------------------------------------------------ rotation


def test_rotation_seals_new_files_with_the_new_key_and_reseal_retires_the_old(tmp_path):
    path = str(tmp_path)
    fill(path, keys=RING1, n=3000)
    old = key_ids_in_use(path)
    with Engine.open(path, Options(encryption_keys=RING12, memtable_bytes=64 * 1024, **THREAD)) as db:
        assert db.get(b"key:00042") == value_of(42), "files under key 1 stay readable"
        for i in range(3000, 3500):
            db.put(b"key:%05d" % i, value_of(i))
        db.flush()
        now = key_ids_in_use(path)
        assert {now[p] for p in now if p not in old} == {2}, "new files are sealed with key 2"
        assert 1 in now.values()
        rewritten = db.reseal()
        assert rewritten >= 1
        assert set(key_ids_in_use(path).values()) == {2}
    # Key 1 can go now.
    assert read_all(path, keys=KeyRing({2: KEY2})) == expected(3500)


def test_sealing_an_existing_unsealed_store_then_resealing_everything(tmp_path):
    path = str(tmp_path)
    fill(path, keys=None, n=3000)
    with Engine.open(path, Options(encryption_keys=RING1, **THREAD)) as db:
        assert db.get(b"key:00042") == value_of(42)
        db.reseal()
    assert set(key_ids_in_use(path).values()) == {1}
    assert_no_plaintext(path)
    assert read_all(path) == expected(3000)


def never_expires(key: bytes, value: bytes) -> int:
    return 0


def family_options(keys, **overrides):
    """A leveled default family, a tiered and a time-window one (docs/compaction.md)."""
    base = dict(
        THREAD, encryption_keys=keys, memtable_bytes=64 * 1024, target_file_bytes=64 * 1024,
        families={"sessions": Tiered(min_merge_runs=8), "metrics": TimeWindow(window_ms=60_000)},
        family_router=PrefixRouter({b"session:": "sessions", b"metric:": "metrics"}), expiry_of=never_expires,
    )
    return Options(**{**base, **overrides})


def fill_families(db, rounds=3, n=600) -> dict[bytes, bytes]:
    model = {}
    for r in range(rounds):
        for i in range(n):
            for prefix in (b"session:", b"metric:", b"user:"):
                key = prefix + b"%04d" % i
                model[key] = value_of(r * n + i)
                db.put(key, model[key])
        db.flush()
    return model


def test_reseal_rewrites_every_family_leveled_tiered_and_time_window(tmp_path):
    """Key 1 retired from a store of three families: each one's tables, whether compact_range
    merged them or not (a tiered family of one run without tombstones is not merged), end up
    under key 2, with every family's shape and data kept, and the manifest too."""
    path = str(tmp_path)
    with Engine.open(path, family_options(RING1)) as db:
        model = fill_families(db)
        db.compact_range()
        shape = {name: f["sorted_runs"] for name, f in db.stats()["families"].items()}
        assert all(shape.values()), shape
    assert set(key_ids_in_use(path).values()) == {1}
    with Engine.open(path, family_options(RING12)) as db:
        # compact_range rewrites the time-window family's windows and all but the deepest
        # level of the leveled one; reseal itself the rest, the tiered family's run included.
        assert db.reseal() >= 2
        assert {name: f["sorted_runs"] for name, f in db.stats()["families"].items()} == shape
        assert db.reseal() == 0, "nothing left under key 1"
    assert set(key_ids_in_use(path).values()) == {2}
    assert_no_plaintext(path)
    with Engine.open(path, family_options(KeyRing({2: KEY2}))) as db, db.scan() as it:
        assert dict(it) == model
        assert {name: f["sorted_runs"] for name, f in db.stats()["families"].items()} == shape


def test_reseal_rewrites_the_level0_tables_of_a_tiered_family_in_place_and_in_order(tmp_path, monkeypatch):
    """A tiered family of level-0 tables only, none sealed, and no merge to do it: reseal
    rewrites each table where it lies (the oldest first, each becoming a run of its own
    below the newer ones), so every key still reads its newest value."""
    path = str(tmp_path)
    opts = dict(families={"sessions": Tiered(min_merge_runs=8, max_runs=32)},
                family_router=PrefixRouter({b"session:": "sessions"}))
    model = {}
    with Engine.open(path, family_options(None, **opts)) as db:
        for r in range(4):
            for i in range(0, 300, r + 1):
                model[b"session:%04d" % i] = value_of(r * 1000 + i)
                db.put(b"session:%04d" % i, model[b"session:%04d" % i])
            db.flush()
        assert db.stats()["families"]["sessions"]["levels"][0]["tables"] == 4
    with Engine.open(path, family_options(RING1, **opts)) as db:
        runs = db.stats()["families"]["sessions"]["sorted_runs"]
        monkeypatch.setattr(db, "compact_range", db.flush)  # reseal's own rewrites only
        assert db.reseal() == 4
        family = db.stats()["families"]["sessions"]
        assert family["sorted_runs"] == runs, "rewritten in place, not merged"
        assert family["levels"][0]["tables"] == 0
        assert all(db.get(k) == v for k, v in model.items())
    assert set(key_ids_in_use(path).values()) == {1}
    assert_no_plaintext(path)
    with Engine.open(path, family_options(RING1, **opts)) as db, db.scan() as it:
        assert dict(it) == model


# ------------------------------------------------------------------ the key file


def key_file(tmp_path, content: bytes, mode=0o600):
    p = tmp_path / "keys"
    p.write_bytes(content)
    os.chmod(p, mode)
    return str(p)


def test_key_file_forms_raw_base64_and_ring(tmp_path):
    assert load_key_file(key_file(tmp_path, KEY1)).ids() == [1]
    assert load_key_file(key_file(tmp_path, base64.b64encode(KEY1) + b"\n")).ids() == [1]
    ring_text = b"# comment\n3 " + base64.b64encode(KEY1) + b"\n7 " + base64.b64encode(KEY2) + b"\n"
    ring = load_key_file(key_file(tmp_path, ring_text))
    assert ring.ids() == [3, 7] and ring.current_id == 7


def test_written_key_file_round_trips_with_mode_0600(tmp_path):
    p = str(tmp_path / "keys")
    write_key_file(p, RING12.with_new_key())
    assert os.stat(p).st_mode & 0o777 == 0o600
    ring = load_key_file(p)
    assert ring.ids() == [1, 2, 3] and ring.current_id == 3
    assert ring.fingerprint(1) == RING1.fingerprint(1)


@pytest.mark.parametrize("content, mode, message", [
    (KEY1, 0o644, "can be read by other users \\(mode 644\\): chmod 600 it"),
    (b"1 not-base64!!\n2 xx\n", 0o600, "line 1: the key is not base64"),
    (b"1 " + base64.b64encode(b"short") + b"\n", 0o600, "line 1: the key is 5 bytes; AES-256 needs 32"),
    (b"1 " + base64.b64encode(KEY1) + b"\n1 " + base64.b64encode(KEY2) + b"\n", 0o600, "key id 1 is listed twice"),
    (b"0 " + base64.b64encode(KEY1) + b"\n", 0o600, "key id 0 is not 1..4294967295"),
    (b"# nothing\n", 0o600, "holds no key"),
])
def test_bad_key_file_is_refused_naming_the_setting(tmp_path, content, mode, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_key_file(key_file(tmp_path, content, mode))
    assert err.value.field == "encryption_key_file"


def test_node_config_checks_encryption_key_file_at_start(tmp_path):
    with pytest.raises(ConfigError, match=r"encryption_key_file: cannot read .*missing"):
        NodeConfig(data_dir=str(tmp_path), encryption_key_file=str(tmp_path / "missing")).validate()
    cfg = NodeConfig(data_dir=str(tmp_path), encryption_key_file=key_file(tmp_path, KEY1))
    cfg.validate()
    assert cfg.encryption_keys().ids() == [1]


def test_keys_reseal_opens_a_data_engine_with_families_as_the_node_does(tmp_path, monkeypatch):
    """`ringkv admin keys reseal` on a node whose namespaces have compactions of their own
    (column families): with --config it opens the data engine with them, so every family keeps
    its tables and strategy (the node's next start re-routes nothing); without, it refuses
    rather than merge every family back into one."""
    from click.testing import CliRunner

    from ringkv.cli.keys import keys_group
    from ringkv.clock import Clock
    from ringkv.node.assembly import data_engine_options
    from ringkv.node.config import load_config
    from ringkv.node.replica import storage_key

    for name in list(os.environ):
        if name.startswith("RINGKV_"):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "n1"
    engine_dir = str(data_dir / "engine")
    config = tmp_path / "node.toml"
    config.write_text('namespaces = "events:compaction=time_window:compaction_window_s=60, '
                      'cache:compaction=tiered"\n')
    cfg = load_config(str(config), overrides={"data_dir": str(data_dir)})
    model = {}
    with Engine.open(engine_dir, data_engine_options(cfg, Clock(), None, RING1)) as db:
        for ns in (b"", b"events", b"cache"):
            for i in range(300):
                model[storage_key(ns, b"k%04d" % i)] = value_of(i)
                db.put(storage_key(ns, b"k%04d" % i), value_of(i))
        db.flush()
        shape = {name: f["tables"] for name, f in db.stats()["families"].items()}
    assert shape == {"default": 1, "events": 1, "cache": 1}
    ring_file = key_file(tmp_path, b"1 " + base64.b64encode(KEY1) + b"\n2 " + base64.b64encode(KEY2) + b"\n")

    refused = CliRunner().invoke(keys_group, ["reseal", "--data-dir", str(data_dir), "--file", ring_file])
    assert refused.exit_code == 2, refused.output
    assert "has column families" in refused.output and "--config" in refused.output
    assert set(key_ids_in_use(str(data_dir)).values()) == {1}, "nothing was rewritten"

    done = CliRunner().invoke(keys_group, ["reseal", "--data-dir", str(data_dir), "--file", ring_file,
                                           "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert set(key_ids_in_use(str(data_dir)).values()) == {2}
    with Engine.open(engine_dir, data_engine_options(cfg, Clock(), None, KeyRing({2: KEY2}))) as db:
        assert db.stats()["compaction_bytes_written"] == 0, "the routing was kept: nothing re-routed"
        assert {name: f["tables"] for name, f in db.stats()["families"].items()} == shape
        with db.scan() as it:
            assert dict(it) == model


def test_key_ring_never_shows_its_keys():
    assert KEY1.hex() not in repr(RING1) and base64.b64encode(KEY1).decode() not in repr(RING1)
    assert parse_key_file(KEY1, "x").ids() == [1]
