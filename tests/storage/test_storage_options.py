"""Options: every invalid setting stops Engine.open with a ConfigError naming the field, before
anything is written to disk."""

from __future__ import annotations

import os

import pytest

from ringkv.errors import ConfigError
from ringkv.storage import Engine, Options

MIB = 1024 * 1024

BAD_OPTIONS = [
    ("sync", "sometimes"),
    ("sync_interval_ms", 0),
    ("sync_interval_ms", 2.5),
    ("memtable_bytes", 64 * 1024 - 1),
    ("memtable_bytes", True),
    ("max_immutable_memtables", 0),
    ("max_value_bytes", 0),
    ("max_value_bytes", 64 * MIB + 1),
    ("block_bytes", 255),
    ("compression", "gzip"),
    ("bloom_bits_per_key", 0),
    ("target_file_bytes", 1024),
    ("level0_compaction_trigger_files", 0),
    ("level0_stop_writes_files", 3),  # below level0_compaction_trigger_files (4)
    ("level1_max_bytes", 1000),
    ("level_size_multiplier", 1),
    ("max_levels", 1),
    ("compaction_rate_bytes_per_s", 1000),
    ("compaction_filter", "drop tmp keys"),
    ("background", "fork"),
    ("block_cache_bytes", -1),
    ("table_cache_files", 3),
    ("table_cache_files", "512"),
]


@pytest.mark.parametrize(("field", "value"), BAD_OPTIONS, ids=[f"{f}={v!r}" for f, v in BAD_OPTIONS])
def test_bad_option_raises_config_error_naming_the_field(tmp_path, field, value):
    path = str(tmp_path / "db")
    with pytest.raises(ConfigError) as err:
        Engine.open(path, Options(**{field: value}))
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")
    assert isinstance(err.value, ValueError)
    assert not os.path.exists(path), "a refused open leaves no trace on disk"


def test_defaults_and_the_smallest_allowed_values_are_accepted(tmp_path):
    Options().validate()
    smallest = Options(
        sync_interval_ms=1,
        memtable_bytes=64 * 1024,
        max_immutable_memtables=1,
        max_value_bytes=1,
        block_bytes=256,
        bloom_bits_per_key=1,
        target_file_bytes=64 * 1024,
        level0_compaction_trigger_files=1,
        level0_stop_writes_files=1,
        level1_max_bytes=64 * 1024,
        level_size_multiplier=2,
        max_levels=2,
        compaction_rate_bytes_per_s=64 * 1024,
        block_cache_bytes=0,
        table_cache_files=4,
        background="thread",
    )
    with Engine.open(str(tmp_path), smallest) as db:
        db.put(b"k", b"v")
        db.flush()
        assert db.get(b"k") == b"v"


def test_unpicklable_compaction_filter_is_refused_at_open(tmp_path):
    with pytest.raises(ConfigError) as err:
        Engine.open(str(tmp_path), Options(compaction_filter=lambda key, value: True)).close()
    assert err.value.field == "compaction_filter"
