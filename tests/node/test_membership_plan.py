"""plan_moves: after a partition's moves, every node of its next preference list holds every
namespace its position gives it, and no node receives a namespace its position does not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ringkv.node.membership import Move, plan_moves

NODES = [f"n{i}" for i in range(8)]


@st.composite
def lists_and_counts(draw):
    old = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=5, unique=True))
    new = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=5, unique=True))
    counts = draw(st.sets(st.integers(1, 5), min_size=1, max_size=4))
    return old, new, counts


def _held(position: int | None, counts) -> set[int]:
    return set() if position is None else {n for n in counts if n > position}


@given(lists_and_counts())
def test_after_the_moves_every_node_holds_what_its_new_position_gives_it(case):
    old, new, counts = case
    holds = {node: _held(old.index(node) if node in old else None, counts) for node in NODES}
    before = {node: set(h) for node, h in holds.items()}
    moves = plan_moves(old, new, counts)
    for m in moves:
        i = new.index(m.gainer)
        received = {n for n in before[m.source] if n >= m.min_replicas}
        # Nothing beyond what the gainer's new position gives it, nothing the source lacks.
        assert all(n > i for n in received)
        assert set(m.covers) <= received
        holds[m.gainer] |= received
    for i, node in enumerate(new):
        assert _held(i, counts) <= holds[node], (node, i, holds[node])


@given(lists_and_counts())
def test_a_node_that_gains_nothing_is_not_asked_to_move(case):
    old, new, counts = case
    for m in plan_moves(old, new, counts):
        i, j = new.index(m.gainer), (old.index(m.gainer) if m.gainer in old else None)
        assert _held(i, counts) - _held(j, counts), m


def test_with_one_n_only_nodes_new_to_the_list_receive():
    assert plan_moves(["a", "b", "c"], ["b", "d", "c"], {3}) == [
        Move("d", "a", 2, (3,)), Move("d", "b", 2, (3,)), Move("d", "c", 3, (3,))]
    assert plan_moves(["a", "b", "c"], ["b", "a", "c"], {3}) == []


def test_the_sole_holder_of_an_n1_key_leaving_the_list_hands_it_to_the_new_first():
    # "a" held the N=1 namespace alone; "b" moves to the front and needs it, from "a" only.
    moves = plan_moves(["a", "b", "c"], ["b", "d", "c"], {1, 3})
    assert Move("b", "a", 1, (1,)) in moves
    assert [m for m in moves if m.gainer == "b"] == [Move("b", "a", 1, (1,))]
