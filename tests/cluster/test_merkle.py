"""Merkle trees and the anti-entropy comparison, as two replicas of a partition see them: trees
that track every write, comparisons that find exactly the keys that differ, traffic that grows
with the differences and not with the data, and saved trees that never load wrong.
docs/anti-entropy.md explains the design and quotes the traffic figures measured here."""

from __future__ import annotations

import ast
import itertools
import math
from bisect import bisect_left
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xxhash import xxh3_64_intdigest

from ringkv.cluster.merkle import (
    DEFAULT_DEPTH,
    EMPTY,
    FORMAT_VERSION,
    MAX_DEPTH,
    MAX_NODES_PER_REQUEST,
    MESSAGE_OVERHEAD_BYTES,
    DigestRequest,
    ListRequest,
    MerkleTree,
    RangeEntries,
    TreeDiff,
    diff_buckets,
    digest_reply_bytes,
    gc_horizon_ms,
    pack_digests,
    record_digest,
    unpack_digests,
)
from ringkv.cluster.ring import partition_range
from ringkv.errors import CorruptionError, LimitError

PARTITIONS = 16
PARTITION = 5
SHIFT = 64 - 4  # log2(PARTITIONS) = 4


def skey(key: bytes, namespace: bytes = b"ns") -> bytes:
    """A storage key of PARTITION: token u64 BE | len(ns) u8 | ns | key (as node/replica.py)."""
    token = (PARTITION << SHIFT) | (xxh3_64_intdigest(namespace + b"/" + key) >> 4)
    return token.to_bytes(8, "big") + bytes((len(namespace),)) + namespace + key


def merge(a: bytes | None, b: bytes | None) -> bytes:
    """Stands in for record.merge: commutative, associative, idempotent."""
    return max(x for x in (a, b) if x is not None)


class Replica:
    """One replica of PARTITION: its storage (a dict), its tree, and the shell's scans."""

    def __init__(self, records: dict[bytes, bytes], depth: int = DEFAULT_DEPTH):
        self.records = dict(records)
        self.tree = MerkleTree.build(PARTITION, PARTITIONS, self.records.items(), depth)
        self._sorted: list[bytes] | None = None

    def put(self, key: bytes, record: bytes | None) -> None:
        old = self.records.pop(key, None)
        if record is not None:
            self.records[key] = record
        self.tree.update(key, old, record)
        self._sorted = None

    def scan(self, first: int, last: int) -> list[tuple[bytes, int]]:
        if self._sorted is None:
            self._sorted = sorted(self.records)
        keys = self._sorted
        lo = bisect_left(keys, first.to_bytes(8, "big"))
        hi = (
            len(keys) if last == (1 << 64) - 1 else bisect_left(keys, (last + 1).to_bytes(8, "big"))
        )
        return [(k, record_digest(self.records[k])) for k in keys[lo:hi]]

    def answer(self, request: DigestRequest, entries: RangeEntries):
        """What the node layer does with a DigestRequest: scan what the tree does not keep."""
        indexes = request.indexes
        for bucket in self.tree.buckets_to_load(request.level, indexes):
            first, last = self.tree.bucket_range(bucket)
            if not entries.covers(first, last):
                entries.load(first, last, self.scan(first, last))
        return self.tree.digests(request.level, indexes, entries)

    def listing(self, request: ListRequest) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for level, index in request.nodes:
            out.update(self.scan(*self.tree.node_range(level, index)))
        return out


def compare(a: Replica, b: Replica, **options) -> TreeDiff:
    """One comparison initiated by `a`, with every reply passed through its wire form."""
    diff = TreeDiff(a.tree, **options)
    mine, theirs = RangeEntries(), RangeEntries()
    while (request := diff.next_request()) is not None:
        if isinstance(request, DigestRequest):
            reply = unpack_digests(pack_digests(b.answer(request, theirs)))
            diff.receive_digests(request, a.answer(request, mine), reply)
        else:
            diff.receive_listing(request, a.listing(request), b.listing(request))
    assert diff.done
    return diff


def sync(a: Replica, b: Replica, **options) -> TreeDiff:
    """A full round: compare, push what b needs, pull what a needs, both merged."""
    diff = compare(a, b, **options)
    for key in diff.they_need:
        b.put(key, merge(b.records.get(key), a.records[key]))
    for key in diff.i_need:
        a.put(key, merge(a.records.get(key), b.records[key]))
    return diff


def differing_keys(a: dict[bytes, bytes], b: dict[bytes, bytes]) -> set[bytes]:
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


keys = st.binary(min_size=0, max_size=6).map(skey)
records = st.binary(min_size=1, max_size=8)
contents = st.dictionaries(keys, records, max_size=60)
depths = st.integers(0, 7)


# --- the tree tracks storage ------------------------------------------------------------------


@given(
    depth=depths,
    start=contents,
    ops=st.lists(st.tuples(keys, st.none() | records), max_size=80),
)
def test_a_tree_kept_current_by_writes_equals_a_tree_rebuilt_by_a_scan(depth, start, ops):
    replica = Replica(start, depth)
    for key, record in ops:
        replica.put(key, record)  # inserts, overwrites and deletes
        if len(replica.records) % 7 == 0:
            replica.tree.root()  # read between writes: lazy inner levels must stay right
    rebuilt = MerkleTree.build(PARTITION, PARTITIONS, replica.records.items(), depth)
    assert replica.tree == rebuilt
    assert replica.tree.root() == rebuilt.root()
    assert replica.tree.key_count == len(replica.records) == replica.tree.root().count
    for level in range(depth + 1):
        indexes = range(1 << level)
        assert replica.tree.digests(level, indexes) == rebuilt.digests(level, indexes)


@given(data=contents, seed=st.randoms(use_true_random=False))
def test_replicas_holding_the_same_records_have_the_same_root_whatever_the_write_order(data, seed):
    items = list(data.items())
    shuffled = items[:]
    seed.shuffle(shuffled)
    assert (
        MerkleTree.build(PARTITION, PARTITIONS, items).root()
        == MerkleTree.build(PARTITION, PARTITIONS, shuffled).root()
    )


@given(data=contents.filter(bool), change=st.sampled_from(["record", "drop", "add", "rename"]))
def test_replicas_holding_different_records_have_different_roots(data, change):
    other = dict(data)
    key = min(other)
    if change == "record":
        other[key] = other[key] + b"!"
    elif change == "drop":
        del other[key]
    elif change == "add":
        other[skey(b"a key nobody else has")] = b"x"
    else:  # the same record under another key
        other[skey(b"renamed")] = other.pop(key)
    if other == data:
        return
    a = MerkleTree.build(PARTITION, PARTITIONS, data.items())
    b = MerkleTree.build(PARTITION, PARTITIONS, other.items())
    assert a.root() != b.root()


def test_an_empty_tree_has_the_empty_root_and_writing_then_deleting_returns_to_it():
    replica = Replica({})
    assert replica.tree.root() == EMPTY
    replica.put(skey(b"k"), b"v1")
    replica.put(skey(b"k"), b"v2")
    assert replica.tree.root().count == 1
    replica.put(skey(b"k"), None)
    assert replica.tree.root() == EMPTY


def test_a_key_of_another_partition_is_refused_rather_than_corrupting_the_tree():
    tree = MerkleTree(PARTITION, PARTITIONS)
    stranger = ((PARTITION + 1) << SHIFT).to_bytes(8, "big") + b"\x02nsk"
    with pytest.raises(ValueError, match="not in partition 5/16"):
        tree.update(stranger, None, b"v")


def test_removing_a_key_the_tree_never_had_says_the_tree_is_out_of_step():
    tree = MerkleTree(PARTITION, PARTITIONS)
    with pytest.raises(ValueError, match="out of step with storage"):
        tree.update(skey(b"k"), b"v", None)


def test_tree_nodes_cover_the_partition_token_range_exactly():
    tree = MerkleTree(PARTITION, PARTITIONS, depth=3)
    assert tree.node_range(0, 0) == partition_range(PARTITION, PARTITIONS)
    buckets = [tree.bucket_range(b) for b in range(8)]
    assert buckets[0][0] == tree.first_token and buckets[-1][1] == tree.last_token
    assert all(x[1] + 1 == y[0] for x, y in itertools.pairwise(buckets))
    key = skey(b"k")
    first, last = tree.bucket_range(tree.bucket_of(int.from_bytes(key[:8], "big")))
    assert first <= int.from_bytes(key[:8], "big") <= last


# --- the comparison ---------------------------------------------------------------------------


@st.composite
def diverged(draw):
    """Two replicas of one partition: a common past, then writes that reached only one."""
    base = draw(contents)
    a, b = dict(base), dict(base)
    for side in (a, b):
        for key, record in draw(st.lists(st.tuples(keys, st.none() | records), max_size=12)):
            if record is None:
                side.pop(key, None)
            else:
                side[key] = record
    return a, b


@settings(max_examples=50, deadline=None)
@given(
    pair=diverged(),
    depth=depths,
    step_levels=st.integers(1, 4),
    list_at_keys=st.integers(0, 10),
)
def test_a_round_finds_exactly_the_differing_keys_and_leaves_the_replicas_equal(
    pair, depth, step_levels, list_at_keys
):
    a, b = Replica(pair[0], depth), Replica(pair[1], depth)
    expected = differing_keys(a.records, b.records)
    diff = sync(a, b, step_levels=step_levels, list_at_keys=list_at_keys)

    assert diff.in_sync == (not expected)
    assert set(diff.they_need) == {k for k in expected if k in pair[0]}
    assert set(diff.i_need) == {k for k in expected if k in pair[1]}
    # Every node listed held a difference: no range was listed for nothing.
    for level, index in diff.listed_nodes:
        first, last = a.tree.node_range(level, index)
        assert any(first <= int.from_bytes(k[:8], "big") <= last for k in expected)

    assert a.records == b.records
    assert a.tree == b.tree
    again = compare(a, b)
    assert again.in_sync and again.round_trips == 1 and not again.they_need + again.i_need


@settings(max_examples=30, deadline=None)
@given(pair=diverged(), depth_a=depths, depth_b=depths)
def test_replicas_with_trees_of_different_depths_still_compare_correctly(pair, depth_a, depth_b):
    # A node's digest is defined by its token range, not by the tree that holds it.
    a, b = Replica(pair[0], depth_a), Replica(pair[1], depth_b)
    expected = differing_keys(a.records, b.records)
    diff = sync(a, b)
    assert set(diff.they_need) | set(diff.i_need) == expected
    assert a.records == b.records


def test_the_differing_leaf_buckets_are_the_ones_holding_the_changed_keys():
    data = {skey(b"%d" % i): b"v" for i in range(2000)}
    a, b = Replica(data, depth=6), Replica(data, depth=6)
    changed = [skey(b"7"), skey(b"1234"), skey(b"new")]
    b.put(changed[0], b"w")
    b.put(changed[1], None)
    b.put(changed[2], b"v")
    diff = compare(a, b, list_at_keys=0)  # descend as far as it goes
    listed_buckets = set()
    for level, index in diff.listed_nodes:
        assert level >= a.tree.depth
        listed_buckets.add(index >> (level - a.tree.depth))
    assert listed_buckets == {a.tree.bucket_of(int.from_bytes(k[:8], "big")) for k in changed}
    assert sorted(diff.they_need) == sorted(changed[:2])
    assert sorted(diff.i_need) == sorted([changed[0], changed[2]])


def test_an_empty_replica_is_sent_everything_after_one_root_compare():
    data = {skey(b"%d" % i): b"v" for i in range(500)}
    a, b = Replica(data), Replica({})
    diff = sync(a, b)
    assert diff.round_trips == 2  # the root, then the listing of the root
    assert diff.listed_nodes == [(0, 0)]
    assert len(diff.they_need) == 500 and not diff.i_need
    assert b.records == data


def test_a_peer_listing_keys_outside_the_requested_nodes_is_refused():
    a = Replica({skey(b"%d" % i): b"v" for i in range(50)})
    diff = TreeDiff(a.tree)
    diff.receive_digests(diff.next_request(), [a.tree.root()], [EMPTY])
    request = diff.next_request()
    assert isinstance(request, ListRequest)
    stranger = ((PARTITION + 1) << SHIFT).to_bytes(8, "big") + b"\x02nsk"
    with pytest.raises(ValueError, match="outside the requested nodes"):
        diff.receive_listing(request, a.listing(request), {stranger: 1})


def test_diff_buckets_names_what_each_side_lacks_or_holds_differently():
    mine = {b"a": 1, b"b": 2, b"c": 3}
    theirs = {b"b": 2, b"c": 4, b"d": 5}
    assert diff_buckets(mine, theirs) == ([b"a", b"c"], [b"c", b"d"])
    assert diff_buckets(mine, dict(mine)) == ([], [])


# --- traffic ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twenty_thousand_keys() -> dict[bytes, bytes]:
    return {skey(b"user:%d" % i): b"record %d" % i for i in range(20_000)}


def diverge(data: dict[bytes, bytes], k: int) -> dict[bytes, bytes]:
    """`data` with k keys differing: a third changed, a third missing, a third extra."""
    other = dict(data)
    victims = sorted(data)[:: max(1, len(data) // max(k, 1))][:k]
    for i, key in enumerate(victims):
        if i % 3 == 0:
            other[key] = b"newer"
        elif i % 3 == 1:
            del other[key]
        else:
            other[skey(b"extra:%d" % i)] = b"extra"
    return other


def test_an_in_sync_check_exchanges_only_the_root_digest(twenty_thousand_keys):
    a, b = Replica(twenty_thousand_keys), Replica(twenty_thousand_keys)
    diff = compare(a, b)
    assert diff.in_sync
    assert diff.round_trips == 1 and diff.digests_compared == 1
    assert diff.traffic_bytes == DigestRequest(0, 0, (0,)).wire_bytes() + digest_reply_bytes(1)
    assert diff.traffic_bytes < 100


@pytest.mark.parametrize("k", [1, 10, 100])
def test_traffic_grows_with_the_differences_times_log_n_not_with_the_data(twenty_thousand_keys, k):
    n = len(twenty_thousand_keys)
    a, b = Replica(twenty_thousand_keys), Replica(diverge(twenty_thousand_keys, k))
    diff = compare(a, b)
    changed = len(range(0, k, 3))  # a changed key is in both lists
    assert len(diff.they_need) + len(diff.i_need) == k + changed
    # Measured 22 to 46 bytes per differing key per log2(n), message overheads aside
    # (docs/anti-entropy.md); listing the whole partition would cost 20,000 x 28 = 560 KB.
    payload = diff.traffic_bytes - 2 * MESSAGE_OVERHEAD_BYTES * diff.round_trips
    assert payload < 80 * k * math.log2(n), diff.traffic_bytes
    assert diff.round_trips <= 12
    assert diff.traffic_bytes < 60_000


def test_ten_times_the_keys_costs_a_few_more_levels_not_ten_times_the_traffic(
    twenty_thousand_keys,
):
    small = dict(sorted(twenty_thousand_keys.items())[::10])
    k = 10
    few = compare(Replica(small), Replica(diverge(small, k)))
    many = compare(Replica(twenty_thousand_keys), Replica(diverge(twenty_thousand_keys, k)))
    assert many.traffic_bytes < 2 * few.traffic_bytes


def test_one_difference_in_a_crowded_bucket_costs_no_more_than_in_a_sparse_one(
    twenty_thousand_keys,
):
    # 16 buckets of about 1,250 keys each: the comparison goes on below the leaves, on scans.
    crowded = compare(
        Replica(twenty_thousand_keys, depth=4), Replica(diverge(twenty_thousand_keys, 1), depth=4)
    )
    sparse = compare(
        Replica(twenty_thousand_keys, depth=14),
        Replica(diverge(twenty_thousand_keys, 1), depth=14),
    )
    assert crowded.they_need == sparse.they_need
    assert crowded.traffic_bytes <= 1.25 * sparse.traffic_bytes
    assert crowded.traffic_bytes < 1500


# --- wire forms and bounds --------------------------------------------------------------------


def test_digests_survive_their_wire_form_and_a_torn_reply_is_refused():
    digests = [EMPTY, (2**64 - 1, 2**32 - 1), (12345, 7)]
    assert unpack_digests(pack_digests(digests)) == digests
    with pytest.raises(ValueError):
        unpack_digests(pack_digests(digests)[:-1])
    with pytest.raises(LimitError):
        pack_digests([(1, 2**32)])


def test_a_peer_asking_for_too_many_or_impossible_nodes_is_refused():
    tree = MerkleTree(PARTITION, PARTITIONS, depth=4)
    with pytest.raises(LimitError, match="MAX_NODES_PER_REQUEST"):
        tree.digests(14, range(MAX_NODES_PER_REQUEST + 1))
    with pytest.raises(ValueError, match="out of range"):
        tree.digests(2, [4])
    with pytest.raises(ValueError, match="out of range"):
        tree.digests(61, [0])  # below single tokens
    with pytest.raises(ValueError, match="below this tree's leaves"):
        tree.digests(5, [0])
    with pytest.raises(ValueError, match="levels down"):
        _ = DigestRequest(60, 0, (0,)).indexes  # 2^60 children
    with pytest.raises(LimitError):
        _ = DigestRequest(10, 2, tuple(range(32))).indexes  # 32 x 256 digests


def test_scans_answer_only_for_the_ranges_they_loaded():
    tree = MerkleTree(PARTITION, PARTITIONS, depth=2)
    entries = RangeEntries()
    first, last = tree.bucket_range(1)
    entries.load(first, last, [])
    assert tree.digests(3, [2, 3], entries) == [EMPTY, EMPTY]
    with pytest.raises(ValueError, match="not loaded"):
        tree.digests(3, [0], entries)
    with pytest.raises(ValueError, match="overlaps"):
        entries.load(first + 1, last + 1, [])
    in_bucket_1 = first.to_bytes(8, "big") + b"\x02nsk"
    with pytest.raises(ValueError, match="outside"):
        entries.load(*tree.bucket_range(0), [(in_bucket_1, 1)])


def test_tree_shape_is_bounded():
    with pytest.raises(ValueError, match="depth"):
        MerkleTree(PARTITION, PARTITIONS, depth=MAX_DEPTH + 1)
    with pytest.raises(ValueError, match="step_levels"):
        TreeDiff(MerkleTree(PARTITION, PARTITIONS), step_levels=0)


# --- saved trees ------------------------------------------------------------------------------


@given(data=contents, depth=depths, lsn=st.integers(0, 2**64 - 1))
def test_a_saved_tree_loads_back_equal(data, depth, lsn):
    tree = MerkleTree.build(PARTITION, PARTITIONS, data.items(), depth)
    loaded, loaded_lsn = MerkleTree.from_bytes(tree.to_bytes(lsn=lsn))
    assert loaded == tree and loaded_lsn == lsn
    assert loaded.root() == tree.root()
    assert loaded.digests(depth // 2, [0]) == tree.digests(depth // 2, [0])


def test_every_flipped_byte_of_a_saved_tree_is_a_corruption_error():
    tree = MerkleTree.build(PARTITION, PARTITIONS, {skey(b"k"): b"v"}.items(), depth=3)
    saved = tree.to_bytes(lsn=42)
    assert saved[8] == FORMAT_VERSION
    for offset in range(len(saved)):
        for flip in (0x01, 0x80):
            bad = bytearray(saved)
            bad[offset] ^= flip
            with pytest.raises(CorruptionError):
                MerkleTree.from_bytes(bytes(bad))


def test_a_truncated_or_extended_saved_tree_is_a_corruption_error():
    saved = MerkleTree(PARTITION, PARTITIONS, depth=3).to_bytes()
    for size in (0, 10, 35, len(saved) - 1):
        with pytest.raises(CorruptionError):
            MerkleTree.from_bytes(saved[:size])
    with pytest.raises(CorruptionError, match="must be"):
        MerkleTree.from_bytes(saved + b"\x00")


# --- tombstones -------------------------------------------------------------------------------


def test_tombstones_wait_for_a_round_that_started_after_their_grace_period():
    grace_ms = 10_000
    assert gc_horizon_ms(grace_ms, None) is None  # no completed round: collect nothing
    horizon = gc_horizon_ms(grace_ms, round_started_ms=50_000)
    assert horizon == 40_000
    # dead at 40,000: grace ended at 50,000, when the round started: collectable.
    # dead at 40,001: grace ended after the round started: wait for the next round.
    assert 40_000 <= horizon < 40_001


# --- purity -----------------------------------------------------------------------------------


def test_merkle_module_imports_nothing_that_does_io_or_keeps_time():
    forbidden = {"asyncio", "socket", "time", "random", "os", "threading", "selectors"}
    path = Path(__file__).parents[2] / "src" / "ringkv" / "cluster" / "merkle.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not forbidden & imported
