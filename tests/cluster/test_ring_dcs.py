"""Rings over several datacenters, as an operator sets them up with `dc_replicas`: each key has
exactly the configured copies in each datacenter, on distinct racks there, a stand-in keeps a
datacenter's copy in that datacenter, and datacenter levels decide per datacenter
(docs/multi-dc.md)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.cluster.plans import WritePlan
from ringkv.cluster.preference import walk_fallbacks
from ringkv.cluster.quorum import ReadQuorum, WriteQuorum
from ringkv.cluster.ring import Member, Ring, check_dc_replicas, layout_text, location, parse_layout
from ringkv.errors import ConfigError, QuorumError
from ringkv.service.levels import ConsistencyLevel, dc_needs, parse_level, resolve

SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def layouts(draw):
    """Members over 1-3 datacenters with 1-4 racks each, and a replica count per datacenter."""
    dcs = draw(st.integers(1, 3))
    members = []
    quotas = {}
    for d in range(dcs):
        nodes = draw(st.integers(1, 8))
        racks = draw(st.integers(1, 4))
        for i in range(nodes):
            members.append(Member.at(f"d{d}n{i}", f"dc{d}/r{i % racks}"))
        quotas[f"dc{d}"] = draw(st.integers(1, 4))
    return members, quotas


def by_dc(ring: Ring, pref: tuple[str, ...]) -> Counter:
    return Counter(ring.dc_of(n) for n in pref)


@SETTINGS
@given(layouts())
def test_every_key_has_the_configured_copies_in_each_datacenter_on_distinct_racks(layout):
    members, quotas = layout
    ring = Ring(members, 256, quotas)
    nodes_in = Counter(m.dc for m in members)
    racks_in = {dc: len({m.rack for m in members if m.dc == dc}) for dc in quotas}
    assert ring.replicas == sum(quotas.values())
    for p in range(ring.partitions):
        pref = ring.preference_list(p)
        assert len(set(pref)) == len(pref)
        counts = by_dc(ring, pref)
        for dc, want in quotas.items():
            # Fewer only where the datacenter has fewer members.
            assert counts[dc] == min(want, nodes_in[dc])
            racks = [ring.members[ring.node_ids.index(n)].rack for n in pref if ring.dc_of(n) == dc]
            distinct = min(counts[dc], racks_in[dc])
            assert len(set(racks[:distinct])) == distinct  # rack-distinct first within the datacenter


@SETTINGS
@given(layouts(), st.randoms(use_true_random=False))
def test_every_node_computes_the_same_per_datacenter_ring(layout, rnd):
    members, quotas = layout
    shuffled = list(members)
    rnd.shuffle(shuffled)
    a, b = Ring(members, 128, quotas), Ring(shuffled, 128, dict(reversed(list(quotas.items()))))
    assert all(a.preference_list(p) == b.preference_list(p) for p in range(128))


@SETTINGS
@given(layouts(), st.data())
def test_a_stand_in_keeps_a_datacenters_copy_in_that_datacenter(layout, data):
    members, quotas = layout
    ring = Ring(members, 128, quotas)
    p = data.draw(st.integers(0, 127))
    pref = ring.preference_list(p)
    down = set(data.draw(st.lists(st.sampled_from(pref), max_size=len(pref), unique=True)))
    for holder in ring.fallbacks(p, down):
        if holder.hint_for is not None:
            assert holder.node_id not in pref and holder.node_id not in down
            assert ring.dc_of(holder.node_id) == ring.dc_of(holder.hint_for)


def test_replica_load_is_balanced_within_each_datacenter():
    members = [Member.at(f"{dc}n{i}", f"{dc}/r{i % 3}") for dc in ("dc1", "dc2") for i in range(9)]
    ring = Ring(members, 1024, {"dc1": 3, "dc2": 2})
    load = Counter(n for p in range(1024) for n in ring.preference_list(p))
    for dc, copies in (("dc1", 3), ("dc2", 2)):
        mine = [load[m.node_id] for m in members if m.dc == dc]
        mean = 1024 * copies / 9
        assert sum(mine) == 1024 * copies
        assert max(mine) <= 1.15 * mean, (dc, mine)


@SETTINGS
@given(layouts(), st.data())
def test_a_member_joining_one_datacenter_changes_nothing_in_the_others(layout, data):
    members, quotas = layout
    dc = data.draw(st.sampled_from(sorted(quotas)))
    before = Ring(members, 128, quotas)
    after = Ring([*members, Member.at("joiner", f"{dc}/r9")], 128, quotas)
    for p in range(128):
        old, new = before.preference_list(p), after.preference_list(p)
        for other in quotas:
            if other != dc:
                assert [n for n in old if before.dc_of(n) == other] == [n for n in new if after.dc_of(n) == other]


class CountingOwners(list):
    """An owner table that counts the entries a walk reads."""

    reads = 0

    def __getitem__(self, i):
        CountingOwners.reads += 1
        return super().__getitem__(i)


def test_with_a_whole_datacenter_down_the_stand_in_walk_stops_once_it_met_every_owner():
    """Nobody can stand in for dc2's copies then; the walk ends once it has met all of dc2's
    six nodes, not after a turn of a 4096-partition ring, and finds what a full turn finds."""
    members = [Member.at(f"n{i}", f"dc2/r{i % 3}") for i in range(6)]
    ring = Ring(members, 4096, {"dc2": 3})
    table = CountingOwners(ring._dc_owners["dc2"][0])
    primaries = [ring.node_ids.index(n) for n in ring.preference_list(7)]
    down = set(range(6))
    CountingOwners.reads = 0
    early = walk_fallbacks(table, 7, primaries, down, owning=6)
    assert CountingOwners.reads < 200
    CountingOwners.reads = 0
    assert walk_fallbacks(table, 7, primaries, down) == early == []
    assert CountingOwners.reads == 4096
    assert ring.fallbacks(7, {m.node_id for m in members}) == ()


def test_a_location_names_the_datacenter_and_the_rack():
    assert Member.at("n1", "dc1/r2") == Member("n1", rack="r2", dc="dc1")
    assert Member.at("n1", "r2") == Member("n1", rack="r2")
    assert Member.at("n1", "dc1/") == Member("n1", dc="dc1")
    assert location("dc1", "r2") == "dc1/r2" and location("", "r2") == "r2"


@pytest.mark.parametrize("quotas, words", [
    ({}, "at least one datacenter"),
    ({"dc1": 0}, "dc1: must be an integer in 1..16"),
    ({"dc1": 9, "dc2": 9}, "at most 16 replicas in all"),
    ({"": 2}, "non-empty"),
])
def test_bad_per_datacenter_counts_are_refused_naming_the_datacenter(quotas, words):
    with pytest.raises(ConfigError, match=words):
        check_dc_replicas(quotas)


# --- datacenter levels --------------------------------------------------------------------------

PREF = ("a1", "b1", "a2", "b2", "a3", "b3")
DC = {n: "dc" + n[0] for n in PREF}  # a* in dca, b* in dcb


def needs(level: str, local: str = "dca"):
    return dc_needs(parse_level(level), PREF, DC.__getitem__, local)


def test_level_names_parse_and_stand_for_counts_where_datacenters_are_not_told_apart():
    assert parse_level("local_quorum") is ConsistencyLevel.LOCAL_QUORUM
    assert parse_level("EACH_QUORUM") is ConsistencyLevel.EACH_QUORUM
    assert ConsistencyLevel.LOCAL_ONE.per_dc and not ConsistencyLevel.QUORUM.per_dc
    assert resolve(ConsistencyLevel.LOCAL_ONE, 6) == 1
    assert resolve(ConsistencyLevel.LOCAL_QUORUM, 6) == resolve(ConsistencyLevel.EACH_QUORUM, 6) == 4
    with pytest.raises(ConfigError, match="LOCAL_QUORUM"):
        parse_level("nearby")


def test_local_quorum_succeeds_on_its_own_datacenter_whatever_the_other_does():
    q = WriteQuorum(PREF, 2, needs("local_quorum"))
    for node in ("b1", "b2", "b3"):
        assert not q.on_failure(node, "partitioned")
    q.on_success("a1")
    assert not q.done
    assert q.on_success("a3") and q.succeeded


def test_local_quorum_is_not_met_by_the_other_datacenters_answers():
    q = WriteQuorum(PREF, 2, needs("local_quorum"))
    for node in ("b1", "b2", "b3"):
        q.on_success(node)
    assert not q.done
    q.on_failure("a1", "down")
    assert q.on_failure("a2", "timed out after 500 ms") and not q.succeeded
    assert str(q.error).startswith("datacenter dca: needed 2 replicas, 0 answered: a1 down; a2 timed out")


def test_each_quorum_names_the_datacenter_it_could_not_reach():
    q = ReadQuorum(PREF, 4, max, lambda a, b: a == b, needs("each_quorum"))
    for node in ("a1", "a2", "a3"):
        q.on_success(node, b"v")
    q.on_failure("b1", "partitioned by fault injection")
    assert q.on_failure("b3", "partitioned by fault injection")
    assert isinstance(q.error, QuorumError) and q.error.dc == "dcb"
    assert "datacenter dcb: needed 2 replicas, 0 answered" in str(q.error)
    assert "b2 had not answered yet" in str(q.error)


def test_each_quorum_succeeds_once_every_datacenter_has_a_majority():
    q = WriteQuorum(PREF, 4, needs("each_quorum"))
    for node in ("a1", "a2", "b1"):
        q.on_success(node)
    assert not q.done
    assert q.on_success("b3") and q.succeeded


def test_a_local_level_where_the_datacenter_holds_no_replica_fails_naming_it():
    q = WriteQuorum(PREF, 1, needs("local_one", local="dcz"))
    for node in PREF:
        q.on_success(node)
    assert q.done and not q.succeeded
    assert str(q.error).startswith("datacenter dcz: needed 1 replicas, 0 answered")


@SETTINGS
@given(st.permutations(PREF), st.lists(st.booleans(), min_size=6, max_size=6))
def test_a_per_datacenter_write_plan_decides_as_the_counts_say(order, oks):
    """Whatever the order of answers, the plan succeeds exactly when a majority of each
    datacenter acknowledged (EACH_QUORUM) and fails otherwise."""
    plan = WritePlan(PREF, 4, me=None, is_up=lambda n: True, needs=needs("each_quorum"))
    sends = {s.node: s for s in plan.start()}
    outcome = dict(zip(order, oks, strict=True))
    for node in order:
        if outcome[node]:
            plan.on_ack(sends[node])
        else:
            plan.on_failure(sends[node], "refused")
    want = all(sum(outcome[n] for n in PREF if DC[n] == dc) >= 2 for dc in ("dca", "dcb"))
    assert plan.done and plan.succeeded == want


@SETTINGS
@given(layouts(), st.data())
def test_a_namespace_with_its_own_counts_takes_the_first_of_each_datacenters_part(layout, data):
    members, quotas = layout
    ring = Ring(members, 128, quotas)
    own = tuple((dc, data.draw(st.integers(0, n))) for dc, n in sorted(quotas.items()))
    own = tuple((dc, n) for dc, n in own if n)
    if not own:
        return
    for p in range(0, 128, 7):
        pref, mine = ring.preference_list(p), ring.replicas_for(p, own)
        for dc, n in own:
            part = [x for x in pref if ring.dc_of(x) == dc]
            assert [x for x in mine if ring.dc_of(x) == dc] == part[:n]  # so rack-distinct first too
        assert {ring.dc_of(x) for x in mine} <= {dc for dc, _ in own}
        # Stand-ins for its replicas come from their own datacenter, never its other replicas.
        down = set(data.draw(st.lists(st.sampled_from(mine), max_size=len(mine), unique=True)))
        holders = ring.fallbacks(p, down, own)
        assert [h.node_id for h in holders if h.hint_for is None] == [x for x in mine if x not in down]
        for h in holders:
            if h.hint_for is not None:
                assert h.hint_for in down and h.node_id not in mine
                assert ring.dc_of(h.node_id) == ring.dc_of(h.hint_for)
    assert parse_layout(layout_text(own)) == own


def test_a_layout_reads_back_from_its_text_and_bad_text_is_refused():
    assert layout_text(3) == "3" and parse_layout("3") == 3
    assert parse_layout("dc2=1;dc1=2") == (("dc1", 2), ("dc2", 1))
    for bad in ("0", "dc1", "dc1=x", "=1", "17"):
        with pytest.raises(ValueError):
            parse_layout(bad)
