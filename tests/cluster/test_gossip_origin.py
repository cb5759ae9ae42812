"""Who may say what in gossip (cluster/gossip.py, "Origin"; docs/security.md): a node speaks for
itself; what it relays about others is taken only within what a relay may say. The sender is
the peer the RPC handshake authenticated."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ringkv.cluster.gossip import MAX_COUNTER, Membership, NodeState, NodeStatus

JOINING, NORMAL, LEAVING, LEFT, REMOVED = (
    NodeStatus.JOINING, NodeStatus.NORMAL, NodeStatus.LEAVING, NodeStatus.LEFT, NodeStatus.REMOVED)


def state(node: str, status=NORMAL, generation: int = 1, version: int = 1, **fields) -> NodeState:
    fields.setdefault("rpc_host", f"10.0.0.{sum(map(ord, node)) % 250}")
    fields.setdefault("rpc_port", 7381)
    return NodeState(node, generation, version, status, **fields)


def cluster_view(*members: str, joining: tuple[str, ...] = ()) -> Membership:
    """n1's membership, knowing `members` as normal and `joining` as joining."""
    m = Membership(state("n1"))
    m.merge([state(n) for n in members] + [state(n, JOINING) for n in joining], 0)
    return m


def tombstone(node: str, status=REMOVED) -> NodeState:
    return NodeState(node, 1, MAX_COUNTER, status)


def test_a_member_relays_a_removal_and_the_ring_drops_the_node():
    m = cluster_view("n2", "n3")
    changes = m.merge([tombstone("n3")], 10, sender="n2")
    assert [c.node_id for c in changes] == ["n3"] and m.get("n3").status is REMOVED
    assert m.refused_origin == 0


def test_a_joining_node_cannot_remove_members_nor_this_node():
    m = cluster_view("n2", "n3", joining=("n4",))
    assert m.merge([tombstone("n3"), tombstone("n1")], 10, sender="n4") == []
    assert m.get("n3").status is NORMAL and m.local.status is NORMAL
    assert m.refused_origin == 2


def test_a_node_never_heard_of_cannot_remove_anyone_even_with_its_own_state_first():
    m = cluster_view("n2")
    # "evil" introduces itself, as normal even, in the same message: it is still no member
    # of this node's ring for this message's tombstones... unless it is held normal before.
    changes = m.merge([tombstone("n2"), state("evil", JOINING)], 10, sender="evil")
    assert [c.node_id for c in changes] == ["evil"]
    assert m.get("n2").status is NORMAL and m.refused_origin == 1


def test_the_senders_own_state_is_merged_first_so_a_member_can_vouch_in_its_first_message():
    m = Membership(state("n1"))
    changes = m.merge([tombstone("n3"), state("n2")], 10, sender="n2")
    assert [c.node_id for c in changes] == ["n2", "n3"]
    assert m.get("n3").status is REMOVED


def test_a_node_announces_its_own_new_address_but_a_relay_cannot_move_it():
    m = cluster_view("n2", "n3")
    moved = state("n3", version=2, rpc_host="203.0.113.9")
    assert m.merge([moved], 10, sender="n2") == []
    assert m.get("n3").rpc_host != "203.0.113.9" and m.refused_origin == 1
    assert [c.node_id for c in m.merge([moved], 10, sender="n3")] == ["n3"]
    assert m.get("n3").rpc_host == "203.0.113.9"


def test_a_relay_may_fill_in_an_address_not_known_yet_and_carry_heartbeats():
    m = cluster_view("n2", "n3")
    beat = state("n3", version=5, resp_address="10.0.0.3:7379")
    assert [c.node_id for c in m.merge([beat], 10, sender="n2")] == ["n3"]
    assert m.get("n3").version == 5


def test_a_node_that_left_no_longer_vouches_for_removals():
    m = cluster_view("n2", "n3")
    m.merge([state("n2", LEFT, version=9)], 10, sender="n2")
    assert m.merge([tombstone("n3")], 20, sender="n2") == []
    assert m.get("n3").status is NORMAL


def test_without_a_sender_nothing_is_checked():
    # This node's own decisions (an operator's removal) and the simulator's merges.
    m = cluster_view("n2")
    assert [c.node_id for c in m.merge([tombstone("n2")], 10)] == ["n2"]


names = st.sampled_from(["n1", "n2", "n3", "n4", "evil"])
statuses = st.sampled_from(list(NodeStatus))
states = st.builds(
    lambda node, status, generation, version, host: NodeState(
        node, generation, version, status, host, 7381 if host else 0),
    names, statuses, st.integers(1, 3), st.integers(1, 5),
    st.sampled_from(["", "10.0.0.1", "10.0.0.2", "203.0.113.9"]))


@given(batches=st.lists(st.tuples(names, st.lists(states, max_size=6)), max_size=8))
def test_no_sequence_of_messages_lets_a_non_member_take_a_node_out_or_a_relay_move_one(batches):
    m = cluster_view("n2", "n3", joining=("n4",))
    # What each node last said its RPC address was: only the node itself may change it.
    rpc = {s.node_id: (s.rpc_host, s.rpc_port) for s in m.states()}
    for sender, batch in batches:
        before = {s.node_id: s for s in m.states()}
        # The sender's own states are merged first; any of them may make it a member.
        member = (before.get(sender) is not None and before[sender].status in (NORMAL, LEAVING)) or any(
            s.node_id == sender and s.status in (NORMAL, LEAVING) for s in batch)
        for change in m.merge(batch, 0, sender=sender):
            node, new = change.node_id, change.new
            if node != sender and node != "n1":
                if new.status in (LEFT, REMOVED):
                    assert member, f"{sender} took {node} out: {new}"
                if new.rpc_port and node in rpc and new.status not in (LEFT, REMOVED):
                    assert rpc[node] == (new.rpc_host, new.rpc_port), f"{sender} moved {node}"
            if new.rpc_port and node != "n1" and new.status not in (LEFT, REMOVED):
                rpc[node] = (new.rpc_host, new.rpc_port)
