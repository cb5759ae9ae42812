"""Tombstones are collected only after their grace period and, in a cluster, after a completed
anti-entropy round of their partition that started after the grace period ended."""

from __future__ import annotations

import pickle

from ringkv.clock import SYSTEM_CLOCK, Clock
from ringkv.node.expiry_filter import ExpiredRecordFilter
from ringkv.node.replica import storage_key
from ringkv.versioning.dvv import Dot
from ringkv.versioning.hlc import make_timestamp
from ringkv.versioning.record import DottedValue, Record, encode_record

now_ms = SYSTEM_CLOCK.now_ms

GRACE_MS = 10_000


def tombstone(dead_ms: int) -> bytes:
    return encode_record(Record({b"a": 1}, (DottedValue(Dot(b"a", 1), None, make_timestamp(dead_ms)),)))


def value(written_ms: int) -> bytes:
    return encode_record(Record({b"a": 1}, (DottedValue(Dot(b"a", 1), b"v", make_timestamp(written_ms)),)))


def partition_of(skey: bytes, partitions: int) -> int:
    return int.from_bytes(skey[:8], "big") >> (64 - (partitions.bit_length() - 1))


def test_a_single_node_drops_tombstones_after_the_grace_period_only():
    keep = ExpiredRecordFilter(GRACE_MS, Clock())
    k = storage_key(b"", b"k")
    now = now_ms()
    assert keep(k, tombstone(now - GRACE_MS + 1000))
    assert not keep(k, tombstone(now - GRACE_MS - 1000))
    assert keep(k, value(now - 10 * GRACE_MS))  # live values are never dropped for age


def test_in_a_cluster_a_tombstone_also_waits_for_a_completed_round_that_started_after_its_grace():
    keep = ExpiredRecordFilter(GRACE_MS, Clock(), partitions=64)
    k = storage_key(b"", b"k")
    p = partition_of(k, 64)
    now = now_ms()
    old = tombstone(now - 3 * GRACE_MS)
    assert keep(k, old)  # past grace, but no completed round yet
    keep.completed_ms[p] = now - 3 * GRACE_MS  # a round that started before its grace ended
    assert keep(k, old)
    keep.completed_ms[p] = now - GRACE_MS // 2  # started after: every replica holds it
    assert not keep(k, old)
    keep.completed_ms.clear()
    keep.completed_ms[(p + 1) % 64] = now  # another partition's round does not count
    assert keep(k, old)


def test_the_rounds_travel_with_the_filter_to_the_compaction_worker():
    keep = ExpiredRecordFilter(GRACE_MS, Clock(), partitions=64)
    k = storage_key(b"", b"k")
    keep.completed_ms[partition_of(k, 64)] = now_ms()
    copy = pickle.loads(pickle.dumps(keep))  # what a compaction job carries
    assert not copy(k, tombstone(now_ms() - 3 * GRACE_MS))
