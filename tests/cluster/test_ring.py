"""The ring as an operator sees it: balanced shares, few partitions moved on join and leave,
rack-diverse replicas, and the same ring on every node. docs/ring.md explains the bounds
asserted here and gives the measured figures behind them.

Tests of properties both ring algorithms share run on both; the balance and movement bounds
here are those of "dithered", the ring of clusters created before "bounded" (whose own bounds
are in test_ring_movement.py)."""

from __future__ import annotations

import ast
import itertools
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from xxhash import xxh3_64_intdigest

from ringkv.cluster.ring import (
    DEFAULT_ALGORITHM,
    MAX_PARTITIONS,
    RING_ALGORITHMS,
    RING_DITHERED,
    Member,
    Ring,
    capacities,
    diff,
    partition_of,
    partition_range,
    token,
)
from ringkv.errors import ConfigError

HEAVY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIGHT = settings(max_examples=40, deadline=None)


def partitions_for(nodes: int) -> int:
    """The smallest power of two >= 16 x the node count, and at least the default 1024."""
    q = 1024
    while q < 16 * nodes:
        q *= 2
    return q


@st.composite
def node_names(draw, min_n: int = 3, max_n: int = 200) -> list[str]:
    n = draw(st.integers(min_n, max_n))
    stem = draw(st.sampled_from(["node-", "n", "db", "10.0.0.", "kv-prod-eu-"]))
    salt = draw(st.integers(0, 2**32 - 1))
    return [f"{stem}{salt:x}-{i}" for i in range(n)]


def counts(ring: Ring) -> dict[str, int]:
    return {node: len(ring.owned_partitions(node)) for node in ring.node_ids}


# --- tokens and partitions --------------------------------------------------------------------


def test_namespace_and_key_cannot_run_into_each_other():
    assert token(b"a", b"bc") != token(b"ab", b"c")
    assert token(b"", b"abc") != token(b"a", b"bc")


def test_token_format_is_pinned():
    # Stored data is ordered by token: changing this function orphans every stored key.
    assert token(b"users", b"alice") == xxh3_64_intdigest(b"\x00\x00\x00\x05usersalice")
    assert token(b"users", b"alice") == 0x080827F66A6B8A91


@pytest.mark.parametrize("q", [1, 2, 1024, 4096, MAX_PARTITIONS])
def test_partitions_are_equal_contiguous_ranges_covering_all_tokens(q):
    ranges = [partition_range(p, q) for p in range(q)]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == 2**64 - 1
    assert all(last + 1 == first for (_, last), (first, _) in itertools.pairwise(ranges))
    assert {last - first + 1 for first, last in ranges} == {2**64 // q}


@LIGHT
@given(st.integers(0, 2**64 - 1), st.integers(0, 16))
def test_a_token_lies_in_the_range_of_its_partition(tok, log_q):
    q = 1 << log_q
    p = partition_of(tok, q)
    first, last = partition_range(p, q)
    assert first <= tok <= last


@pytest.mark.parametrize("bad", [0, 3, 1000, 2 * MAX_PARTITIONS, -4, True, 1024.0])
def test_a_partition_count_that_is_not_a_power_of_two_is_refused(bad):
    with pytest.raises(ConfigError) as info:
        Ring([Member("a")], partitions=bad)
    assert info.value.field == "partitions"


@pytest.mark.parametrize(
    ("members", "replicas", "field"),
    [
        ([], 3, "members"),
        ([Member("a", weight=0.0)], 3, "members"),
        ([Member("a", weight=-1.0)], 3, "members"),
        ([Member("a", weight=math.nan)], 3, "members"),
        ([Member("")], 3, "members"),
        ([Member("a", rack="r1"), Member("a", rack="r2")], 3, "members"),
        ([Member("a")], 0, "replicas"),
        ([Member("a")], 17, "replicas"),
    ],
)
def test_invalid_rings_are_refused_naming_the_field(members, replicas, field):
    with pytest.raises(ConfigError) as info:
        Ring(members, partitions=64, replicas=replicas)
    assert info.value.field == field


def test_the_same_member_listed_twice_is_one_member():
    ring = Ring([Member("a"), Member("b"), Member("a")], partitions=64)
    assert ring.node_ids == ("a", "b")


def test_an_unknown_ring_algorithm_is_refused_naming_the_setting():
    with pytest.raises(ConfigError) as info:
        Ring([Member("a")], partitions=64, algorithm="consistent")
    assert info.value.field == "ring_algorithm"
    # The default keeps existing clusters' placement; "bounded" is chosen at creation.
    assert DEFAULT_ALGORITHM == RING_DITHERED
    assert Ring([Member("a")], 64).algorithm == RING_DITHERED


def test_partitions_out_of_range_are_refused():
    ring = Ring([Member("a"), Member("b")], partitions=64)
    for bad in (-1, 64):
        with pytest.raises(ValueError):
            ring.preference_list(bad)
        with pytest.raises(ValueError):
            ring.owner(bad)


# --- one ring everywhere ----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", RING_ALGORITHMS)
@HEAVY
@given(node_names(max_n=80), st.randoms(use_true_random=False))
def test_every_node_computes_the_same_ring_whatever_the_member_order(algorithm, names, rnd):
    members = [Member(n, weight=1.0 + i % 3, rack=f"r{i % 4}") for i, n in enumerate(names)]
    shuffled = list(members)
    rnd.shuffle(shuffled)
    a, b = Ring(members, 1024, algorithm=algorithm), Ring(shuffled, 1024, algorithm=algorithm)
    assert [a.preference_list(p) for p in range(1024)] == [
        b.preference_list(p) for p in range(1024)
    ]


def rendezvous_key(p: int, member: Member, weighted: bool) -> float | int:
    """A partition's preference for a member, as docs/ring.md defines it (higher wins)."""
    h = xxh3_64_intdigest(p.to_bytes(4, "big"), xxh3_64_intdigest(member.node_id.encode()))
    return math.log(((h >> 11) + 0.5) * 2.0**-53) / member.weight if weighted else h


@pytest.mark.parametrize("algorithm", RING_ALGORITHMS)
@pytest.mark.parametrize("weights", [[1.0], [1.0, 2.0, 3.0]])
def test_owners_form_the_stable_matching_the_design_note_describes(weights, algorithm):
    # Recompute the rendezvous keys from docs/ring.md and check that no partition and node
    # would both rather be together than with what they have (no blocking pair).
    rnd = random.Random(4)
    members = [Member(f"n{i}", weight=rnd.choice(weights)) for i in range(40)]
    ring = Ring(members, 1024, algorithm=algorithm)
    weighted = len(weights) > 1
    keys = {(p, m.node_id): rendezvous_key(p, m, weighted) for p in range(1024) for m in members}
    caps = dict(zip(ring.node_ids, capacities(ring.members, 1024, algorithm)))
    load = counts(ring)
    weakest = {
        node: min((keys[p, node] for p in ring.owned_partitions(node)), default=None)
        for node in ring.node_ids
    }
    for p in range(1024):
        mine = keys[p, ring.owner(p)]
        for node in ring.node_ids:
            if keys[p, node] > mine:  # p would rather be on `node` ...
                # ... so `node` must be full of partitions it likes better.
                assert load[node] == caps[node]
                assert weakest[node] > keys[p, node]


# --- balance ("dithered"; "bounded": test_ring_movement.py) --------------------------------------


@HEAVY
@given(node_names())
@example([f"node-{i}" for i in range(3)])
@example([f"node-{i}" for i in range(10)])
@example([f"node-{i}" for i in range(50)])
@example([f"node-{i}" for i in range(200)])
def test_the_largest_share_is_within_ten_percent_of_the_mean(names):
    q = partitions_for(len(names))
    ring = Ring([Member(n) for n in names], q, algorithm=RING_DITHERED)
    mean = q / len(names)
    assert max(counts(ring).values()) <= 1.1 * mean
    assert sum(counts(ring).values()) == q
    assert math.isclose(sum(ring.shares().values()), 1.0)


@HEAVY
@given(node_names(max_n=100), st.randoms(use_true_random=False))
def test_shares_follow_weights(names, rnd):
    members = [Member(n, weight=rnd.choice([1.0, 2.0, 3.0])) for n in names]
    total = sum(m.weight for m in members)
    # Sized so that the lightest node's ideal share is >= 16 partitions (docs/ring.md).
    q = partitions_for(math.ceil(total / min(m.weight for m in members)))
    ring = Ring(members, q, algorithm=RING_DITHERED)
    load = counts(ring)
    by_weight: dict[float, list[float]] = {}
    for m in members:
        ideal = q * m.weight / total
        assert load[m.node_id] <= ideal + 1.5  # capacity: never more than 1.5 over the share
        assert load[m.node_id] >= 0.3 * ideal  # measured worst 0.53 over 80 rings
        by_weight.setdefault(m.weight, [0, 0.0])
        by_weight[m.weight][0] += load[m.node_id]
        by_weight[m.weight][1] += ideal
    for got, ideal in by_weight.values():
        assert abs(got - ideal) <= 0.10 * ideal  # measured worst 4.5%


# --- movement on join and leave ("dithered"; "bounded": test_ring_movement.py) ---------------------


def movement_bound(nodes_after: int, q: int) -> float:
    """Most partitions a join or leave may move, in units of the changed node's share.

    The strict bound (1.1 shares, all to or from the changed node) cannot hold for a balanced
    pure function of the member set; docs/ring.md, "Movement", proves it and measures the
    re-homing cascades. Measured worst cases over 100 random joins each: 1.11 (n=3), 1.32
    (n=10), 2.74 (n=50), 3.68 (n=200). The cascades grow as Q/n shrinks.
    """
    return 1.5 if q / nodes_after >= 90 else 4.0


def check_one_node_changed(small: Ring, big: Ring, node: str) -> None:
    q = small.partitions
    moved = [p for p in range(q) if small.owner(p) != big.owner(p)]
    ideal = q / len(big.members)
    # The changed node's own partitions all move, and nothing moves without a reason.
    assert set(big.owned_partitions(node)) <= set(moved)
    assert len(big.owned_partitions(node)) <= ideal + 1.5
    assert len(moved) <= movement_bound(len(big.members), q) * ideal


@HEAVY
@given(node_names(max_n=204))
@example([f"node-{i}" for i in range(4)])
@example([f"node-{i}" for i in range(11)])
@example([f"node-{i}" for i in range(51)])
@example([f"node-{i}" for i in range(201)])
@example([f"node-{i}" for i in range(205)])  # ceil(Q/n) steps from 21 to 20 here
def test_adding_a_node_moves_about_its_share(names):
    q = partitions_for(len(names))
    before = Ring([Member(n) for n in names[:-1]], q, algorithm=RING_DITHERED)
    after = Ring([Member(n) for n in names], q, algorithm=RING_DITHERED)
    check_one_node_changed(before, after, names[-1])


@HEAVY
@given(node_names(min_n=4, max_n=199), st.integers(0, 10**6))
def test_removing_a_node_moves_about_its_share(names, which):
    q = partitions_for(len(names))
    gone = names[which % len(names)]
    before = Ring([Member(n) for n in names], q, algorithm=RING_DITHERED)
    after = Ring([Member(n) for n in names if n != gone], q, algorithm=RING_DITHERED)
    check_one_node_changed(after, before, gone)
    assert set(before.owned_partitions(gone)) <= {c.partition for c in diff(before, after)}


# --- preference lists -------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", RING_ALGORITHMS)
@HEAVY
@given(node_names(), st.integers(1, 12), st.integers(1, 5), st.randoms(use_true_random=False))
def test_every_preference_list_has_n_distinct_nodes_and_spans_racks(algorithm, names, racks, n, rnd):
    members = [Member(x, rack=f"rack-{rnd.randrange(racks)}") for x in names]
    ring = Ring(members, partitions_for(len(names)), replicas=n, algorithm=algorithm)
    rack_of = {m.node_id: m.rack for m in members}
    # A walk meets only owners; a ranking ranks every member.
    holders = counts(ring) if algorithm == RING_DITHERED else dict.fromkeys(ring.node_ids, 1)
    owning_racks = {rack_of[node] for node, c in holders.items() if c}
    for p in range(ring.partitions):
        nodes = ring.preference_list(p)
        assert nodes[0] == ring.owner(p)
        assert len(nodes) == len(set(nodes)) == min(n, len(names))  # N > nodes: every node once
        assert len({rack_of[x] for x in nodes}) == min(n, len(owning_racks))


def test_racks_in_different_datacenters_are_different_failure_domains():
    members = [Member(f"n{i}", rack="r1", dc=f"dc{i % 3}") for i in range(9)]
    ring = Ring(members, 256)
    dc_of = {m.node_id: m.dc for m in members}
    assert all(len({dc_of[x] for x in ring.preference_list(p)}) == 3 for p in range(256))


@pytest.mark.parametrize("algorithm", RING_ALGORITHMS)
@HEAVY
@given(node_names(max_n=60), st.integers(1, 4), st.randoms(use_true_random=False))
def test_a_smaller_n_takes_a_prefix_of_the_preference_list(algorithm, names, racks, rnd):
    members = [Member(x, rack=f"r{rnd.randrange(racks)}") for x in names]
    full = Ring(members, 1024, replicas=5, algorithm=algorithm)
    for n in (1, 2, 3):
        short = Ring(members, 1024, replicas=n, algorithm=algorithm)
        assert all(short.preference_list(p) == full.preference_list(p)[:n] for p in range(1024))


@pytest.mark.parametrize("algorithm", RING_ALGORITHMS)
def test_a_cluster_smaller_than_n_replicates_on_every_node(algorithm):
    ring = Ring([Member("a"), Member("b")], 64, replicas=3, algorithm=algorithm)
    assert all(sorted(ring.preference_list(p)) == ["a", "b"] for p in range(64))
    alone = Ring([Member("solo")], 64, algorithm=algorithm)
    assert {alone.preference_list(p) for p in range(64)} == {("solo",)}


def test_owned_and_replica_partitions_agree_with_preference_lists():
    ring = Ring([Member(f"n{i}", rack=f"r{i % 3}") for i in range(12)], 1024)
    owned = [p for node in ring.node_ids for p in ring.owned_partitions(node)]
    assert sorted(owned) == list(range(1024))
    for node in ring.node_ids:
        expected = tuple(p for p in range(1024) if node in ring.preference_list(p))
        assert ring.replica_partitions(node) == expected
    assert ring.owned_partitions("not-a-member") == ()


# --- fallbacks (sloppy quorum) ----------------------------------------------------------------


def clockwise_nodes(ring: Ring, partition: int) -> list[str]:
    """Distinct owners in the order a clockwise walk from `partition` meets them."""
    seen: list[str] = []
    for k in range(ring.partitions):
        node = ring.owner((partition + k) % ring.partitions)
        if node not in seen:
            seen.append(node)
    return seen


@pytest.mark.parametrize("algorithm", RING_ALGORITHMS)
@LIGHT
@given(
    st.integers(3, 30),
    st.integers(0, 1023),
    st.sets(st.integers(0, 29), max_size=12),
    st.integers(1, 3),
)
def test_fallbacks_stand_in_for_unavailable_primaries_walking_clockwise(algorithm, nodes, p, down, n):
    ring = Ring([Member(f"n{i}", rack=f"r{i % 4}") for i in range(nodes)], 1024, algorithm=algorithm)
    unavailable = {f"n{i}" for i in down}
    primaries = ring.preference_list(p)[:n]
    targets = ring.fallbacks(p, unavailable, n)

    up = [x for x in primaries if x not in unavailable]
    missing = [x for x in primaries if x in unavailable]
    spare = [x for x in clockwise_nodes(ring, p) if x not in primaries and x not in unavailable]
    expected_fallbacks = list(zip(spare, missing))
    assert [(t.node_id, t.hint_for) for t in targets] == [
        (x, None) for x in up
    ] + expected_fallbacks
    assert all(t.is_fallback == (t.hint_for is not None) for t in targets)


def test_with_every_primary_up_the_fallbacks_are_the_preference_list():
    ring = Ring([Member(f"n{i}") for i in range(8)], 1024)
    targets = ring.fallbacks(7, {"someone-else"})
    assert tuple(t.node_id for t in targets) == ring.preference_list(7)
    assert not any(t.is_fallback for t in targets)


# --- diff: the streaming plan -----------------------------------------------------------------


@HEAVY
@given(node_names(max_n=60))
def test_diff_lists_exactly_the_partitions_whose_replicas_change(names):
    old = Ring([Member(n) for n in names[:-1]], 1024)
    new = Ring([Member(n) for n in names], 1024)
    changes = {c.partition: c for c in diff(old, new)}
    for p in range(1024):
        before, after = old.preference_list(p), new.preference_list(p)
        if before == after and old.owner(p) == new.owner(p):
            assert p not in changes
            continue
        c = changes[p]
        assert (c.old_owner, c.new_owner) == (old.owner(p), new.owner(p))
        assert set(c.gained) == set(after) - set(before)
        assert set(c.lost) == set(before) - set(after)
    assert diff(new, new) == ()


def test_diff_of_rings_with_different_partition_counts_is_refused():
    members = [Member("a"), Member("b")]
    with pytest.raises(ConfigError) as info:
        diff(Ring(members, 64), Ring(members, 128))
    assert info.value.field == "partitions"


# --- purity -----------------------------------------------------------------------------------


def test_ring_and_quorum_modules_import_nothing_that_does_io_or_keeps_time():
    forbidden = {"asyncio", "socket", "time", "random", "os", "threading", "selectors"}
    package = Path(__file__).parents[2] / "src" / "ringkv" / "cluster"
    for name in ("__init__.py", "ring.py", "preference.py", "quorum.py"):
        tree = ast.parse((package / name).read_text())
        imported = Counter()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported[node.module.split(".")[0]] += 1
        assert not forbidden & set(imported), name
