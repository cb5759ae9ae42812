"""plan_moves: after a partition's moves, every node of its next lists holds every namespace
layout those lists give it, and no node receives a layout its place does not give it.

Layouts are prefixes of one preference list (a namespace of N keeps its keys on the first N
nodes) or, with replicas counted per datacenter, any sub-list of it (the first few of each
datacenter's part); the general property is checked for arbitrary lists per layout."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ringkv.node.membership import Move, plan_moves, prefix_lists

NODES = [f"n{i}" for i in range(8)]


@st.composite
def lists_and_counts(draw):
    old = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=5, unique=True))
    new = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=5, unique=True))
    counts = draw(st.sets(st.integers(1, 5), min_size=1, max_size=4))
    return old, new, counts


@st.composite
def lists_per_layout(draw):
    """Old and new lists of 1..4 layouts, each any sub-list of a preference list."""
    layouts = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True))
    old_pref = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=6, unique=True))
    new_pref = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=6, unique=True))

    def sub(pref):
        keep = draw(st.lists(st.booleans(), min_size=len(pref), max_size=len(pref)))
        return [n for n, k in zip(pref, keep, strict=True) if k]

    return {lay: sub(old_pref) for lay in layouts}, {lay: sub(new_pref) for lay in layouts}


def _run(old, new):
    """What each node holds after the moves, checking each move as it goes."""
    holds = {node: {lay for lay, nodes in old.items() if node in nodes} for node in NODES}
    before = {node: set(h) for node, h in holds.items()}
    for m in plan_moves(old, new):
        received = before[m.source] & m.layouts
        # Nothing beyond what the gainer's new lists give it, nothing the source lacks.
        assert all(m.gainer in new[lay] for lay in received), m
        assert set(m.covers) <= received, m
        holds[m.gainer] |= received
    return holds


@given(lists_and_counts())
def test_after_the_moves_every_node_holds_what_its_new_position_gives_it(case):
    old, new, counts = case
    new_lists = prefix_lists(new, counts)
    holds = _run(prefix_lists(old, counts), new_lists)
    for node in new:
        assert {lay for lay, nodes in new_lists.items() if node in nodes} <= holds[node], node


@given(lists_per_layout())
def test_with_lists_of_their_own_every_node_ends_holding_what_they_give_it(case):
    old, new = case
    holds = _run(old, new)
    for lay, nodes in new.items():
        if not old[lay]:
            continue  # a layout nobody held before has nothing to move
        for node in nodes:
            assert lay in holds[node], (node, lay, holds[node])


@given(lists_and_counts())
def test_a_node_that_gains_nothing_is_not_asked_to_move(case):
    old, new, counts = case
    old_lists, new_lists = prefix_lists(old, counts), prefix_lists(new, counts)
    for m in plan_moves(old_lists, new_lists):
        assert any(m.gainer in new_lists[n] and m.gainer not in old_lists[n] for n in counts), m


def test_with_one_n_only_nodes_new_to_the_list_receive():
    moves = plan_moves(prefix_lists(["a", "b", "c"], {3}), prefix_lists(["b", "d", "c"], {3}))
    assert moves == [Move("d", "a", frozenset({3}), (3,)), Move("d", "b", frozenset({3}), (3,)),
                     Move("d", "c", frozenset({3}), (3,))]
    assert plan_moves(prefix_lists(["a", "b", "c"], {3}), prefix_lists(["b", "a", "c"], {3})) == []


def test_the_sole_holder_of_an_n1_key_leaving_the_list_hands_it_to_the_new_first():
    # "a" held the N=1 namespace alone; "b" moves to the front and needs it, from "a" only.
    moves = plan_moves(prefix_lists(["a", "b", "c"], {1, 3}), prefix_lists(["b", "d", "c"], {1, 3}))
    assert [m for m in moves if m.gainer == "b"] == [Move("b", "a", frozenset({1, 3}), (1,))]


def test_a_namespace_counted_per_datacenter_moves_only_within_its_own_lists():
    # The whole list: x1 x2 (dc1) y1 y2 (dc2); the namespace keeps one replica per datacenter.
    # y3 joins dc2 and takes y1's first place there: it needs both layouts, from holders only.
    whole, per_dc = 4, (("dc1", 1), ("dc2", 1))
    old = {whole: ["x1", "x2", "y1", "y2"], per_dc: ["x1", "y1"]}
    new = {whole: ["x1", "x2", "y3", "y1"], per_dc: ["x1", "y3"]}
    moves = plan_moves(old, new)
    assert {m.gainer for m in moves} == {"y3"}
    from_y2 = next(m for m in moves if m.source == "y2")
    assert from_y2.layouts == frozenset({whole}) and from_y2.covers == (whole,)  # y2 never held per_dc
    from_y1 = next(m for m in moves if m.source == "y1")
    assert from_y1.layouts == frozenset({whole, per_dc}) and set(from_y1.covers) == {whole, per_dc}
