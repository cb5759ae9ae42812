"""The "bounded" ring (opt-in, `ring_algorithm = "bounded"`): a join or leave moves little more than the changed node's
share, every node computes the same ring, and each share stays under its stated bound. Also
what both algorithms must keep: the bit-exact placements of existing clusters. docs/ring.md
("Two algorithms", "Movement") explains the bounds and gives the measured figures behind them;
test_ring.py holds the tests both algorithms share and the "dithered" bounds."""

from __future__ import annotations

import hashlib
import math
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tests.cluster.test_ring import HEAVY, LIGHT, counts, node_names, partitions_for
from xxhash import xxh3_64_intdigest

from ringkv.cluster.preference import build_ranked_lists
from ringkv.cluster.ring import (
    RING_ALGORITHMS,
    RING_BOUNDED,
    RING_DITHERED,
    Member,
    Ring,
    _bitflip,
    _Ranking,
    _scores,
    _validated_members,
    bounded_slack,
    capacities,
    diff,
)


def slack_bound(ideal: float, n: int) -> float:
    """The most a member may own under "bounded" (docs/ring.md): below ideal + 2·√min(ideal, n) + 1."""
    return ideal + 2 * math.sqrt(min(ideal, n)) + 1


def rendezvous_key(p: int, member: Member, weighted: bool) -> float | int:
    """A partition's preference for a member, as docs/ring.md defines it (higher wins), to the
    last bit: ln(u) times the double nearest 1 / weight."""
    h = xxh3_64_intdigest(p.to_bytes(4, "big"), xxh3_64_intdigest(member.node_id.encode()))
    return math.log(((h >> 11) + 0.5) * 2.0**-53) * (1.0 / member.weight) if weighted else h


# --- the keys and rankings are the design note's --------------------------------------------------


@LIGHT
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=6), st.integers(0, 2**16 - 8))
def test_the_vectorized_scores_are_xxh3_of_the_partition_under_each_seed(seeds, first):
    got = _scores(first, first + 8, np.array([_bitflip(s) for s in seeds], dtype=np.uint64))
    for row, p in enumerate(range(first, first + 8)):
        assert got[row].tolist() == [xxh3_64_intdigest(p.to_bytes(4, "big"), s) for s in seeds]


@pytest.mark.parametrize("weights", [[1.0], [0.5, 1.0, 2.0, 3.25]])
@pytest.mark.parametrize("depth", [1, 3, 10])
def test_rankings_order_the_members_by_their_rendezvous_keys(weights, depth):
    rnd = random.Random(depth)
    members = _validated_members(Member(f"m{i}", weight=rnd.choice(weights)) for i in range(37))
    ranking = _Ranking(members, 256, depth)
    weighted = len(set(weights)) > 1
    for p in range(256):
        keys = [rendezvous_key(p, m, weighted) for m in members]
        # Highest key first; equal keys (never seen) by member index, i.e. node id.
        order = sorted(range(len(members)), key=lambda i: (-keys[i], i))
        assert list(ranking.ranking(p)) == order
        assert ranking.first_choice(p) == (keys[order[0]], order[0])


@HEAVY
@given(node_names(max_n=60), st.integers(1, 4), st.integers(1, 5), st.randoms(use_true_random=False))
def test_bounded_preference_lists_are_the_owner_then_the_partitions_ranking(names, racks, n, rnd):
    members = [Member(x, rack=f"r{rnd.randrange(racks)}") for x in names]
    ring = Ring(members, 1024, replicas=n, algorithm=RING_BOUNDED)
    rack_of = {m.node_id: m.rack for m in members}
    wanted = min(n, len(members))
    wanted_racks = min(wanted, len(set(rack_of.values())))
    for p in range(0, 1024, 7):
        ranked = sorted(ring.node_ids, key=lambda x: -rendezvous_key(p, Member(x), False))
        expected = [ring.owner(p)]
        for node in ranked:  # first: one node per rack, in the partition's order
            if len(expected) < wanted_racks and rack_of[node] not in {rack_of[e] for e in expected}:
                expected.append(node)
        for node in ranked:  # then: more nodes, in the same order
            if len(expected) < wanted and node not in expected:
                expected.append(node)
        assert ring.preference_list(p) == tuple(expected)


def test_ranked_lists_fill_the_pool_they_are_given():
    # Two racks, one of a single member: every list still spans both.
    lists = build_ranked_lists([0, 1, 2, 0], lambda p: [(p + k) % 4 for k in range(4)], [0, 0, 0, 1], [0, 1, 2, 3], 2)
    assert lists == [(0, 3), (1, 3), (2, 3), (0, 3)]


# --- one ring everywhere --------------------------------------------------------------------------


@HEAVY
@given(node_names(max_n=60), st.integers(1, 3), st.randoms(use_true_random=False))
def test_every_node_computes_the_same_bounded_ring_whatever_the_member_order(names, dcs, rnd):
    members = [
        Member(x, weight=rnd.choice([1.0, 1.0, 2.5]), rack=f"r{i % 3}", dc=f"dc{i % dcs}" if dcs > 1 else "")
        for i, x in enumerate(names)
    ]
    replicas = {f"dc{d}": 2 for d in range(dcs)} if dcs > 1 else 3
    shuffled = list(members)
    rnd.shuffle(shuffled)
    a, b = Ring(members, 512, replicas, algorithm=RING_BOUNDED), Ring(shuffled, 512, replicas, algorithm=RING_BOUNDED)
    assert [a.preference_list(p) for p in range(512)] == [b.preference_list(p) for p in range(512)]


def placement_digest(ring: Ring) -> str:
    h = hashlib.sha256()
    for p in range(ring.partitions):
        h.update(("|".join(ring.preference_list(p)) + "\n").encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(
    ("algorithm", "weighted", "digest"),
    [
        # Computed before "bounded" existed: an existing cluster keeps every key where it was.
        (RING_DITHERED, True, "cb400a812fd27aba"),
        (RING_DITHERED, False, "47948c047ecff959"),
        (RING_BOUNDED, True, "14c76b5f7c1e38f5"),
        (RING_BOUNDED, False, "7dfa4902f72dee2f"),
    ],
)
def test_placements_are_pinned(algorithm, weighted, digest):
    # Any change here moves the data of every cluster using the algorithm: a new algorithm
    # name is needed instead (docs/ring.md, "Two algorithms").
    if weighted:
        members = [Member(f"n{i}", weight=1.0 + i % 3, rack=f"r{i % 4}") for i in range(30)]
    else:
        members = [Member(f"n{i}") for i in range(30)]
    assert placement_digest(Ring(members, 1024, algorithm=algorithm)) == digest


# --- balance --------------------------------------------------------------------------------------


@HEAVY
@given(node_names(max_n=200), st.randoms(use_true_random=False), st.booleans())
@example([f"node-{i}" for i in range(3)], random.Random(0), False)
@example([f"node-{i}" for i in range(64)], random.Random(0), False)
@example([f"node-{i}" for i in range(200)], random.Random(0), False)
def test_no_member_owns_more_than_its_share_plus_the_slack(names, rnd, weighted):
    members = [Member(x, weight=rnd.choice([1.0, 2.0, 3.0]) if weighted else 1.0) for x in names]
    total = sum(m.weight for m in members)
    q = partitions_for(math.ceil(total / min(m.weight for m in members)))
    ring = Ring(members, q, algorithm=RING_BOUNDED)
    load = counts(ring)
    assert sum(load.values()) == q
    caps = dict(zip(ring.node_ids, capacities(ring.members, q, RING_BOUNDED)))
    for m in members:
        ideal = q * m.weight / total
        assert load[m.node_id] <= caps[m.node_id] < slack_bound(ideal, len(members))


@pytest.mark.parametrize("n", [1, 2, 10, 100, 4096])
def test_the_slack_is_two_root_of_the_share_capped_by_two_root_n(n):
    for ideal in (Fraction(1, 3), Fraction(16), Fraction(1024, 7), Fraction(65536)):
        got = bounded_slack(ideal, n)
        assert 0 <= 2 * math.sqrt(min(ideal, n)) - got < 2**-31


@pytest.mark.parametrize("seed", range(12))
def test_shares_follow_weights(seed):
    # Statistical bounds, so fixed member sets: measured over 150 rings like these, the worst
    # weight class was 16.7 % off its ideal (a class of 2 members; the mean 2.7 %) and the
    # lightest member held 0.22 of its ideal (docs/ring.md, "What `bounded` changes").
    rnd = random.Random(seed)
    members = [Member(f"w{seed}-{i}", weight=rnd.choice([1.0, 2.0, 3.0])) for i in range(rnd.randint(20, 100))]
    total = sum(m.weight for m in members)
    q = partitions_for(math.ceil(total / min(m.weight for m in members)))
    load = counts(Ring(members, q, algorithm=RING_BOUNDED))
    by_weight: dict[float, list[float]] = {}
    for m in members:
        ideal = q * m.weight / total
        assert load[m.node_id] >= 0.2 * ideal
        by_weight.setdefault(m.weight, [0, 0.0, 0])
        by_weight[m.weight][0] += load[m.node_id]
        by_weight[m.weight][1] += ideal
        by_weight[m.weight][2] += 1
    for got, ideal, size in by_weight.values():
        if size >= 5:
            assert abs(got - ideal) <= 0.10 * ideal


# --- movement on join and leave -------------------------------------------------------------------


def check_one_node_changed(small: Ring, big: Ring, node: str, joined: bool) -> None:
    """`big` is `small` with `node` added: what it joining moves, or what it leaving moves."""
    q = small.partitions
    n = len(big.members)
    ideal = q / n
    moved = [p for p in range(q) if small.owner(p) != big.owner(p)]
    mine = set(big.owned_partitions(node))
    assert mine <= set(moved)
    assert len(mine) < slack_bound(ideal, n)
    # Owners changing between other nodes: measured mean 0.04, worst 0.17 of the ideal (600
    # joins and leaves, n = 3..40), worst 0.24 for n up to 204.
    assert len(moved) - len(mine) <= 0.4 * ideal
    # What streams: the changed node's replicas (its share of N x Q), gained by the joiner or
    # re-homed from the leaver, and beyond them little: measured worst 0.033 of N x ideal.
    changes = diff(small, big) if joined else diff(big, small)
    gained = sum(len(c.gained) for c in changes)
    assert gained - len(big.replica_partitions(node)) <= 0.1 * big.replicas * ideal


@HEAVY
@given(node_names(max_n=40), st.integers(1, 4), st.randoms(use_true_random=False))
@example([f"node-{i}" for i in range(4)], 1, random.Random(0))
@example([f"node-{i}" for i in range(11)], 1, random.Random(0))
@example([f"node-{i}" for i in range(11)], 3, random.Random(0))
@example([f"node-{i}" for i in range(40)], 1, random.Random(0))
def test_a_join_moves_about_the_joiners_share(names, racks, rnd):
    members = [Member(x, rack=f"r{rnd.randrange(racks)}") for x in names]
    q = partitions_for(len(names))
    check_one_node_changed(Ring(members[:-1], q, algorithm=RING_BOUNDED), Ring(members, q, algorithm=RING_BOUNDED), names[-1], joined=True)


@HEAVY
@given(node_names(min_n=4, max_n=40), st.integers(0, 10**6), st.integers(1, 4), st.randoms(use_true_random=False))
def test_a_leave_moves_about_the_leavers_share(names, which, racks, rnd):
    members = [Member(x, rack=f"r{rnd.randrange(racks)}") for x in names]
    gone = names[which % len(names)]
    q = partitions_for(len(names))
    before = Ring(members, q, algorithm=RING_BOUNDED)
    after = Ring([m for m in members if m.node_id != gone], q, algorithm=RING_BOUNDED)
    check_one_node_changed(after, before, gone, joined=False)


@pytest.mark.parametrize("algorithm", RING_ALGORITHMS)
def test_a_join_in_one_datacenter_moves_nothing_in_the_others(algorithm):
    members = [Member.at(f"d{d}n{i}", f"dc{d}/r{i % 3}") for d in range(3) for i in range(12)]
    quotas = {"dc0": 3, "dc1": 2, "dc2": 1}
    before = Ring(members, 1024, quotas, algorithm)
    after = Ring([*members, Member.at("joiner", "dc1/r0")], 1024, quotas, algorithm)
    for c in diff(before, after):
        assert {x for x in c.gained + c.lost} <= {n for n in c.new_replicas + c.old_replicas if after.dc_of(n) == "dc1"}
        assert [x for x in c.old_replicas if before.dc_of(x) != "dc1"] == [
            x for x in c.new_replicas if after.dc_of(x) != "dc1"
        ]
