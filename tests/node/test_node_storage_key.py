"""The storage key a replica files a record under must carry the ring's token for that key,
or partitions would not be contiguous key ranges and streaming/Merkle scans would miss keys."""

from __future__ import annotations

import struct

from hypothesis import assume, given
from hypothesis import strategies as st

from ringkv.cluster.ring import token
from ringkv.node.replica import split_storage_key, storage_key


@given(st.binary(max_size=255), st.binary(max_size=300))
def test_storage_key_starts_with_the_ring_token_and_splits_back(namespace, key):
    assume(not key.startswith(b"\x00\xff"))  # reserved (tests/node/test_element_keys.py)
    skey = storage_key(namespace, key)
    assert skey[:8] == struct.pack(">Q", token(namespace, key))
    assert split_storage_key(skey) == (namespace, key)


@given(st.binary(max_size=16), st.binary(max_size=40), st.binary(max_size=40), st.binary(min_size=1, max_size=20))
def test_keys_with_one_hash_tag_share_a_token(namespace, before, after, tag):
    # Redis Cluster's rule: the first {...} with something in it; no `}` inside the tag.
    tag = tag.replace(b"}", b"x")
    before = before.replace(b"{", b"x")
    a, b = before + b"{" + tag + b"}" + after, b"{" + tag + b"}"
    assert storage_key(namespace, a)[:8] == storage_key(namespace, b)[:8] == struct.pack(">Q", token(namespace, tag))


def test_an_empty_or_unclosed_tag_hashes_the_whole_key():
    for key in (b"{}x", b"{abc", b"x}{", b"plain"):
        assert storage_key(b"", key)[:8] == struct.pack(">Q", token(b"", key))
    assert storage_key(b"", b"a{}b{c}")[:8] == struct.pack(">Q", token(b"", b"a{}b{c}"))
