"""Gossip membership as the cluster lives it: nodes that keep exchanging digests end up agreeing,
restarts and departures win over stale news, removed nodes stay removed, and news reaches
everyone in a number of rounds that grows with log n (docs/membership.md)."""

from __future__ import annotations

import ast
import itertools
import math
import random
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ringkv.cluster.gossip as gossip_module
from ringkv.cluster.gossip import (
    MAX_COUNTER,
    DigestEntry,
    Membership,
    NodeState,
    NodeStatus,
    StateChange,
    newer,
)
from ringkv.cluster.ring import Member, Ring
from ringkv.errors import ConfigError, LimitError

JOINING, NORMAL, LEAVING, LEFT, REMOVED = (
    NodeStatus.JOINING,
    NodeStatus.NORMAL,
    NodeStatus.LEAVING,
    NodeStatus.LEFT,
    NodeStatus.REMOVED,
)
DAY_MS = 24 * 3600 * 1000
# The transitions a node may make of its own status (docs/membership.md, "Lifecycle").
ALLOWED = {
    (JOINING, NORMAL),
    (JOINING, LEFT),
    (NORMAL, LEAVING),
    (LEAVING, LEFT),
    (LEAVING, NORMAL),
}


def state(node: str, generation: int = 1, version: int = 1, status=NORMAL, **fields) -> NodeState:
    return NodeState(node, generation, version, status, **fields)


def node(name: str, generation: int = 1, status=NORMAL, **kw) -> Membership:
    return Membership(state(name, generation, 1, status), **kw)


def exchange(a: Membership, b: Membership, now_ms: float = 0.0) -> None:
    """One gossip round from a to b, as the shell runs it: a's digest, b's delta and request,
    a's answer."""
    syn = a.digest()
    a.merge(b.delta_for(syn), now_ms)
    b.merge(a.states_for(b.request_for(syn)), now_ms)


def views(nodes: list[Membership]) -> list[list[NodeState]]:
    return [m.states() for m in nodes]


# --- the order of states ----------------------------------------------------------------------

counters = st.integers(0, MAX_COUNTER)


@given(ga=counters, va=counters, gb=counters, vb=counters)
def test_newer_orders_by_generation_then_version(ga, va, gb, vb):
    a, b = state("n", ga, va), state("n", gb, vb)
    assert newer(a, b) == ((ga, va) > (gb, vb))
    assert not (newer(a, b) and newer(b, a))


@given(version=counters)
def test_a_newer_generation_beats_any_version_of_an_older_one(version):
    assert newer(state("n", 8, 1), state("n", 7, version))
    assert not newer(state("n", 7, version), state("n", 8, 0))


def test_equal_counters_with_different_contents_still_have_one_winner():
    a, b = state("n", 3, 9, rack="r1"), state("n", 3, 9, rack="r2")
    assert newer(a, b) != newer(b, a)
    assert not newer(a, a)


# --- merge is a join: order and repetition do not matter ----------------------------------------

states_strategy = st.lists(
    st.builds(
        NodeState,
        node_id=st.sampled_from(["a", "b", "c", "d"]),
        generation=st.integers(1, 3),
        version=st.integers(1, 5),
        status=st.sampled_from(list(NodeStatus)),
        rack=st.sampled_from(["", "r1"]),
    ),
    max_size=30,
)


@given(states=states_strategy, seed=st.integers(0, 2**32 - 1))
def test_merge_is_commutative_and_idempotent(states, seed):
    in_order, shuffled, one_by_one = node("x"), node("x"), node("x")
    in_order.merge(states, 0.0)
    mixed = list(states)
    random.Random(seed).shuffle(mixed)
    shuffled.merge(mixed, 0.0)
    for s in reversed(states):
        one_by_one.merge([s], 0.0)
    assert in_order.states() == shuffled.states() == one_by_one.states()
    assert in_order.merge(states, 0.0) == []  # idempotent: nothing changes the second time
    newest = {}
    for s in states:
        if s.node_id not in newest or newer(s, newest[s.node_id]):
            newest[s.node_id] = s
    assert {s.node_id: s for s in in_order.states() if s.node_id != "x"} == newest


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(2, 8), steps=st.integers(0, 80))
def test_any_exchanges_then_a_healed_network_converge_on_every_nodes_own_newest_state(
    seed, k, steps
):
    """Safety phase: nodes beat, change status, restart, remove each other and gossip with
    random peers. Liveness phase: gossip along a path and back. Everyone then holds, for every
    node, the state that node holds of itself."""
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(k)]
    generation = dict.fromkeys(names, 1)
    nodes = {n: node(n) for n in names}
    now = 0.0
    for _ in range(steps):
        now += rng.uniform(0, 1000)
        name = rng.choice(names)
        me = nodes[name]
        action = rng.random()
        if action < 0.3:
            me.beat(now)
        elif action < 0.4:
            allowed = sorted(t for f, t in ALLOWED if f is me.local.status)
            if allowed:
                me.set_local_status(rng.choice(allowed))
        elif action < 0.45:
            generation[name] += 1  # a restart forgets everything but itself
            nodes[name] = node(name, generation[name], rng.choice([JOINING, NORMAL]))
        elif action < 0.5:
            others = [n for n in names if n != name and n in me]
            if others:
                me.mark_removed(rng.choice(others), now)
        else:
            peer = rng.choice([n for n in names if n != name])
            exchange(me, nodes[peer], now)
    path = [nodes[n] for n in names]
    for a, b in itertools.pairwise(path):
        exchange(a, b, now)
    for a, b in itertools.pairwise(reversed(path)):
        exchange(a, b, now)
    truth = [nodes[n].local for n in names]
    assert all(v == truth for v in views(path))


# --- restarts, departures, removals -------------------------------------------------------------


def test_a_restarted_node_replaces_its_old_state():
    me = node("n1")
    me.merge([state("n2", 5, 900, rpc_host="10.0.0.2")], 0.0)
    [change] = me.merge([state("n2", 6, 1, rpc_host="10.0.0.9")], 0.0)
    assert change.restarted and change.address_changed and not change.status_changed
    assert me.get("n2") == state("n2", 6, 1, rpc_host="10.0.0.9")
    # News of the old incarnation, however late its version, no longer counts.
    assert me.merge([state("n2", 5, 10_000)], 0.0) == []
    assert me.get("n2").generation == 6


def test_a_node_that_left_is_not_brought_back_by_old_news():
    me, stale = node("n1"), node("n3")
    me.merge([state("n2", 1, 10)], 0.0)
    stale.merge([state("n2", 1, 10)], 0.0)
    [change] = me.merge([state("n2", 1, 11, LEFT)], 0.0)
    assert change.ring_changed and change.heartbeat
    assert me.merge([state("n2", 1, 10)], 1000.0) == []
    exchange(stale, me, 2000.0)
    exchange(me, stale, 3000.0)
    assert me.get("n2").status is LEFT
    assert stale.get("n2").status is LEFT
    assert [m.node_id for m in me.members_for_ring()] == ["n1", "n3"]


def test_tombstones_go_silent_after_the_ttl_and_are_forgotten_after_twice_that():
    me = node("n1", tombstone_ttl_ms=DAY_MS)
    me.merge([state("n2", 1, 11, LEFT)], 0.0)
    assert me.tombstones() == {"n2": 0.0}
    assert me.expire_tombstones(DAY_MS - 1) == []
    assert "n2" in [e.node_id for e in me.digest()]
    assert me.beat(DAY_MS).version == 2  # beat expires too
    # Silent: no longer advertised or handed out, still refusing old news.
    assert me.silent_tombstones() == {"n2"}
    assert "n2" not in [e.node_id for e in me.digest()]
    assert me.delta_for([]) == [me.local]
    assert me.states_for(["n2"]) == []
    assert me.merge([state("n2", 1, 10)], DAY_MS + 1) == []
    assert me.expire_tombstones(2 * DAY_MS) == ["n2"]
    assert "n2" not in me and me.tombstones() == {}
    # This is the documented bound: after both halves, a replay of old news resurrects.
    [change] = me.merge([state("n2", 1, 10)], 2 * DAY_MS)
    assert change.joined


def test_a_tombstone_dies_out_instead_of_bouncing_between_nodes_that_saw_it_at_different_times():
    a = node("a", tombstone_ttl_ms=DAY_MS)
    b = node("b", tombstone_ttl_ms=DAY_MS)
    exchange(a, b, 0.0)
    a.merge([state("x", 1, 5, LEFT)], 0.0)
    hour = 3600 * 1000
    exchange(a, b, 5 * hour)  # b first sees it five hours later
    assert b.tombstones() == {"x": 5 * hour}
    for t in range(6 * hour, 4 * DAY_MS, hour):  # gossiping every hour for four days
        exchange(a, b, t)
        exchange(b, a, t)
    assert "x" not in a and "x" not in b


def test_tombstones_past_the_limit_evict_the_oldest():
    me = node("n1", max_tombstones=2)
    me.merge([state("a", status=LEFT)], 1.0)
    me.merge([state("b", status=LEFT)], 2.0)
    me.merge([state("c", status=REMOVED)], 3.0)
    assert me.tombstones() == {"b": 2.0, "c": 3.0}
    assert "a" not in me


def test_an_operator_removal_wins_over_everything_that_incarnation_still_says():
    n1, n3, n2 = node("n1"), node("n3"), node("n2")
    exchange(n1, n2)
    exchange(n3, n2)
    [change] = n1.mark_removed("n2", 0.0)
    assert change.ring_changed and not change.heartbeat
    tombstone = n1.get("n2")
    assert tombstone == NodeState("n2", 1, MAX_COUNTER, REMOVED)
    # Two operators removing it at once write the same tombstone.
    n3.mark_removed("n2", 0.0)
    assert n3.get("n2") == tombstone
    assert n1.mark_removed("n2", 0.0) == []
    # The removed node keeps beating in its partition; it cannot outrun the tombstone.
    for t in range(100):
        n2.beat(float(t))
    exchange(n2, n1, 100.0)
    assert n1.get("n2") == tombstone
    # It hears of its removal and adopts it: the shell sees the change and stops serving.
    assert n2.local == tombstone
    assert n2.beat(200.0) == tombstone
    # Restarted, it is a new incarnation and comes back.
    n2 = node("n2", generation=2, status=JOINING)
    exchange(n2, n1, 300.0)
    assert n1.get("n2").status is JOINING


def test_removing_yourself_or_a_stranger_is_refused():
    me = node("n1")
    with pytest.raises(ConfigError, match="leave instead"):
        me.mark_removed("n1", 0.0)
    with pytest.raises(ConfigError, match="not a member"):
        me.mark_removed("n9", 0.0)


def test_a_configured_node_never_heard_from_can_be_removed_and_its_last_incarnation_stays_out():
    # n2 started at time 5 and gossiped with n3, then died before n1 heard of it.
    n1, n3, n2 = node("n1"), node("n3"), node("n2", generation=5)
    exchange(n3, n2)
    [change] = n1.mark_removed("n2", 10.0, configured=True)
    assert change.new == NodeState("n2", 10, MAX_COUNTER, REMOVED)
    # What n3 still holds of n2 is older than the removal: the tombstone spreads to n3.
    exchange(n1, n3, 11.0)
    assert n3.get("n2").status is REMOVED and n1.get("n2").status is REMOVED


def test_a_peer_holding_a_newer_incarnation_of_us_makes_our_generation_move_past_it():
    # The clock stepped back across a restart: the new start time is an older generation.
    me = node("n1", generation=1000)
    [change] = me.merge([state("n1", 2000, 50)], 0.0)
    assert change.node_id == "n1" and change.restarted
    assert me.local.generation == 2001 and me.local.version == 1
    assert me.merge([state("n1", 1000, 99)], 0.0) == []  # older than us: ignored


# --- the exchange ----------------------------------------------------------------------------


def test_digest_delta_and_request_carry_exactly_what_each_side_lacks():
    a, b = node("a"), node("b")
    a.merge([state("c", 1, 5), state("d", 2, 1)], 0.0)
    b.merge([state("c", 1, 7), state("d", 1, 9), state("e", 1, 1)], 0.0)
    syn = a.digest()
    assert syn == [DigestEntry("a", 1, 1), DigestEntry("c", 1, 5), DigestEntry("d", 2, 1)]
    assert sorted(s.node_id for s in b.delta_for(syn)) == ["b", "c", "e"]
    assert b.request_for(syn) == ["a", "d"]  # unknown and newer generation first, by id
    exchange(a, b)
    assert a.states() == b.states()


def test_messages_are_bounded_and_the_most_out_of_date_news_goes_first():
    a = node("a", max_states_per_message=3)
    a.merge([state("b", 1, 10), state("c", 1, 50), state("d", 1, 30)], 0.0)
    peer_digest = [
        DigestEntry("a", 1, 1),
        DigestEntry("b", 1, 9),
        DigestEntry("c", 1, 1),
        DigestEntry("d", 1, 2),
    ]
    assert [s.node_id for s in a.delta_for(peer_digest)] == ["c", "d", "b"]
    assert [s.node_id for s in a.delta_for(peer_digest[:1])] == ["b", "c", "d"]
    assert [s.node_id for s in a.states_for(["d", "x", "d", "a", "b", "c"])] == ["d", "a", "b"]
    with pytest.raises(LimitError, match="max_states_per_message=3"):
        a.merge([state(f"n{i}") for i in range(4)], 0.0)


def test_a_digest_longer_than_any_membership_is_refused():
    a = node("a", max_members=2, max_tombstones=1)
    with pytest.raises(LimitError, match="=3 entries"):
        a.delta_for([DigestEntry(f"n{i}", 1, 1) for i in range(4)])


def test_new_nodes_past_max_members_are_refused_but_tombstones_still_land():
    a = node("a", max_members=3)
    changes = a.merge([state("b"), state("c"), state("d"), state("e", status=LEFT)], 0.0)
    assert [c.node_id for c in changes] == ["b", "c", "e"]
    assert a.refused_full == 1
    assert a.merge([state("b", 1, 2)], 0.0)  # known nodes keep updating


def test_invalid_states_built_in_process_are_counted_and_skipped():
    a = node("a")
    bad = [state("b", weight=math.nan), state("", 1, 1), state("c", rpc_port=70_000), "junk"]
    assert a.merge(bad, 0.0) == []
    assert a.refused_invalid == 4
    assert len(a) == 1


# --- the local node ----------------------------------------------------------------------------


def test_beat_and_updates_bump_the_version_and_report_load_without_a_ring_change():
    a, b = node("a"), node("b")
    exchange(a, b)
    a.beat(0.0)
    updated = a.update_local(keys=10, bytes_on_disk=4096)
    assert updated.version == 3
    [change] = b.merge(a.delta_for(b.digest()), 0.0)
    assert change.heartbeat
    assert not (change.ring_changed or change.status_changed or change.address_changed)
    a.update_local(weight=2.0)
    [change] = b.merge(a.delta_for(b.digest()), 0.0)
    assert change.ring_changed


@pytest.mark.parametrize("field", ["node_id", "generation", "version", "status"])
def test_update_local_refuses_fields_it_does_not_own(field):
    with pytest.raises(ConfigError) as e:
        node("a").update_local(**{field: 5})
    assert e.value.field == field


def test_update_local_refuses_bad_values():
    me = node("a")
    with pytest.raises(ConfigError, match="weight"):
        me.update_local(weight=-1.0)
    with pytest.raises(ConfigError):
        me.update_local(colour="blue")
    assert me.local.version == 1


@pytest.mark.parametrize("start", list(NodeStatus))
@pytest.mark.parametrize("target", list(NodeStatus))
def test_status_lifecycle(start, target):
    me = Membership(state("a", 1, 1, start))
    if start == target:
        assert me.set_local_status(target) is False
        assert me.local.version == 1
    elif (start, target) in ALLOWED:
        assert me.set_local_status(target) is True
        assert me.local.status is target and me.local.version == 2
    else:
        with pytest.raises(ConfigError, match=f"from {start} to {target}"):
            me.set_local_status(target)


def test_a_status_given_by_name_is_taken_and_nonsense_refused():
    me = node("a", status=JOINING)
    assert me.set_local_status("normal")
    with pytest.raises(ConfigError, match="unknown status"):
        me.set_local_status("sleeping")


# --- the ring's view ---------------------------------------------------------------------------


def test_the_ring_holds_normal_and_leaving_nodes_and_joining_ones_only_when_asked():
    me = Membership(state("n1", rack="r1"))
    me.merge(
        [
            state("n2", status=JOINING),
            state("n3", status=LEAVING, weight=2.0, rack="r2", dc="eu"),
            state("n4", status=LEFT),
            state("n5", status=REMOVED),
            state("n0"),
        ],
        0.0,
    )
    assert me.members_for_ring() == [
        Member("n0"),
        Member("n1", rack="r1"),
        Member("n3", 2.0, "r2", "eu"),
    ]
    assert [m.node_id for m in me.members_for_ring(include_joining=True)] == [
        "n0",
        "n1",
        "n2",
        "n3",
    ]
    assert Ring(me.members_for_ring(), partitions=64).node_ids == ("n0", "n1", "n3")


def test_state_change_tells_what_to_rebuild():
    old = state("n2", 1, 1, JOINING, rpc_host="h", rack="r1")
    assert StateChange(None, old).joined
    assert StateChange(old, msgspec.structs.replace(old, version=2, status=NORMAL)).ring_changed
    same_ring = StateChange(old, msgspec.structs.replace(old, version=2, rpc_port=9))
    assert same_ring.address_changed and not same_ring.ring_changed
    gone = StateChange(old, msgspec.structs.replace(old, version=2, status=LEFT))
    assert gone.ring_changed and gone.status_changed and gone.heartbeat


# --- choosing peers ------------------------------------------------------------------------------

names = st.sampled_from([f"n{i}" for i in range(12)])


@given(
    live=st.sets(names, max_size=10),
    seeds=st.lists(names, max_size=4),
    fanout=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_choose_peers_never_picks_itself_nor_more_than_fanout(live, seeds, fanout, seed):
    me = node("n0")
    chosen = me.choose_peers(random.Random(seed), live, seeds, fanout)
    assert chosen == me.choose_peers(random.Random(seed), set(sorted(live)), seeds, fanout)
    assert "n0" not in chosen
    assert len(chosen) == len(set(chosen)) <= fanout
    assert set(chosen) <= live | set(seeds)
    others = live - {"n0"}
    if others:
        # Every place is filled while live peers last; a seed may take a free one.
        assert len(chosen) >= min(fanout, len(others))
    elif set(seeds) - {"n0"}:
        assert len(chosen) == 1 and chosen[0] in seeds
    else:
        assert chosen == []


def test_seeds_are_gossiped_with_now_and_then():
    me = node("n0")
    rng = random.Random(5)
    live = {f"n{i}" for i in range(1, 11)}
    picks = [me.choose_peers(rng, live, ["s1", "s2"], 1)[0] for _ in range(2000)]
    share = sum(p.startswith("s") for p in picks) / len(picks)
    assert 0.1 < share < 0.25  # 2 seeds / (10 live + 2 seeds) = 0.17


@pytest.mark.parametrize("fanout", [0, 4, 1.0, True])
def test_a_fanout_outside_1_to_3_is_refused(fanout):
    with pytest.raises(ConfigError) as e:
        node("n0").choose_peers(random.Random(0), {"n1"}, [], fanout)
    assert e.value.field == "fanout"


# --- how fast news spreads -------------------------------------------------------------------


def gossip_round(nodes: dict[str, Membership], rng: random.Random, seeds: list[str]) -> None:
    for me in nodes.values():
        live = {s.node_id for s in me.states() if not s.is_tombstone}
        for peer in me.choose_peers(rng, live, seeds, fanout=1):
            exchange(me, nodes[peer])


@pytest.mark.parametrize("n", [10, 100])
def test_news_reaches_everyone_in_logarithmic_rounds(n):
    rng = random.Random(n)
    names = [f"n{i}" for i in range(n)]
    nodes = {name: node(name) for name in names}
    everyone = [m.local for m in nodes.values()]
    for m in nodes.values():
        m.merge([s for s in everyone if s.node_id != m.local_id], 0.0)
    nodes["n7"].set_local_status(LEAVING)
    rounds = 0
    while any(m.get("n7").status is not LEAVING for m in nodes.values()):
        gossip_round(nodes, rng, seeds=["n0"])
        rounds += 1
        assert rounds <= 4 * math.log2(n) + 4


@pytest.mark.parametrize("n", [10, 100])
def test_a_cold_start_through_one_seed_converges_in_logarithmic_rounds(n):
    rng = random.Random(n)
    nodes = {f"n{i}": node(f"n{i}") for i in range(n)}
    rounds = 0
    while any(len(m) < n for m in nodes.values()):
        gossip_round(nodes, rng, seeds=["n0"])
        rounds += 1
        assert rounds <= 4 * math.log2(n) + 4


# --- the wire ----------------------------------------------------------------------------------


def test_node_state_round_trips_through_msgpack():
    s = state(
        "n2",
        1_700_000_000_000,
        42,
        LEAVING,
        rpc_host="10.0.0.2",
        rpc_port=7381,
        resp_address="10.0.0.2:7379",
        http_address="10.0.0.2:7380",
        rack="r1",
        dc="eu",
        weight=1.5,
        keys=10,
        bytes_on_disk=1 << 40,
    )
    encoded = msgspec.msgpack.encode(s)
    assert len(encoded) < 128
    assert msgspec.msgpack.decode(encoded, type=NodeState) == s
    digest = msgspec.msgpack.encode([DigestEntry("n2", 1, 42)])
    assert msgspec.msgpack.decode(digest, type=list[DigestEntry]) == [("n2", 1, 42)]


@pytest.mark.parametrize(
    "fields",
    [
        ["x" * 200, 1, 1, "normal"],
        ["", 1, 1, "normal"],
        ["n", -1, 1, "normal"],
        ["n", 1, 1, "sleeping"],
        ["n", 1, 1, "normal", "h", 70_000],
        ["n", 1, 1, "normal", "h", 1, "", "", "", "", 0.0],
    ],
)
def test_bad_states_from_the_wire_are_refused_at_decoding(fields):
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode(fields), type=NodeState)


def test_a_state_from_a_newer_node_with_more_fields_is_still_read():
    fields = list(msgspec.to_builtins(state("n2")))
    decoded = msgspec.msgpack.decode(
        msgspec.msgpack.encode([*fields, "a field from the future"]), type=NodeState
    )
    assert decoded == state("n2")


def test_bad_settings_are_refused_naming_the_field():
    for field, bad in [
        ("max_members", 0),
        ("max_tombstones", -1),
        ("max_states_per_message", 1.5),
        ("tombstone_ttl_ms", math.inf),
    ]:
        with pytest.raises(ConfigError) as e:
            node("a", **{field: bad})
        assert e.value.field == field
    with pytest.raises(ConfigError) as e:
        Membership(state("a", weight=0.0))
    assert e.value.field == "local"


def test_the_module_imports_nothing_that_does_io_or_keeps_time():
    forbidden = {"asyncio", "socket", "time", "random", "os", "threading", "selectors"}
    tree = ast.parse(Path(gossip_module.__file__).read_text())
    imported = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in n.names)
        elif isinstance(n, ast.ImportFrom) and n.module:
            imported.add(n.module.split(".")[0])
    assert not forbidden & imported
