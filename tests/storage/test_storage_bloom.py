"""Bloom filter of an SSTable: never hides a key it holds, and at 10 bits per key wastes a disk
read on at most 1% of the absent keys it is asked about."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.storage import bloom


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=48), max_size=400), st.integers(1, 24))
def test_added_key_is_never_reported_absent(keys, bits_per_key):
    bits, probes = bloom.build(keys, bits_per_key)
    f = bloom.BloomFilter(bits, probes)
    assert all(f.may_contain(k) for k in keys)


def test_false_positive_rate_is_at_most_one_percent_at_10_bits_per_key():
    # Keys shaped like real ones (a prefix and a counter), probes disjoint from them.
    keys = [b"user:%08d" % i for i in range(20_000)]
    bits, probes = bloom.build(keys, 10)
    f = bloom.BloomFilter(bits, probes)
    absent = [b"user:%08d" % i for i in range(20_000, 120_000)]
    rate = sum(map(f.may_contain, absent)) / len(absent)
    assert rate <= 0.01, f"false-positive rate {rate:.4f} at 10 bits/key"
    assert f.memory_bytes() == 20_000 * 10 // 8


def test_filter_of_no_keys_contains_nothing():
    bits, probes = bloom.build([], 10)
    f = bloom.BloomFilter(bits, probes)
    assert not any(f.may_contain(b"k%d" % i) for i in range(100))
