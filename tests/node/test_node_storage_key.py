"""The storage key a replica files a record under must carry the ring's token for that key,
or partitions would not be contiguous key ranges and streaming/Merkle scans would miss keys."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from ringkv.cluster.ring import token
from ringkv.node.replica import split_storage_key, storage_key


@given(st.binary(max_size=255), st.binary(max_size=300))
def test_storage_key_starts_with_the_ring_token_and_splits_back(namespace, key):
    skey = storage_key(namespace, key)
    assert skey[:8] == struct.pack(">Q", token(namespace, key))
    assert split_storage_key(skey) == (namespace, key)
